package process

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/console"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/stdio"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/runsc"
)

// InitPidFile is the file, in the bundle, runsc writes the sandbox pid to.
const InitPidFile = "init.pid"

// waitFallbackTimeout bounds how long the exit handler waits for the
// sandbox's own exit status when `runsc wait` could not report one.
const waitFallbackTimeout = 5 * time.Second

// RestoreConfig makes Start restore the container from a checkpoint image.
type RestoreConfig struct {
	ImagePath  string
	Direct     bool
	Background bool
}

// InitConfig describes a container's init process.
type InitConfig struct {
	ID     string
	Bundle string
	// Rootfs is where the rootfs mounts were mounted ("" when the spec
	// points at an existing directory).
	Rootfs       string
	Stdio        stdio.Stdio
	IoUID, IoGID int
	Runtime      *runsc.Runsc
	Platform     stdio.Platform
	Exits        *ExitHub
	// Subcontainer is true for a container that joins an existing pod
	// sandbox: runsc takes its stdio at start instead of at create.
	Subcontainer bool
	// Restore, when set, makes Start restore instead of start.
	Restore *RestoreConfig
	// OnExit is called once, from its own goroutine, with the container's
	// exit status; it must end with SetExited.
	OnExit func(p *Init, status int)
}

// Init is a container's init process.
type Init struct {
	mu    sync.Mutex
	state initState
	// ckpt serializes checkpoints without blocking State and friends.
	ckpt sync.Mutex

	cfg     InitConfig
	pio     *processIO
	console console.Console
	stdin   io.Closer
	closers []io.Closer
	// wg tracks the output copies.
	wg sync.WaitGroup
	// pid is the sandbox's host pid; it changes when a pod's sandbox is
	// replaced (ReplaceSandbox, Recreate).
	pid atomic.Int64
	// sandboxExit receives the current sandbox process's exit status.
	sandboxExit chan int
	// gen counts the sandboxes this container ran in; an exit watcher of an
	// older one does not report (guarded by mu).
	gen  int
	exit exitState
}

// NewInit returns an init process in the created state; call Create next.
func NewInit(cfg InitConfig) *Init {
	p := &Init{cfg: cfg, exit: newExitState(), sandboxExit: make(chan int, 1)}
	if cfg.Restore != nil {
		p.state = &createdCheckpointState{createdState{baseState: baseState{StatusCreated}, p: p}}
	} else {
		p.state = &createdState{baseState: baseState{StatusCreated}, p: p}
	}
	return p
}

func (p *Init) ID() string                     { return p.cfg.ID }
func (p *Init) Pid() int                       { return int(p.pid.Load()) }
func (p *Init) Stdio() stdio.Stdio             { return p.cfg.Stdio }
func (p *Init) Runtime() *runsc.Runsc          { return p.cfg.Runtime }
func (p *Init) Bundle() string                 { return p.cfg.Bundle }
func (p *Init) Restoring() bool                { return p.cfg.Restore != nil }
func (p *Init) Wait(ctx context.Context) error { return waitFor(ctx, p.exit.waitBlock) }

func (p *Init) ExitStatus() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exit.status
}

func (p *Init) ExitedAt() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exit.exitedAt
}

func (p *Init) Stdin() io.Closer {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stdin
}

// Create runs `runsc create`: the sandbox (or, in a pod, the subcontainer)
// exists afterwards but runs nothing yet.
func (p *Init) Create(ctx context.Context) (retErr error) {
	pio, err := newProcIO(ctx, p.cfg.ID, p.cfg.IoUID, p.cfg.IoGID, p.cfg.Stdio)
	if err != nil {
		return err
	}
	defer pio.closeSocket()
	p.pio = pio.pio
	defer func() {
		if retErr != nil {
			p.closeIO()
		}
	}()
	var cio runc.IO
	if !p.cfg.Subcontainer {
		cio = pio.pipes()
	}
	if err := p.createInRunsc(ctx, cio, pio.consoleSocket()); err != nil {
		return err
	}
	stdin, con, err := pio.attach(ctx, p.cfg.ID, p.cfg.Platform, &p.wg)
	if err != nil {
		p.destroy(ctx)
		return err
	}
	if stdin != nil {
		p.stdin = stdin
		p.closers = append(p.closers, stdin)
	}
	p.console = con
	return nil
}

