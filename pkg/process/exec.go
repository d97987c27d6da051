package process

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/console"
	"github.com/containerd/containerd/v2/pkg/stdio"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/runsc"
)

// runscFailureStatus is the exit status of a runsc command that failed
// (gVisor's util.Fatalf, subcommands.ExitFailure), for example a `runsc exec`
// whose sandbox is gone.
const runscFailureStatus = 128

// ExecConfig describes an exec'd process.
type ExecConfig struct {
	ID    string
	Stdio stdio.Stdio
	Spec  specs.Process
}

// Exec is a process started in a running container by `runsc exec`. Its
// states: created, running, stopped, deleted (execState).
type Exec struct {
	mu     sync.Mutex
	state  execState
	parent *Init
	dir    string
	cfg    ExecConfig

	pio     *processIO
	console console.Console
	stdin   io.Closer
	closers []io.Closer
	wg      sync.WaitGroup
	// pid is the host pid of the detached `runsc exec`, which lives as long
	// as the process in the sandbox; internalPid is the pid in the sandbox.
	pid, internalPid int
	exit             exitState
}

func newExec(parent *Init, dir string, cfg ExecConfig) *Exec {
	e := &Exec{parent: parent, dir: dir, cfg: cfg, exit: newExitState()}
	e.state = execCreated{e}
	return e
}

func (e *Exec) ID() string                     { return e.cfg.ID }
func (e *Exec) Stdio() stdio.Stdio             { return e.cfg.Stdio }
func (e *Exec) Wait(ctx context.Context) error { return waitFor(ctx, e.exit.waitBlock) }

func (e *Exec) Pid() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.pid
}

// InternalPid is the process's pid inside the sandbox (0 before Start).
func (e *Exec) InternalPid() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.internalPid
}

func (e *Exec) ExitStatus() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.exit.status
}

func (e *Exec) ExitedAt() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.exit.exitedAt
}

func (e *Exec) Stdin() io.Closer {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.stdin
}

func (e *Exec) Status(context.Context) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.state.status(), nil
}

// Start runs the process with `runsc exec --detach`.
func (e *Exec) Start(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.state.start(ctx)
}

// SetExited records the exit; see Process.
func (e *Exec) SetExited(status int) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.state.setExited(status)
}

// Delete releases the IO of a process that exited or never started.
func (e *Exec) Delete(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.state.delete(ctx)
}

// Kill signals the process inside the sandbox.
func (e *Exec) Kill(ctx context.Context, sig uint32, _ bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.state.kill(ctx, sig)
}

// Resize changes the console's window size.
func (e *Exec) Resize(ws console.WinSize) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.console == nil {
		return nil
	}
	return e.console.Resize(ws)
}

// execState is one state of an exec'd process; its methods, run with
// Exec.mu held, are the transitions.
type execState interface {
	status() string
	start(context.Context) error
	kill(ctx context.Context, sig uint32) error
	setExited(status int) bool
	delete(context.Context) error
}

// execCreated: created by Exec, not started.
type execCreated struct{ e *Exec }

func (s execCreated) status() string { return StatusCreated }

func (s execCreated) start(ctx context.Context) error {
	e := s.e
	if err := e.run(ctx); err != nil {
		// A process that never ran is stopped for containerd's bookkeeping.
		e.closeIO()
		e.exit.set(255)
		e.state = execStopped{e}
		return err
	}
	e.state = execRunning{e}
	return nil
}

func (s execCreated) kill(context.Context, uint32) error { return notAllowed("signal", StatusCreated) }
func (s execCreated) setExited(status int) bool {
	s.e.state = execStopped{s.e}
	return s.e.exit.set(status)
}
func (s execCreated) delete(ctx context.Context) error { return s.e.release(ctx) }

// execRunning: the process runs in the sandbox.
type execRunning struct{ e *Exec }

func (s execRunning) status() string                   { return StatusRunning }
func (s execRunning) start(context.Context) error      { return notAllowed("start", StatusRunning) }
func (s execRunning) delete(ctx context.Context) error { return notAllowed("delete", StatusRunning) }

func (s execRunning) kill(ctx context.Context, sig uint32) error {
	e := s.e
	return e.parent.cfg.Runtime.Kill(ctx, e.parent.cfg.ID, int(sig), runsc.KillOpts{Pid: e.internalPid})
}

