package process

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
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

// waitFallbackTimeout bounds how long the exit watcher waits for the
// sandbox's own exit status when `runsc wait` could not report one.
const waitFallbackTimeout = 5 * time.Second

// RestoreConfig makes Start restore the container from a checkpoint image.
type RestoreConfig struct {
	ImagePath  string
	Direct     bool
	Background bool
	// Await makes the restore return only once runsc's work after the
	// restore is done: the CUDA state toggled back onto the GPUs and, with
	// Background, every page loaded. When that work fails, runsc stops the
	// container and the restore returns runsc's reason. Without Await the
	// restore returns as soon as the container runs, and a failure of that
	// work is the reason its exit reports.
	Await bool
}

func (r RestoreConfig) opts(cio runc.IO) runsc.RestoreOpts {
	return runsc.RestoreOpts{ImagePath: r.ImagePath, Direct: r.Direct, Background: r.Background, IO: cio}
}

// InitConfig describes a container's init process.
type InitConfig struct {
	ID     string
	Bundle string
	// Rootfs is where the rootfs mounts were mounted ("" when the spec
	// points at an existing directory); Delete unmounts it.
	Rootfs       string
	Stdio        stdio.Stdio
	IoUID, IoGID int
	Runtime      Runtime
	Platform     stdio.Platform
	// Exits routes the exits of the host processes the container starts.
	Exits *ExitHub
	// Exited receives the container's exit and its exec'd processes'.
	Exited chan<- Exited
	// Subcontainer is true for a container that joins an existing pod
	// sandbox: runsc takes its stdio at start instead of at create.
	Subcontainer bool
	// Restore, when set, makes Start restore instead of start.
	Restore *RestoreConfig
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
	// replaced.
	pid atomic.Int64
	// sandboxExit receives the current sandbox process's exit status.
	sandboxExit chan int
	// gen counts the sandboxes this container ran in; the exit watcher of an
	// older one does not report (guarded by mu).
	gen  int
	exit exitState
	// restored is closed once runsc's work after a restore ended; reason is
	// why it failed (guarded by mu).
	restored chan struct{}
	reason   string
}

// NewInit returns an init process in the created state; call Create next.
func NewInit(cfg InitConfig) *Init {
	p := &Init{cfg: cfg, exit: newExitState(), sandboxExit: make(chan int, 1)}
	if cfg.Restore != nil {
		p.state = &createdCheckpointState{createdState{refuse{StatusCreated}, p}}
	} else {
		p.state = &createdState{refuse{StatusCreated}, p}
	}
	return p
}

func (p *Init) ID() string                     { return p.cfg.ID }
func (p *Init) Pid() int                       { return int(p.pid.Load()) }
func (p *Init) Stdio() stdio.Stdio             { return p.cfg.Stdio }
func (p *Init) Wait(ctx context.Context) error { return waitFor(ctx, p.exit.waitBlock) }

// Restoring reports whether Start restores the container from a checkpoint.
func (p *Init) Restoring() bool { return p.cfg.Restore != nil }

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

// report sends the container's exit to the shim, which records it with
// SetExited. It never blocks the caller, who may hold mu.
func (p *Init) report(status int, reason string) {
	go func() { p.cfg.Exited <- Exited{Container: p.cfg.ID, Process: p, Status: status, Reason: reason} }()
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
	ch := make(chan int, 1)
	p.sandboxExit = ch
	window.Claim(pid, func(status int, _ time.Time) { ch <- status })
	return nil
}

// destroy removes the container from runsc, killing what runs in it.
func (p *Init) destroy(ctx context.Context) {
	if err := p.cfg.Runtime.Delete(context.WithoutCancel(ctx), p.cfg.ID); err != nil && !errdefs.IsNotFound(err) {
		log.G(ctx).WithError(err).WithField("id", p.cfg.ID).Warn("removing the container from runsc")
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

// Start starts (or restores) the created container. A restore with Await
// returns once runsc's work after the restore is done.
func (p *Init) Start(ctx context.Context) error {
	p.mu.Lock()
	err := p.state.Start(ctx)
	p.mu.Unlock()
	if err != nil || p.cfg.Restore == nil || !p.cfg.Restore.Await {
		return err
	}
	return p.awaitRestore(ctx)
}

// subcontainerIO is the IO runsc gets at start (subcontainers only).
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

// restore restores the container (mu held). runsc's work after the restore
// goes on in the sandbox; a waiter records how it ended (awaitRestore).
func (p *Init) restore(ctx context.Context, r RestoreConfig, cio runc.IO) error {
	if err := p.cfg.Runtime.Restore(ctx, p.cfg.ID, p.cfg.Bundle, r.opts(cio)); err != nil {
		return fmt.Errorf("restoring %s from %s: %w", p.cfg.ID, r.ImagePath, err)
	}
	restored := make(chan struct{})
	p.restored = restored
	p.watchExit()
	go func() {
		defer close(restored)
		ctx := context.Background()
		if err := p.cfg.Runtime.WaitRestore(ctx, p.cfg.ID); err != nil {
			log.G(ctx).WithError(err).WithField("id", p.cfg.ID).Error("runsc's work after the restore failed; runsc stops the container")
			p.mu.Lock()
			p.reason = "the restore failed after the container started: " + err.Error()
			p.mu.Unlock()
		}
	}()
	return nil
}

// awaitRestore waits until runsc's work after the restore ended, and
// returns why it failed.
func (p *Init) awaitRestore(ctx context.Context) error {
	p.mu.Lock()
	restored := p.restored
	p.mu.Unlock()
	if restored == nil {
		return nil
	}
	select {
	case <-restored:
	case <-ctx.Done():
		return ctx.Err()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reason != "" {
		return fmt.Errorf("%s: %s (runsc stopped it)", p.cfg.ID, p.reason)
	}
	return nil
}

// watchExit waits for the container in the background and reports its exit.
// `runsc wait` gives the container's exit status; when it cannot (the
// sandbox died), the sandbox process's own status is used. It runs with mu
// held; the exit of a sandbox replaced since is not reported.
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
		stale, restored := gen != p.gen, p.restored
		p.mu.Unlock()
		if stale {
			log.G(ctx).WithField("id", p.cfg.ID).Debugf("the replaced sandbox of the container exited (%d); not reported", status)
			return
		}
		if restored != nil {
			// A restore that failed after the container started ends it:
			// its reason comes with the exit.
			select {
			case <-restored:
			case <-time.After(waitFallbackTimeout):
			}
		}
		p.mu.Lock()
		reason := p.reason
		p.mu.Unlock()
		p.report(status, reason)
	}()
}

// Delete removes the container from runsc and releases its IO and rootfs.
func (p *Init) Delete(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state.Delete(ctx)
}

func (p *Init) delete(ctx context.Context) error {
	err := p.cfg.Runtime.Delete(ctx, p.cfg.ID)
	if errdefs.IsNotFound(err) {
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
	return p.cfg.Runtime.Kill(ctx, p.cfg.ID, int(sig), runsc.KillOpts{All: all})
}

// SetExited records the container's exit; see Process.
func (p *Init) SetExited(status int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state.SetExited(status)
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

// Exec creates (not starts) an exec'd process in the running container.
func (p *Init) Exec(ctx context.Context, dir string, cfg ExecConfig) (*Exec, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state.Exec(ctx, dir, cfg)
}
