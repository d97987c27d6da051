package shim

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestToggleToolMountedReadOnly: whatever the spec brings, the CUDA toggle tool that
// runsc runs inside the sandbox is the configured host binary, bind-mounted
// read-only, nosuid and nodev at ToggleToolPath, exactly once. A container's own
// (writable) mount at that path is replaced, so the container cannot substitute or
// modify the program runsc executes during a checkpoint.
func TestToggleToolMountedReadOnly(t *testing.T) {
	dir := t.TempDir()
	tool := filepath.Join(dir, "cuda-checkpoint")
	if err := os.WriteFile(tool, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	spec := gpuSpec()
	spec.Mounts = []specs.Mount{
		{Destination: ToggleToolPath, Type: "bind", Source: "/var/lib/evil/tool", Options: []string{"rbind", "rw"}},
		{Destination: "/data", Type: "bind", Source: dir, Options: []string{"rbind", "rw"}},
	}
	if _, err := newGPU(context.Background(), &Config{CUDA: CUDAConfig{ToggleTool: tool}}, spec, nil); err != nil {
		t.Fatal(err)
	}
	var found []specs.Mount
	for _, m := range spec.Mounts {
		if m.Destination == ToggleToolPath {
			found = append(found, m)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d mounts at %s, want exactly one: %+v", len(found), ToggleToolPath, spec.Mounts)
	}
	m := found[0]
	if m.Source != tool || m.Type != "bind" {
		t.Errorf("toggle tool mount %+v, want a bind of %s", m, tool)
	}
	for _, o := range []string{"ro", "nosuid", "nodev"} {
		if !slices.Contains(m.Options, o) {
			t.Errorf("toggle tool mount options %v lack %q", m.Options, o)
		}
	}
	if slices.Contains(m.Options, "rw") {
		t.Errorf("toggle tool mount options %v include rw", m.Options)
	}
}

// TestToggleToolMissing: a GPU container whose toggle tool is missing, not
// executable, or not a regular file fails at create, before runsc runs, with
// FailedPrecondition naming the path and what to do. With no tool configured the
// shim looks next to its own binary.
func TestToggleToolMissing(t *testing.T) {
	dir := t.TempDir()
	noexec := filepath.Join(dir, "noexec")
	if err := os.WriteFile(noexec, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, tool, wantPath string
	}{
		{"missing", filepath.Join(dir, "absent"), filepath.Join(dir, "absent")},
		{"not executable", noexec, noexec},
		{"a directory", dir, dir},
		{"default next to the shim", "", filepath.Join(filepath.Dir(self), toggleToolName)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.tool == "" {
				if _, err := os.Stat(tc.wantPath); err == nil {
					t.Skipf("%s exists", tc.wantPath)
				}
			}
			spec := gpuSpec()
			_, err := newGPU(context.Background(), &Config{CUDA: CUDAConfig{ToggleTool: tc.tool}}, spec, nil)
			if !errdefs.IsFailedPrecondition(err) {
				t.Fatalf("err = %v, want FailedPrecondition", err)
			}
			for _, want := range []string{tc.wantPath, "cuda.toggle_tool", "install cuda-checkpoint next to the shim"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
			if len(spec.Mounts) != 0 {
				t.Errorf("the spec was changed although the tool is missing: %+v", spec.Mounts)
			}
		})
	}
}
