package main

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestPatternKnownValues(t *testing.T) {
	for _, k := range knownPatterns {
		if got := pattern(k.index, k.seed); got != k.want {
			t.Errorf("pattern(%d, %d) = %#08x, want %#08x", k.index, k.seed, got, k.want)
		}
	}
	// Neighbouring words and chunks differ.
	seen := map[uint32]bool{}
	for i := uint64(0); i < 1<<16; i++ {
		v := pattern(i, chunkSeed(1, 0))
		if seen[v] {
			t.Fatalf("pattern repeats within 64Ki words at %d", i)
		}
		seen[v] = true
	}
	if pattern(5, chunkSeed(1, 0)) == pattern(5, chunkSeed(1, 1)) {
		t.Error("chunks 0 and 1 hold the same data")
	}
}

// TestHashPTXMatchesPattern interprets the straight-line PTX that hashPTX
// emits (cvt, shr, mul.lo, xor) and compares it with pattern.
func TestHashPTXMatchesPattern(t *testing.T) {
	var b strings.Builder
	hashPTX(&b, "%rd4", "%r1", "%r6", "%r7", "%r8", "%rd7")
	prog := b.String()
	for _, k := range append(knownPatterns[:len(knownPatterns):len(knownPatterns)],
		struct {
			index uint64
			seed  uint32
			want  uint32
		}{0xdeadbeefcafef00d, 0x12345678, pattern(0xdeadbeefcafef00d, 0x12345678)}) {
		regs := map[string]uint64{"%rd4": k.index, "%r1": uint64(k.seed)}
		if err := interpret(prog, regs); err != nil {
			t.Fatal(err)
		}
		if got := uint32(regs["%r6"]); got != k.want {
			t.Errorf("PTX pattern(%#x, %#x) = %#08x, Go says %#08x", k.index, k.seed, got, k.want)
		}
	}
}

var insRE = regexp.MustCompile(`^([a-z0-9.]+)\s+(.*);$`)

// interpret runs straight-line PTX over regs (32-bit values kept in the low
// bits). It knows just the instructions hashPTX uses.
func interpret(prog string, regs map[string]uint64) error {
	val := func(op string) (uint64, error) {
		if strings.HasPrefix(op, "%") {
			v, ok := regs[op]
			if !ok {
				return 0, fmt.Errorf("read of unset register %s", op)
			}
			return v, nil
		}
		return strconv.ParseUint(op, 0, 64)
	}
	for _, line := range strings.Split(prog, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "//") {
			continue
		}
		m := insRE.FindStringSubmatch(line)
		if m == nil {
			return fmt.Errorf("cannot parse %q", line)
		}
		ops := strings.Split(m[2], ",")
		for i := range ops {
			ops[i] = strings.TrimSpace(ops[i])
		}
		a, err := val(ops[1])
		if err != nil {
			return err
		}
		var bv uint64
		if len(ops) > 2 {
			if bv, err = val(ops[2]); err != nil {
				return err
			}
		}
		var r uint64
		switch m[1] {
		case "cvt.u32.u64":
			r = uint64(uint32(a))
		case "shr.u64":
			r = a >> bv
		case "shr.u32":
			r = uint64(uint32(a) >> bv)
		case "mul.lo.u32":
			r = uint64(uint32(a) * uint32(bv))
		case "xor.b32":
			r = uint64(uint32(a) ^ uint32(bv))
		default:
			return fmt.Errorf("instruction %s not interpreted", m[1])
		}
		regs[ops[0]] = r
	}
	return nil
}

// TestKernelPTXWellFormed checks what ptxas would reject first: undeclared
// registers, missing labels, parameters that are loaded but not declared.
func TestKernelPTXWellFormed(t *testing.T) {
	ptx := kernelPTX(defaultTarget)
	for _, want := range []string{".version 7.0\n", ".target sm_75\n", ".address_size 64\n"} {
		if !strings.Contains(ptx, want) {
			t.Errorf("PTX lacks %q", want)
		}
	}
	if strings.Count(ptx, "{") != strings.Count(ptx, "}") {
		t.Fatal("unbalanced braces")
	}
	entryRE := regexp.MustCompile(`(?s)\.visible \.entry (\w+)\((.*?)\)\s*\{(.*?)\n\}`)
	entries := entryRE.FindAllStringSubmatch(ptx, -1)
	var names []string
	for _, e := range entries {
		name, params, body := e[1], e[2], e[3]
		names = append(names, name)
		t.Run(name, func(t *testing.T) {
			// Registers: every use below the declared count.
			declared := map[string]int{}
			for _, d := range regexp.MustCompile(`\.reg \.\w+\s+%(\w+?)<(\d+)>;`).FindAllStringSubmatch(body, -1) {
				n, _ := strconv.Atoi(d[2])
				declared[d[1]] = n
			}
			for _, u := range regexp.MustCompile(`%(rd|r|p)(\d+)\b`).FindAllStringSubmatch(body, -1) {
				n, _ := strconv.Atoi(u[2])
				if max, ok := declared[u[1]]; !ok || n >= max {
					t.Errorf("register %%%s%d used, declared %%%s<%d>", u[1], n, u[1], max)
				}
			}
			// Labels: every branch target defined once.
			for _, br := range regexp.MustCompile(`bra\s+(\w+);`).FindAllStringSubmatch(body, -1) {
				if c := strings.Count(body, "\n"+br[1]+":"); c != 1 {
					t.Errorf("branch target %s defined %d times", br[1], c)
				}
			}
			// Parameters: every ld.param reads a declared one.
			for _, ld := range regexp.MustCompile(`ld\.param\.(u\d+)\s+%\w+, \[(\w+)\];`).FindAllStringSubmatch(body, -1) {
				if !strings.Contains(params, ".param ."+ld[1]+" "+ld[2]) {
					t.Errorf("ld.param.%s of %s, which is not declared with that type", ld[1], ld[2])
				}
			}
			// Global memory only through cvta.to.global'ed addresses.
			if strings.Contains(body, ".global") && !strings.Contains(body, "cvta.to.global.u64") {
				t.Error("global access without cvta.to.global")
			}
			if !strings.HasSuffix(strings.TrimSpace(body), "ret;") {
				t.Error("entry does not end with ret")
			}
		})
	}
	if got := strings.Join(names, ","); got != "fill,verify,increment" {
		t.Errorf("entries = %s, want fill,verify,increment", got)
	}
	if !strings.Contains(ptx, "atom.global.add.u32") {
		t.Error("verify and increment must count with atom.global.add.u32")
	}
}

