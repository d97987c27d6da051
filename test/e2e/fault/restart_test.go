//go:build e2e

package fault

import (
	"testing"
	"time"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"

	ckpt "github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/checkpoint"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/ckenv"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

// TestContainerdRestartBetweenCheckpointAndRestore checkpoints two counters and
// restarts containerd before restoring them:
//
//   - A: exit checkpoint into containerd's content store (an image); after the restart
//     the image is still there and restores into A, the counter continuing;
//   - B: leave-running checkpoint into an image_path directory; B keeps running across
//     the restart (containerd reconnects to its shim), the directory restores as a
//     clone after the restart, and the reloaded B checkpoints again (exit) and
//     restores: a task containerd reloaded checkpoints like any other.
//
// Nothing is left afterwards.
func TestContainerdRestartBetweenCheckpointAndRestore(t *testing.T) {
	e := setup(t, harness.Options{})
	idA, idB := harness.RandomID("restart-a"), harness.RandomID("restart-b")
	a := e.Run(idA, counterArgs)
	b := e.Run(idB, counterArgs)
	ckenv.WaitCount(t, a.Out, 0, 3)
	ckenv.WaitCount(t, b.Out, 0, 3)

	loA := ckenv.LastCount(a.Out)
	imgA, err := a.Task.Checkpoint(e.Ctx, containerd.WithCheckpointName("localhost/ckpt/"+idA+":exit"),
		ckenv.WithCheckpointOptions(&runcoptions.CheckpointOptions{Exit: true}))
	if err != nil {
		t.Fatalf("exit checkpoint of A: %v", err)
	}
	if code := e.WaitExit(a); code != 137 {
		t.Errorf("A exited with %d after the exit checkpoint, want 137", code)
	}
	e.DeleteTask(a)
	hiA := ckenv.LastCount(a.Out)

	dirB := e.ImagePathDir("restart-b")
	loB := ckenv.LastCount(b.Out)
	if err := e.checkpointToPath(b, dirB, false); err != nil {
		t.Fatalf("leave-running checkpoint of B: %v", err)
	}
	checkCompleteImage(t, dirB)

	e.D.Restart(t)

	// B kept running in its shim; reload it.
	n := b.Out.Len()
	ckenv.WaitCount(t, b.Out, n, ckenv.LastCount(b.Out)+2)
	lb, err := e.Client.LoadContainer(e.Ctx, idB)
	if err != nil {
		t.Fatal(err)
	}
	tb, err := lb.Task(e.Ctx, nil)
	if err != nil {
		t.Fatalf("reload B's task: %v", err)
	}
	exitB, err := tb.Wait(e.Ctx)
	if err != nil {
		t.Fatal(err)
	}
	b = &proc{C: lb, Task: tb, Out: b.Out, ExitC: exitB}
	e.CheckRunning(b)

	// A's image survived the restart and restores.
	img, err := e.Client.GetImage(e.Ctx, imgA.Name())
	if err != nil {
		t.Fatalf("checkpoint image of A after the restart: %v", err)
	}
	ca, err := e.Client.LoadContainer(e.Ctx, idA)
	if err != nil {
		t.Fatal(err)
	}
	ra := e.StartTask(ca, containerd.WithTaskCheckpoint(img))
	checkContinues(t, ra.Out, loA, hiA)

	// B's directory restores as a clone beside the reloaded B.
	cloneID := harness.RandomID("restart-b-clone")
	clone, err := e.restoreFromPath(e.NewContainer(cloneID, counterArgs, nil), dirB)
	if err != nil {
		t.Fatalf("restore of B's directory after the restart: %v", err)
	}
	first, _ := ckenv.WaitCount(t, clone.Out, 0, 0)
	if first < loB {
		t.Errorf("B's clone started at %d, the checkpoint was taken after %d", first, loB)
	}
	ckenv.WaitCount(t, clone.Out, 0, first+2)

	// The reloaded B checkpoints and restores.
	dirB2 := e.ImagePathDir("restart-b2")
	loB = ckenv.LastCount(b.Out)
	if err := e.checkpointToPath(b, dirB2, true); err != nil {
		t.Fatalf("exit checkpoint of the reloaded B: %v", err)
	}
	if code := e.WaitExit(b); code != 137 {
		t.Errorf("reloaded B exited with %d after the exit checkpoint, want 137", code)
	}
	e.DeleteTask(b)
	rb, err := e.restoreFromPath(b.C, dirB2)
	if err != nil {
		t.Fatalf("restore of the reloaded B: %v", err)
	}
	checkContinues(t, rb.Out, loB, ckenv.LastCount(b.Out))

	for _, p := range []*proc{ra, clone, rb} {
		e.KillAndDelete(p)
		e.CheckNoTrace(p.C.ID())
		e.RemoveContainer(p.C)
	}
	e.checkNoLeftovers()
}

// TestContainerdStoppedDuringCheckpoint stops containerd while the shim is writing a
// 512 MiB leave-running checkpoint (image_path), then starts it again. The client's
// call fails; the shim, which containerd's connection was serving, ends the checkpoint
// (runsc is stopped with the call's context) and leaves no image that looks complete;
// the task survives in its shim, paused as containerd left it for the checkpoint
// (containerd died before it could resume it). After the restart it is reported
// paused; Resume continues it with its memory intact, and a new checkpoint works.
func TestContainerdStoppedDuringCheckpoint(t *testing.T) {
	e := setup(t, harness.Options{})
	id := harness.RandomID("ctrd-stop")
	p := e.Run(id, busyArgs)
	sum := memholdSum(t, p.Out)
	ckenv.WaitCount(t, p.Out, 0, 3)

	dir := e.ImagePathDir("ctrd-stop")
	errC := make(chan error, 1)
	go func() { errC <- e.checkpointToPath(p, dir, false) }()
	if !waitFor(time.Minute, func() bool {
		_, ok := e.runscCheckpointProcess(id)
		return ok && fileSize(dir+"/pages.img") > 16<<20
	}) {
		t.Fatalf("the checkpoint was never seen writing pages.img (%v)", ckenv.DirNames(t, dir))
	}
	if err := e.D.Stop(); err != nil {
		t.Fatal(err)
	}
	err := <-errC
	if err == nil {
		t.Logf("the checkpoint call returned success although containerd stopped")
	} else {
		t.Logf("checkpoint call: %v", err)
	}
	// Give the shim time to finish whatever it does with the checkpoint.
	if !waitFor(time.Minute, func() bool { _, ok := e.runscCheckpointProcess(id); return !ok }) {
		t.Fatal("runsc checkpoint still runs a minute after containerd stopped")
	}
	names := ckenv.DirNames(t, dir)
	complete := false
	if len(names) > 0 {
		if _, rerr := ckpt.Read(dir); rerr == nil {
			complete = true
			checkCompleteImage(t, dir)
		} else {
			t.Errorf("the checkpoint directory holds %v without a complete checkpoint", names)
		}
	}
	t.Logf("image directory after containerd stopped: %v (complete %t)", names, complete)

	e.D.Restart(t) // already stopped: starts it again
	lc, err := e.Client.LoadContainer(e.Ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	task, err := lc.Task(e.Ctx, nil)
	if err != nil {
		t.Fatalf("reload the task: %v", err)
	}
	st, err := task.Status(e.Ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("task after the restart: %s (runsc: %s)", st.Status, e.RunscStatus(id))
	if st.Status != containerd.Paused {
		t.Fatalf("task is %s after containerd came back, want paused (containerd paused it for the checkpoint and stopped before resuming it)", st.Status)
	}
	if s := e.RunscStatus(id); s != "paused" {
		t.Fatalf("runsc reports %q, want paused", s)
	}
	if err := task.Resume(e.Ctx); err != nil {
		t.Fatalf("resume: %v", err)
	}
	exitC, err := task.Wait(e.Ctx)
	if err != nil {
		t.Fatal(err)
	}
	p = &proc{C: lc, Task: task, Out: p.Out, ExitC: exitC}
	n := p.Out.Len()
	e.CheckRunning(p)
	checkMemhold(t, p.Out, n, sum)

	dir2 := e.ImagePathDir("ctrd-stop-again")
	if err := e.checkpointToPath(p, dir2, false); err != nil {
		t.Fatalf("checkpoint after containerd came back: %v", err)
	}
	checkCompleteImage(t, dir2)
	e.CheckRunning(p)
	e.KillAndDelete(p)
	e.CheckNoTrace(id)
	e.RemoveContainer(p.C)
	e.checkNoLeftovers()
}
