package shim

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func gpuSpec() *specs.Spec {
	return &specs.Spec{
		Process: &specs.Process{Env: []string{"PATH=/bin", "LD_LIBRARY_PATH=/opt/lib"}},
		Linux: &specs.Linux{Devices: []specs.LinuxDevice{
			{Path: "/dev/nvidiactl", Type: "c", Major: 195, Minor: 255},
			{Path: "/dev/nvidia0", Type: "c", Major: 195, Minor: 0},
		}},
	}
}

func TestPrepareGPU(t *testing.T) {
	dir := t.TempDir()
	tool := filepath.Join(dir, "cuda-checkpoint")
	os.WriteFile(tool, []byte("#!/bin/true\n"), 0o755)
	libs := filepath.Join(dir, "lib64")
	os.Mkdir(libs, 0o755)
	cfg := &Config{CUDA: CUDAConfig{ToggleTool: tool, DriverLibDir: libs, LockTimeout: "2s"}}
	ctx := context.Background()

	if g, err := newGPU(ctx, cfg, &specs.Spec{Process: &specs.Process{}}, nil); err != nil || g.enabled() {
		t.Fatalf("a spec without GPUs: %v, %v", g, err)
	}

	spec := gpuSpec()
	h, err := newGPU(ctx, cfg, spec, nil)
	if err != nil || !h.enabled() {
		t.Fatalf("newGPU: %v, %v", h, err)
	}
	if g := h.(*gpuContainer); !slices.Equal(g.visible, []int{0}) {
		t.Errorf("setup = %+v", g)
	}
	want := []specs.Mount{
		{Destination: ToggleToolPath, Type: "bind", Source: tool, Options: []string{"bind", "ro", "nosuid", "nodev"}},
		{Destination: DriverLibPath, Type: "bind", Source: libs, Options: []string{"rbind", "ro", "nosuid", "nodev"}},
	}
	if !reflect.DeepEqual(spec.Mounts, want) {
		t.Errorf("mounts = %+v", spec.Mounts)
	}
	wantEnv := []string{"PATH=/bin", "LD_LIBRARY_PATH=" + DriverLibPath + ":/opt/lib", "CUDA_CHECKPOINT_LOCK_TIMEOUT_MS=2000"}
	if !slices.Equal(spec.Process.Env, wantEnv) {
		t.Errorf("env = %q", spec.Process.Env)
	}
	// Deterministic: a restore prepares the same spec again, so runsc's
	// comparison of the mounts passes.
	again := gpuSpec()
	again.Mounts = slices.Clone(spec.Mounts)
	again.Process.Env = slices.Clone(spec.Process.Env)
	if _, err := newGPU(ctx, cfg, again, nil); err != nil || !reflect.DeepEqual(again, spec) {
		t.Errorf("preparing twice changed the spec:\n%+v\n%+v", again, spec)
	}
}

func TestPrepareGPUDriverLibsFromCDI(t *testing.T) {
	dir := t.TempDir()
	tool := filepath.Join(dir, "cuda-checkpoint")
	os.WriteFile(tool, []byte("#!/bin/true\n"), 0o755)
	spec := gpuSpec()
	spec.Mounts = []specs.Mount{{Destination: "/usr/lib/x86_64-linux-gnu/libcuda.so.1", Source: "/usr/lib/x86_64-linux-gnu/libcuda.so.580.159.04", Type: "bind"}}
	cfg := &Config{CUDA: CUDAConfig{ToggleTool: tool, DriverLibDir: dir}}
	if _, err := newGPU(context.Background(), cfg, spec, nil); err != nil {
		t.Fatal(err)
	}
	for _, m := range spec.Mounts {
		if m.Destination == DriverLibPath {
			t.Errorf("driver libraries mounted although CDI provides them: %+v", spec.Mounts)
		}
	}
}

func TestPrepareGPUErrors(t *testing.T) {
	dir := t.TempDir()
	noexec := filepath.Join(dir, "tool")
	os.WriteFile(noexec, []byte("x"), 0o644)
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"missing tool", Config{CUDA: CUDAConfig{ToggleTool: filepath.Join(dir, "absent")}}},
		{"tool not executable", Config{CUDA: CUDAConfig{ToggleTool: noexec}}},
		{"lib dir missing", Config{CUDA: CUDAConfig{ToggleTool: "/bin/true", DriverLibDir: filepath.Join(dir, "nolibs")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newGPU(context.Background(), &tc.cfg, gpuSpec(), nil)
			if !errdefs.IsFailedPrecondition(err) {
				t.Fatalf("err = %v, want FailedPrecondition", err)
			}
		})
	}
}

func TestUntoggledCUDAHint(t *testing.T) {
	pma := errors.New("checkpoint failed: encoding error: Can't save pma with non-MemoryFile of type *nvproxy.frontendFDMemmapFile")
	if h := (noGPU{}).explain(errors.New("disk full")); h != "" {
		t.Errorf("hint for an unrelated error: %q", h)
	}
	if h := (noGPU{}).explain(pma); !strings.Contains(h, "not detected as a GPU container") {
		t.Errorf("hint without GPU setup: %q", h)
	}
	if h := (&gpuContainer{}).explain(pma); !strings.Contains(h, "/.runsc-cuda/cuda-checkpoint --get-state --pid") {
		t.Errorf("hint with GPU setup: %q", h)
	}
}
