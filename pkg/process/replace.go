package process

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/runsc"
)

// sandboxGoneTimeout bounds how long ReplaceSandbox waits for the old
// sandbox process to be gone.
const sandboxGoneTimeout = 10 * time.Second

// RestoreConfig returns how Start restores the container (nil when it starts
// it fresh).
func (p *Init) RestoreConfig() *RestoreConfig { return p.cfg.Restore }

// ReplaceSandbox replaces the running sandbox of a pod's root container with
// a new one restored from a checkpoint of a whole pod: gVisor restores a pod
// only as a whole, into a sandbox that has not started, so a pod that already
// runs (the CRI starts a pod's sandbox before it creates the container to
// restore) gets a new one.
//
// The old sandbox is destroyed (its exit is not reported: the container
// lives on in the new one); prepare runs once it is gone; the root container
// is created again from its bundle; join creates the pod's other containers
// in the new sandbox; then the root container is restored from r, after which
// the sandbox waits for those containers' own restores (their Start).
//
// The root container must run and have no stdio (a CRI pause container).
// When anything fails after the old sandbox was destroyed, the container has
// exited (status 137, reported as usual) and the error is returned.
func (p *Init) ReplaceSandbox(ctx context.Context, r RestoreConfig, prepare, join func(context.Context) error) (retErr error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cfg.Subcontainer {
		return fmt.Errorf("%w: %s joins a pod sandbox; only the pod's root container can replace it", errdefs.ErrFailedPrecondition, p.cfg.ID)
	}
	if st := p.state.Status(); st != StatusRunning {
		return notAllowed("replace the sandbox of", st)
	}
	if !p.cfg.Stdio.IsNull() || p.console != nil {
		return fmt.Errorf("%w: the pod's sandbox container %s has stdio; only a sandbox container without stdio (a CRI pause container) can be replaced", errdefs.ErrFailedPrecondition, p.cfg.ID)
	}
	oldPid := p.Pid()
	if err := p.cfg.Runtime.Delete(ctx, p.cfg.ID, true); err != nil && !runsc.IsNotExist(err) {
		return fmt.Errorf("removing the pod's sandbox %s: %w", p.cfg.ID, err)
	}
	// From here on the old sandbox's exit is not this container's.
	p.gen++
	defer func() {
		if retErr != nil {
			p.destroy(ctx)
			// The container has no sandbox: it exited. OnExit takes mu.
			go p.cfg.OnExit(p, 128+int(unix.SIGKILL))
		}
	}()
	if err := waitGone(ctx, oldPid, sandboxGoneTimeout); err != nil {
		return fmt.Errorf("the pod's old sandbox (pid %d): %w", oldPid, err)
	}
	if prepare != nil {
		if err := prepare(ctx); err != nil {
			return err
		}
	}
	nullIO, err := runc.NewNullIO()
	if err != nil {
		return err
	}
	if err := p.createInRunsc(ctx, nullIO, nil); err != nil {
		nullIO.Close()
		return fmt.Errorf("creating the pod's new sandbox %s: %w", p.cfg.ID, err)
	}
	if join != nil {
		if err := join(ctx); err != nil {
			return err
		}
	}
	err = p.cfg.Runtime.Restore(ctx, p.cfg.ID, p.cfg.Bundle, runsc.RestoreOpts{
		ImagePath:  r.ImagePath,
		Direct:     r.Direct,
		Background: r.Background,
	})
	if err != nil {
		return fmt.Errorf("restoring the pod's sandbox container %s from %s: %w", p.cfg.ID, r.ImagePath, err)
	}
	p.watchExit()
	log.G(ctx).WithField("id", p.cfg.ID).WithField("old_pid", oldPid).WithField("pid", p.Pid()).Info("pod sandbox replaced by a restoring one")
	return nil
}

// Recreate creates a subcontainer, not yet started, again in its pod's
// current sandbox (after ReplaceSandbox), keeping its IO for Start.
func (p *Init) Recreate(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.cfg.Subcontainer {
		return fmt.Errorf("%w: %s is a sandbox's root container, not a subcontainer", errdefs.ErrFailedPrecondition, p.cfg.ID)
	}
	if st := p.state.Status(); st != StatusCreated {
		return notAllowed("re-create", st)
	}
	if p.cfg.Stdio.Terminal {
		return fmt.Errorf("%w: %s has a terminal; it cannot be created again", errdefs.ErrFailedPrecondition, p.cfg.ID)
	}
	if err := p.cfg.Runtime.Delete(ctx, p.cfg.ID, true); err != nil && !runsc.IsNotExist(err) {
		return fmt.Errorf("removing %s from the old sandbox: %w", p.cfg.ID, err)
	}
	p.gen++
	if err := p.createInRunsc(ctx, nil, nil); err != nil {
		return fmt.Errorf("creating %s in the pod's new sandbox: %w", p.cfg.ID, err)
	}
	return nil
}

// waitGone waits until pid no longer exists (the shim reaped it).
func waitGone(ctx context.Context, pid int, timeout time.Duration) error {
	if pid <= 0 {
		return nil
	}
	deadline := time.Now().Add(timeout)
	for {
		if err := unix.Kill(pid, 0); errors.Is(err, unix.ESRCH) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still running %v after it was removed", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
