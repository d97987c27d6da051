//go:build e2e

package checkpoint

import (
	"strings"
	"testing"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/ckenv"
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
	p := e.Run(id, args)
	ckenv.WaitCount(t, p.Out, 0, 3)
	lo := ckenv.LastCount(p.Out)
	img, err := p.Task.Checkpoint(e.Ctx, containerd.WithCheckpointName("localhost/ckpt/"+id+":live"))
	if err != nil {
		t.Fatalf("checkpoint: %v", err)
	}
	e.CheckRunning(p)
	hdrs, meta := e.checkpointLayer(img)
	checkFlatLayer(t, hdrs, meta)
	if !meta.LeaveRunning {
		t.Errorf("metadata says leave_running false for a checkpoint without options")
	}

	cloneID := harness.RandomID("clone")
	clone := e.StartTask(e.NewContainer(cloneID, args, nil), containerd.WithTaskCheckpoint(img))
	checkContinuesFrom(t, clone.Out, p.Out, lo)
	// Both progress side by side.
	before := ckenv.LastCount(p.Out)
	ckenv.WaitCount(t, p.Out, p.Out.Len(), before+3)
	ckenv.WaitCount(t, clone.Out, clone.Out.Len(), ckenv.LastCount(clone.Out)+3)
	e.CheckRunning(p)
	e.CheckRunning(clone)

	e.KillAndDelete(clone)
	e.CheckNoTrace(cloneID)
	e.CheckRunning(p)
}

// TestCheckpointUserPausedStaysPaused checkpoints a task the user paused: containerd
// does not pause it again nor resume it afterwards, so the task must still be paused
// after the checkpoint, for containerd and for runsc. Resume then continues the count.
// An exit checkpoint of the paused task then stops it (status 137, as after runc's
// CRIU dump) and its image restores.
func TestCheckpointUserPausedStaysPaused(t *testing.T) {
	e := setup(t, harness.Options{})
	id := harness.RandomID("paused")
	p := e.Run(id, []string{"/workload", "counter", "--interval", "100ms"})
	ckenv.WaitCount(t, p.Out, 0, 3)
	if err := p.Task.Pause(e.Ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Task.Checkpoint(e.Ctx, containerd.WithCheckpointName("localhost/ckpt/"+id+":paused"),
		ckenv.WithCheckpointOptions(&runcoptions.CheckpointOptions{})); err != nil {
		t.Fatalf("checkpoint of a paused task: %v", err)
	}
	st, err := p.Task.Status(e.Ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != containerd.Paused {
		t.Fatalf("task is %s after the checkpoint, want paused (the user paused it)", st.Status)
	}
	if s := e.RunscStatus(id); s != "paused" {
		t.Fatalf("runsc reports %q after the checkpoint, want paused", s)
	}
	if err := p.Task.Resume(e.Ctx); err != nil {
		t.Fatal(err)
	}
	e.CheckRunning(p)

	// An exit checkpoint of a paused task stops it, and its image restores.
	if err := p.Task.Pause(e.Ctx); err != nil {
		t.Fatal(err)
	}
	lo := ckenv.LastCount(p.Out)
	img, err := p.Task.Checkpoint(e.Ctx, containerd.WithCheckpointName("localhost/ckpt/"+id+":paused-exit"),
		ckenv.WithCheckpointOptions(&runcoptions.CheckpointOptions{Exit: true}))
	if err != nil {
		t.Fatalf("exit checkpoint of a paused task: %v", err)
	}
	if code := e.WaitExit(p); code != 137 {
		t.Errorf("exit status after the exit checkpoint %d, want 137", code)
	}
	e.DeleteTask(p)
	r := e.StartTask(p.C, containerd.WithTaskCheckpoint(img))
	checkContinues(t, r.Out, lo, ckenv.LastCount(p.Out))
	e.KillAndDelete(r)
}

// TestCheckpointRefusesUnsupportedOptions sends runc options gVisor cannot honour
// (ExternalUnixSockets, EmptyNamespaces): each is refused with InvalidArgument and a
// message naming the option, the task keeps running unpaused and the image_path stays
// empty.
func TestCheckpointRefusesUnsupportedOptions(t *testing.T) {
	e := setup(t, harness.Options{})
	id := harness.RandomID("refuse")
	p := e.Run(id, []string{"/workload", "counter", "--interval", "100ms"})
	ckenv.WaitCount(t, p.Out, 0, 1)
	for _, tc := range []struct {
		name string
		opts *runcoptions.CheckpointOptions
		want string
	}{
		{"ExternalUnixSockets", &runcoptions.CheckpointOptions{ExternalUnixSockets: true}, "ExternalUnixSockets"},
		{"EmptyNamespaces", &runcoptions.CheckpointOptions{EmptyNamespaces: []string{"network"}}, "EmptyNamespaces"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := e.ImagePathDir("refused")
			tc.opts.ImagePath = dir
			_, err := p.Task.Checkpoint(e.Ctx, containerd.WithCheckpointName("localhost/ckpt/"+id+":"+strings.ToLower(tc.name)),
				ckenv.WithCheckpointOptions(tc.opts))
			if err == nil {
				t.Fatal("checkpoint succeeded")
			}
			if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v: want InvalidArgument naming %s", err, tc.want)
			}
			t.Logf("refused: %v", err)
			if _, err := e.Client.GetImage(e.Ctx, "localhost/ckpt/"+id+":"+strings.ToLower(tc.name)); !errdefs.IsNotFound(err) {
				t.Errorf("refused checkpoint left an image: %v", err)
			}
			if names := ckenv.DirNames(t, dir); len(names) > 0 {
				t.Fatalf("refused checkpoint left %v in %s", names, dir)
			}
			e.CheckRunning(p)
		})
	}
}
