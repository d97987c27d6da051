package process

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/runsc"
)

// exitCheckpointWait bounds how long Commit of an exit checkpoint waits for
// the container's exit to be recorded.
const exitCheckpointWait = 10 * time.Second

// ErrCheckpointInProgress is returned for a checkpoint requested while
// another one of the same container runs.
var ErrCheckpointInProgress = fmt.Errorf("a checkpoint of this container is already in progress; retry when it finishes: %w", errdefs.ErrFailedPrecondition)

// CheckpointConfig is one checkpoint of a container's sandbox.
type CheckpointConfig struct {
	// Runsc are runsc's options. LeaveRunning is always set: without it
	// runsc kills the sandbox whether or not the save succeeded (gVisor's
	// state.SaveOpts.Save), so a full disk would cost the container.
	Runsc runsc.CheckpointOpts
	// Exit stops the container once the image is complete: the sandbox is
	// frozen before the save and killed at Commit, so nothing runs between
	// the save and the stop, and a failed save leaves it running.
	Exit bool
	// Resume makes Commit resume the sandbox before it returns (and freezes
	// it for the save): state runsc brings back only when a sandbox
	// resumes, the CUDA state its toggle took off the GPUs, is then known
	// to be back. A container that was paused is paused again; an exit
	// checkpoint's is stopped after the resume.
	Resume bool
}

// Saved is a checkpoint whose image runsc has written. The caller completes
// the image (its metadata) and then calls Commit, or gives up with Abort.
// No other checkpoint of the container starts until then; state queries,
// kills and exits are not held up.
type Saved struct {
	p   *Init
	cfg CheckpointConfig
	// paused is whether the container was paused when the checkpoint began.
	paused bool
	// froze is set when the checkpoint froze the container itself (an exit
	// checkpoint of a running container).
	froze bool
}

// Checkpoint saves the container's sandbox into cfg.Runsc.ImagePath. The
// container must be running or paused. On failure the container is left as
// it was (or reported gone, when its sandbox died meanwhile) and the error
// ends with what became of it.
func (p *Init) Checkpoint(ctx context.Context, cfg CheckpointConfig) (*Saved, error) {
	if !p.ckpt.TryLock() {
		return nil, ErrCheckpointInProgress
	}
	p.mu.Lock()
	s, err := p.state.checkpoint(ctx, cfg)
	p.mu.Unlock()
	if err != nil {
		p.ckpt.Unlock()
		return nil, err
	}
	cfg.Runsc.LeaveRunning = true
	if err := p.cfg.Runtime.Checkpoint(ctx, p.cfg.ID, cfg.Runsc); err != nil {
		return nil, s.Abort(ctx, fmt.Errorf("checkpoint of %s failed: %w", p.cfg.ID, err))
	}
	return s, nil
}

// beginCheckpoint runs with mu held, in the running or paused state.
func (p *Init) beginCheckpoint(ctx context.Context, cfg CheckpointConfig, paused bool) (*Saved, error) {
	s := &Saved{p: p, cfg: cfg, paused: paused}
	if (cfg.Exit || cfg.Resume) && !paused {
		if err := p.cfg.Runtime.Pause(ctx, p.cfg.ID); err != nil {
			return nil, fmt.Errorf("freezing %s for the exit checkpoint failed: %w", p.cfg.ID, err)
		}
		p.to(StatusPaused)
		s.froze = true
	}
	return s, nil
}

// WasPaused reports whether the container was paused when the checkpoint
// began.
func (s *Saved) WasPaused() bool { return s.paused }

