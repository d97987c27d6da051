//go:build e2e

package fault

import (
	"strings"
	"syscall"
	"testing"
	"time"

	tasks "github.com/containerd/containerd/api/services/tasks/v1"
	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/typeurl/v2"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/ckenv"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

// apiCheckpoint calls containerd's task service Checkpoint directly (no pause before,
// no resume after, unlike the client's task.Checkpoint), with runc CheckpointOptions.
func (e *env) apiCheckpoint(id string, o *runcoptions.CheckpointOptions) error {
	a, err := typeurl.MarshalAnyToProto(o)
	if err != nil {
		e.T.Fatal(err)
	}
	_, err = e.Client.TaskService().Checkpoint(e.Ctx, &tasks.CheckpointTaskRequest{ContainerID: id, Options: a})
	return errgrpc.ToNative(err)
}

// checkRefusedState fails unless err is a FailedPrecondition that names the task's
// state.
func checkRefusedState(t *testing.T, err error, state string) {
	t.Helper()
	if err == nil {
		t.Fatalf("checkpoint of a %s task succeeded", state)
	}
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), state) {
		t.Fatalf("error %v: want FailedPrecondition naming the state %q", err, state)
	}
	t.Logf("refused: %v", err)
}

// TestCheckpointTaskStates checkpoints tasks that are not running, through the
// client (which pauses first) and through containerd's task API directly:
//
//   - created, not started: refused with FailedPrecondition naming the state; the task
//     is still created and then starts and runs normally;
//   - stopped (exited with status 3): refused the same way; no image directory is
//     created; the exit status stays 3 through Delete, and nothing is left.
//
// A paused task is TestCheckpointUserPausedStaysPaused (test/e2e/checkpoint).
func TestCheckpointTaskStates(t *testing.T) {
	e := setup(t, harness.Options{})

	t.Run("created", func(t *testing.T) {
		e := e.sub(t)
		id := harness.RandomID("created")
		c := e.NewContainer(id, counterArgs, nil)
		out := harness.NewLineBuffer()
		task, err := c.NewTask(e.Ctx, e.D.IO(nil, out, out))
		if err != nil {
			t.Fatal(err)
		}
		dir := e.ImagePathDir("created")
		checkRefusedState(t, e.apiCheckpoint(id, &runcoptions.CheckpointOptions{ImagePath: dir}), "created")
		_, err = task.Checkpoint(e.Ctx, ckenv.WithCheckpointOptions(&runcoptions.CheckpointOptions{ImagePath: dir}))
		checkRefusedState(t, err, "created")
		if names := ckenv.DirNames(t, dir); names != nil {
			t.Errorf("a refused checkpoint created %s: %v", dir, names)
		}
		if st, err := task.Status(e.Ctx); err != nil || st.Status != containerd.Created {
			t.Fatalf("task is %v (%v) after the refused checkpoints, want created", st.Status, err)
		}
		if s := e.RunscStatus(id); s != "created" {
			t.Fatalf("runsc reports %q, want created", s)
		}
		exitC, err := task.Wait(e.Ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := task.Start(e.Ctx); err != nil {
			t.Fatal(err)
		}
		p := &proc{C: c, Task: task, Out: out, ExitC: exitC}
		ckenv.WaitCount(t, out, 0, 2)
		if c := ckenv.Counts(out.Lines()); c[0] != 0 {
			t.Errorf("the started task counted from %d, want 0", c[0])
		}
		e.KillAndDelete(p)
		e.CheckNoTrace(id)
		e.RemoveContainer(c)
	})

	t.Run("stopped", func(t *testing.T) {
		e := e.sub(t)
		id := harness.RandomID("stopped")
		p := e.Run(id, []string{"/workload", "exit", "--code", "3"})
		if code := e.WaitExit(p); code != 3 {
			t.Fatalf("exit status %d, want 3", code)
		}
		dir := e.ImagePathDir("stopped")
		for _, exit := range []bool{false, true} {
			checkRefusedState(t, e.apiCheckpoint(id, &runcoptions.CheckpointOptions{Exit: exit, ImagePath: dir}), "stopped")
		}
		_, err := p.Task.Checkpoint(e.Ctx, ckenv.WithCheckpointOptions(&runcoptions.CheckpointOptions{ImagePath: dir}))
		if err == nil || !errdefs.IsFailedPrecondition(err) {
			t.Fatalf("client checkpoint of a stopped task: %v, want FailedPrecondition", err)
		}
		t.Logf("client refused: %v", err)
		if names := ckenv.DirNames(t, dir); names != nil {
			t.Errorf("a refused checkpoint created %s: %v", dir, names)
		}
		if st, err := p.Task.Status(e.Ctx); err != nil || st.Status != containerd.Stopped || st.ExitStatus != 3 {
			t.Fatalf("task status %+v (%v) after the refused checkpoints, want stopped with 3", st, err)
		}
		if code := e.DeleteTask(p); code != 3 {
			t.Errorf("delete reported %d, want 3", code)
		}
		e.CheckNoTrace(id)
		e.RemoveContainer(p.C)
	})
	e.checkNoLeftovers()
}

// TestCheckpointExecBusy checkpoints a task while an exec'd process runs in it (a
// second counter started with task.Exec):
//
//   - leave-running: the checkpoint succeeds; the init counter and the exec'd counter
//     both keep counting; the exec can still be killed and reports 137;
//   - the image restores into a new container whose init counter continues (the
//     exec'd process is no exec of the new task; gVisor restores init alone);
//   - exit: the checkpoint succeeds; the exec'd process and init both report 137 (the
//     sandbox was stopped), and that image restores too.
func TestCheckpointExecBusy(t *testing.T) {
	e := setup(t, harness.Options{})
	id := harness.RandomID("execbusy")
	p := e.Run(id, counterArgs)
	ckenv.WaitCount(t, p.Out, 0, 2)

	startExec := func() (containerd.Process, <-chan containerd.ExitStatus, *harness.LineBuffer) {
		spec, err := p.C.Spec(e.Ctx)
		if err != nil {
			t.Fatal(err)
		}
		ps := *spec.Process
		ps.Args = []string{"/workload", "counter", "--interval", "100ms", "--start", "1000000"}
		out := harness.NewLineBuffer()
		ep, err := p.Task.Exec(e.Ctx, harness.RandomID("exec"), &ps, e.D.IO(nil, out, out))
		if err != nil {
			t.Fatal(err)
		}
		statusC, err := ep.Wait(e.Ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := ep.Start(e.Ctx); err != nil {
			t.Fatal(err)
		}
		ckenv.WaitCount(t, out, 0, 1000002)
		return ep, statusC, out
	}

	// Leave-running, with the exec busy.
	ep, execC, execOut := startExec()
	dir := e.ImagePathDir("live")
	lo := ckenv.LastCount(p.Out)
	if err := e.checkpointToPath(p, dir, false); err != nil {
		t.Fatalf("leave-running checkpoint with a busy exec: %v", err)
	}
	checkCompleteImage(t, dir)
	e.CheckRunning(p)
	ckenv.WaitCount(t, execOut, execOut.Len(), ckenv.LastCount(execOut)+2)
	if err := ep.Kill(e.Ctx, syscall.SIGKILL); err != nil {
		t.Fatalf("kill the exec after the checkpoint: %v", err)
	}
	select {
	case st := <-execC:
		if st.ExitCode() != 137 {
			t.Errorf("exec exit status %d, want 137", st.ExitCode())
		}
	case <-time.After(lineTimeout):
		t.Fatal("the exec did not exit after SIGKILL")
	}
	if _, err := ep.Delete(e.Ctx); err != nil {
		t.Fatal(err)
	}

	cloneID := harness.RandomID("execbusy-clone")
	clone, err := e.restoreFromPath(e.NewContainer(cloneID, counterArgs, nil), dir)
	if err != nil {
		t.Fatalf("restore of the image taken with a busy exec: %v", err)
	}
	first, _ := ckenv.WaitCount(t, clone.Out, 0, 0)
	if first < lo {
		t.Errorf("clone counter started at %d, the checkpoint was taken after %d", first, lo)
	}
	ckenv.WaitCount(t, clone.Out, 0, first+2)
	e.CheckRunning(clone)
	// The exec'd process was in the sandbox when it was saved; what the clone holds
	// is reported (gVisor 20260905 restores init alone here), not asserted.
	pids, err := clone.Task.Pids(e.Ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("processes in the clone: %d", len(pids))
	e.KillAndDelete(clone)
	e.CheckNoTrace(cloneID)
	e.RemoveContainer(clone.C)

	// Exit, with the exec busy.
	_, execC, _ = startExec()
	dir = e.ImagePathDir("exit")
	lo = ckenv.LastCount(p.Out)
	if err := e.checkpointToPath(p, dir, true); err != nil {
		t.Fatalf("exit checkpoint with a busy exec: %v", err)
	}
	select {
	case st := <-execC:
		if st.ExitCode() != 137 {
			t.Errorf("exec exit status %d after the exit checkpoint, want 137", st.ExitCode())
		}
	case <-time.After(lineTimeout):
		t.Fatal("the exec did not exit after the exit checkpoint")
	}
	if code := e.WaitExit(p); code != 137 {
		t.Errorf("init exit status %d after the exit checkpoint, want 137", code)
	}
	e.DeleteTask(p)
	hi := ckenv.LastCount(p.Out)
	checkCompleteImage(t, dir)
	r, err := e.restoreFromPath(p.C, dir)
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	checkContinues(t, r.Out, lo, hi)
	e.KillAndDelete(r)
	e.CheckNoTrace(id)
	e.RemoveContainer(p.C)
	e.checkNoLeftovers()
}
