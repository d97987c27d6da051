//go:build e2e

// Package fault is the end-to-end fault matrix of issue 7: checkpoint and restore
// under faults (runsc killed mid-checkpoint, tasks in every state, concurrent and
// many-task checkpoints, a changed spec at restore, containerd restarted between
// checkpoint and restore) and a soak of repeated checkpoint/restore cycles. Every case
// asserts that the container ends in a known state, that no data is lost (a counter
// continues, a memory checksum still matches), and that nothing leaks: no runsc state,
// no mount, no process, no cgroup, no stray file in the image directory.
//
// The cases the other suites already cover (a full disk, broken and corrupted images,
// another runsc build, the shim killed, containerd restarted while tasks run) are
// listed with these in docs/reliability.md.
package fault

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"

	ckpt "github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/checkpoint"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/ckenv"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

const (
	startTimeout = ckenv.StartTimeout
	lineTimeout  = ckenv.LineTimeout
	// testTimeout bounds one test's client calls.
	testTimeout = 10 * time.Minute
)

// env is one test's daemon with the test image imported (ckenv.Env), plus this
// suite's own helpers.
type env struct{ *ckenv.Env }

// proc is a task with its output and exit channel.
type proc = ckenv.Proc

// setup starts a private containerd with the shim and imports the test image.
func setup(t *testing.T, opts harness.Options) *env {
	t.Helper()
	return &env{ckenv.Setup(t, opts, testTimeout)}
}

// sub returns e for a subtest: same daemon, the subtest's failures.
func (e *env) sub(t *testing.T) *env { return &env{e.Env.Sub(t)} }

var counterArgs = []string{"/workload", "counter", "--interval", "100ms"}

// runcRuntime selects the shim with runc options, so that a restore can be asked
// for through CriuImagePath (containerd.WithRestoreImagePath).
func (e *env) runcRuntime() containerd.NewContainerOpts {
	return containerd.WithRuntime(e.D.RuntimeName, &runcoptions.Options{BinaryName: e.D.Tools.Runsc, Root: e.D.RunscRoot})
}

// checkContinues fails unless the restored counter's first value lies in [lo, hi+1]
// (after the last value printed before the checkpoint started, and at most right
// after the last one printed before it ended) and the values then keep increasing by
// one. It returns the first and the last value seen.
func checkContinues(t *testing.T, restored *harness.LineBuffer, lo, hi int) (int, int) {
	t.Helper()
	first, i := ckenv.WaitCount(t, restored, 0, 0)
	ckenv.WaitCount(t, restored, i+1, first+1)
	c := ckenv.Counts(restored.Lines())
	if first < lo || first > hi+1 {
		t.Fatalf("restored counter started at %d; the checkpoint was taken between count=%d and count=%d, so it must continue from there (a restarted process starts at 0)", first, lo, hi)
	}
	for j := 1; j < len(c); j++ {
		if c[j] != c[j-1]+1 {
			t.Fatalf("restored counter is not contiguous: %v", c)
		}
	}
	return first, c[len(c)-1]
}

// checkpointToPath checkpoints p into the new directory dir (image_path, so containerd
// packs nothing), with exit or leave-running.
func (e *env) checkpointToPath(p *proc, dir string, exit bool) error {
	_, err := p.Task.Checkpoint(e.Ctx, containerd.WithCheckpointName("localhost/ckpt/"+p.C.ID()+":"+filepath.Base(dir)),
		ckenv.WithCheckpointOptions(&runcoptions.CheckpointOptions{Exit: exit, ImagePath: dir}))
	return err
}