// Commit ends a checkpoint whose image is complete. With Resume the
// sandbox is resumed first; when that fails the container cannot go on (a
// sandbox whose resume failed must not be resumed again: runsc's second
// resume crashes its kernel), so it is stopped and the error says why. An
// exit checkpoint then stops the container as runsc's own exit does: the
// sandbox is killed from the host (status 137, as after runc's CRIU dump).
// Commit returns once a stop is recorded. A leave-running checkpoint leaves
// the container running, or paused as it was.
func (s *Saved) Commit(ctx context.Context) error {
	defer s.p.ckpt.Unlock()
	ctx = context.WithoutCancel(ctx)
	p := s.p
	if s.cfg.Resume {
		p.mu.Lock()
		err := p.cfg.Runtime.Resume(ctx, p.cfg.ID)
		if err == nil {
			p.to(StatusRunning)
			if s.paused && !s.cfg.Exit {
				if perr := p.cfg.Runtime.Pause(ctx, p.cfg.ID); perr != nil {
					log.G(ctx).WithError(perr).WithField("id", p.cfg.ID).Warn("pausing the container again after the checkpoint")
				} else {
					p.to(StatusPaused)
				}
			}
		}
		if err != nil {
			p.reason = "the checkpoint stopped the container: resuming it after the save failed: " + err.Error()
		}
		p.mu.Unlock()
		if err != nil {
			p.stop(ctx)
			return fmt.Errorf("the image of %s was written, but resuming the container after the save failed, so it was stopped (its sandbox cannot be resumed again): %w", p.cfg.ID, err)
		}
	}
	if s.cfg.Exit {
		p.stop(ctx)
	}
	return nil
}

// stop kills the sandbox process from the host and waits until the exit is
// recorded.
func (p *Init) stop(ctx context.Context) {
	if pid := p.Pid(); pid > 0 {
		if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			log.G(ctx).WithError(err).WithField("id", p.cfg.ID).Error("stopping the sandbox")
		}
	}
	wctx, cancel := context.WithTimeout(ctx, exitCheckpointWait)
	defer cancel()
	if err := p.Wait(wctx); err != nil {
		log.G(ctx).WithError(err).WithField("id", p.cfg.ID).Warn("the container's exit was not recorded in time")
	}
}

// Abort gives up a checkpoint and leaves the container as it was before:
// runsc resumes the sandbox itself on most failures, but a sandbox left
// frozen is thawed unless it was paused when the checkpoint began. It
// returns cause with what became of the container. A sandbox that died
// meanwhile (killed, out of memory) is reported as such; its exit reaches
// the shim as any other.
func (s *Saved) Abort(ctx context.Context, cause error) error {
	defer s.p.ckpt.Unlock()
	return fmt.Errorf("%w; %s", cause, s.p.recoverFromCheckpoint(context.WithoutCancel(ctx), s.paused))
}

func (p *Init) recoverFromCheckpoint(ctx context.Context, paused bool) string {
	if pid := p.Pid(); !staysAlive(pid) {
		log.G(ctx).WithField("id", p.cfg.ID).WithField("pid", pid).Error("the sandbox died during the checkpoint")
		return fmt.Sprintf("the container is no longer running: its sandbox (pid %d) exited during the checkpoint", pid)
	}
	st, err := p.cfg.Runtime.State(ctx, p.cfg.ID)
	if err != nil {
		log.G(ctx).WithError(err).WithField("id", p.cfg.ID).Warn("container state unknown after a failed checkpoint")
		return fmt.Sprintf("the container's state is unknown: %v", err)
	}
	switch st.Status {
	case StatusRunning:
		p.mu.Lock()
		if p.state.Status() == StatusPaused && !paused {
			p.to(StatusRunning)
		}
		p.mu.Unlock()
		return "the container keeps running"
	case StatusPaused:
		if paused {
			return "the container keeps running, paused as it was when the checkpoint began"
		}
		p.mu.Lock()
		err := p.cfg.Runtime.Resume(ctx, p.cfg.ID)
		if err == nil && p.state.Status() == StatusPaused {
			p.to(StatusRunning)
		}
		p.mu.Unlock()
		if err != nil {
			log.G(ctx).WithError(err).WithField("id", p.cfg.ID).Error("could not resume the container after a failed checkpoint; stopping it")
			p.stop(ctx)
			return fmt.Sprintf("the container was stopped: resuming it after the failed checkpoint failed too (%v), and a sandbox whose resume failed cannot be resumed again", err)
		}
		return "the container keeps running"
	default:
		return fmt.Sprintf("the container is no longer running (runsc reports it %s)", st.Status)
	}
}
