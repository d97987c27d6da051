// Package processtest has a fake runsc for tests of the state machines of
// package process and of their users: real runsc runs in the e2e suites.
package processtest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/runsc"
)

// FakeRuntime stands in for runsc (these tests drive the state machines;
// real runsc runs in the e2e suites). Its sandboxes and `runsc exec`s are
// real host processes (sleep), so pids, kills and liveness are real. It
// records the verbs it ran; errs makes a verb fail; Wait blocks until exit
// is called for the container.
type FakeRuntime struct {
	t testing.TB

	mu    sync.Mutex
	calls []string
	errs  map[string]error
	// RunscState is what `runsc state` reports.
	RunscState string
	waits      map[string]chan int
	procs      []*exec.Cmd
	sandbox    *exec.Cmd
}

func NewFakeRuntime(t testing.TB) *FakeRuntime {
	f := &FakeRuntime{t: t, errs: map[string]error{}, waits: map[string]chan int{}, RunscState: "running"}
	t.Cleanup(func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, c := range f.procs {
			_ = c.Process.Kill()
		}
	})
	return f
}

func (f *FakeRuntime) record(verb string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, verb)
	return f.errs[verb]
}

// Verbs returns the verbs run so far, space separated.
func (f *FakeRuntime) Verbs() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.calls, " ")
}

func (f *FakeRuntime) Fail(verb string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs[verb] = err
}

// spawn starts a host process standing in for a sandbox or an exec and
// writes its pid to pidFile.
func (f *FakeRuntime) spawn(pidFile string) *exec.Cmd {
	cmd := exec.Command("sleep", "1000")
	if err := cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	f.mu.Lock()
	f.procs = append(f.procs, cmd)
	f.mu.Unlock()
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)), 0o600); err != nil {
		f.t.Fatal(err)
	}
	return cmd
}

// Exit makes `runsc wait` of id return status.
func (f *FakeRuntime) Exit(id string, status int) { f.wait(id) <- status }

func (f *FakeRuntime) wait(id string) chan int {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch, ok := f.waits[id]
	if !ok {
		ch = make(chan int, 1)
		f.waits[id] = ch
	}
	return ch
}

func (f *FakeRuntime) Create(_ context.Context, id, _ string, o runsc.CreateOpts) error {
	if err := f.record("create"); err != nil {
		return err
	}
	cmd := f.spawn(o.PidFile)
	f.mu.Lock()
	f.sandbox = cmd
	f.mu.Unlock()
	// `runsc wait` returns when the sandbox dies, as killed.
	go func() {
		_ = cmd.Wait()
		f.Exit(id, 137)
	}()
	return nil
}

// KillSandbox kills the current sandbox process.
func (f *FakeRuntime) KillSandbox() {
	f.mu.Lock()
	defer f.mu.Unlock()
	_ = f.sandbox.Process.Kill()
}
func (f *FakeRuntime) Start(context.Context, string, runc.IO) error { return f.record("start") }
func (f *FakeRuntime) Restore(context.Context, string, string, runsc.RestoreOpts) error {
	return f.record("restore")
}

// Checkpoint records the verb and, as runsc does, writes an image file into
// the image directory (when there is one).
func (f *FakeRuntime) Checkpoint(_ context.Context, _ string, o runsc.CheckpointOpts) error {
	if err := f.record("checkpoint"); err != nil {
		return err
	}
	if st, err := os.Stat(o.ImagePath); err != nil || !st.IsDir() {
		return nil
	}
	return os.WriteFile(filepath.Join(o.ImagePath, "checkpoint.img"), []byte("image"), 0o644)
}
func (f *FakeRuntime) Exec(_ context.Context, _ string, _ specs.Process, o runsc.ExecOpts) error {
	if err := f.record("exec"); err != nil {
		return err
	}
	cmd := f.spawn(o.PidFile)
	go func() { _ = cmd.Wait() }()
	return os.WriteFile(o.InternalPidFile, []byte("2"), 0o600)
}
func (f *FakeRuntime) Wait(ctx context.Context, id string) (int, error) {
	select {
	case st := <-f.wait(id):
		return st, nil
	case <-ctx.Done():
		return -1, ctx.Err()
	}
}
func (f *FakeRuntime) WaitRestore(context.Context, string) error { return f.record("wait-restore") }
func (f *FakeRuntime) State(context.Context, string) (*runc.Container, error) {
	if err := f.record("state"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return &runc.Container{Status: f.RunscState}, nil
}
func (f *FakeRuntime) Kill(context.Context, string, int, runsc.KillOpts) error {
	return f.record("kill")
}
func (f *FakeRuntime) Pause(context.Context, string) error  { return f.record("pause") }
func (f *FakeRuntime) Resume(context.Context, string) error { return f.record("resume") }
func (f *FakeRuntime) Delete(context.Context, string) error { return f.record("delete") }
func (f *FakeRuntime) Update(context.Context, string, *specs.LinuxResources) error {
	return f.record("update")
}

// Sandbox is the current sandbox process.
func (f *FakeRuntime) Sandbox() *exec.Cmd {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sandbox
}
