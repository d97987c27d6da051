//go:build e2e

package checkpoint

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"

	ckpt "github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/checkpoint"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/ckenv"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

var counterArgs = []string{"/workload", "counter", "--interval", "100ms"}

// checkpointToPath runs a counter, checkpoints it with exit into a new image_path
// directory (runc CheckpointOptions{Exit, ImagePath}: containerd commits nothing and
// the shim writes straight into the directory), and returns the exited task, with the
// directory and the counts between which the checkpoint was taken.
func (e *env) checkpointToPath(id string) (p *proc, dir string, lo, hi int) {
	e.T.Helper()
	p = e.Run(id, counterArgs)
	ckenv.WaitCount(e.T, p.Out, 0, 3)
	lo = ckenv.LastCount(p.Out)
	dir = e.ImagePathDir(id)
	_, err := p.Task.Checkpoint(e.Ctx, containerd.WithCheckpointName("localhost/ckpt/"+id+":path"),
		ckenv.WithCheckpointOptions(&runcoptions.CheckpointOptions{Exit: true, ImagePath: dir}))
	if err != nil {
		e.T.Fatalf("checkpoint to %s: %v", dir, err)
	}
	e.WaitExit(p)
	e.DeleteTask(p)
	hi = ckenv.LastCount(p.Out)
	checkFlatDir(e.T, dir)
	return p, dir, lo, hi
}

// restoreFromPath restores container c from dir through containerd's RestoreFromPath
// path: client container.Restore sends CreateTaskRequest.Checkpoint with only the
// "RestoreFromPath" annotation (what the CRI's restore uses); containerd passes the
// directory to the shim as the checkpoint and starts the task itself.
func (e *env) restoreFromPath(c containerd.Container, dir string) (*proc, error) {
	out := harness.NewLineBuffer()
	if _, err := c.Restore(e.Ctx, e.D.IO(nil, out, out), dir); err != nil {
		return nil, err
	}
	task, err := c.Task(e.Ctx, nil)
	if err != nil {
		e.T.Fatal(err)
	}
	exitC, err := task.Wait(e.Ctx)
	if err != nil {
		e.T.Fatal(err)
	}
	return &proc{C: c, Task: task, Out: out, ExitC: exitC}, nil
}

// TestCompatRestoreFromPath restores an image_path checkpoint through the
// RestoreFromPath annotation: the counter continues on the new IO, and the restored
// task is as usable as a fresh one: it is running, an exec runs and reports its exit
// status, pids lists it, and SIGKILL, Wait and Delete report 137.
func TestCompatRestoreFromPath(t *testing.T) {
	e := setup(t, harness.Options{})
	id := harness.RandomID("frompath")
	p, dir, lo, hi := e.checkpointToPath(id)

	r, err := e.restoreFromPath(p.C, dir)
	if err != nil {
		t.Fatalf("restore from path: %v", err)
	}
	checkContinues(t, r.Out, lo, hi)
	e.CheckRunning(r)
	if got := e.mustExec(r, "/bin/sh", "-c", "echo restored-exec"); got != "restored-exec\n" {
		t.Errorf("exec output %q", got)
	}
	if _, code := e.exec(r, "/workload", "exit", "--code", "3"); code != 3 {
		t.Errorf("exec exit status %d, want 3", code)
	}
	pids, err := r.Task.Pids(e.Ctx)
	if err != nil || len(pids) == 0 {
		t.Errorf("pids of the restored task: %v, %v", pids, err)
	}
	if err := r.Task.Kill(e.Ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := e.WaitExit(r); code != 137 {
		t.Errorf("exit status %d after SIGKILL, want 137", code)
	}
	st, err := r.Task.Delete(e.Ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.ExitCode() != 137 {
		t.Errorf("delete reported %d, want 137", st.ExitCode())
	}
	e.CheckNoTrace(id)
}

// TestRestoreRejectsRunscVersionMismatch edits runsc_version in the metadata of an
// image_path checkpoint and restores from the directory through both ways containerd
// hands a path to the shim: runc options' CriuImagePath (NewTask WithRestoreImagePath,
// for a container whose runtime options are runc's) and the RestoreFromPath annotation.
// Each fails with FailedPrecondition naming both versions, before runsc creates
// anything: no runsc state, bundle, mount or process is left. With the metadata put
// back, the CriuImagePath restore works and the counter continues.
func TestRestoreRejectsRunscVersionMismatch(t *testing.T) {
	e := setup(t, harness.Options{})
	_, dir, lo, hi := e.checkpointToPath(harness.RandomID("version"))
	metaPath := filepath.Join(dir, ckpt.MetadataFile)
	orig, err := os.ReadFile(metaPath)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(orig, &m); err != nil {
		t.Fatal(err)
	}
	hostVersion, _ := m["runsc_version"].(string)
	const fake = "0.0.0-19990101000000-000000000000"
	m["runsc_version"] = fake
	edited, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(metaPath, edited, 0o600); err != nil {
		t.Fatal(err)
	}
	checkMismatch := func(t *testing.T, err error) {
		t.Helper()
		if err == nil {
			t.Fatal("restore of a checkpoint made by another runsc succeeded")
		}
		if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), fake) || !strings.Contains(err.Error(), hostVersion) {
			t.Fatalf("error %v: want FailedPrecondition naming %q and %q", err, fake, hostVersion)
		}
		t.Logf("refused: %v", err)
	}
	runcRuntime := containerd.WithRuntime(e.D.RuntimeName, &runcoptions.Options{BinaryName: e.D.Tools.Runsc, Root: e.D.RunscRoot})

	t.Run("CriuImagePath", func(t *testing.T) {
		e := e.sub(t)
		id := harness.RandomID("criupath")
		c := e.NewContainer(id, counterArgs, runcRuntime)
		_, err := c.NewTask(e.Ctx, e.D.IO(nil, nil, nil), containerd.WithRestoreImagePath(dir))
		checkMismatch(t, err)
		e.CheckNoTrace(id)
	})
	t.Run("RestoreFromPath", func(t *testing.T) {
		e := e.sub(t)
		id := harness.RandomID("annotation")
		c := e.NewContainer(id, counterArgs, nil)
		_, err := e.restoreFromPath(c, dir)
		checkMismatch(t, err)
		e.CheckNoTrace(id)
	})
	t.Run("MatchingVersion", func(t *testing.T) {
		e := e.sub(t)
		if err := os.WriteFile(metaPath, orig, 0o600); err != nil {
			t.Fatal(err)
		}
		id := harness.RandomID("criupath-ok")
		r := e.StartTask(e.NewContainer(id, counterArgs, runcRuntime), containerd.WithRestoreImagePath(dir))
		checkContinues(t, r.Out, lo, hi)
		e.KillAndDelete(r)
		e.CheckNoTrace(id)
	})
}
