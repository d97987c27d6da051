//go:build e2e

package fault

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/ckenv"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

// busyArgs runs a 512 MiB memhold (its image takes long enough to write that a test
// can strike in the middle) beside a counter (cheap proof of life) in one container.
var busyArgs = []string{"/bin/sh", "-c", "/workload memhold --mib 512 --seed 11 --interval 4s & exec /workload counter --interval 100ms"}

// midCheckpoint starts a checkpoint of p into dir in the background, waits until
// runsc is writing the memory file (pages.img past 16 MiB, the `runsc checkpoint`
// process still running), calls strike, and returns the checkpoint's error.
func (e *env) midCheckpoint(p *proc, dir string, exit bool, strike func(runscCheckpoint harness.Process)) error {
	e.T.Helper()
	errC := make(chan error, 1)
	go func() { errC <- e.checkpointToPath(p, dir, exit) }()
	var victim harness.Process
	caught := waitFor(2*time.Minute, func() bool {
		select {
		case err := <-errC:
			errC <- err
			return true
		default:
		}
		pr, ok := e.runscCheckpointProcess(p.C.ID())
		if ok && fileSize(filepath.Join(dir, "pages.img")) > 16<<20 {
			victim = pr
			return true
		}
		return false
	})
	if !caught || victim.PID == 0 {
		err := <-errC
		e.T.Fatalf("the checkpoint was never seen writing pages.img (finished with %v; files %v); the workload is too small to strike mid-way", err, ckenv.DirNames(e.T, dir))
	}
	t0 := time.Now()
	strike(victim)
	select {
	case err := <-errC:
		e.T.Logf("checkpoint returned %v after the strike, at %d bytes of pages.img", time.Since(t0).Round(time.Millisecond), fileSize(filepath.Join(dir, "pages.img")))
		return err
	case <-time.After(startTimeout):
		e.T.Fatalf("the checkpoint did not return within %v of the strike", startTimeout)
	}
	return nil
}

// TestCheckpointRunscKilled kills `runsc checkpoint` while it writes a 512 MiB image,
// for a leave-running and for an exit checkpoint (image_path). The checkpoint fails
// with an error; the directory holds nothing (no partial runsc file, no
// runsc-cuda.json); the container keeps running, unpaused, its counter continuing and
// its memory intact; no runsc process is left. A checkpoint that is allowed to finish
// then restores with the same memory checksum and a continuing counter: no data was
// lost.
//
// Then the sandbox itself is killed in the middle of a checkpoint: the checkpoint fails
// with an error that says the container is no longer running, the task exits with 137
// (the sandbox's SIGKILL), the directory holds nothing that looks like a checkpoint, and
// Delete leaves no runsc state, mount, cgroup or process behind.
func TestCheckpointRunscKilled(t *testing.T) {
	e := setup(t, harness.Options{})
	id := harness.RandomID("killmid")
	p := e.Run(id, busyArgs)
	sum := memholdSum(t, p.Out)
	ckenv.WaitCount(t, p.Out, 0, 3)

	for _, exit := range []bool{false, true} {
		name := map[bool]string{false: "leave-running", true: "exit"}[exit]
		t.Run("runsc-killed-"+name, func(t *testing.T) {
			e := e.sub(t)
			dir := e.ImagePathDir(name)
			err := e.midCheckpoint(p, dir, exit, func(victim harness.Process) {
				if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
					t.Fatalf("kill runsc checkpoint %d: %v", victim.PID, err)
				}
			})
			if err == nil {
				t.Fatal("the checkpoint succeeded although runsc was killed in the middle")
			}
			t.Logf("checkpoint error: %v", err)
			if !strings.Contains(err.Error(), "checkpoint") || !strings.Contains(err.Error(), "keeps running") {
				t.Errorf("error %q does not say that the checkpoint failed and that the container keeps running", err)
			}
			// The sandbox may still be saving into the files runsc opened; the shim
			// removed their names, so nothing reappears.
			checkNoValidImage(t, dir, true)
			n := p.Out.Len()
			e.CheckRunning(p)
			checkMemhold(t, p.Out, n, sum)
			if pr, ok := e.runscCheckpointProcess(id); ok {
				t.Errorf("runsc checkpoint still runs: %v", pr)
			}
			time.Sleep(time.Second)
			checkNoValidImage(t, dir, true)
		})
	}

	// No data lost: a checkpoint that finishes restores the same memory and count.
	dir := e.ImagePathDir("final")
	lo := ckenv.LastCount(p.Out)
	if err := e.checkpointToPath(p, dir, true); err != nil {
		t.Fatalf("checkpoint after the killed ones: %v", err)
	}
	if code := e.WaitExit(p); code != 137 {
		t.Errorf("exit status after the exit checkpoint %d, want 137", code)
	}
	e.DeleteTask(p)
	hi := ckenv.LastCount(p.Out)
	checkCompleteImage(t, dir)
	r, err := e.restoreFromPath(p.C, dir)
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	checkContinues(t, r.Out, lo, hi)
	checkMemhold(t, r.Out, 0, sum)
	e.KillAndDelete(r)
	e.CheckNoTrace(id)
	e.RemoveContainer(p.C)

	t.Run("sandbox-killed", func(t *testing.T) {
		e := e.sub(t)
		id := harness.RandomID("killsandbox")
		p := e.Run(id, busyArgs)
		memholdSum(t, p.Out)
		ckenv.WaitCount(t, p.Out, 0, 3)
		sandbox, ok := e.sandboxProcess(id)
		if !ok {
			t.Fatalf("no runsc-sandbox process of %s", id)
		}
		dir := e.ImagePathDir("sandbox-killed")
		err := e.midCheckpoint(p, dir, false, func(harness.Process) {
			if err := syscall.Kill(sandbox.PID, syscall.SIGKILL); err != nil {
				t.Fatalf("kill the sandbox %d: %v", sandbox.PID, err)
			}
		})
		if err == nil {
			t.Fatal("the checkpoint succeeded although the sandbox was killed in the middle")
		}
		t.Logf("checkpoint error: %v", err)
		if strings.Contains(err.Error(), "keeps running") || !strings.Contains(err.Error(), "no longer running") {
			t.Errorf("error %q must say that the container is no longer running", err)
		}
		if code := e.WaitExit(p); code != 137 {
			t.Errorf("exit status %d after the sandbox was killed, want 137", code)
		}
		checkNoValidImage(t, dir, true)
		if code := e.DeleteTask(p); code != 137 {
			t.Errorf("delete reported %d, want 137", code)
		}
		e.CheckNoTrace(id)
		e.RemoveContainer(p.C)
	})
	e.checkNoLeftovers()
}

