//go:build e2e

package checkpoint

import (
	"testing"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
)

// TestCompatCheckpointRestoreCounter checkpoints a counter with runc's CheckpointOptions
// {exit: true} through the containerd client (which pauses the task first), checks the
// image containerd committed (flat regular files, runsc-cuda.json last, listing the
// others), restores it into the same container through CreateTaskRequest.Checkpoint
// (NewTask WithTaskCheckpoint) with fresh IO, and checks that the task stays created
// until Start, which restores, and that the count continues on the NEW task's stdout
// instead of starting over. Then the restored task is killed,
// waited for and deleted like a fresh one, leaving nothing behind.
func TestCompatCheckpointRestoreCounter(t *testing.T) {
	e := setup(t, harness.Options{})
	id := harness.RandomID("counter")
	p := e.run(id, []string{"/workload", "counter", "--interval", "100ms"})
	waitCount(t, p.out, 0, 5)
	lo := lastCount(p.out)

	img, err := p.task.Checkpoint(e.ctx, containerd.WithCheckpointName("localhost/ckpt/"+id+":exit"),
		withCheckpointOptions(&runcoptions.CheckpointOptions{Exit: true}))
	if err != nil {
		t.Fatalf("checkpoint: %v", err)
	}
	// Exit: the container stopped after the checkpoint, killed like after runc's
	// CRIU dump.
	if code := e.waitExit(p); code != 137 {
		t.Errorf("exit status after the exit checkpoint %d, want 137", code)
	}
	e.deleteTask(p)
	hi := lastCount(p.out)

	hdrs, meta := e.checkpointLayer(img)
	checkFlatLayer(t, hdrs, meta)
	if meta.LeaveRunning || meta.ContainerID != id || meta.RunscVersion == "" || meta.Compression != "none" {
		t.Errorf("metadata %+v: want leave_running false, container %s, a runsc version, compression none", meta, id)
	}

	// Create validates and creates; the restore itself runs at Start.
	out := harness.NewLineBuffer()
	task, err := p.c.NewTask(e.ctx, e.d.IO(nil, out, out), containerd.WithTaskCheckpoint(img))
	if err != nil {
		t.Fatalf("create from checkpoint: %v", err)
	}
	if st, err := task.Status(e.ctx); err != nil || st.Status != containerd.Created {
		t.Fatalf("task created from a checkpoint is %v (%v), want created until Start", st.Status, err)
	}
	if s := e.runscStatus(id); s != "created" {
		t.Fatalf("runsc reports %q before Start, want created", s)
	}
	exitC, err := task.Wait(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(e.ctx); err != nil {
		t.Fatalf("start (restore): %v", err)
	}
	r := &proc{c: p.c, task: task, out: out, exitC: exitC}
	checkContinues(t, r.out, lo, hi)
	if len(counts(r.out.Lines())) == 0 || r.out.Lines()[0] == "count=0" {
		t.Fatalf("restored output starts with %q", r.out.Lines())
	}
	e.killAndDelete(r)
	e.checkNoTrace(id)
}
