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
	SetExited(status int) bool
	// checkpoint begins a checkpoint (checkpoint.go).
	checkpoint(ctx context.Context, cfg CheckpointConfig) (*Saved, error)
	// teardown, recreate and restoreSandbox replace a pod's sandbox by a
	// restored one (replace.go).
	teardown(ctx context.Context) error
	recreate(ctx context.Context) error
	restoreSandbox(ctx context.Context, r RestoreConfig) error
}

// refuse refuses every transition; states embed it and override what they
// allow.
type refuse struct{ name string }

func (b refuse) Status() string                 { return b.name }
func (b refuse) Start(context.Context) error    { return notAllowed("start", b.name) }
func (b refuse) Delete(context.Context) error   { return notAllowed("delete", b.name) }
func (b refuse) Pause(context.Context) error    { return notAllowed("pause", b.name) }
func (b refuse) Resume(context.Context) error   { return notAllowed("resume", b.name) }
func (b refuse) teardown(context.Context) error { return notAllowed("replace the sandbox of", b.name) }
func (b refuse) recreate(context.Context) error { return notAllowed("re-create", b.name) }
func (b refuse) Kill(context.Context, uint32, bool) error {
	return notAllowed("signal", b.name)
}
func (b refuse) Update(context.Context, *specs.LinuxResources) error {
	return notAllowed("update", b.name)
}
func (b refuse) Exec(context.Context, string, ExecConfig) (*Exec, error) {
	return nil, notAllowed("exec in", b.name)
}
func (b refuse) checkpoint(context.Context, CheckpointConfig) (*Saved, error) {
	return nil, notAllowed("checkpoint", b.name)
}
func (b refuse) restoreSandbox(context.Context, RestoreConfig) error {
	return notAllowed("restore the sandbox of", b.name)
}
func (b refuse) SetExited(int) bool { return false }

// to moves p to the state named st.
func (p *Init) to(st string) {
	switch st {
	case StatusRunning:
		p.state = &runningState{refuse{st}, p}
	case StatusPaused:
		p.state = &pausedState{refuse{st}, p}
	case StatusStopped:
		p.state = &stoppedState{refuse{st}, p}
	case StatusDeleted:
		p.state = deletedState{}
	default:
		panic("process: no state " + st)
	}
}

// createdState: runsc created the container; nothing runs yet.
type createdState struct {
	refuse
	p *Init
}

func (s *createdState) Start(ctx context.Context) error {
	if err := s.p.start(ctx); err != nil {
		return err
	}
	s.p.to(StatusRunning)
	return nil
}

func (s *createdState) Delete(ctx context.Context) error {
	if err := s.p.delete(ctx); err != nil {
		return err
	}
	s.p.to(StatusDeleted)
	return nil
}

// Kill of a created container removes it: nothing runs in it that could
// receive the signal, and containerd expects it to stop.
func (s *createdState) Kill(ctx context.Context, sig uint32, _ bool) error {
	s.p.destroy(ctx)
	s.p.report(128+int(sig), "")
	return nil
}

func (s *createdState) Update(ctx context.Context, r *specs.LinuxResources) error {
	return s.p.cfg.Runtime.Update(ctx, s.p.cfg.ID, r)
}

func (s *createdState) SetExited(status int) bool {
	s.p.to(StatusStopped)
	return s.p.exit.set(status)
}

// recreate creates a pod's container again in its pod's new sandbox, not yet
// started, keeping its IO for Start.
func (s *createdState) recreate(ctx context.Context) error { return s.p.recreate(ctx) }

// createdCheckpointState: created, and Start restores a checkpoint.
type createdCheckpointState struct{ createdState }

func (s *createdCheckpointState) Start(ctx context.Context) error {
	if err := s.p.restore(ctx, *s.p.cfg.Restore, s.p.subcontainerIO()); err != nil {
		return err
	}
	s.p.to(StatusRunning)
	return nil
}

// runningState: the container runs.
type runningState struct {
	refuse
	p *Init
}

func (s *runningState) Kill(ctx context.Context, sig uint32, all bool) error {
	return s.p.kill(ctx, sig, all)
}

func (s *runningState) Pause(ctx context.Context) error {
	if err := s.p.cfg.Runtime.Pause(ctx, s.p.cfg.ID); err != nil {
		return err
	}
	s.p.to(StatusPaused)
	return nil
}

// Resume of a running container is a no-op: containerd resumes after a
// checkpoint, which may have left the container running.
func (s *runningState) Resume(context.Context) error { return nil }

func (s *runningState) Update(ctx context.Context, r *specs.LinuxResources) error {
	return s.p.cfg.Runtime.Update(ctx, s.p.cfg.ID, r)
}

func (s *runningState) Exec(_ context.Context, dir string, cfg ExecConfig) (*Exec, error) {
	return newExec(s.p, dir, cfg), nil
}

func (s *runningState) SetExited(status int) bool {
	s.p.to(StatusStopped)
	return s.p.exit.set(status)
}

