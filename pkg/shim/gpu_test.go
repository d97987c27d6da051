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

	if g, err := prepareGPU(ctx, cfg, &specs.Spec{Process: &specs.Process{}}); g != nil || err != nil {
		t.Fatalf("a spec without GPUs: %v, %v", g, err)
	}

	spec := gpuSpec()
	g, err := prepareGPU(ctx, cfg, spec)
	if err != nil || g == nil {
		t.Fatalf("prepareGPU: %v, %v", g, err)
	}
	if g.toolInContainer != ToggleToolPath || !slices.Equal(g.visible, []int{0}) {
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
	if _, err := prepareGPU(ctx, cfg, again); err != nil || !reflect.DeepEqual(again, spec) {
		t.Errorf("preparing twice changed the spec:\n%+v\n%+v", again, spec)
	}

	setDeviceMap(spec, "GPU-a=GPU-b")
	if !slices.Contains(spec.Process.Env, "CUDA_CHECKPOINT_DEVICE_MAP=GPU-a=GPU-b") {
		t.Errorf("device map not in env: %q", spec.Process.Env)
	}
}

func TestPrepareGPUDriverLibsFromCDI(t *testing.T) {
	dir := t.TempDir()
	tool := filepath.Join(dir, "cuda-checkpoint")
	os.WriteFile(tool, []byte("#!/bin/true\n"), 0o755)
	spec := gpuSpec()
	spec.Mounts = []specs.Mount{{Destination: "/usr/lib/x86_64-linux-gnu/libcuda.so.1", Source: "/usr/lib/x86_64-linux-gnu/libcuda.so.580.159.04", Type: "bind"}}
	cfg := &Config{CUDA: CUDAConfig{ToggleTool: tool, DriverLibDir: dir}}
	if _, err := prepareGPU(context.Background(), cfg, spec); err != nil {
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
			_, err := prepareGPU(context.Background(), &tc.cfg, gpuSpec())
			if !errdefs.IsFailedPrecondition(err) {
				t.Fatalf("err = %v, want FailedPrecondition", err)
			}
		})
	}
}

func TestUntoggledCUDAHint(t *testing.T) {
	pma := errors.New("checkpoint failed: encoding error: Can't save pma with non-MemoryFile of type *nvproxy.frontendFDMemmapFile")
	if h := untoggledCUDAHint(nil, errors.New("disk full")); h != "" {
		t.Errorf("hint for an unrelated error: %q", h)
	}
	if h := untoggledCUDAHint(nil, pma); !strings.Contains(h, "not detected as a GPU container") {
		t.Errorf("hint without GPU setup: %q", h)
	}
	g := &gpuSetup{toolInContainer: "/.runsc-cuda/cuda-checkpoint"}
	if h := untoggledCUDAHint(g, pma); !strings.Contains(h, "/.runsc-cuda/cuda-checkpoint --get-state --pid") {
		t.Errorf("hint with GPU setup: %q", h)
	}
}
