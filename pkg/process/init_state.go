package process

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// initState is one state of an init process; its methods are the
// transitions. They run with Init.mu held.
type initState interface {
	Status() string
	Start(context.Context) error
	Delete(context.Context) error
	Kill(ctx context.Context, sig uint32, all bool) error
	Pause(context.Context) error
	Resume(context.Context) error
	Update(context.Context, *specs.LinuxResources) error
	Exec(ctx context.Context, dir string, cfg ExecConfig) (*Exec, error)
	SetExited(status int)
}

// baseState refuses everything; states override what they allow.
type baseState struct{ name string }

func (b baseState) Status() string               { return b.name }
func (b baseState) Start(context.Context) error  { return notAllowed("start", b.name) }
func (b baseState) Delete(context.Context) error { return notAllowed("delete", b.name) }
func (b baseState) Pause(context.Context) error  { return notAllowed("pause", b.name) }
func (b baseState) Resume(context.Context) error { return notAllowed("resume", b.name) }
func (b baseState) Kill(context.Context, uint32, bool) error {
	return notAllowed("signal", b.name)
}
func (b baseState) Update(context.Context, *specs.LinuxResources) error {
	return notAllowed("update", b.name)
}
func (b baseState) Exec(context.Context, string, ExecConfig) (*Exec, error) {
	return nil, notAllowed("exec in", b.name)
}
func (b baseState) SetExited(int) {}

// createdState: runsc created the container; nothing runs yet.
type createdState struct {
	baseState
	p *Init
}

func (s *createdState) Status() string { return StatusCreated }

func (s *createdState) Start(ctx context.Context) error {
	if err := s.p.start(ctx); err != nil {
		return err
	}
	s.p.state = &runningState{baseState: baseState{StatusRunning}, p: s.p}
	return nil
}

func (s *createdState) Delete(ctx context.Context) error {
	if err := s.p.delete(ctx); err != nil {
		return err
	}
	s.p.state = &deletedState{}
	return nil
}

// Kill of a created container removes it: nothing runs in it that could
// receive the signal, and containerd expects it to stop.
func (s *createdState) Kill(ctx context.Context, sig uint32, _ bool) error {
	s.p.destroy(ctx)
	s.p.state = &stoppedState{baseState: baseState{StatusStopped}, p: s.p}
	go s.p.cfg.OnExit(s.p, 128+int(sig))
	return nil
}

func (s *createdState) Update(ctx context.Context, r *specs.LinuxResources) error {
	return s.p.cfg.Runtime.Update(ctx, s.p.cfg.ID, r)
}

func (s *createdState) SetExited(status int) {
	s.p.setExited(status)
	s.p.state = &stoppedState{baseState: baseState{StatusStopped}, p: s.p}
}

// createdCheckpointState: created, and Start will restore a checkpoint.
type createdCheckpointState struct {
	createdState
}

func (s *createdCheckpointState) Status() string { return StatusCreated }

func (s *createdCheckpointState) Start(ctx context.Context) error {
	if err := s.p.restore(ctx); err != nil {
		return fmt.Errorf("restoring %s from %s: %w", s.p.cfg.ID, s.p.cfg.Restore.ImagePath, err)
	}
	s.p.state = &runningState{baseState: baseState{StatusRunning}, p: s.p}
	return nil
}

// runningState: the container runs.
type runningState struct {
	baseState
	p *Init
}

func (s *runningState) Status() string { return StatusRunning }

func (s *runningState) Kill(ctx context.Context, sig uint32, all bool) error {
	return s.p.kill(ctx, sig, all)
}

func (s *runningState) Pause(ctx context.Context) error {
	if err := s.p.cfg.Runtime.Pause(ctx, s.p.cfg.ID); err != nil {
		return mapSignalError(err)
	}
	s.p.state = &pausedState{baseState: baseState{StatusPaused}, p: s.p}
	return nil
}

// Resume of a running container is a no-op: containerd resumes after a
// checkpoint whether or not the checkpoint kept the container paused.
func (s *runningState) Resume(context.Context) error { return nil }

func (s *runningState) Update(ctx context.Context, r *specs.LinuxResources) error {
	return s.p.cfg.Runtime.Update(ctx, s.p.cfg.ID, r)
}

