package shim

import (
	"context"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/process"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/runsc"
)

// execExitTimeout bounds how long the init's exit waits for the exits of
// its exec'd processes (containerd expects init's exit last); a
// container's execGrace.
const execExitTimeout = 3 * time.Second

// Exits. A process reports its exit (process.Exited); the container records
// it and publishes it, once: whoever records an exit first publishes it. An
// exec's exit is recorded, published, and only then counted off, and init's
// exit waits for that count, so it is published after its execs' (as
// containerd's runc shim orders them).

// exited handles an exit one of the container's processes reported. An
// exec's is handled at once, init's in the background (it waits for the
// execs').
func (c *container) exited(ctx context.Context, ev *eventSink, e process.Exited) {
	switch p := e.Process.(type) {
	case *process.Exec:
		c.execExited(ev, p, e.Status)
	case *process.Init:
		go c.initExited(ctx, ev, p, e.Status, e.Reason)
	}
}

func (c *container) execExited(ev *eventSink, e *process.Exec, status int) {
	if e.SetExited(status) {
		publishExit(ev, c.id, e, status)
		c.running.done()
	}
}

// initExited handles the exit of the container's init process: the rest of
// the container's processes are killed where they outlive it, exec'd
// processes report their exits first (those still running after
// execExitTimeout are taken as gone with the sandbox), then init's exit is
// recorded and published.
func (c *container) initExited(ctx context.Context, ev *eventSink, p *process.Init, status int, reason string) {
	c.mu.Lock()
	c.initDone = true
	c.mu.Unlock()
	if c.killAllOnExit() {
		if err := c.rt.Kill(ctx, c.id, int(unix.SIGKILL), runsc.KillOpts{All: true}); err != nil && !errdefs.IsNotFound(err) {
			log.G(ctx).WithError(err).WithField("id", c.id).Debug("killing the container's remaining processes after its init exited")
		}
	}
	wctx, cancel := context.WithTimeout(ctx, c.execGrace)
	done := c.running.wait(wctx)
	cancel()
	if !done {
		for _, e := range c.execList() {
			if st, _ := e.Status(ctx); st == process.StatusRunning {
				c.execExited(ev, e, 128+int(unix.SIGKILL))
			}
		}
	}
	if !p.SetExited(status) {
		return
	}
	if err := c.bundle.writeExitStatus(p.Pid(), p.ExitStatus(), p.ExitedAt()); err != nil {
		log.G(ctx).WithError(err).Warn("recording the exit status in the bundle")
	}
	if reason != "" {
		log.G(ctx).WithField("id", c.id).WithField("status", status).Error(reason)
		ev.publish(ctx, exitTopic, map[string]any{"container_id": c.id, "exit_status": status, "reason": reason})
	}
	publishExit(ev, c.id, p, p.ExitStatus())
}

func publishExit(ev *eventSink, id string, p process.Process, status int) {
	ev.send(&eventstypes.TaskExit{
		ContainerID: id,
		ID:          p.ID(),
		Pid:         uint32(p.Pid()),
		ExitStatus:  uint32(status),
		ExitedAt:    protobuf.ToTimestamp(p.ExitedAt()),
	})
}
