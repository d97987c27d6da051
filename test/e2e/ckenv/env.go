// Package ckenv is what the checkpoint/restore end-to-end suites (test/e2e/checkpoint
// and test/e2e/fault) share: a daemon with the test image imported, tasks with their
// output in a LineBuffer, the counter workload's checks, and the checks that a
// container left nothing behind. Each suite embeds Env in its own env type and adds
// what only it needs.
package ckenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
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

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

const (
	// StartTimeout bounds a sandbox start or restore and the first output after it.
	StartTimeout = 2 * time.Minute
	// LineTimeout bounds the wait for the next line of a running workload.
	LineTimeout = 30 * time.Second
)

// Env is one test's daemon with the test image imported.
type Env struct {
	T      *testing.T
	D      *harness.Daemon
	Ctx    context.Context
	Client *containerd.Client
	Image  containerd.Image
}

// Setup starts a private containerd with the shim and imports the test image; the
// test's client calls share one context that ends after timeout.
func Setup(t *testing.T, opts harness.Options, timeout time.Duration) *Env {
	t.Helper()
	d := harness.StartContainerd(t, opts)
	ref := d.ImportTestImage(t)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	image, err := d.Client().GetImage(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	return &Env{T: t, D: d, Ctx: ctx, Client: d.Client(), Image: image}
}

// Sub returns e for a subtest: same daemon, the subtest's failures.
func (e *Env) Sub(t *testing.T) *Env {
	c := *e
	c.T = t
	return &c
}

// NewContainer creates a container of the test image running args under the shim
// (with the daemon's shim config unless runtime is given).
func (e *Env) NewContainer(id string, args []string, runtime containerd.NewContainerOpts, specOpts ...oci.SpecOpts) containerd.Container {
	e.T.Helper()
	if runtime == nil {
		runtime = e.D.RuntimeOpts()
	}
	so := append([]oci.SpecOpts{oci.WithImageConfig(e.Image), oci.WithProcessArgs(args...)}, specOpts...)
	c, err := e.Client.NewContainer(e.Ctx, id,
		containerd.WithImage(e.Image),
		containerd.WithNewSnapshot(id, e.Image),
		runtime,
		containerd.WithNewSpec(so...),
	)
	if err != nil {
		e.T.Fatalf("create container %s: %v", id, err)
	}
	return c
}

// Proc is a task with its output and exit channel.
type Proc struct {
	C     containerd.Container
	Task  containerd.Task
	Out   *harness.LineBuffer
	ExitC <-chan containerd.ExitStatus
	// IO is the task's IO when the task object does not own it (a restore
	// through RestoreFromPath).
	IO cio.IO
}

// StartTask creates and starts c's task with fresh IO into a LineBuffer; with
// containerd.WithTaskCheckpoint or WithRestoreImagePath among opts it restores.
func (e *Env) StartTask(c containerd.Container, opts ...containerd.NewTaskOpts) *Proc {
	e.T.Helper()
	p, err := e.TryStartTask(c, opts...)
	if err != nil {
		e.T.Fatal(err)
	}
	return p
}

// TryStartTask is StartTask returning the error.
func (e *Env) TryStartTask(c containerd.Container, opts ...containerd.NewTaskOpts) (*Proc, error) {
	out := harness.NewLineBuffer()
	task, err := c.NewTask(e.Ctx, e.D.IO(nil, out, out), opts...)
	if err != nil {
		return nil, fmt.Errorf("new task %s: %w", c.ID(), err)
	}
	exitC, err := task.Wait(e.Ctx)
	if err != nil {
		return nil, fmt.Errorf("wait %s: %w", c.ID(), err)
	}
	if err := task.Start(e.Ctx); err != nil {
		_, _ = task.Delete(e.Ctx, containerd.WithProcessKill)
		return nil, fmt.Errorf("start %s: %w (output: %q)", c.ID(), err, out.String())
	}
	return &Proc{C: c, Task: task, Out: out, ExitC: exitC}, nil
}

// Run creates a container running args and starts it.
func (e *Env) Run(id string, args []string, specOpts ...oci.SpecOpts) *Proc {
	e.T.Helper()
	return e.StartTask(e.NewContainer(id, args, nil, specOpts...))
}

// WaitExit waits for the task's exit and returns its status.
func (e *Env) WaitExit(p *Proc) uint32 {
	e.T.Helper()
	select {
	case st := <-p.ExitC:
		code, _, err := st.Result()
		if err != nil {
			e.T.Fatalf("exit of %s: %v", p.C.ID(), err)
		}
		return code
	case <-time.After(StartTimeout):
		e.T.Fatalf("task %s did not exit; output:\n%s", p.C.ID(), p.Out)
	}
	return 0
}

// DeleteTask deletes an exited task and returns the exit status Delete reports.
// Delete also waits for the task's IO, so the LineBuffer is complete afterwards.
func (e *Env) DeleteTask(p *Proc) uint32 {
	e.T.Helper()
	st, err := p.Task.Delete(e.Ctx)
	if err != nil {
		e.T.Fatalf("delete task %s: %v", p.C.ID(), err)
	}
	if p.IO != nil {
		p.IO.Wait()
		p.IO.Close()
	}
	return st.ExitCode()
}

// KillAndDelete kills the task with SIGKILL, waits for it and deletes it.
func (e *Env) KillAndDelete(p *Proc) {
	e.T.Helper()
	if err := p.Task.Kill(e.Ctx, syscall.SIGKILL); err != nil {
		e.T.Fatalf("kill %s: %v", p.C.ID(), err)
	}
	if code := e.WaitExit(p); code != 128+uint32(syscall.SIGKILL) {
		e.T.Errorf("%s exited with %d after SIGKILL, want %d", p.C.ID(), code, 128+syscall.SIGKILL)
	}
	e.DeleteTask(p)
}

// RemoveContainer deletes the container and its snapshot (its task must be gone).
func (e *Env) RemoveContainer(c containerd.Container) {
	e.T.Helper()
	if err := c.Delete(e.Ctx, containerd.WithSnapshotCleanup); err != nil {
		e.T.Fatalf("delete container %s: %v", c.ID(), err)
	}
}

var countRE = regexp.MustCompile(`^count=(\d+)$`)

// Counts returns the values of the count=N lines in lines.
func Counts(lines []string) []int {
	var out []int
	for _, l := range lines {
		if m := countRE.FindStringSubmatch(l); m != nil {
			n, _ := strconv.Atoi(m[1])
			out = append(out, n)
		}
	}
	return out
}

// WaitCount waits for a count line at index >= from whose value is at least atLeast
// and returns the value and the line's index.
func WaitCount(t *testing.T, out *harness.LineBuffer, from, atLeast int) (int, int) {
	t.Helper()
	for {
		line, i := out.WaitForFrom(t, from, `^count=\d+$`, LineTimeout)
		n, _ := strconv.Atoi(strings.TrimPrefix(line, "count="))
		if n >= atLeast {
			return n, i
		}
		from = i + 1
	}
}

// LastCount returns the last count printed, or -1.
func LastCount(out *harness.LineBuffer) int {
	c := Counts(out.Lines())
	if len(c) == 0 {
		return -1
	}
	return c[len(c)-1]
}

// WithCheckpointOptions sets the runc CheckpointOptions the client sends.
func WithCheckpointOptions(o any) containerd.CheckpointTaskOpts {
	return func(r *containerd.CheckpointTaskInfo) error {
		r.Options = o
		return nil
	}
}

// ImagePathDir returns a new, not yet existing directory under the daemon's directory
// for an image_path checkpoint (not under /tmp and not the test's TempDir, so the
// harness cleanup removes it with everything else).
func (e *Env) ImagePathDir(name string) string {
	dir := filepath.Join(e.D.Dir, "ckpt", harness.RandomID(name))
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		e.T.Fatal(err)
	}
	return dir
}

