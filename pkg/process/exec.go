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

// ExecConfig describes an exec'd process.
type ExecConfig struct {
	ID    string
	Stdio stdio.Stdio
	Spec  specs.Process
	// OnExit is called once, from its own goroutine, when the process
	// exits; it must end with SetExited.
	OnExit func(e *Exec, status int)
}

// Exec is a process started in a running container by `runsc exec`.
type Exec struct {
	mu     sync.Mutex
	parent *Init
	dir    string
	cfg    ExecConfig
	// started is set once Start ran, successfully or not.
	started bool

	pio     *processIO
	console console.Console
	stdin   io.Closer
	closers []io.Closer
	wg      sync.WaitGroup
	// pid is the host pid of the detached `runsc exec`, which lives as long
	// as the process in the sandbox; internalPid is the pid in the sandbox.
	pid, internalPid int
	exit             exitState
	deleted          bool
}

func newExec(parent *Init, dir string, cfg ExecConfig) *Exec {
	return &Exec{parent: parent, dir: dir, cfg: cfg, exit: newExitState()}
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

// Status derives the state from what happened so far.
func (e *Exec) Status(context.Context) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.deleted:
		return StatusDeleted, nil
	case !e.exit.exitedAt.IsZero():
		return StatusStopped, nil
	case e.started && e.pid != 0:
		return StatusRunning, nil
	default:
		return StatusCreated, nil
	}
}

// Start runs the process with `runsc exec --detach`.
func (e *Exec) Start(ctx context.Context) (retErr error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.started || e.deleted {
		return notAllowed("start", "started")
	}
	e.started = true
	defer func() {
		if retErr != nil {
			// A process that never ran is stopped for containerd's bookkeeping.
			e.closeIO()
			e.exit.set(255)
		}
	}()
	pio, err := newProcIO(ctx, e.cfg.ID, e.parent.cfg.IoUID, e.parent.cfg.IoGID, e.cfg.Stdio)
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
	window := e.parent.cfg.Exits.Open()
	if err := e.parent.cfg.Runtime.Exec(ctx, e.parent.cfg.ID, e.cfg.Spec, opts); err != nil {
		window.Close()
		return fmt.Errorf("exec %s in %s: %w", e.cfg.ID, e.parent.cfg.ID, err)
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
	stdin, con, err := pio.attach(ctx, e.cfg.ID, e.parent.cfg.Platform, &e.wg)
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
	window.Claim(pid, func(status int, _ time.Time) { go e.cfg.OnExit(e, status) })
	return nil
}

// SetExited records the exit.
func (e *Exec) SetExited(status int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.exit.set(status) && e.console != nil {
		e.parent.cfg.Platform.ShutdownConsole(context.Background(), e.console)
	}
}

// Delete releases the IO of a process that exited or never started.
func (e *Exec) Delete(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.deleted {
		return fmt.Errorf("exec %s already deleted: %w", e.cfg.ID, errdefs.ErrNotFound)
	}
	if e.started && e.exit.exitedAt.IsZero() {
		return notAllowed("delete", StatusRunning)
	}
	done := make(chan struct{})
	go func() { e.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		log.G(ctx).WithField("exec", e.cfg.ID).Warn("exec output copies did not finish; closing IO")
	}
	e.closeIO()
	e.deleted = true
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

// Kill signals the process inside the sandbox.
func (e *Exec) Kill(ctx context.Context, sig uint32, _ bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.deleted:
		return fmt.Errorf("exec %s deleted: %w", e.cfg.ID, errdefs.ErrNotFound)
	case !e.exit.exitedAt.IsZero():
		return fmt.Errorf("exec %s already finished: %w", e.cfg.ID, errdefs.ErrNotFound)
	case e.internalPid == 0:
		return notAllowed("signal", StatusCreated)
	}
	err := e.parent.cfg.Runtime.Kill(ctx, e.parent.cfg.ID, int(sig), runsc.KillOpts{Pid: e.internalPid})
	return mapSignalError(err)
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