func (s execRunning) setExited(status int) bool {
	e := s.e
	e.state = execStopped{e}
	if e.console != nil {
		e.parent.cfg.Platform.ShutdownConsole(context.Background(), e.console)
	}
	return e.exit.set(status)
}

// execStopped: the process exited (or never ran).
type execStopped struct{ e *Exec }

func (s execStopped) status() string              { return StatusStopped }
func (s execStopped) start(context.Context) error { return notAllowed("start", StatusStopped) }
func (s execStopped) kill(context.Context, uint32) error {
	return fmt.Errorf("exec %s already finished: %w", s.e.cfg.ID, errdefs.ErrNotFound)
}
func (s execStopped) setExited(status int) bool        { return s.e.exit.set(status) }
func (s execStopped) delete(ctx context.Context) error { return s.e.release(ctx) }

// execDeleted: gone.
type execDeleted struct{ e *Exec }

func (s execDeleted) status() string { return StatusDeleted }
func (s execDeleted) deleted() error {
	return fmt.Errorf("exec %s deleted: %w", s.e.cfg.ID, errdefs.ErrNotFound)
}
func (s execDeleted) start(context.Context) error        { return s.deleted() }
func (s execDeleted) kill(context.Context, uint32) error { return s.deleted() }
func (s execDeleted) setExited(int) bool                 { return false }
func (s execDeleted) delete(context.Context) error       { return s.deleted() }

// run starts the process with `runsc exec --detach` and connects its IO.
func (e *Exec) run(ctx context.Context) error {
	p := e.parent
	pio, err := newProcIO(ctx, e.cfg.ID, p.cfg.IoUID, p.cfg.IoGID, e.cfg.Stdio)
	if err != nil {
		return err
	}
	defer pio.closeSocket()
	e.pio = pio.pio
	opts := runsc.ExecOpts{
		PidFile:         filepath.Join(e.dir, e.cfg.ID+".pid"),
		InternalPidFile: filepath.Join(e.dir, e.cfg.ID+"-internal.pid"),
		IO:              pio.pipes(),
		ConsoleSocket:   pio.consoleSocket(),
	}
	defer os.Remove(opts.PidFile)
	defer os.Remove(opts.InternalPidFile)
	window := p.cfg.Exits.Open()
	if err := p.cfg.Runtime.Exec(ctx, p.cfg.ID, e.cfg.Spec, opts); err != nil {
		window.Close()
		return fmt.Errorf("exec %s in %s: %w", e.cfg.ID, p.cfg.ID, err)
	}
	pid, err := runc.ReadPidFile(opts.PidFile)
	if err != nil {
		window.Close()
		return fmt.Errorf("reading exec pid: %w", err)
	}
	internalPid, err := runc.ReadPidFile(opts.InternalPidFile)
	if err != nil {
		window.Close()
		unix.Kill(pid, unix.SIGKILL)
		return fmt.Errorf("reading exec internal pid: %w", err)
	}
	e.pid, e.internalPid = pid, internalPid
	stdin, con, err := pio.attach(ctx, e.cfg.ID, p.cfg.Platform, &e.wg)
	if err != nil {
		window.Close()
		unix.Kill(pid, unix.SIGKILL)
		return fmt.Errorf("exec %s: %w", e.cfg.ID, err)
	}
	if stdin != nil {
		e.stdin = stdin
		e.closers = append(e.closers, stdin)
	}
	e.console = con
	window.Claim(pid, func(status int, _ time.Time) {
		if status == runscFailureStatus && !alive(p.Pid()) {
			// `runsc exec` lost its sandbox (killed by an exit checkpoint,
			// the OOM killer, a crash) and exited with runsc's own failure
			// status: the process died with the sandbox, as if killed.
			status = 128 + int(unix.SIGKILL)
		}
		go func() { p.cfg.Exited <- Exited{Container: p.cfg.ID, Process: e, Status: status} }()
	})
	return nil
}

// release waits for the output copies and closes the IO.
func (e *Exec) release(ctx context.Context) error {
	done := make(chan struct{})
	go func() { e.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		log.G(ctx).WithField("exec", e.cfg.ID).Warn("exec output copies did not finish; closing IO")
	}
	e.closeIO()
	e.state = execDeleted{e}
	return nil
}

func (e *Exec) closeIO() {
	for _, c := range e.closers {
		c.Close()
	}
	e.closers = nil
	if e.pio != nil {
		e.pio.Close()
	}
}
