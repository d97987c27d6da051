//go:build e2e

package checkpoint

import (
	"strings"
	"testing"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

// TestCheckpointNilOptionsLeavesRunningAndClones checkpoints a counter with no
// checkpoint options at all (what nerdctl and the CRI send for a non-runc runtime):
// the container keeps running, unpaused (containerd paused it for the checkpoint and
// resumed it), and keeps counting. The image then restores as a clone, a second
// container under a new name, while the original runs on: both count, the clone from
// the checkpoint's value.
func TestCheckpointNilOptionsLeavesRunningAndClones(t *testing.T) {
	e := setup(t, harness.Options{})
	id := harness.RandomID("orig")
	args := []string{"/workload", "counter", "--interval", "100ms"}
	p := e.run(id, args)
	waitCount(t, p.out, 0, 3)
	lo := lastCount(p.out)
	img, err := p.task.Checkpoint(e.ctx, containerd.WithCheckpointName("localhost/ckpt/"+id+":live"))
	if err != nil {
		t.Fatalf("checkpoint: %v", err)
	}
	e.checkRunning(p)
	hdrs, meta := e.checkpointLayer(img)
	checkFlatLayer(t, hdrs, meta)
	if !meta.LeaveRunning {
		t.Errorf("metadata says leave_running false for a checkpoint without options")
	}

	cloneID := harness.RandomID("clone")
	clone := e.startTask(e.newContainer(cloneID, args, nil), containerd.WithTaskCheckpoint(img))
	checkContinuesFrom(t, clone.out, p.out, lo)
	// Both progress side by side.
	before := lastCount(p.out)
	waitCount(t, p.out, p.out.Len(), before+3)
	waitCount(t, clone.out, clone.out.Len(), lastCount(clone.out)+3)
	e.checkRunning(p)
	e.checkRunning(clone)

	e.killAndDelete(clone)
	e.checkNoTrace(cloneID)
	e.checkRunning(p)
}

// TestCheckpointUserPausedStaysPaused checkpoints a task the user paused: containerd
// does not pause it again nor resume it afterwards, so the task must still be paused
// after the checkpoint, for containerd and for runsc. Resume then continues the count.
// An exit checkpoint of the paused task then stops it (status 137, as after runc's
// CRIU dump) and its image restores.
func TestCheckpointUserPausedStaysPaused(t *testing.T) {
	e := setup(t, harness.Options{})
	id := harness.RandomID("paused")
	p := e.run(id, []string{"/workload", "counter", "--interval", "100ms"})
	waitCount(t, p.out, 0, 3)
	if err := p.task.Pause(e.ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := p.task.Checkpoint(e.ctx, containerd.WithCheckpointName("localhost/ckpt/"+id+":paused"),
		withCheckpointOptions(&runcoptions.CheckpointOptions{})); err != nil {
		t.Fatalf("checkpoint of a paused task: %v", err)
	}
	st, err := p.task.Status(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != containerd.Paused {
		t.Fatalf("task is %s after the checkpoint, want paused (the user paused it)", st.Status)
	}
	if s := e.runscStatus(id); s != "paused" {
		t.Fatalf("runsc reports %q after the checkpoint, want paused", s)
	}
	if err := p.task.Resume(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.checkRunning(p)

	// An exit checkpoint of a paused task stops it, and its image restores.
	if err := p.task.Pause(e.ctx); err != nil {
		t.Fatal(err)
	}
	lo := lastCount(p.out)
	img, err := p.task.Checkpoint(e.ctx, containerd.WithCheckpointName("localhost/ckpt/"+id+":paused-exit"),
		withCheckpointOptions(&runcoptions.CheckpointOptions{Exit: true}))
	if err != nil {
		t.Fatalf("exit checkpoint of a paused task: %v", err)
	}
	if code := e.waitExit(p); code != 137 {
		t.Errorf("exit status after the exit checkpoint %d, want 137", code)
	}
	e.deleteTask(p)
	r := e.startTask(p.c, containerd.WithTaskCheckpoint(img))
	checkContinues(t, r.out, lo, lastCount(p.out))
	e.killAndDelete(r)
}

// TestCheckpointRefusesUnsupportedOptions sends runc options gVisor cannot honour
// (ExternalUnixSockets, EmptyNamespaces): each is refused with InvalidArgument and a
// message naming the option, the task keeps running unpaused and the image_path stays
// empty.
func TestCheckpointRefusesUnsupportedOptions(t *testing.T) {
	e := setup(t, harness.Options{})
	id := harness.RandomID("refuse")
	p := e.run(id, []string{"/workload", "counter", "--interval", "100ms"})
	waitCount(t, p.out, 0, 1)
	for _, tc := range []struct {
		name string
		opts *runcoptions.CheckpointOptions
		want string
	}{
		{"ExternalUnixSockets", &runcoptions.CheckpointOptions{ExternalUnixSockets: true}, "ExternalUnixSockets"},
		{"EmptyNamespaces", &runcoptions.CheckpointOptions{EmptyNamespaces: []string{"network"}}, "EmptyNamespaces"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := e.imagePathDir("refused")
			tc.opts.ImagePath = dir
			_, err := p.task.Checkpoint(e.ctx, containerd.WithCheckpointName("localhost/ckpt/"+id+":"+strings.ToLower(tc.name)),
				withCheckpointOptions(tc.opts))
			if err == nil {
				t.Fatal("checkpoint succeeded")
			}
			if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v: want InvalidArgument naming %s", err, tc.want)
			}
			t.Logf("refused: %v", err)
			if _, err := e.client.GetImage(e.ctx, "localhost/ckpt/"+id+":"+strings.ToLower(tc.name)); !errdefs.IsNotFound(err) {
				t.Errorf("refused checkpoint left an image: %v", err)
			}
			if names := dirNames(t, dir); len(names) > 0 {
				t.Fatalf("refused checkpoint left %v in %s", names, dir)
			}
			e.checkRunning(p)
		})
	}
}
