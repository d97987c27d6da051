package harness

import (
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseToolEnv(t *testing.T) {
	env := map[string]string{
		"RCUDA_TOOLS":                  "/tools",
		"RCUDA_CONTAINERD_VERSIONS":    "2.4.2 2.3.7",
		"RCUDA_CONTAINERD_2_4":         "/tools/c24/containerd",
		"RCUDA_CTR_2_4":                "/tools/c24/ctr",
		"RCUDA_CONTAINERD_2_4_VERSION": "2.4.2",
		"RCUDA_CONTAINERD_2_3":         "/tools/c23/containerd",
		"RCUDA_CTR_2_3":                "/tools/c23/ctr",
		"RCUDA_CONTAINERD_2_3_VERSION": "2.3.7",
		"RCUDA_SHIM_RUNC_V2":           "/tools/shim",
		"RCUDA_RUNSC":                  "/tools/runsc",
		"RCUDA_RUNSC_VERSION":          "0.0.0-x",
		"RCUDA_CRICTL":                 "/tools/crictl",
		"RCUDA_NERDCTL":                "/tools/nerdctl",
		"RCUDA_CNI_BIN_DIR":            "/tools/cni",
		"RCUDA_BUSYBOX":                "/bin/busybox",
		"RCUDA_CRIU":                   "/usr/sbin/criu",
	}
	all := func(string) bool { return true }
	ts, err := parseToolEnv(env, all)
	if err != nil {
		t.Fatal(err)
	}
	if ts.DefaultContainerd != "2.4.2" || ts.Containerd["2.3.7"].Ctr != "/tools/c23/ctr" || ts.Runsc != "/tools/runsc" {
		t.Errorf("unexpected tool set %+v", ts)
	}
	if ct, err := ts.ContainerdVersion(""); err != nil || ct.Containerd != "/tools/c24/containerd" {
		t.Errorf("default containerd = %+v, %v", ct, err)
	}
	if _, err := ts.ContainerdVersion("1.7.0"); err == nil || !strings.Contains(err.Error(), "make tools") {
		t.Errorf("unknown version error %v should say to run make tools", err)
	}

	// nerdctl is optional; runsc is not.
	ts, err = parseToolEnv(env, func(p string) bool { return p != "/tools/nerdctl" })
	if err != nil || ts.Nerdctl != "" {
		t.Errorf("without nerdctl: %v, nerdctl %q", err, ts.Nerdctl)
	}
	_, err = parseToolEnv(env, func(p string) bool { return p != "/tools/runsc" })
	if err == nil || !strings.Contains(err.Error(), "runsc") || !strings.Contains(err.Error(), "run `make tools`") {
		t.Errorf("without runsc: err %v, want one naming runsc and `make tools`", err)
	}
}

func TestToolsScriptEnv(t *testing.T) {
	// The harness and the Makefile read the same script; check it answers.
	ts, err := Tools()
	if err != nil && !strings.Contains(err.Error(), "make tools") {
		t.Fatalf("Tools() error %v does not say what to do", err)
	}
	if ts.Dir == "" || len(ts.Containerd) == 0 {
		t.Fatalf("Tools() returned no paths: %+v (%v)", ts, err)
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		`/a/b`:          "/a/b",
		`/a\040b`:       "/a b",
		`/a\011b\134c`:  "/a\tb\\c",
		`/trailing\04`:  `/trailing\04`,
		`/not\999octal`: `/not\999octal`,
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLineBuffer(t *testing.T) {
	b := NewLineBuffer()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for _, chunk := range []string{"count=1\ncou", "nt=2\r\n", "count=3\npartial"} {
			time.Sleep(10 * time.Millisecond)
			_, _ = b.Write([]byte(chunk))
		}
	}()
	line, i := b.WaitForFrom(t, 1, `^count=\d+$`, 5*time.Second)
	if line != "count=2" || i != 1 {
		t.Errorf("WaitForFrom(1) = %q, %d; want count=2, 1", line, i)
	}
	if got := b.WaitFor(t, `=3$`, 5*time.Second); got != "count=3" {
		t.Errorf("WaitFor = %q", got)
	}
	wg.Wait()
	if got := b.Lines(); !reflect.DeepEqual(got, []string{"count=1", "count=2", "count=3"}) {
		t.Errorf("Lines = %q", got)
	}
	if b.String() != "count=1\ncount=2\ncount=3\npartial" {
		t.Errorf("String = %q", b.String())
	}
}

func TestWaitForLine(t *testing.T) {
	if got := WaitForLine(t, strings.NewReader("a\nready sum=ab\nb\n"), `^ready sum=`, time.Second); got != "ready sum=ab" {
		t.Errorf("WaitForLine = %q", got)
	}
	path := filepath.Join(t.TempDir(), "f")
	go func() {
		time.Sleep(20 * time.Millisecond)
		_ = os.WriteFile(path, []byte("x\ncount=12\ncount=1"), 0o644)
	}()
	if got := WaitForFileLine(t, path, `^count=1`, 5*time.Second); got != "count=12" {
		t.Errorf("WaitForFileLine = %q; the incomplete last line must not match", got)
	}
}

func TestRandomID(t *testing.T) {
	a, b := RandomID("c"), RandomID("c")
	if a == b || !strings.HasPrefix(a, "c-") || len(a) != len("c-")+8 {
		t.Errorf("RandomID gave %q and %q", a, b)
	}
}

func TestProcessesAndMounts(t *testing.T) {
	dir := t.TempDir()
	procs, err := processesReferencing(dir)
	if err != nil || len(procs) != 0 {
		t.Errorf("processesReferencing(fresh dir) = %v, %v", procs, err)
	}
	mounts, err := mountsUnder(dir)
	if err != nil || len(mounts) != 0 {
		t.Errorf("mountsUnder(fresh dir) = %v, %v", mounts, err)
	}
	if processAlive(1<<22 + 1) {
		t.Error("an impossible PID is alive")
	}
	if !processAlive(os.Getpid()) {
		t.Error("this process is not alive")
	}
}

func TestBaseDirRefusesTmp(t *testing.T) {
	t.Setenv("RCUDA_E2E_DIR", "/tmp/x")
	if _, err := BaseDir(); err == nil {
		t.Error("BaseDir accepted a directory under /tmp")
	}
}

func TestHasGoSource(t *testing.T) {
	dir := t.TempDir()
	if hasGoSource(dir) {
		t.Error("empty dir has Go source")
	}
	_ = os.WriteFile(filepath.Join(dir, "x_test.go"), nil, 0o644)
	if hasGoSource(dir) {
		t.Error("a test file counts as source")
	}
	_ = os.WriteFile(filepath.Join(dir, "main.go"), nil, 0o644)
	if !hasGoSource(dir) {
		t.Error("main.go not seen")
	}
}

func TestShimSockets(t *testing.T) {
	p := Process{PID: 1, Cmdline: []string{"/x/containerd-shim-runc-v2", "-namespace", "ns", "-id", "c1", "-address", "/var/lib/rcuda-e2e/abcd/c.sock", "-debug"}}
	got := ShimSockets(p)
	if len(got) != 2 || !strings.HasPrefix(got[0], "/run/containerd/s/") || got[0] == got[1] {
		t.Errorf("ShimSockets = %q", got)
	}
	if ShimSockets(Process{Cmdline: []string{"runsc", "--root=/x"}}) != nil {
		t.Error("a non-shim process has shim sockets")
	}
}

func TestOverlaps(t *testing.T) {
	cidr := func(s string) *net.IPNet {
		ip, n, err := net.ParseCIDR(s)
		if err != nil {
			t.Fatal(err)
		}
		n.IP = ip // as an interface address: host bits set
		return n
	}
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"10.88.7.0/24", "10.88.7.1/24", true},
		{"10.88.7.0/24", "10.88.0.0/16", true},
		{"10.88.7.0/24", "10.88.8.1/24", false},
		{"10.88.7.0/24", "192.0.2.2/24", false},
	} {
		if got := overlaps(cidr(c.a), cidr(c.b)); got != c.want {
			t.Errorf("overlaps(%s, %s) = %v", c.a, c.b, got)
		}
	}
	routes, err := ipv4Routes()
	if err != nil || len(routes) == 0 {
		t.Fatalf("routes %v, %v", routes, err)
	}
	if dev, err := RouteDevice(routes[len(routes)-1].dst.String()); err != nil || dev != routes[len(routes)-1].dev {
		t.Errorf("RouteDevice(%s) = %q, %v; want %q", routes[len(routes)-1].dst, dev, err, routes[len(routes)-1].dev)
	}
}