func (s *runningState) checkpoint(ctx context.Context, cfg CheckpointConfig) (*Saved, error) {
	return s.p.beginCheckpoint(ctx, cfg, false)
}

func (s *runningState) teardown(ctx context.Context) error { return s.p.teardown(ctx) }

// pausedState: the container is frozen.
type pausedState struct {
	refuse
	p *Init
}

// Resume thaws the container. A resume that fails for another reason than
// the container's state (runsc could not bring back what it restores at
// resume, the CUDA state a checkpoint took off the GPUs) leaves a sandbox
// that must not be resumed again (runsc's next resume crashes its kernel):
// it is stopped, and its exit follows.
func (s *pausedState) Resume(ctx context.Context) error {
	err := s.p.cfg.Runtime.Resume(ctx, s.p.cfg.ID)
	switch {
	case err == nil:
		s.p.to(StatusRunning)
		return nil
	case errdefs.IsNotFound(err) || errdefs.IsFailedPrecondition(err):
		return err
	default:
		s.p.destroy(ctx)
		return fmt.Errorf("resuming %s failed, so the container was stopped (a sandbox whose resume failed cannot be resumed again): %w", s.p.cfg.ID, err)
	}
}

// Pause of a paused container is refused, as runc's shim does: a client that
// pauses, checkpoints and resumes (ctr container checkpoint) would otherwise
// resume a container its user had paused.
func (s *pausedState) Pause(context.Context) error {
	return fmt.Errorf("%w: container %s is already paused; resume it first, or checkpoint it with a client that keeps a paused task paused (ctr task checkpoint, the Go client's task.Checkpoint)", errdefs.ErrFailedPrecondition, s.p.cfg.ID)
}

// Kill of a paused container: runsc refuses to signal a paused container
// ("cannot signal container ... in state paused"), so SIGKILL thaws it first
// (as `runc kill` does for a frozen container); other signals get runsc's
// refusal and wait for Resume.
func (s *pausedState) Kill(ctx context.Context, sig uint32, all bool) error {
	if sig != uint32(unix.SIGKILL) {
		return s.p.kill(ctx, sig, all)
	}
	if err := s.p.cfg.Runtime.Resume(ctx, s.p.cfg.ID); err == nil {
		s.p.to(StatusRunning)
	}
	// A sandbox that is gone already (its exit not yet handled) makes the
	// kill fail with NotFound, which containerd expects.
	return s.p.kill(ctx, sig, all)
}

func (s *pausedState) Update(ctx context.Context, r *specs.LinuxResources) error {
	return s.p.cfg.Runtime.Update(ctx, s.p.cfg.ID, r)
}

func (s *pausedState) SetExited(status int) bool {
	s.p.to(StatusStopped)
	return s.p.exit.set(status)
}

func (s *pausedState) checkpoint(ctx context.Context, cfg CheckpointConfig) (*Saved, error) {
	return s.p.beginCheckpoint(ctx, cfg, true)
}

// stoppedState: the container exited; only Delete remains.
type stoppedState struct {
	refuse
	p *Init
}

func (s *stoppedState) Delete(ctx context.Context) error {
	if err := s.p.delete(ctx); err != nil {
		return err
	}
	s.p.to(StatusDeleted)
	return nil
}

func (s *stoppedState) Kill(context.Context, uint32, bool) error {
	return fmt.Errorf("process already finished: %w", errdefs.ErrNotFound)
}

// SetExited records an exit when none was yet (a kill of a created
// container reports one, and so may its sandbox's watcher).
func (s *stoppedState) SetExited(status int) bool { return s.p.exit.set(status) }

// deletedState: gone; every transition is NotFound.
type deletedState struct{}

func gone(op string) error {
	return fmt.Errorf("cannot %s a deleted process: %w", op, errdefs.ErrNotFound)
}

func (deletedState) Status() string                 { return StatusDeleted }
func (deletedState) Start(context.Context) error    { return gone("start") }
func (deletedState) Delete(context.Context) error   { return gone("delete") }
func (deletedState) Pause(context.Context) error    { return gone("pause") }
func (deletedState) Resume(context.Context) error   { return gone("resume") }
func (deletedState) teardown(context.Context) error { return gone("replace the sandbox of") }
func (deletedState) recreate(context.Context) error { return gone("re-create") }
func (deletedState) Kill(context.Context, uint32, bool) error {
	return gone("signal")
}
func (deletedState) Update(context.Context, *specs.LinuxResources) error { return gone("update") }
func (deletedState) Exec(context.Context, string, ExecConfig) (*Exec, error) {
	return nil, gone("exec in")
}
func (deletedState) checkpoint(context.Context, CheckpointConfig) (*Saved, error) {
	return nil, gone("checkpoint")
}
func (deletedState) restoreSandbox(context.Context, RestoreConfig) error {
	return gone("restore the sandbox of")
}
func (deletedState) SetExited(int) bool { return false }
