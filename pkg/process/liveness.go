package process

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Liveness of host processes (the sandbox, detached `runsc exec`s), in one
// place.

// alive reports whether pid is a live process: not gone, not a zombie
// waiting to be reaped, and not exiting. A sandbox killed during a checkpoint
// closes runsc's connection while it exits, before it is a zombie; the
// kernel marks it PF_EXITING first.
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ppid pgrp session tty_nr tpgid flags ...: the fields
	// after the last ')'.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return false
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 7 {
		return false
	}
	switch f[0] {
	case "Z", "X", "x":
		return false
	}
	const pfExiting = 0x4 // include/linux/sched.h PF_EXITING
	if flags, err := strconv.ParseUint(f[6], 10, 64); err == nil && flags&pfExiting != 0 {
		return false
	}
	return true
}

// staysAlive reports whether pid is alive now and a moment later: a
// checkpoint that failed because its sandbox was killed may return while the
// sandbox is still being torn down.
func staysAlive(pid int) bool {
	for range 5 {
		if !alive(pid) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
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