// checkCompleteImage fails unless dir holds a complete checkpoint: flat regular files,
// runsc-cuda.json listing every other file with its size.
func checkCompleteImage(t *testing.T, dir string) *ckpt.Metadata {
	t.Helper()
	names := ckenv.DirNames(t, dir)
	for _, n := range names {
		fi, err := os.Lstat(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		if !fi.Mode().IsRegular() {
			t.Errorf("checkpoint directory holds %s of mode %v; only regular files are allowed", n, fi.Mode())
		}
	}
	meta, err := ckpt.Read(dir)
	if err != nil {
		t.Fatalf("checkpoint directory %s (files %v): %v", dir, names, err)
	}
	if err := meta.CheckFiles(dir); err != nil {
		t.Fatal(err)
	}
	if len(meta.Files)+1 != len(names) {
		t.Errorf("directory files %v, metadata lists %d besides itself", names, len(meta.Files))
	}
	return meta
}

// checkNoValidImage fails when dir holds anything that could pass for a checkpoint:
// a runsc-cuda.json, or (with strict) any file at all.
func checkNoValidImage(t *testing.T, dir string, strict bool) {
	t.Helper()
	names := ckenv.DirNames(t, dir)
	if slices.Contains(names, ckpt.MetadataFile) {
		t.Fatalf("a failed checkpoint left %s in %s (files %v): it looks complete", ckpt.MetadataFile, dir, names)
	}
	if _, err := ckpt.Read(dir); err == nil {
		t.Fatalf("a failed checkpoint left a readable checkpoint in %s", dir)
	}
	if strict && len(names) > 0 {
		t.Fatalf("a failed checkpoint left %v in %s", names, dir)
	}
}

// checkNoLeftovers waits until the daemon has nothing but itself left: no process
// other than containerd, no mount but runsc's null-netns pin, no runsc container
// state, and no task bundle.
func (e *env) checkNoLeftovers() {
	e.T.Helper()
	root := filepath.Join(e.D.RunscRoot, e.D.Namespace)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var problems []string
		procs, err := e.D.Processes()
		if err != nil {
			e.T.Fatal(err)
		}
		for _, p := range procs {
			if p.PID != e.D.PID() {
				problems = append(problems, "process "+p.String())
			}
		}
		mounts, err := e.D.Mounts()
		if err != nil {
			e.T.Fatal(err)
		}
		for _, m := range mounts {
			problems = append(problems, "mount "+m)
		}
		left, err := harness.RunscLeftovers(root)
		if err != nil {
			e.T.Fatal(err)
		}
		for _, s := range left {
			problems = append(problems, "runsc "+s)
		}
		if _, err := os.Stat(root); err == nil {
			problems = append(problems, "the namespace's runsc directory "+root)
		}
		bundles, _ := os.ReadDir(filepath.Join(e.D.State, "io.containerd.runtime.v2.task", e.D.Namespace))
		for _, b := range bundles {
			problems = append(problems, "bundle "+b.Name())
		}
		if len(problems) == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.T.Fatalf("left behind:\n  %s", strings.Join(problems, "\n  "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// runscCheckpointProcess returns the `runsc ... checkpoint ...` host process of
// container id, if one runs.
func (e *env) runscCheckpointProcess(id string) (harness.Process, bool) {
	e.T.Helper()
	procs, err := e.D.Processes()
	if err != nil {
		e.T.Fatal(err)
	}
	for _, p := range procs {
		if len(p.Cmdline) > 1 && filepath.Base(p.Cmdline[0]) == "runsc" &&
			slices.Contains(p.Cmdline, "checkpoint") && p.Cmdline[len(p.Cmdline)-1] == id {
			return p, true
		}
	}
	return harness.Process{}, false
}

// sandboxProcess returns the runsc-sandbox host process of container id.
func (e *env) sandboxProcess(id string) (harness.Process, bool) {
	e.T.Helper()
	procs, err := e.D.Processes()
	if err != nil {
		e.T.Fatal(err)
	}
	for _, p := range procs {
		if len(p.Cmdline) > 0 && p.Cmdline[0] == "runsc-sandbox" && slices.ContainsFunc(p.Cmdline, func(a string) bool { return strings.Contains(a, id) }) {
			return p, true
		}
	}
	return harness.Process{}, false
}

// waitFor polls cond every 10 ms until it holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fileSize returns the size of path, or -1.
func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return -1
	}
	return fi.Size()
}

// memholdSum waits for memhold's ready line and returns its checksum.
func memholdSum(t *testing.T, out *harness.LineBuffer) string {
	t.Helper()
	ready := out.WaitFor(t, `^ready sum=[0-9a-f]{64}$`, startTimeout)
	return strings.TrimPrefix(ready, "ready sum=")
}

// checkMemhold waits for a verification line at index >= from and fails unless every
// verification line from there on reports sum (no CORRUPT, no new ready).
func checkMemhold(t *testing.T, out *harness.LineBuffer, from int, sum string) {
	t.Helper()
	out.WaitForFrom(t, from, `^(ok|CORRUPT) sum=`, startTimeout)
	for _, l := range out.Lines()[from:] {
		if strings.HasPrefix(l, "ready") || strings.Contains(l, "CORRUPT") || (strings.HasPrefix(l, "ok sum=") && !strings.HasPrefix(l, "ok sum="+sum+" ")) {
			t.Fatalf("memhold printed %q; want only ok sum=%s", l, sum)
		}
	}
}

// restoreFromPath restores container c from the image_path checkpoint dir through
// containerd's RestoreFromPath annotation (container.Restore, what the CRI's restore
// uses): containerd creates and starts the task with the directory as its checkpoint.
//
// container.Restore does not hand the task's IO back (the CRI keeps its own), so it is
// kept here and closed when the task is deleted; otherwise its fifo directory stays.
func (e *env) restoreFromPath(c containerd.Container, dir string) (*proc, error) {
	out := harness.NewLineBuffer()
	var taskIO cio.IO
	create := e.D.IO(nil, out, out)
	keep := func(id string) (cio.IO, error) {
		i, err := create(id)
		taskIO = i
		return i, err
	}
	if _, err := c.Restore(e.Ctx, keep, dir); err != nil {
		return nil, err
	}
	task, err := c.Task(e.Ctx, nil)
	if err != nil {
		return nil, err
	}
	exitC, err := task.Wait(e.Ctx)
	if err != nil {
		return nil, err
	}
	return &proc{C: c, Task: task, Out: out, ExitC: exitC, IO: taskIO}, nil
}
