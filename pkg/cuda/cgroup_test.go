package cuda

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/cgroups/v3/cgroup1"
)

func writeProcs(t *testing.T, dir string, pids string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(pids), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCgroupPidsV2(t *testing.T) {
	root := t.TempDir()
	// /k8s.io/abc holds the sandbox; a nested cgroup holds more; a sibling
	// cgroup must not be counted.
	writeProcs(t, filepath.Join(root, "k8s.io", "abc"), "100\n101\n")
	writeProcs(t, filepath.Join(root, "k8s.io", "abc", "nested"), "205\n100\n")
	writeProcs(t, filepath.Join(root, "k8s.io", "other"), "300\n")
	writeProcs(t, filepath.Join(root, "system.slice", "containerd-xyz.scope"), "400\n")
	fs := cgroupFS{modeSet: true, unified: true, v2Mount: root}

	tests := []struct {
		path    string
		want    []int
		wantErr string
	}{
		{path: "/k8s.io/abc", want: []int{100, 101, 205}},
		{path: "/k8s.io/abc/nested", want: []int{100, 205}},
		{path: "/system.slice/containerd-xyz.scope", want: []int{400}},
		{path: "/k8s.io/gone", wantErr: "does not exist"},
	}
	for _, tt := range tests {
		got, err := fs.v2Pids(tt.path)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("pids(%q) error = %v, want one containing %q", tt.path, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("pids(%q): %v", tt.path, err)
			continue
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("pids(%q) = %v, want %v", tt.path, got, tt.want)
		}
	}
}

func TestCgroupPidsV1(t *testing.T) {
	root := t.TempDir()
	// Only the pids controller has the cgroup (memory lacks it): the lookup
	// must fall through to pids.
	writeProcs(t, filepath.Join(root, "pids", "default", "ctr"), "7\n8\n")
	writeProcs(t, filepath.Join(root, "pids", "default", "ctr", "child"), "9\n")
	if err := os.MkdirAll(filepath.Join(root, "memory"), 0o755); err != nil {
		t.Fatal(err)
	}
	hierarchy := func() ([]cgroup1.Subsystem, error) {
		return []cgroup1.Subsystem{cgroup1.NewMemory(root), cgroup1.NewPids(root)}, nil
	}
	fs := cgroupFS{modeSet: true, unified: false, v1: hierarchy}
	got, err := fs.v1Pids(cgroup1.StaticPath("/default/ctr"), "/default/ctr")
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{7, 8, 9}; !slices.Equal(got, want) {
		t.Errorf("pids = %v, want %v", got, want)
	}
	_, err = fs.v1Pids(cgroup1.StaticPath("/default/gone"), "/default/gone")
	if !errors.Is(err, cgroup1.ErrCgroupDeleted) || !strings.Contains(err.Error(), "has the container exited") {
		t.Errorf("pids(missing) = %v, want ErrCgroupDeleted with a hint", err)
	}
}

func TestCgroupPidsOfSelf(t *testing.T) {
	// Runs against the real cgroup filesystem of the test machine: the
	// test process must be in its own cgroup's list.
	pids, err := PidsInSameCgroup(os.Getpid())
	if err != nil {
		t.Skipf("cgroup filesystem not readable here: %v", err)
	}
	if !slices.Contains(pids, os.Getpid()) {
		t.Errorf("PidsInSameCgroup(self) = %v, does not contain %d", pids, os.Getpid())
	}
}
