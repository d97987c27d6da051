package process

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/process/processtest"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/runsc"
)

// These tests drive the init state machine over a fake runsc (fake_test.go).

func started(t *testing.T) (*Init, *processtest.FakeRuntime, chan Exited) {
	t.Helper()
	f := processtest.NewFakeRuntime(t)
	p, exited := newTestInit(t, f, nil)
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return p, f, exited
}

func status(p *Init) string { st, _ := p.Status(context.Background()); return st }

func waitExit(t *testing.T, p *Init) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Wait(ctx); err != nil {
		t.Fatalf("the exit was not recorded: %v (state %s)", err, status(p))
	}
}

// A paused container refuses a second pause, without calling runsc: a
// client that pauses, checkpoints and resumes (ctr container checkpoint)
// would resume a task its user had paused.
func TestPauseOfPausedIsRefused(t *testing.T) {
	p, f, _ := started(t)
	ctx := context.Background()
	if err := p.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	err := p.Pause(ctx)
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "already paused") {
		t.Fatalf("second pause: %v, want FailedPrecondition saying it is already paused", err)
	}
	if got := f.Verbs(); got != "create start pause" {
		t.Fatalf("runsc ran %q", got)
	}
	if status(p) != StatusPaused {
		t.Fatalf("state %s", status(p))
	}
}

// An exit checkpoint freezes the sandbox (the state says paused meanwhile),
// saves it, and stops it only at Commit, once the image is complete.
func TestExitCheckpoint(t *testing.T) {
	p, f, exited := started(t)
	recordExits(p, exited)
	ctx := context.Background()
	s, err := p.Checkpoint(ctx, CheckpointConfig{Runsc: runsc.CheckpointOpts{ImagePath: "/img"}, Exit: true})
	if err != nil {
		t.Fatal(err)
	}
	if st := status(p); st != StatusPaused {
		t.Fatalf("state between save and commit %s, want paused", st)
	}
	if err := s.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if st := status(p); st != StatusStopped || p.ExitStatus() != 137 {
		t.Fatalf("after the exit checkpoint: %s, %d", st, p.ExitStatus())
	}
	if got := f.Verbs(); got != "create start pause checkpoint" {
		t.Fatalf("runsc ran %q", got)
	}
}

