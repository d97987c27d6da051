//go:build e2e

package checkpoint

import (
	"testing"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/ckenv"
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
	p := e.Run(id, []string{"/workload", "counter", "--interval", "100ms"})
	ckenv.WaitCount(t, p.Out, 0, 5)
	lo := ckenv.LastCount(p.Out)

	img, err := p.Task.Checkpoint(e.Ctx, containerd.WithCheckpointName("localhost/ckpt/"+id+":exit"),
		ckenv.WithCheckpointOptions(&runcoptions.CheckpointOptions{Exit: true}))
	if err != nil {
		t.Fatalf("checkpoint: %v", err)
	}
	// Exit: the container stopped after the checkpoint, killed like after runc's
	// CRIU dump.
	if code := e.WaitExit(p); code != 137 {
		t.Errorf("exit status after the exit checkpoint %d, want 137", code)
	}
	e.DeleteTask(p)
	hi := ckenv.LastCount(p.Out)

	hdrs, meta := e.checkpointLayer(img)
	checkFlatLayer(t, hdrs, meta)
	if meta.LeaveRunning || meta.ContainerID != id || meta.RunscVersion == "" || meta.Compression != "none" {
		t.Errorf("metadata %+v: want leave_running false, container %s, a runsc version, compression none", meta, id)
	}

	// Create validates and creates; the restore itself runs at Start.
	out := harness.NewLineBuffer()
	task, err := p.C.NewTask(e.Ctx, e.D.IO(nil, out, out), containerd.WithTaskCheckpoint(img))
	if err != nil {
		t.Fatalf("create from checkpoint: %v", err)
	}
	if st, err := task.Status(e.Ctx); err != nil || st.Status != containerd.Created {
		t.Fatalf("task created from a checkpoint is %v (%v), want created until Start", st.Status, err)
	}
	if s := e.RunscStatus(id); s != "created" {
		t.Fatalf("runsc reports %q before Start, want created", s)
	}
	exitC, err := task.Wait(e.Ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(e.Ctx); err != nil {
		t.Fatalf("start (restore): %v", err)
	}
	r := &proc{C: p.C, Task: task, Out: out, ExitC: exitC}
	checkContinues(t, r.Out, lo, hi)
	if len(ckenv.Counts(r.Out.Lines())) == 0 || r.Out.Lines()[0] == "count=0" {
		t.Fatalf("restored output starts with %q", r.Out.Lines())
	}
	e.KillAndDelete(r)
	e.CheckNoTrace(id)
}
