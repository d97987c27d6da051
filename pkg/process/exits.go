package process

import (
	"sync"
	"time"

	runc "github.com/containerd/go-runc"
)

// ExitFunc receives the exit status of a host process.
type ExitFunc func(status int, at time.Time)

// ExitHub routes the exits the shim's reaper sees to whoever waits for a pid.
//
// A pid is only known after the command that creates the process returns,
// and the process may exit before that. So a caller opens a Window before
// starting the process; the window records every exit until the caller
// Claims the pid, which then delivers an exit that already happened or
// registers for a later one.
type ExitHub struct {
	mu       sync.Mutex
	windows  map[*Window]struct{}
	watchers map[int][]ExitFunc
}

// NewExitHub returns an empty hub; feed it with Run.
func NewExitHub() *ExitHub {
	return &ExitHub{
		windows:  make(map[*Window]struct{}),
		watchers: make(map[int][]ExitFunc),
	}
}

// Run consumes exits until the channel closes.
func (h *ExitHub) Run(exits <-chan runc.Exit) {
	for e := range exits {
		h.Deliver(e)
	}
}

// Deliver routes one exit.
func (h *ExitHub) Deliver(e runc.Exit) {
	h.mu.Lock()
	for w := range h.windows {
		w.exits = append(w.exits, e)
	}
	fns := h.watchers[e.Pid]
	delete(h.watchers, e.Pid)
	h.mu.Unlock()
	for _, fn := range fns {
		fn(e.Status, e.Timestamp)
	}
}

// Window records exits from its opening until Claim or Close.
type Window struct {
	hub   *ExitHub
	exits []runc.Exit
}

// Open starts recording exits.
func (h *ExitHub) Open() *Window {
	w := &Window{hub: h}
	h.mu.Lock()
	h.windows[w] = struct{}{}
	h.mu.Unlock()
	return w
}

// Claim hands pid's exit to fn (now, if it was recorded, else when it comes)
// and closes the window.
func (w *Window) Claim(pid int, fn ExitFunc) {
	h := w.hub
	h.mu.Lock()
	delete(h.windows, w)
	var seen *runc.Exit
	for i := range w.exits {
		if w.exits[i].Pid == pid {
			seen = &w.exits[i]
		}
	}
	w.exits = nil
	if seen == nil {
		h.watchers[pid] = append(h.watchers[pid], fn)
	}
	h.mu.Unlock()
	if seen != nil {
		fn(seen.Status, seen.Timestamp)
	}
}

// Close stops recording without claiming anything.
func (w *Window) Close() {
	w.hub.mu.Lock()
	delete(w.hub.windows, w)
	w.exits = nil
	w.hub.mu.Unlock()
}