// createInRunsc runs `runsc create` for the container's bundle with the given
// IO (nil for a subcontainer, which gets its stdio at start) and console
// socket (nil without a terminal), and records the new sandbox pid.
func (p *Init) createInRunsc(ctx context.Context, cio runc.IO, socket runc.ConsoleSocket) error {
	opts := runsc.CreateOpts{PidFile: filepath.Join(p.cfg.Bundle, InitPidFile), IO: cio, ConsoleSocket: socket}
	window := p.cfg.Exits.Open()
	if err := p.cfg.Runtime.Create(ctx, p.cfg.ID, p.cfg.Bundle, opts); err != nil {
		window.Close()
		p.destroy(ctx)
		return err
	}
	pid, err := runc.ReadPidFile(opts.PidFile)
	if err != nil {
		window.Close()
		p.destroy(ctx)
		return fmt.Errorf("reading sandbox pid: %w", err)
	}
	p.pid.Store(int64(pid))
	p.claimSandboxExit(window, pid)
	return nil
}

// destroy removes a half-created container from runsc.
func (p *Init) destroy(ctx context.Context) {
	if err := p.cfg.Runtime.Delete(context.WithoutCancel(ctx), p.cfg.ID, true); err != nil && !runsc.IsNotExist(err) {
		log.G(ctx).WithError(err).Warn("removing half-created container")
	}
}

func (p *Init) closeIO() {
	for _, c := range p.closers {
		c.Close()
	}
	p.closers = nil
	if p.pio != nil {
		p.pio.Close()
	}
}

// Status returns the state's name.
func (p *Init) Status(ctx context.Context) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state.Status(), nil
}

// Start starts (or restores) the created container.
func (p *Init) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state.Start(ctx)
}

func (p *Init) subcontainerIO() runc.IO {
	if p.cfg.Subcontainer && p.pio != nil {
		return p.pio.io
	}
	return nil
}

func (p *Init) start(ctx context.Context) error {
	if err := p.cfg.Runtime.Start(ctx, p.cfg.ID, p.subcontainerIO()); err != nil {
		return err
	}
	p.watchExit()
	return nil
}

func (p *Init) restore(ctx context.Context) error {
	r := p.cfg.Restore
	err := p.cfg.Runtime.Restore(ctx, p.cfg.ID, p.cfg.Bundle, runsc.RestoreOpts{
		ImagePath:  r.ImagePath,
		Direct:     r.Direct,
		Background: r.Background,
		IO:         p.subcontainerIO(),
	})
	if err != nil {
		return err
	}
	p.watchExit()
	return nil
}

// watchExit waits for the container in the background. `runsc wait`
// reports the container's exit status; when it cannot (the sandbox died),
// the sandbox process's own status is used.
//
// It runs with mu held; an exit of a sandbox that was replaced since
// (ReplaceSandbox) is not reported.
func (p *Init) watchExit() {
	gen, sandboxExit := p.gen, p.sandboxExit
	go func() {
		ctx := context.Background()
		status, err := p.cfg.Runtime.Wait(ctx, p.cfg.ID)
		if err != nil {
			select {
			case status = <-sandboxExit:
				log.G(ctx).WithError(err).WithField("id", p.cfg.ID).Infof("runsc wait failed; using the sandbox's exit status %d", status)
			case <-time.After(waitFallbackTimeout):
				status = 128 + int(unix.SIGKILL)
				log.G(ctx).WithError(err).WithField("id", p.cfg.ID).Warnf("container exit status unknown; reporting %d", status)
			}
		}
		p.mu.Lock()
		stale := gen != p.gen
		p.mu.Unlock()
		if stale {
			log.G(ctx).WithField("id", p.cfg.ID).Debugf("the replaced sandbox of the container exited (%d); not reported", status)
			return
		}
		p.cfg.OnExit(p, status)
	}()
}

// claimSandboxExit makes pid's exit status (the sandbox process's) arrive
// on a channel of its own, the current sandboxExit.
func (p *Init) claimSandboxExit(window *Window, pid int) {
	ch := make(chan int, 1)
	p.sandboxExit = ch
	window.Claim(pid, func(status int, _ time.Time) { ch <- status })
}