func (s *runningState) Exec(ctx context.Context, dir string, cfg ExecConfig) (*Exec, error) {
	return newExec(s.p, dir, cfg), nil
}

func (s *runningState) SetExited(status int) {
	s.p.setExited(status)
	s.p.state = &stoppedState{baseState: baseState{StatusStopped}, p: s.p}
}

// pausedState: the container is frozen.
type pausedState struct {
	baseState
	p *Init
}

func (s *pausedState) Status() string { return StatusPaused }

func (s *pausedState) Resume(ctx context.Context) error {
	if err := s.p.cfg.Runtime.Resume(ctx, s.p.cfg.ID); err != nil {
		return err
	}
	s.p.state = &runningState{baseState: baseState{StatusRunning}, p: s.p}
	return nil
}

// Pause of a paused container is a no-op.
func (s *pausedState) Pause(context.Context) error { return nil }

// Kill of a paused container: runsc refuses to signal a paused container
// ("cannot signal container ... in state paused"), so SIGKILL thaws it first
// (as `runc kill` does for a frozen container); other signals get runsc's
// refusal and wait for Resume.
func (s *pausedState) Kill(ctx context.Context, sig uint32, all bool) error {
	if sig != uint32(unix.SIGKILL) {
		return s.p.kill(ctx, sig, all)
	}
	if err := s.p.cfg.Runtime.Resume(ctx, s.p.cfg.ID); err != nil {
		// The sandbox may be gone already (its exit not yet handled): kill
		// reports that as NotFound, which containerd expects.
		return s.p.kill(ctx, sig, all)
	}
	s.p.state = &runningState{baseState: baseState{StatusRunning}, p: s.p}
	return s.p.kill(ctx, sig, all)
}

func (s *pausedState) Update(ctx context.Context, r *specs.LinuxResources) error {
	return s.p.cfg.Runtime.Update(ctx, s.p.cfg.ID, r)
}

func (s *pausedState) SetExited(status int) {
	s.p.setExited(status)
	s.p.state = &stoppedState{baseState: baseState{StatusStopped}, p: s.p}
}

// stoppedState: the container exited; only Delete remains.
type stoppedState struct {
	baseState
	p *Init
}

func (s *stoppedState) Status() string { return StatusStopped }

func (s *stoppedState) Delete(ctx context.Context) error {
	if err := s.p.delete(ctx); err != nil {
		return err
	}
	s.p.state = &deletedState{}
	return nil
}

func (s *stoppedState) Kill(context.Context, uint32, bool) error {
	return fmt.Errorf("process already finished: %w", errdefs.ErrNotFound)
}

// SetExited keeps the first exit status (a kill of a created container
// records it before the exit handler runs).
func (s *stoppedState) SetExited(status int) { s.p.setExited(status) }

// deletedState: gone.
type deletedState struct{}

func (deletedState) Status() string { return StatusDeleted }
func (deletedState) Start(context.Context) error {
	return fmt.Errorf("cannot start a deleted process: %w", errdefs.ErrNotFound)
}
func (deletedState) Delete(context.Context) error {
	return fmt.Errorf("cannot delete a deleted process: %w", errdefs.ErrNotFound)
}
func (deletedState) Kill(context.Context, uint32, bool) error {
	return fmt.Errorf("cannot signal a deleted process: %w", errdefs.ErrNotFound)
}
func (deletedState) Pause(context.Context) error {
	return fmt.Errorf("cannot pause a deleted process: %w", errdefs.ErrNotFound)
}
func (deletedState) Resume(context.Context) error {
	return fmt.Errorf("cannot resume a deleted process: %w", errdefs.ErrNotFound)
}
func (deletedState) Update(context.Context, *specs.LinuxResources) error {
	return fmt.Errorf("cannot update a deleted process: %w", errdefs.ErrNotFound)
}
func (deletedState) Exec(context.Context, string, ExecConfig) (*Exec, error) {
	return nil, fmt.Errorf("cannot exec in a deleted process: %w", errdefs.ErrNotFound)
}
func (deletedState) SetExited(int) {}
