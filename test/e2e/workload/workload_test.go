package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		parse   func([]string) (any, error)
		args    []string
		want    any
		wantErr bool
	}{
		{"counter defaults", wrap(parseCounter), nil, counterConfig{interval: 100 * time.Millisecond}, false},
		{"counter all", wrap(parseCounter), []string{"--interval", "1s", "--start", "41", "--file", "/x"}, counterConfig{interval: time.Second, start: 41, file: "/x"}, false},
		{"counter zero interval", wrap(parseCounter), []string{"--interval=0s"}, nil, true},
		{"counter positional", wrap(parseCounter), []string{"extra"}, nil, true},
		{"counter unknown flag", wrap(parseCounter), []string{"--nope"}, nil, true},
		{"memhold defaults", wrap(parseMemhold), nil, memholdConfig{mib: 256, seed: 1, interval: time.Second}, false},
		{"memhold all", wrap(parseMemhold), []string{"--mib", "8", "--seed", "7", "--interval", "250ms"}, memholdConfig{mib: 8, seed: 7, interval: 250 * time.Millisecond}, false},
		{"memhold heartbeat", wrap(parseMemhold), []string{"--mib", "8", "--heartbeat", "20ms"}, memholdConfig{mib: 8, seed: 1, interval: time.Second, heartbeat: 20 * time.Millisecond}, false},
		{"memhold bad heartbeat", wrap(parseMemhold), []string{"--heartbeat", "-1s"}, nil, true},
		{"memhold bad mib", wrap(parseMemhold), []string{"--mib", "0"}, nil, true},
		{"files", wrap(parseFiles), []string{"--dir", "/d", "--count", "3"}, filesConfig{dir: "/d", count: 3, interval: time.Second}, false},
		{"files no dir", wrap(parseFiles), []string{"--count", "3"}, nil, true},
		{"exit", wrap(parseExit), []string{"--code", "3", "--after", "2s"}, exitConfig{code: 3, after: 2 * time.Second}, false},
		{"exit code range", wrap(parseExit), []string{"--code", "256"}, nil, true},
		{"sleep forever", wrap(parseSleep), nil, sleepConfig{}, false},
		{"sleep for", wrap(parseSleep), []string{"--for", "5s"}, sleepConfig{duration: 5 * time.Second}, false},
		{"alloc", wrap(parseAlloc), []string{"--mib", "64", "--step", "8"}, allocConfig{mib: 64, step: 8, interval: 10 * time.Millisecond}, false},
		{"alloc bad step", wrap(parseAlloc), []string{"--step", "0"}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.parse(tt.args)
			if tt.wantErr {
				if !errors.As(err, new(usageError)) {
					t.Fatalf("err = %v, want a usage error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func wrap[T any](f func([]string) (T, error)) func([]string) (any, error) {
	return func(args []string) (any, error) { return f(args) }
}

func TestFillDeterministic(t *testing.T) {
	// Reference output of splitmix64 seeded with 0.
	var b [16]byte
	fill(b[:], 0)
	if got := binary.LittleEndian.Uint64(b[:]); got != 0xe220a8397b1dcdaf {
		t.Errorf("first splitmix64(0) output = %#x, want 0xe220a8397b1dcdaf", got)
	}
	if got := binary.LittleEndian.Uint64(b[8:]); got != 0x6e789e6aa1b965f4 {
		t.Errorf("second splitmix64(0) output = %#x, want 0x6e789e6aa1b965f4", got)
	}

	a, c := make([]byte, 1<<20+3), make([]byte, 1<<20+3)
	fill(a, 42)
	fill(c, 42)
	if !bytes.Equal(a, c) {
		t.Fatal("same seed gave different bytes")
	}
	if digest(a) != digest(c) {
		t.Fatal("same bytes gave different digests")
	}
	fill(c, 43)
	if bytes.Equal(a, c) {
		t.Fatal("different seeds gave the same bytes")
	}
	// A shorter fill is a prefix of a longer one.
	short := make([]byte, 13)
	fill(short, 42)
	if !bytes.Equal(short, a[:13]) {
		t.Fatal("fill of 13 bytes is not a prefix of the longer fill")
	}
}

// lines is a concurrency-safe writer for running subcommands in tests.
type lines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// runUntil runs a subcommand until it has printed n lines (or 5s pass), then cancels it.
func runUntil(t *testing.T, n int, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &lines{}
	done := make(chan int, 1)
	go func() {
		cmd := commands()[args[0]]
		err := cmd.run(ctx, args[1:], stdio{in: strings.NewReader(""), out: out, err: out})
		code := 0
		var ee exitError
		if errors.As(err, &ee) {
			code = ee.code
		} else if err != nil {
			t.Errorf("%s: %v", args[0], err)
			code = 1
		}
		done <- code
	}()
	deadline := time.Now().Add(5 * time.Second)
	for strings.Count(out.String(), "\n") < n && time.Now().Before(deadline) {
		select {
		case code := <-done:
			return out.String(), code
		case <-time.After(5 * time.Millisecond):
		}
	}
	cancel()
	// The command may print and record one more line before it sees the
	// cancellation: read the output once it has returned.
	code := <-done
	return out.String(), code
}

func TestCounter(t *testing.T) {
	file := filepath.Join(t.TempDir(), "last")
	out, _ := runUntil(t, 3, "counter", "--interval", "10ms", "--start", "5", "--file", file)
	if !strings.HasPrefix(out, "count=5\ncount=6\ncount=7\n") {
		t.Fatalf("output %q does not start with count=5..7", out)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "count="+strings.TrimSpace(string(b))+"\n") {
		t.Errorf("file holds %q, which was never printed in %q", b, out)
	}
}

func TestMemhold(t *testing.T) {
	out, _ := runUntil(t, 2, "memhold", "--mib", "1", "--seed", "9", "--interval", "10ms")
	buf := make([]byte, 1<<20)
	fill(buf, 9)
	want := digest(buf)
	ls := strings.Split(strings.TrimSpace(out), "\n")
	if len(ls) < 2 || ls[0] != "ready sum="+want || ls[1] != "ok sum="+want+" n=1" {
		t.Fatalf("output %q, want ready and ok lines with sum %s", out, want)
	}
}

func TestMemholdHeartbeat(t *testing.T) {
	out, _ := runUntil(t, 4, "memhold", "--mib", "1", "--interval", "1h", "--heartbeat", "5ms")
	ls := strings.Split(strings.TrimSpace(out), "\n")
	if len(ls) < 4 || !strings.HasPrefix(ls[0], "ready sum=") || ls[1] != "beat n=1" || ls[3] != "beat n=3" {
		t.Fatalf("output %q, want ready then beat n=1..3", out)
	}
}

func TestFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "d")
	out, _ := runUntil(t, 2, "files", "--dir", dir, "--count", "3", "--interval", "10ms")
	if !strings.HasPrefix(out, "written\nfiles-ok\n") {
		t.Fatalf("output %q, want written then files-ok", out)
	}
	if err := os.WriteFile(filepath.Join(dir, fileName(1)), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if bad := verifyFiles(dir, 3); bad != fileName(1) {
		t.Errorf("verifyFiles = %q, want %q", bad, fileName(1))
	}
}

func TestExit(t *testing.T) {
	if out, code := runUntil(t, 5, "exit", "--code", "7"); code != 7 || out != "exiting code=7\n" {
		t.Errorf("exit --code 7: code %d output %q", code, out)
	}
	if _, code := runUntil(t, 5, "exit"); code != 0 {
		t.Errorf("exit: code %d, want 0", code)
	}
}

func TestCat(t *testing.T) {
	var out bytes.Buffer
	code := run(context.Background(), []string{"cat"}, stdio{in: strings.NewReader("a\nb\n"), out: &out, err: &out})
	if code != 0 || out.String() != "a\nb\n" {
		t.Errorf("cat: code %d output %q", code, out.String())
	}
}

func TestRunUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"nope"}, {"counter", "--interval", "x"}} {
		var out bytes.Buffer
		if code := run(context.Background(), args, stdio{in: strings.NewReader(""), out: &out, err: &out}); code != exitCodeUsage {
			t.Errorf("run(%q) = %d, want %d; output %q", args, code, exitCodeUsage, out.String())
		}
	}
	if err := parseFlags(flag.NewFlagSet("x", flag.ContinueOnError), []string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: err %v, want flag.ErrHelp", err)
	}
}

func TestSignalName(t *testing.T) {
	if got := signalName(10); got != "SIGUSR1" {
		t.Errorf("signalName(10) = %q, want SIGUSR1", got)
	}
}
