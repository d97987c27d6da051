// Package process holds a container's processes, the init process and exec'd
// processes, as explicit state machines over runsc.
//
// Init states: created, created-from-checkpoint, running, paused, replacing
// (a pod's sandbox being replaced by a restored one), stopped, deleted.
// Exec states: created, running, stopped, deleted. Each state is a small type
// whose methods are the transitions it allows; anything else is a
// FailedPrecondition error naming the state.
//
// Control flows one way: the shim calls processes, processes call runsc.
// What a process reports back, its exit, travels on the Exited channel the
// shim gives it; the shim publishes the exit and then records it
// (SetExited).
package process

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/containerd/console"
	"github.com/containerd/containerd/v2/pkg/stdio"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/runsc"
)

// Status names, as containerd's task API spells them.
const (
	StatusCreated = "created"
	StatusRunning = "running"
	StatusPaused  = "paused"
	StatusStopped = "stopped"
	StatusDeleted = "deleted"
)

// Process is what the task service needs of any process.
type Process interface {
	ID() string
	Pid() int
	ExitStatus() int
	ExitedAt() time.Time
	Stdin() io.Closer
	Stdio() stdio.Stdio
	Status(context.Context) (string, error)
	// Wait blocks until the process's exit is recorded or ctx ends.
	Wait(context.Context) error
	Start(context.Context) error
	Delete(context.Context) error
	Kill(ctx context.Context, sig uint32, all bool) error
	Resize(console.WinSize) error
	// SetExited records the exit and wakes Wait; it reports whether this
	// call recorded it (the first one does, later ones change nothing).
	SetExited(status int) bool
}

// Exited reports that a process ended, with its exit status. The process
// has not recorded it yet: whoever receives it calls SetExited.
type Exited struct {
	// Container is the id of the container the process belongs to.
	Container string
	Process   Process
	Status    int
	// Reason says why the process ended when it was not its own doing
	// (runsc's work after a restore failed); "" otherwise.
	Reason string
}

// Runtime is runsc as the processes use it; *runsc.Runsc implements it.
type Runtime interface {
	Create(ctx context.Context, id, bundle string, o runsc.CreateOpts) error
	Start(ctx context.Context, id string, cio runc.IO) error
	Restore(ctx context.Context, id, bundle string, o runsc.RestoreOpts) error
	Checkpoint(ctx context.Context, id string, o runsc.CheckpointOpts) error
	Exec(ctx context.Context, id string, spec specs.Process, o runsc.ExecOpts) error
	Wait(ctx context.Context, id string) (int, error)
	WaitRestore(ctx context.Context, id string) error
	State(ctx context.Context, id string) (*runc.Container, error)
	Kill(ctx context.Context, id string, sig int, o runsc.KillOpts) error
	Pause(ctx context.Context, id string) error
	Resume(ctx context.Context, id string) error
	Delete(ctx context.Context, id string) error
	Update(ctx context.Context, id string, r *specs.LinuxResources) error
}

func notAllowed(op, state string) error {
	return fmt.Errorf("cannot %s a process in state %s: %w", op, state, errdefs.ErrFailedPrecondition)
}

// exitState is the shared exit bookkeeping of init and exec processes.
type exitState struct {
	status    int
	exitedAt  time.Time
	waitBlock chan struct{}
}

func newExitState() exitState { return exitState{waitBlock: make(chan struct{})} }

// set records the exit once; it reports whether this call did.
func (e *exitState) set(status int) bool {
	if !e.exitedAt.IsZero() {
		return false
	}
	e.status = status
	e.exitedAt = time.Now()
	close(e.waitBlock)
	return true
}

func waitFor(ctx context.Context, block <-chan struct{}) error {
	select {
	case <-block:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
