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
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"

	ckpt "github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/checkpoint"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

const (
	// startTimeout bounds a sandbox start or restore and the first output after it.
	startTimeout = 2 * time.Minute
	// lineTimeout bounds the wait for the next line of a running workload.
	lineTimeout = 30 * time.Second
	// testTimeout bounds one test's client calls.
	testTimeout = 10 * time.Minute
)

var counterArgs = []string{"/workload", "counter", "--interval", "100ms"}

// env is one test's daemon with the test image imported.
type env struct {
	t      *testing.T
	d      *harness.Daemon
	ctx    context.Context
	client *containerd.Client
	image  containerd.Image
}

// setup starts a private containerd with the shim and imports the test image.
func setup(t *testing.T, opts harness.Options) *env {
	t.Helper()
	d := harness.StartContainerd(t, opts)
	ref := d.ImportTestImage(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	image, err := d.Client().GetImage(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, d: d, ctx: ctx, client: d.Client(), image: image}
}

// sub returns e for a subtest: same daemon, the subtest's failures.
func (e *env) sub(t *testing.T) *env {
	c := *e
	c.t = t
	return &c
}

// newContainer creates a container of the test image running args under the shim
// (with the daemon's shim config unless runtime is given).
func (e *env) newContainer(id string, args []string, runtime containerd.NewContainerOpts, specOpts ...oci.SpecOpts) containerd.Container {
	e.t.Helper()
	if runtime == nil {
		runtime = e.d.RuntimeOpts()
	}
	so := append([]oci.SpecOpts{oci.WithImageConfig(e.image), oci.WithProcessArgs(args...)}, specOpts...)
	c, err := e.client.NewContainer(e.ctx, id,
		containerd.WithImage(e.image),
		containerd.WithNewSnapshot(id, e.image),
		runtime,
		containerd.WithNewSpec(so...),
	)
	if err != nil {
		e.t.Fatalf("create container %s: %v", id, err)
	}
	return c
}

// runcRuntime selects the shim with runc options, so that a restore can be asked
// for through CriuImagePath (containerd.WithRestoreImagePath).
func (e *env) runcRuntime() containerd.NewContainerOpts {
	return containerd.WithRuntime(e.d.RuntimeName, &runcoptions.Options{BinaryName: e.d.Tools.Runsc, Root: e.d.RunscRoot})
}

// proc is a task with its output and exit channel.
type proc struct {
	c     containerd.Container
	task  containerd.Task
	out   *harness.LineBuffer
	exitC <-chan containerd.ExitStatus
	// io is the task's IO when the task object does not own it (restoreFromPath).
	io cio.IO
}

// startTask creates and starts c's task with fresh IO into a LineBuffer; with
// containerd.WithTaskCheckpoint or WithRestoreImagePath among opts it restores.
func (e *env) startTask(c containerd.Container, opts ...containerd.NewTaskOpts) *proc {
	e.t.Helper()
	p, err := e.tryStartTask(c, opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

func (e *env) tryStartTask(c containerd.Container, opts ...containerd.NewTaskOpts) (*proc, error) {
	out := harness.NewLineBuffer()
	task, err := c.NewTask(e.ctx, e.d.IO(nil, out, out), opts...)
	if err != nil {
		return nil, fmt.Errorf("new task %s: %w", c.ID(), err)
	}
	exitC, err := task.Wait(e.ctx)
	if err != nil {
		return nil, fmt.Errorf("wait %s: %w", c.ID(), err)
	}
	if err := task.Start(e.ctx); err != nil {
		_, _ = task.Delete(e.ctx, containerd.WithProcessKill)
		return nil, fmt.Errorf("start %s: %w (output: %q)", c.ID(), err, out.String())
	}
	return &proc{c: c, task: task, out: out, exitC: exitC}, nil
}

// run creates a container running args and starts it.
func (e *env) run(id string, args []string, specOpts ...oci.SpecOpts) *proc {
	e.t.Helper()
	return e.startTask(e.newContainer(id, args, nil, specOpts...))
}

// waitExit waits for the task's exit and returns its status.
func (e *env) waitExit(p *proc) uint32 {
	e.t.Helper()
	select {
	case st := <-p.exitC:
		code, _, err := st.Result()
		if err != nil {
			e.t.Fatalf("exit of %s: %v", p.c.ID(), err)
		}
		return code
	case <-time.After(startTimeout):
		e.t.Fatalf("task %s did not exit; output:\n%s", p.c.ID(), p.out)
	}
	return 0
}

// deleteTask deletes an exited task and returns the exit status Delete reports.
func (e *env) deleteTask(p *proc) uint32 {
	e.t.Helper()
	st, err := p.task.Delete(e.ctx)
	if err != nil {
		e.t.Fatalf("delete task %s: %v", p.c.ID(), err)
	}
	if p.io != nil {
		p.io.Wait()
		p.io.Close()
	}
	return st.ExitCode()
}

// killAndDelete kills the task with SIGKILL, waits for it and deletes it.
func (e *env) killAndDelete(p *proc) {
	e.t.Helper()
	if err := p.task.Kill(e.ctx, syscall.SIGKILL); err != nil {
		e.t.Fatalf("kill %s: %v", p.c.ID(), err)
	}
	if code := e.waitExit(p); code != 128+uint32(syscall.SIGKILL) {
		e.t.Errorf("%s exited with %d after SIGKILL, want %d", p.c.ID(), code, 128+syscall.SIGKILL)
	}
	e.deleteTask(p)
}

// removeContainer deletes the container and its snapshot (its task must be gone).
func (e *env) removeContainer(c containerd.Container) {
	e.t.Helper()
	if err := c.Delete(e.ctx, containerd.WithSnapshotCleanup); err != nil {
		e.t.Fatalf("delete container %s: %v", c.ID(), err)
	}
}

var countRE = regexp.MustCompile(`^count=(\d+)$`)

// counts returns the values of the count=N lines in lines.
func counts(lines []string) []int {
	var out []int
	for _, l := range lines {
		if m := countRE.FindStringSubmatch(l); m != nil {
			n, _ := strconv.Atoi(m[1])
			out = append(out, n)
		}
	}
	return out
}

// waitCount waits for a count line at index >= from whose value is at least atLeast
// and returns the value and the line's index.
func waitCount(t *testing.T, out *harness.LineBuffer, from, atLeast int) (int, int) {
	t.Helper()
	for {
		line, i := out.WaitForFrom(t, from, `^count=\d+$`, lineTimeout)
		n, _ := strconv.Atoi(strings.TrimPrefix(line, "count="))
		if n >= atLeast {
			return n, i
		}
		from = i + 1
	}
}

// lastCount returns the last count printed, or -1.
func lastCount(out *harness.LineBuffer) int {
	c := counts(out.Lines())
	if len(c) == 0 {
		return -1
	}
	return c[len(c)-1]
}

// checkContinues fails unless the restored counter's first value lies in [lo, hi+1]
// (after the last value printed before the checkpoint started, and at most right
// after the last one printed before it ended) and the values then keep increasing by
// one. It returns the first and the last value seen.
func checkContinues(t *testing.T, restored *harness.LineBuffer, lo, hi int) (int, int) {
	t.Helper()
	first, i := waitCount(t, restored, 0, 0)
	waitCount(t, restored, i+1, first+1)
	c := counts(restored.Lines())
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

// withCheckpointOptions sets the runc CheckpointOptions the client sends.
func withCheckpointOptions(o any) containerd.CheckpointTaskOpts {
	return func(r *containerd.CheckpointTaskInfo) error {
		r.Options = o
		return nil
	}
}

// imagePathDir returns a new, not yet existing directory under the daemon's directory
// for an image_path checkpoint (removed with the daemon's directory).
func (e *env) imagePathDir(name string) string {
	dir := filepath.Join(e.d.Dir, "ckpt", harness.RandomID(name))
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		e.t.Fatal(err)
	}
	return dir
}

// checkpointToPath checkpoints p into the new directory dir (image_path, so containerd
// packs nothing), with exit or leave-running.
func (e *env) checkpointToPath(p *proc, dir string, exit bool) error {
	_, err := p.task.Checkpoint(e.ctx, containerd.WithCheckpointName("localhost/ckpt/"+p.c.ID()+":"+filepath.Base(dir)),
		withCheckpointOptions(&runcoptions.CheckpointOptions{Exit: exit, ImagePath: dir}))
	return err
}

// checkCompleteImage fails unless dir holds a complete checkpoint: flat regular files,
// runsc-cuda.json listing every other file with its size.
func checkCompleteImage(t *testing.T, dir string) *ckpt.Metadata {
	t.Helper()
	names := dirNames(t, dir)
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
	names := dirNames(t, dir)
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

// dirNames returns the names in dir (nil when it does not exist).
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, en := range entries {
		names = append(names, en.Name())
	}
	return names
}

// runsc runs the daemon's runsc against the shim's state root of sandbox
// (nsRoot/<sandbox id>; a container that is its own sandbox has its id).
func (e *env) runsc(sandbox string, args ...string) (string, error) {
	root := filepath.Join(e.d.RunscRoot, e.d.Namespace, sandbox)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.d.Tools.Runsc, append([]string{"--root", root}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("runsc %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// runscStatus returns runsc's status of container id ("running", "paused", ...), or ""
// when runsc has no state for it.
func (e *env) runscStatus(id string) string {
	e.t.Helper()
	out, err := e.runsc(id, "list")
	if err != nil {
		if _, serr := os.Stat(filepath.Join(e.d.RunscRoot, e.d.Namespace, id)); os.IsNotExist(serr) {
			return ""
		}
		e.t.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == id {
			return f[2]
		}
	}
	return ""
}

// checkRunning fails unless the task is running for containerd and for runsc, and
// keeps printing counts.
func (e *env) checkRunning(p *proc) {
	e.t.Helper()
	st, err := p.task.Status(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	if st.Status != containerd.Running {
		e.t.Fatalf("task %s is %s, want running", p.c.ID(), st.Status)
	}
	if s := e.runscStatus(p.c.ID()); s != "running" {
		e.t.Fatalf("runsc reports %s as %q, want running", p.c.ID(), s)
	}
	n := p.out.Len()
	waitCount(e.t, p.out, n, lastCount(p.out)+1)
}

// cgroupsOf returns the cgroup directories on this host named for container id under
// the test namespace (containerd's default cgroupsPath is /<namespace>/<id>).
func (e *env) cgroupsOf(id string) []string {
	var found []string
	for _, pattern := range []string{
		filepath.Join("/sys/fs/cgroup", "*", e.d.Namespace, id),
		filepath.Join("/sys/fs/cgroup", e.d.Namespace, id),
	} {
		m, _ := filepath.Glob(pattern)
		found = append(found, m...)
	}
	return found
}

// checkNoTrace waits until nothing of container id's task is left: no runsc state, no
// task bundle, no mount, cgroup or process naming it.
func (e *env) checkNoTrace(id string) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var left []string
		if s := e.runscStatus(id); s != "" {
			left = append(left, "runsc state "+s)
		}
		bundle := filepath.Join(e.d.State, "io.containerd.runtime.v2.task", e.d.Namespace, id)
		if _, err := os.Stat(bundle); err == nil {
			left = append(left, "bundle "+bundle)
		}
		mounts, err := e.d.Mounts()
		if err != nil {
			e.t.Fatal(err)
		}
		for _, m := range mounts {
			if strings.Contains(m, id) {
				left = append(left, "mount "+m)
			}
		}
		procs, err := e.d.Processes()
		if err != nil {
			e.t.Fatal(err)
		}
		for _, p := range procs {
			if slices.ContainsFunc(p.Cmdline, func(a string) bool { return strings.Contains(a, id) }) {
				left = append(left, "process "+p.String())
			}
		}
		for _, cg := range e.cgroupsOf(id) {
			left = append(left, "cgroup "+cg)
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("left behind by %s:\n  %s", id, strings.Join(left, "\n  "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkNoLeftovers waits until the daemon has nothing but itself left: no process
// other than containerd, no mount but runsc's null-netns pin, no runsc container
// state, and no task bundle.
func (e *env) checkNoLeftovers() {
	e.t.Helper()
	root := filepath.Join(e.d.RunscRoot, e.d.Namespace)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var problems []string
		procs, err := e.d.Processes()
		if err != nil {
			e.t.Fatal(err)
		}
		for _, p := range procs {
			if p.PID != e.d.PID() {
				problems = append(problems, "process "+p.String())
			}
		}
		mounts, err := e.d.Mounts()
		if err != nil {
			e.t.Fatal(err)
		}
		for _, m := range mounts {
			problems = append(problems, "mount "+m)
		}
		left, err := harness.RunscLeftovers(root)
		if err != nil {
			e.t.Fatal(err)
		}
		for _, s := range left {
			problems = append(problems, "runsc "+s)
		}
		bundles, _ := os.ReadDir(filepath.Join(e.d.State, "io.containerd.runtime.v2.task", e.d.Namespace))
		for _, b := range bundles {
			problems = append(problems, "bundle "+b.Name())
		}
		if len(problems) == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("left behind:\n  %s", strings.Join(problems, "\n  "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// runscCheckpointProcess returns the `runsc ... checkpoint ...` host process of
// container id, if one runs.
func (e *env) runscCheckpointProcess(id string) (harness.Process, bool) {
	e.t.Helper()
	procs, err := e.d.Processes()
	if err != nil {
		e.t.Fatal(err)
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
	e.t.Helper()
	procs, err := e.d.Processes()
	if err != nil {
		e.t.Fatal(err)
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
	create := e.d.IO(nil, out, out)
	keep := func(id string) (cio.IO, error) {
		i, err := create(id)
		taskIO = i
		return i, err
	}
	if _, err := c.Restore(e.ctx, keep, dir); err != nil {
		return nil, err
	}
	task, err := c.Task(e.ctx, nil)
	if err != nil {
		return nil, err
	}
	exitC, err := task.Wait(e.ctx)
	if err != nil {
		return nil, err
	}
	return &proc{c: c, task: task, out: out, exitC: exitC, io: taskIO}, nil
}
