//go:build e2e

package fault

import (
	"testing"
	"time"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"

	ckpt "github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/checkpoint"
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
	a := e.run(idA, counterArgs)
	b := e.run(idB, counterArgs)
	waitCount(t, a.out, 0, 3)
	waitCount(t, b.out, 0, 3)

	loA := lastCount(a.out)
	imgA, err := a.task.Checkpoint(e.ctx, containerd.WithCheckpointName("localhost/ckpt/"+idA+":exit"),
		withCheckpointOptions(&runcoptions.CheckpointOptions{Exit: true}))
	if err != nil {
		t.Fatalf("exit checkpoint of A: %v", err)
	}
	if code := e.waitExit(a); code != 137 {
		t.Errorf("A exited with %d after the exit checkpoint, want 137", code)
	}
	e.deleteTask(a)
	hiA := lastCount(a.out)

	dirB := e.imagePathDir("restart-b")
	loB := lastCount(b.out)
	if err := e.checkpointToPath(b, dirB, false); err != nil {
		t.Fatalf("leave-running checkpoint of B: %v", err)
	}
	checkCompleteImage(t, dirB)

	e.d.Restart(t)

	// B kept running in its shim; reload it.
	n := b.out.Len()
	waitCount(t, b.out, n, lastCount(b.out)+2)
	lb, err := e.client.LoadContainer(e.ctx, idB)
	if err != nil {
		t.Fatal(err)
	}
	tb, err := lb.Task(e.ctx, nil)
	if err != nil {
		t.Fatalf("reload B's task: %v", err)
	}
	exitB, err := tb.Wait(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	b = &proc{c: lb, task: tb, out: b.out, exitC: exitB}
	e.checkRunning(b)

	// A's image survived the restart and restores.
	img, err := e.client.GetImage(e.ctx, imgA.Name())
	if err != nil {
		t.Fatalf("checkpoint image of A after the restart: %v", err)
	}
	ca, err := e.client.LoadContainer(e.ctx, idA)
	if err != nil {
		t.Fatal(err)
	}
	ra := e.startTask(ca, containerd.WithTaskCheckpoint(img))
	checkContinues(t, ra.out, loA, hiA)

	// B's directory restores as a clone beside the reloaded B.
	cloneID := harness.RandomID("restart-b-clone")
	clone, err := e.restoreFromPath(e.newContainer(cloneID, counterArgs, nil), dirB)
	if err != nil {
		t.Fatalf("restore of B's directory after the restart: %v", err)
	}
	first, _ := waitCount(t, clone.out, 0, 0)
	if first < loB {
		t.Errorf("B's clone started at %d, the checkpoint was taken after %d", first, loB)
	}
	waitCount(t, clone.out, 0, first+2)

	// The reloaded B checkpoints and restores.
	dirB2 := e.imagePathDir("restart-b2")
	loB = lastCount(b.out)
	if err := e.checkpointToPath(b, dirB2, true); err != nil {
		t.Fatalf("exit checkpoint of the reloaded B: %v", err)
	}
	if code := e.waitExit(b); code != 137 {
		t.Errorf("reloaded B exited with %d after the exit checkpoint, want 137", code)
	}
	e.deleteTask(b)
	rb, err := e.restoreFromPath(b.c, dirB2)
	if err != nil {
		t.Fatalf("restore of the reloaded B: %v", err)
	}
	checkContinues(t, rb.out, loB, lastCount(b.out))

	for _, p := range []*proc{ra, clone, rb} {
		e.killAndDelete(p)
		e.checkNoTrace(p.c.ID())
		e.removeContainer(p.c)
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
	p := e.run(id, busyArgs)
	sum := memholdSum(t, p.out)
	waitCount(t, p.out, 0, 3)

	dir := e.imagePathDir("ctrd-stop")
	errC := make(chan error, 1)
	go func() { errC <- e.checkpointToPath(p, dir, false) }()
	if !waitFor(time.Minute, func() bool {
		_, ok := e.runscCheckpointProcess(id)
		return ok && fileSize(dir+"/pages.img") > 16<<20
	}) {
		t.Fatalf("the checkpoint was never seen writing pages.img (%v)", dirNames(t, dir))
	}
	if err := e.d.Stop(); err != nil {
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
	names := dirNames(t, dir)
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

	e.d.Restart(t) // already stopped: starts it again
	lc, err := e.client.LoadContainer(e.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	task, err := lc.Task(e.ctx, nil)
	if err != nil {
		t.Fatalf("reload the task: %v", err)
	}
	st, err := task.Status(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("task after the restart: %s (runsc: %s)", st.Status, e.runscStatus(id))
	if st.Status != containerd.Paused {
		t.Fatalf("task is %s after containerd came back, want paused (containerd paused it for the checkpoint and stopped before resuming it)", st.Status)
	}
	if s := e.runscStatus(id); s != "paused" {
		t.Fatalf("runsc reports %q, want paused", s)
	}
	if err := task.Resume(e.ctx); err != nil {
		t.Fatalf("resume: %v", err)
	}
	exitC, err := task.Wait(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	p = &proc{c: lc, task: task, out: p.out, exitC: exitC}
	n := p.out.Len()
	e.checkRunning(p)
	checkMemhold(t, p.out, n, sum)

	dir2 := e.imagePathDir("ctrd-stop-again")
	if err := e.checkpointToPath(p, dir2, false); err != nil {
		t.Fatalf("checkpoint after containerd came back: %v", err)
	}
	checkCompleteImage(t, dir2)
	e.checkRunning(p)
	e.killAndDelete(p)
	e.checkNoTrace(id)
	e.removeContainer(p.c)
	e.checkNoLeftovers()
}