// shimProcess returns the shim server process of container id: the process of the
// shim binary started with -id id, other than its not yet exec'd children (which
// show the same command line) and the short-lived `start`/`delete` invocations.
func (e *env) shimProcess(id string) (harness.Process, bool) {
	e.T.Helper()
	procs, err := e.D.Processes()
	if err != nil {
		e.T.Fatal(err)
	}
	isShim := func(p harness.Process) bool {
		return len(p.Cmdline) > 0 && filepath.Base(p.Cmdline[0]) == harness.ShimBinaryName &&
			slices.Contains(p.Cmdline, id) && !slices.Contains(p.Cmdline, "start") && !slices.Contains(p.Cmdline, "delete")
	}
	pids := map[int]bool{}
	for _, p := range procs {
		if isShim(p) {
			pids[p.PID] = true
		}
	}
	for _, p := range procs {
		if isShim(p) && !pids[harness.ParentPID(p.PID)] {
			return p, true
		}
	}
	return harness.Process{}, false
}

// TestShimKilledDuringCheckpoint kills the shim (SIGKILL) while runsc writes a 512 MiB
// checkpoint into an image_path directory. The checkpoint call fails; runsc dies with
// the shim (Pdeathsig); containerd reports the task's exit (137) and runs the shim's
// `delete`, which removes the sandbox, its runsc state and the rootfs mount, and the
// partial files of the interrupted checkpoint (the shim records the directory of a
// checkpoint in progress in the bundle), so after Delete nothing is left: the image
// directory is empty, and a restore from it is refused with FailedPrecondition.
func TestShimKilledDuringCheckpoint(t *testing.T) {
	e := setup(t, harness.Options{})
	id := harness.RandomID("shimkill")
	p := e.Run(id, busyArgs)
	memholdSum(t, p.Out)
	ckenv.WaitCount(t, p.Out, 0, 3)
	shim, ok := e.shimProcess(id)
	if !ok {
		t.Fatalf("no shim process of %s", id)
	}
	exits := e.taskExits(id)
	dir := e.ImagePathDir("shimkill")
	err := e.midCheckpoint(p, dir, false, func(harness.Process) {
		if err := syscall.Kill(shim.PID, syscall.SIGKILL); err != nil {
			t.Fatalf("kill the shim %d: %v", shim.PID, err)
		}
	})
	if err == nil {
		t.Fatal("the checkpoint succeeded although the shim was killed in the middle")
	}
	t.Logf("checkpoint error: %v", err)
	// The task's Wait stream broke with the shim; containerd publishes the exit it
	// learns from the shim's `delete`.
	select {
	case ev := <-exits:
		if ev.ExitStatus != 137 {
			t.Errorf("TaskExit %+v after the shim was killed, want status 137", ev)
		}
	case <-time.After(time.Minute):
		t.Fatal("no TaskExit within a minute of the shim's death")
	}
	if _, err := p.Task.Delete(e.Ctx); err != nil && !errdefs.IsNotFound(err) {
		t.Errorf("delete after the shim died: %v", err)
	}
	e.CheckNoTrace(id)
	checkNoValidImage(t, dir, true)

	cid := harness.RandomID("shimkill-restore")
	_, rerr := e.restoreFromPath(e.NewContainer(cid, busyArgs, nil), dir)
	if rerr == nil || !errdefs.IsFailedPrecondition(rerr) {
		t.Fatalf("restore from the interrupted checkpoint: %v, want FailedPrecondition", rerr)
	}
	t.Logf("restore refused: %v", rerr)
	e.CheckNoTrace(cid)
	c, err := e.Client.LoadContainer(e.Ctx, cid)
	if err != nil {
		t.Fatal(err)
	}
	e.RemoveContainer(c)
	e.RemoveContainer(p.C)
	e.checkNoLeftovers()
}

// taskExits delivers the TaskExit events of container id's init process.
func (e *env) taskExits(id string) <-chan *eventstypes.TaskExit {
	ctx, cancel := context.WithCancel(e.Ctx)
	e.T.Cleanup(cancel)
	ch, _ := e.Client.Subscribe(ctx, `topic=="/tasks/exit"`)
	out := make(chan *eventstypes.TaskExit, 4)
	go func() {
		for env := range ch {
			v, err := typeurl.UnmarshalAny(env.Event)
			if ev, ok := v.(*eventstypes.TaskExit); err == nil && ok && ev.ContainerID == id && ev.ID == id {
				out <- ev
			}
		}
	}()
	return out
}
