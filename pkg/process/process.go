// Package process holds a container's processes, the init process and exec'd
// processes, as explicit state machines over runsc.
//
// Init states: created, created-from-checkpoint, running, paused, stopped,
// deleted. Exec states: created, running, stopped, deleted. Each state is a
// small type whose methods are the transitions it allows; anything else is a
// FailedPrecondition error naming the state.
package process

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/containerd/console"
	"github.com/containerd/containerd/v2/pkg/stdio"
	"github.com/containerd/errdefs"
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
	// Wait blocks until the process exits or ctx ends.
	Wait(context.Context) error
	Start(context.Context) error
	Delete(context.Context) error
	Kill(ctx context.Context, sig uint32, all bool) error
	Resize(console.WinSize) error
	// SetExited records the exit; called once by the exit handler.
	SetExited(status int)
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