func TestPTXTarget(t *testing.T) {
	for _, tt := range []struct {
		major, minor int
		want         string
	}{{9, 0, "sm_75"}, {8, 0, "sm_75"}, {7, 5, "sm_75"}, {7, 0, "sm_70"}, {6, 1, "sm_61"}, {10, 0, "sm_75"}, {12, 0, "sm_75"}} {
		if got := ptxTarget(tt.major, tt.minor); got != tt.want {
			t.Errorf("ptxTarget(%d, %d) = %s, want %s", tt.major, tt.minor, got, tt.want)
		}
	}
	if !strings.Contains(kernelPTX("sm_61"), ".target sm_61\n") {
		t.Error("kernelPTX ignores its target")
	}
}

func TestParseArgs(t *testing.T) {
	tests := []struct {
		args    []string
		want    config
		wantErr string
	}{
		{args: nil, want: config{gib: 1, interval: 500 * time.Millisecond, seed: 1, block: 256}},
		{
			args: []string{"--gib", "8", "--interval", "250ms", "--ticks", "20", "--device", "1", "--seed", "4294967295", "--exit-on-mismatch"},
			want: config{gib: 8, interval: 250 * time.Millisecond, ticks: 20, device: 1, seed: 0xffffffff, block: 256, exitOnMismatch: true},
		},
		{args: []string{"-gib=0.5", "-block=1024"}, want: config{gib: 0.5, interval: 500 * time.Millisecond, seed: 1, block: 1024}},
		{args: []string{"--selftest"}, want: config{gib: 1, interval: 500 * time.Millisecond, seed: 1, block: 256, selftest: true}},
		{args: []string{"--gib", "-1"}, wantErr: "out of range"},
		{args: []string{"--interval", "0s"}, wantErr: "must be positive"},
		{args: []string{"--ticks", "-2"}, wantErr: "must not be negative"},
		{args: []string{"--seed", "4294967296"}, wantErr: "does not fit"},
		{args: []string{"--block", "100"}, wantErr: "multiple of 32"},
		{args: []string{"extra"}, wantErr: "unexpected arguments"},
		{args: []string{"--nope"}, wantErr: "flag provided but not defined"},
	}
	for _, tt := range tests {
		var stderr bytes.Buffer
		got, err := parseArgs(tt.args, &stderr)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parseArgs(%q) error = %v, want one containing %q", tt.args, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseArgs(%q): %v", tt.args, err)
			continue
		}
		if got != tt.want {
			t.Errorf("parseArgs(%q) = %+v, want %+v", tt.args, got, tt.want)
		}
	}
}

func TestTotalBytes(t *testing.T) {
	for _, tt := range []struct {
		gib  float64
		want uint64
	}{{0, 0}, {1, 1 << 30}, {0.5, 1 << 29}, {8, 8 << 30}, {1e-9, 0}} {
		c := config{gib: tt.gib}
		if got := c.totalBytes(); got != tt.want {
			t.Errorf("totalBytes(%v) = %d, want %d", tt.gib, got, tt.want)
		}
	}
	if got := (config{gib: 0.5}).gibLabel(); got != "0.5" {
		t.Errorf("gibLabel = %q", got)
	}
}

func TestSelftestNeedsNoGPU(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := realMain([]string{"--selftest"}, &stdout, &stderr); code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), ".visible .entry verify(") || !strings.Contains(stderr.String(), "selftest ok") {
		t.Errorf("unexpected selftest output:\n%s\n%s", stdout.String(), stderr.String())
	}
}

func TestCMem(t *testing.T) {
	m, err := newCMem(4096)
	if err != nil {
		t.Fatal(err)
	}
	a := m.int32()
	b := m.uint64()
	*a, *b = -1, 1<<40
	if uintptrOf(b)%8 != 0 {
		t.Error("uint64 not 8-byte aligned")
	}
	k := newKernelArgs(m, 8, 8, 4, 8)
	k.setU64(0, 0x1122334455667788)
	k.setU32(2, 0xabcdef01)
	if got := *(*uint64)(ptrOf(k.ptrs[0])); got != 0x1122334455667788 {
		t.Errorf("param 0 = %#x", got)
	}
	if got := *(*uint32)(ptrOf(k.ptrs[2])); got != 0xabcdef01 {
		t.Errorf("param 2 = %#x", got)
	}
	if s := m.cstring("fill"); cString(unsafeBytes(s, 5)) != "fill" {
		t.Error("cstring round trip")
	}
	defer func() {
		if recover() == nil {
			t.Error("exhausting cmem did not panic")
		}
	}()
	m.bytes(8192)
}