// DirNames returns the names in dir (none when it does not exist).
func DirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
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

// RunscDir is the shim's runsc state directory of sandbox (a container that is its own
// sandbox has its id).
func (e *Env) RunscDir(sandbox string) string {
	return filepath.Join(e.D.RunscRoot, e.D.Namespace, sandbox)
}

// Runsc runs the daemon's runsc against the shim's state directory of sandbox.
func (e *Env) Runsc(sandbox string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.D.Tools.Runsc, append([]string{"--root", e.RunscDir(sandbox)}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("runsc %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// RunscStatus returns runsc's status of container id ("running", "paused", ...), or ""
// when runsc has no state for it.
func (e *Env) RunscStatus(id string) string {
	e.T.Helper()
	out, err := e.Runsc(id, "list")
	if err != nil {
		if _, serr := os.Stat(e.RunscDir(id)); os.IsNotExist(serr) {
			return ""
		}
		e.T.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == id {
			return f[2]
		}
	}
	return ""
}

// CheckRunning fails unless the task is running for containerd and for runsc, and
// keeps printing counts.
func (e *Env) CheckRunning(p *Proc) {
	e.T.Helper()
	st, err := p.Task.Status(e.Ctx)
	if err != nil {
		e.T.Fatal(err)
	}
	if st.Status != containerd.Running {
		e.T.Fatalf("task %s is %s, want running", p.C.ID(), st.Status)
	}
	if s := e.RunscStatus(p.C.ID()); s != "running" {
		e.T.Fatalf("runsc reports %s as %q, want running", p.C.ID(), s)
	}
	n := p.Out.Len()
	WaitCount(e.T, p.Out, n, LastCount(p.Out)+1)
}

// CgroupsOf returns the cgroup directories on this host named for container id under
// the test namespace (containerd's default cgroupsPath is /<namespace>/<id>).
func (e *Env) CgroupsOf(id string) []string {
	var found []string
	for _, pattern := range []string{
		filepath.Join("/sys/fs/cgroup", "*", e.D.Namespace, id),
		filepath.Join("/sys/fs/cgroup", e.D.Namespace, id),
	} {
		m, _ := filepath.Glob(pattern)
		found = append(found, m...)
	}
	return found
}

// CheckNoTrace waits until nothing of container id's task is left: no runsc state or
// state directory, no task bundle, no mount, cgroup or process naming it.
func (e *Env) CheckNoTrace(id string) {
	e.T.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var left []string
		if s := e.RunscStatus(id); s != "" {
			left = append(left, "runsc state "+s)
		} else if _, err := os.Stat(e.RunscDir(id)); err == nil {
			left = append(left, "runsc state directory "+e.RunscDir(id))
		}
		bundle := filepath.Join(e.D.State, "io.containerd.runtime.v2.task", e.D.Namespace, id)
		if _, err := os.Stat(bundle); err == nil {
			left = append(left, "bundle "+bundle)
		}
		mounts, err := e.D.Mounts()
		if err != nil {
			e.T.Fatal(err)
		}
		for _, m := range mounts {
			if strings.Contains(m, id) {
				left = append(left, "mount "+m)
			}
		}
		procs, err := e.D.Processes()
		if err != nil {
			e.T.Fatal(err)
		}
		for _, p := range procs {
			if slices.ContainsFunc(p.Cmdline, func(a string) bool { return strings.Contains(a, id) }) {
				left = append(left, "process "+p.String())
			}
		}
		for _, cg := range e.CgroupsOf(id) {
			left = append(left, "cgroup "+cg)
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.T.Fatalf("left behind by %s:\n  %s", id, strings.Join(left, "\n  "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// CopyImage copies the regular files of the checkpoint directory src into the new
// directory dst (files 0600, as the shim writes them) and returns dst.
func CopyImage(t *testing.T, src, dst string) string {
	t.Helper()
	if err := os.MkdirAll(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range DirNames(t, src) {
		in, err := os.Open(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		out, err := os.OpenFile(filepath.Join(dst, name), os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, in); err != nil {
			t.Fatal(err)
		}
		in.Close()
		if err := out.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// Scribble overwrites the middle half of path with a pattern, keeping its size (so
// the size check of runsc-cuda.json passes and only the content is wrong).
func Scribble(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	junk := bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, int(st.Size()/8)+1)[:st.Size()/2]
	if _, err := f.WriteAt(junk, st.Size()/4); err != nil {
		t.Fatal(err)
	}
}