// A failed save leaves the container as it was: a sandbox runsc left frozen
// is thawed, and the error says the container keeps running.
func TestFailedCheckpointRecovers(t *testing.T) {
	p, f, _ := started(t)
	f.Fail("checkpoint", errors.New("disk full"))
	f.RunscState = StatusPaused
	_, err := p.Checkpoint(context.Background(), CheckpointConfig{Exit: true})
	if err == nil || !strings.Contains(err.Error(), "disk full") || !strings.Contains(err.Error(), "the container keeps running") {
		t.Fatalf("err = %v", err)
	}
	if st := status(p); st != StatusRunning {
		t.Fatalf("state %s, want running", st)
	}
	if got := f.Verbs(); got != "create start pause checkpoint state resume" {
		t.Fatalf("runsc ran %q", got)
	}
	// The checkpoint lock is free again.
	f.Fail("checkpoint", nil)
	s, err := p.Checkpoint(context.Background(), CheckpointConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// A second checkpoint while one is in progress is refused.
func TestCheckpointInProgress(t *testing.T) {
	p, _, _ := started(t)
	s, err := p.Checkpoint(context.Background(), CheckpointConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Checkpoint(context.Background(), CheckpointConfig{}); !errors.Is(err, ErrCheckpointInProgress) {
		t.Fatalf("second checkpoint: %v", err)
	}
	if err := s.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// A checkpoint with Resume (a GPU container: runsc brings its CUDA state back
// only when the sandbox resumes) freezes for the save, resumes at Commit and
// pauses again what was paused.
func TestCheckpointResumeAndPauseAgain(t *testing.T) {
	p, f, _ := started(t)
	ctx := context.Background()
	if err := p.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	s, err := p.Checkpoint(ctx, CheckpointConfig{Resume: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := f.Verbs(); got != "create start pause checkpoint resume pause" {
		t.Fatalf("runsc ran %q", got)
	}
	if st := status(p); st != StatusPaused {
		t.Fatalf("state %s, want paused as before", st)
	}
	// A running container is frozen for the save and runs again after.
	p2, f2, _ := started(t)
	s, err = p2.Checkpoint(ctx, CheckpointConfig{Resume: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := f2.Verbs(); got != "create start pause checkpoint resume" || status(p2) != StatusRunning {
		t.Fatalf("runsc ran %q, state %s", got, status(p2))
	}
}

// When the resume after the save fails (the CUDA state did not come back),
// the container is stopped, never resumed a second time (runsc's second
// resume crashes the sentry), and Commit says so.
func TestCheckpointResumeFailureStops(t *testing.T) {
	p, f, exited := started(t)
	recordExits(p, exited)
	ctx := context.Background()
	if err := p.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	s, err := p.Checkpoint(ctx, CheckpointConfig{Resume: true})
	if err != nil {
		t.Fatal(err)
	}
	f.Fail("resume", errors.New("cuCheckpointProcessRestore: CUDA_ERROR_INVALID_VALUE"))
	err = s.Commit(ctx)
	if err == nil || !strings.Contains(err.Error(), "was stopped") || !strings.Contains(err.Error(), "CUDA_ERROR_INVALID_VALUE") {
		t.Fatalf("commit: %v", err)
	}
	waitExit(t, p)
	if got := f.Verbs(); strings.Count(got, "resume") != 1 {
		t.Fatalf("runsc ran %q: resumed more than once", got)
	}
}

// A resume that fails for another reason than the container's state leaves
// a sandbox that must not be resumed again: it is stopped.
func TestResumeFailure(t *testing.T) {
	for _, tc := range []struct {
		name     string
		err      error
		wantStop bool
	}{
		{"toggle failed", errors.New("resume failed: cuda-checkpoint exited 1"), true},
		{"state", fmt.Errorf("runsc: %w", errdefs.ErrFailedPrecondition), false},
		{"gone", fmt.Errorf("runsc: %w", errdefs.ErrNotFound), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, f, _ := started(t)
			ctx := context.Background()
			if err := p.Pause(ctx); err != nil {
				t.Fatal(err)
			}
			f.Fail("resume", tc.err)
			err := p.Resume(ctx)
			if err == nil {
				t.Fatal("resume succeeded")
			}
			if stopped := strings.HasSuffix(f.Verbs(), "delete"); stopped != tc.wantStop {
				t.Fatalf("runsc ran %q (error %v); want the container stopped: %t", f.Verbs(), err, tc.wantStop)
			}
		})
	}
}

// SetExited records the first exit only, and says which call did.
func TestSetExitedFirstOnly(t *testing.T) {
	p, _, _ := started(t)
	if !p.SetExited(3) {
		t.Fatal("first SetExited not recorded")
	}
	if p.SetExited(9) || p.ExitStatus() != 3 {
		t.Fatalf("second SetExited changed the exit: %d", p.ExitStatus())
	}
}

// Kill of a created container removes it and reports the exit.
func TestKillCreated(t *testing.T) {
	f := processtest.NewFakeRuntime(t)
	p, exited := newTestInit(t, f, nil)
	if err := p.Kill(context.Background(), 9, false); err != nil {
		t.Fatal(err)
	}
	e := <-exited
	if e.Status != 137 || e.Process != Process(p) {
		t.Fatalf("exit %+v", e)
	}
	if !p.SetExited(e.Status) || status(p) != StatusStopped {
		t.Fatalf("state %s", status(p))
	}
}

// Replacing a pod's sandbox: the old sandbox's exit is not the container's;
// the restored one's is.
func TestReplaceSandbox(t *testing.T) {
	p, f, exited := started(t)
	ctx := context.Background()
	old := f.Sandbox()
	go func() { _ = old.Process.Kill() }() // what runsc delete does
	if err := p.Teardown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-exited:
		t.Fatalf("the old sandbox's exit was reported: %+v", e)
	case <-time.After(200 * time.Millisecond):
	}
	if err := p.Recreate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.RestoreSandbox(ctx, RestoreConfig{ImagePath: "/img"}); err != nil {
		t.Fatal(err)
	}
	if got := f.Verbs(); !strings.HasPrefix(got, "create start delete create restore") {
		t.Fatalf("runsc ran %q", got)
	}
	f.KillSandbox()
	select {
	case e := <-exited:
		if e.Status != 137 {
			t.Fatalf("exit %+v", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the new sandbox's exit was not reported")
	}
}

// A restore whose work after the container started fails (runsc stops the
// container): with Await, Start says why; the exit carries the reason.
func TestRestoreAwaitFailure(t *testing.T) {
	f := processtest.NewFakeRuntime(t)
	f.Fail("wait-restore", errors.New("post restore work failed: cuda-checkpoint: CUDA_ERROR_OPERATING_SYSTEM"))
	p, exited := newTestInit(t, f, &RestoreConfig{ImagePath: "/img", Await: true})
	err := p.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "CUDA_ERROR_OPERATING_SYSTEM") {
		t.Fatalf("start: %v", err)
	}
	f.KillSandbox()
	e := <-exited
	if !strings.Contains(e.Reason, "CUDA_ERROR_OPERATING_SYSTEM") {
		t.Fatalf("exit reason %q", e.Reason)
	}
}
