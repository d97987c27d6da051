package process

import (
	"testing"
	"time"

	runc "github.com/containerd/go-runc"
)

func TestExitHubEarlyAndLateExits(t *testing.T) {
	h := NewExitHub()
	got := make(chan int, 4)

	// Early: the exit arrives while the window is open, before Claim.
	w := h.Open()
	h.Deliver(runc.Exit{Pid: 10, Status: 3, Timestamp: time.Now()})
	h.Deliver(runc.Exit{Pid: 11, Status: 9})
	w.Claim(10, func(s int, _ time.Time) { got <- s })
	if s := <-got; s != 3 {
		t.Fatalf("early exit status = %d", s)
	}

	// Late: the exit arrives after Claim.
	w = h.Open()
	w.Claim(20, func(s int, _ time.Time) { got <- s })
	h.Deliver(runc.Exit{Pid: 20, Status: 7})
	if s := <-got; s != 7 {
		t.Fatalf("late exit status = %d", s)
	}

	// Two watchers of one pid (pod containers share the sandbox pid).
	w1, w2 := h.Open(), h.Open()
	w1.Claim(30, func(s int, _ time.Time) { got <- s })
	w2.Claim(30, func(s int, _ time.Time) { got <- s + 100 })
	h.Deliver(runc.Exit{Pid: 30, Status: 1})
	a, b := <-got, <-got
	if a+b != 102 {
		t.Fatalf("statuses = %d, %d", a, b)
	}

	// Closed windows stop recording; nothing leaks.
	w = h.Open()
	w.Close()
	h.Deliver(runc.Exit{Pid: 40})
	if len(h.windows) != 0 || len(h.watchers) != 0 {
		t.Fatalf("leaked windows=%d watchers=%d", len(h.windows), len(h.watchers))
	}
}
