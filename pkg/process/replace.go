package process

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// sandboxGoneTimeout bounds how long Teardown waits for the old sandbox
// process to be gone.
const sandboxGoneTimeout = 10 * time.Second

// Replacing a pod's sandbox. gVisor restores a pod only as a whole, into a
// sandbox that has not started, but the CRI starts a pod's sandbox before it
// creates the container to restore. The shim therefore replaces the running
// sandbox by a restored one, calling, in order:
//
//	root.Teardown      the old sandbox goes (its exit is not reported: the
//	                   container lives on in the new one)
//	root.Recreate      the root container is created again from its bundle
//	member.Recreate    each pod container to restore joins the new sandbox
//	root.RestoreSandbox the root container is restored; the sandbox then
//	                   waits for its members' own restores (their Start)
//
// When a step after Teardown fails, the caller kills the root container
// (Kill with SIGKILL), which then exits with 137 as usual.

// Teardown removes the running sandbox of a pod's root container. The root
// container must have no stdio (a CRI pause container).
func (p *Init) Teardown(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state.teardown(ctx)
}

func (p *Init) teardown(ctx context.Context) error {
	if p.cfg.Subcontainer {
		return fmt.Errorf("%w: %s joins a pod sandbox; only the pod's root container can replace it", errdefs.ErrFailedPrecondition, p.cfg.ID)
	}
	if !p.cfg.Stdio.IsNull() || p.console != nil {
		return fmt.Errorf("%w: the pod's sandbox container %s has stdio; only a sandbox container without stdio (a CRI pause container) can be replaced", errdefs.ErrFailedPrecondition, p.cfg.ID)
	}
	oldPid := p.Pid()
	if err := p.cfg.Runtime.Delete(ctx, p.cfg.ID); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("removing the pod's sandbox %s: %w", p.cfg.ID, err)
	}
	// From here on the old sandbox's exit is not this container's.
	p.gen++
	p.state = &replacingState{refuse{StatusRunning}, p}
	if err := waitGone(ctx, oldPid, sandboxGoneTimeout); err != nil {
		return fmt.Errorf("the pod's old sandbox (pid %d): %w", oldPid, err)
	}
	return nil
}

// Recreate creates the container again in its sandbox's place: a root
// container whose sandbox Teardown removed gets a new sandbox; a pod's
// container that is created, not started, is created again in its pod's new
// sandbox, keeping its IO for Start.
func (p *Init) Recreate(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state.recreate(ctx)
}

func (p *Init) recreate(ctx context.Context) error {
	if !p.cfg.Subcontainer {
		return fmt.Errorf("%w: %s is a sandbox's root container; only a pod's container is created again", errdefs.ErrFailedPrecondition, p.cfg.ID)
	}
	if p.cfg.Stdio.Terminal {
		return fmt.Errorf("%w: %s has a terminal; it cannot be created again", errdefs.ErrFailedPrecondition, p.cfg.ID)
	}
	if err := p.cfg.Runtime.Delete(ctx, p.cfg.ID); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("removing %s from the old sandbox: %w", p.cfg.ID, err)
	}
	p.gen++
	if err := p.createInRunsc(ctx, nil, nil); err != nil {
		return fmt.Errorf("creating %s in the pod's new sandbox: %w", p.cfg.ID, err)
	}
	return nil
}

// RestoreSandbox restores the root container, created again by Recreate,
// from the pod checkpoint r.
func (p *Init) RestoreSandbox(ctx context.Context, r RestoreConfig) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state.restoreSandbox(ctx, r)
}

// replacingState: a pod's root container whose sandbox is being replaced.
// containerd sees it running.
type replacingState struct {
	refuse
	p *Init
}

func (s *replacingState) recreate(ctx context.Context) error {
	p := s.p
	nullIO, err := runc.NewNullIO()
	if err != nil {
		return err
	}
	if err := p.createInRunsc(ctx, nullIO, nil); err != nil {
		nullIO.Close()
		return fmt.Errorf("creating the pod's new sandbox %s: %w", p.cfg.ID, err)
	}
	return nil
}

func (s *replacingState) restoreSandbox(ctx context.Context, r RestoreConfig) error {
	if err := s.p.restore(ctx, r, nil); err != nil {
		return err
	}
	log.G(ctx).WithField("id", s.p.cfg.ID).WithField("pid", s.p.Pid()).Info("pod sandbox replaced by a restoring one")
	s.p.to(StatusRunning)
	return nil
}

// Kill of a container whose sandbox is being replaced ends the replacement:
// the container has no sandbox to go back to, and exits.
func (s *replacingState) Kill(ctx context.Context, _ uint32, _ bool) error {
	s.p.destroy(ctx)
	s.p.report(128+int(unix.SIGKILL), "")
	return nil
}

func (s *replacingState) SetExited(status int) bool {
	s.p.to(StatusStopped)
	return s.p.exit.set(status)
}

// Destroy removes the container's sandbox from runsc, killing everything in
// it; the container's exit follows as usual (137). A pod whose sandbox
// replacement failed ends this way.
func (p *Init) Destroy(ctx context.Context) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.destroy(ctx)
	if _, replacing := p.state.(*replacingState); replacing {
		p.report(128+int(unix.SIGKILL), "")
	}
}
