package shim

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/checkpoint"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/cuda"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/process"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/process/processtest"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/runsc"
)

// The checkpoint of a GPU container, over a fake runsc (package processtest)
// and a fake GPU discovery: there is no GPU in CI. The real thing runs on a
// GPU host (test/e2e/gpu).

// fakeGPUs is a host's GPU snapshot.
type fakeGPUs struct{ host cuda.HostGPUs }

func (f fakeGPUs) Snapshot(context.Context) (cuda.HostGPUs, error) { return f.host, nil }

func h200Host(driver string) cuda.HostGPUs {
	return cuda.HostGPUs{DriverVersion: driver, Source: "nvml", Devices: []cuda.Device{{Index: 0, Minor: 0, UUID: "GPU-00000000-0000-0000-0000-00000000000a", Name: "NVIDIA H200"}}}
}

// gpuFixture is a running GPU container (paused, as containerd leaves it
// before a checkpoint) with an empty image directory.
type gpuFixture struct {
	c   *container
	f   *processtest.FakeRuntime
	dir string
}

func newGPUFixture(t *testing.T, driver string, annotations map[string]string, cfg *Config) *gpuFixture {
	t.Helper()
	ctx := context.Background()
	bdir := t.TempDir()
	fakeRunsc := filepath.Join(bdir, "runsc")
	if err := os.WriteFile(fakeRunsc, []byte("#!/bin/sh\necho 'runsc version test-1'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	x := &gpuFixture{f: processtest.NewFakeRuntime(t), dir: filepath.Join(t.TempDir(), "img")}
	exited := make(chan process.Exited, 4)
	x.c = &container{
		id:     "c1",
		bundle: bundle(bdir),
		spec:   &specs.Spec{Process: &specs.Process{Args: []string{"/app"}}, Annotations: annotations},
		config: cfg,
		rt:     &runsc.Runsc{Binary: fakeRunsc},
		gpu:    &gpuContainer{discover: fakeGPUs{h200Host(driver)}, events: &eventSink{ch: make(chan any, 16), done: make(chan struct{})}},
	}
	x.c.init = process.NewInit(process.InitConfig{ID: "c1", Bundle: bdir, Runtime: x.f, Exits: process.NewExitHub(), Exited: exited})
	go func() {
		for e := range exited {
			e.Process.SetExited(e.Status)
		}
	}()
	if err := x.c.init.Create(ctx); err != nil {
		t.Fatal(err)
	}
	if err := x.c.init.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := x.c.init.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	return x
}

// A leave-running checkpoint of a GPU container resumes the sandbox (runsc
// brings the CUDA state back only then) and pauses it again before it
// reports success; the image records that its CUDA state restores.
func TestGPUCheckpointVerifiesResume(t *testing.T) {
	x := newGPUFixture(t, "580.159.04", nil, &Config{})
	if err := x.c.checkpoint(context.Background(), checkpointRequest{Dir: x.dir}, nil); err != nil {
		t.Fatal(err)
	}
	if got := x.f.Verbs(); !strings.HasSuffix(got, "checkpoint resume pause") {
		t.Fatalf("runsc ran %q, want the checkpoint, a resume and a pause", got)
	}
	meta, err := checkpoint.Read(x.dir)
	if err != nil {
		t.Fatal(err)
	}
	if meta.GPU == nil || !meta.GPU.RestoreVerified || meta.GPU.DriverVersion != "580.159.04" {
		t.Fatalf("GPU metadata %+v", meta.GPU)
	}
}

// When the CUDA state does not come back (the resume fails: CUDA IPC on
// driver 580), the checkpoint fails, says why and what it did, removes the
// image, and the container is stopped instead of being left paused (its
// next resume would crash the sentry).
func TestGPUCheckpointResumeFailure(t *testing.T) {
	x := newGPUFixture(t, "580.159.04", nil, &Config{})
	x.f.Fail("resume", errors.New("resume failed: cuda-checkpoint: error toggling CUDA in process ID 7: restore failed: CUDA_ERROR_INVALID_VALUE; hint: ... CUDA IPC ..."))
	err := x.c.checkpoint(context.Background(), checkpointRequest{Dir: x.dir}, nil)
	for _, want := range []string{"did not come back onto its GPUs", "was stopped", "image removed", "CUDA_ERROR_INVALID_VALUE", AnnotationCUDAIPC} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("err = %v, want it to say %q", err, want)
		}
	}
	if entries, _ := os.ReadDir(x.dir); len(entries) != 0 {
		t.Fatalf("the image directory holds %v", entries)
	}
	if st, _ := x.c.init.Status(context.Background()); st != process.StatusStopped {
		t.Fatalf("the container is %s, want stopped", st)
	}
	if got := x.f.Verbs(); strings.Count(got, "resume") != 1 {
		t.Fatalf("runsc ran %q: more than one resume", got)
	}
}

// An exit checkpoint stops the sandbox right after the save by default, the
// image saying its CUDA restore is unverified; cuda.verify_exit_checkpoint
// resumes it first to verify the CUDA restore.
func TestGPUExitCheckpointVerification(t *testing.T) {
	for _, tc := range []struct {
		name       string
		cfg        *Config
		wantVerbs  string
		wantVerify bool
	}{
		{"default", &Config{}, "checkpoint", false},
		{"verify", &Config{CUDA: CUDAConfig{VerifyExitCheckpoint: true}}, "checkpoint resume", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := newGPUFixture(t, "580.159.04", nil, tc.cfg)
			if err := x.c.checkpoint(context.Background(), checkpointRequest{Dir: x.dir, Exit: true}, nil); err != nil {
				t.Fatal(err)
			}
			if got := x.f.Verbs(); !strings.HasSuffix(got, tc.wantVerbs) {
				t.Fatalf("runsc ran %q, want it to end with %q", got, tc.wantVerbs)
			}
			meta, err := checkpoint.Read(x.dir)
			if err != nil {
				t.Fatal(err)
			}
			if meta.GPU.RestoreVerified != tc.wantVerify {
				t.Fatalf("restore_verified = %t, want %t", meta.GPU.RestoreVerified, tc.wantVerify)
			}
		})
	}
}

// A container that declares CUDA IPC is refused before anything is toggled
// on a driver that cannot checkpoint it, and allowed from r610.
func TestGPUCheckpointCUDAIPC(t *testing.T) {
	ipc := map[string]string{AnnotationCUDAIPC: "true"}
	x := newGPUFixture(t, "580.159.04", ipc, &Config{})
	err := x.c.checkpoint(context.Background(), checkpointRequest{Dir: x.dir}, nil)
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "CUDA IPC") || !strings.Contains(err.Error(), "keeps running") {
		t.Fatalf("err = %v, want FailedPrecondition about CUDA IPC", err)
	}
	if got := x.f.Verbs(); strings.Contains(got, "checkpoint") {
		t.Fatalf("runsc ran %q", got)
	}
	y := newGPUFixture(t, "610.10", ipc, &Config{})
	if err := y.c.checkpoint(context.Background(), checkpointRequest{Dir: y.dir}, nil); err != nil {
		t.Fatalf("driver 610: %v", err)
	}
}