// Delete removes the container from runsc and releases its IO and rootfs.
func (p *Init) Delete(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state.Delete(ctx)
}

func (p *Init) delete(ctx context.Context) error {
	err := p.cfg.Runtime.Delete(ctx, p.cfg.ID, true)
	if err != nil && runsc.IsNotExist(err) {
		err = nil
	}
	// The sandbox is gone; its ends of the pipes are closed, so the copies
	// finish. A console's copy ends only once the console is shut down (it
	// waits out EIO for a new reader); the rest of its output is drained
	// first. Bound the wait in case a logging binary hangs.
	if p.console != nil {
		p.cfg.Platform.ShutdownConsole(ctx, p.console)
	}
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		log.G(ctx).WithField("id", p.cfg.ID).Warn("output copies did not finish; closing IO")
	}
	p.closeIO()
	if p.cfg.Rootfs != "" {
		if uerr := mount.UnmountRecursive(p.cfg.Rootfs, 0); uerr != nil {
			log.G(ctx).WithError(uerr).Warn("unmounting rootfs")
			if err == nil {
				err = fmt.Errorf("unmounting rootfs: %w", uerr)
			}
		}
	}
	if err != nil {
		return fmt.Errorf("deleting container %s: %w", p.cfg.ID, err)
	}
	return nil
}

// Kill signals the container's init process, or all its processes.
func (p *Init) Kill(ctx context.Context, sig uint32, all bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state.Kill(ctx, sig, all)
}

func (p *Init) kill(ctx context.Context, sig uint32, all bool) error {
	err := p.cfg.Runtime.Kill(ctx, p.cfg.ID, int(sig), runsc.KillOpts{All: all})
	return mapSignalError(err)
}

// mapSignalError turns runsc's "not running" answers into NotFound, the
// class containerd expects for a process that already exited.
func mapSignalError(err error) error {
	if err == nil {
		return nil
	}
	var re *runsc.Error
	if errors.As(err, &re) {
		m := strings.ToLower(re.Msg)
		for _, s := range []string{"not running", "does not exist", "no such process", "stopped", "not found"} {
			if strings.Contains(m, s) {
				return fmt.Errorf("%v: %w", err, errdefs.ErrNotFound)
			}
		}
	}
	return err
}

// SetExited records the container's exit.
func (p *Init) SetExited(status int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.state.SetExited(status)
}

func (p *Init) setExited(status int) {
	p.exit.set(status)
}

// Pause freezes the sandbox's processes.
func (p *Init) Pause(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state.Pause(ctx)
}

// Resume thaws the sandbox's processes.
func (p *Init) Resume(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state.Resume(ctx)
}

// Update applies new resource limits.
func (p *Init) Update(ctx context.Context, r *specs.LinuxResources) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state.Update(ctx, r)
}

// Resize changes the console's window size.
func (p *Init) Resize(ws console.WinSize) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.console == nil {
		return nil
	}
	return p.console.Resize(ws)
}

// Exec creates (not starts) an exec'd process.
func (p *Init) Exec(ctx context.Context, dir string, cfg ExecConfig) (*Exec, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state.Exec(ctx, dir, cfg)
}

// ErrCheckpointInProgress is returned for a checkpoint requested while
// another one of the same container runs.
var ErrCheckpointInProgress = fmt.Errorf("a checkpoint of this container is already in progress; retry when it finishes: %w", errdefs.ErrFailedPrecondition)

// Checkpoint runs fn, which checkpoints the container, while no other
// checkpoint of it runs. The container must be running or paused; fn gets
// which. State queries, kills and exits are not blocked while fn runs.
func (p *Init) Checkpoint(ctx context.Context, fn func(ctx context.Context, paused bool) error) error {
	if !p.ckpt.TryLock() {
		return ErrCheckpointInProgress
	}
	defer p.ckpt.Unlock()
	p.mu.Lock()
	st := p.state.Status()
	p.mu.Unlock()
	switch st {
	case StatusRunning, StatusPaused:
	default:
		return notAllowed("checkpoint", st)
	}
	return fn(ctx, st == StatusPaused)
}
