/*
   Adapted from containerd's internal/oom (cgroup v2) and pkg/oom/v1
   (cgroup v1). Copyright The containerd Authors. Licensed under the Apache
   License 2.0.
*/

package shim

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	cgroupsv2 "github.com/containerd/cgroups/v3/cgroup2"
	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// oomWatcher reports OOM kills in the cgroup of a container's sandbox, per
// container id, until Stop. Unlike containerd's pkg/oom watchers it can stop
// watching one container: a pod restore replaces the pod's sandbox, whose
// new cgroup takes the old one's path, and the old cgroup's removal must not
// read as an OOM kill.
type oomWatcher struct {
	unified bool
	onOOM   func(id string)

	mu       sync.Mutex
	watchers map[string]*oomWatch
}

func newOOMWatcher(onOOM func(id string)) *oomWatcher {
	return &oomWatcher{unified: cgroups.Mode() == cgroups.Unified, onOOM: onOOM, watchers: map[string]*oomWatch{}}
}

// oomWatch is one container's: an eventfd (v1: memory.oom_control) or an
// inotify fd (v2: memory.events) read by a goroutine until it is closed.
type oomWatch struct {
	fd   *os.File
	done chan struct{}
}

// Add watches the cgroup of process pid (the sandbox) for id.
func (w *oomWatcher) Add(id string, pid int) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.watchers[id]; ok {
		return fmt.Errorf("OOM watch of %s: %w", id, errdefs.ErrAlreadyExists)
	}
	var (
		ow  *oomWatch
		err error
	)
	if w.unified {
		ow, err = w.watchV2(id, pid)
	} else {
		ow, err = w.watchV1(id, pid)
	}
	if err != nil {
		return err
	}
	w.watchers[id] = ow
	return nil
}

// Stop ends the watch of id; events that arrive afterwards are not
// reported.
func (w *oomWatcher) Stop(id string) {
	if w == nil {
		return
	}
	w.mu.Lock()
	ow := w.watchers[id]
	delete(w.watchers, id)
	w.mu.Unlock()
	if ow != nil {
		ow.fd.Close()
		<-ow.done
	}
}

// report reports an OOM kill of id unless its watch stopped meanwhile.
func (w *oomWatcher) report(id string, ow *oomWatch) {
	w.mu.Lock()
	current := w.watchers[id] == ow
	w.mu.Unlock()
	if current {
		w.onOOM(id)
	}
}

// watchV1 arms cgroup v1's OOM notification: an eventfd registered in
// memory.oom_control's cgroup.event_control, readable once per OOM event and
// when the cgroup is removed.
func (w *oomWatcher) watchV1(id string, pid int) (*oomWatch, error) {
	cg, err := cgroup1.Load(cgroup1.PidPath(pid))
	if err != nil {
		return nil, err
	}
	efd, err := cg.OOMEventFD()
	if err != nil {
		return nil, err
	}
	// Non-blocking, so that os.File reads it through the runtime's poller
	// and Stop's Close ends a pending read.
	if err := unix.SetNonblock(int(efd), true); err != nil {
		unix.Close(int(efd))
		return nil, err
	}
	ow := &oomWatch{fd: os.NewFile(efd, "oom-eventfd"), done: make(chan struct{})}
	go func() {
		defer close(ow.done)
		var buf [8]byte
		for {
			if _, err := ow.fd.Read(buf[:]); err != nil {
				return
			}
			if cg.State() == cgroup1.Deleted {
				return
			}
			w.report(id, ow)
		}
	}()
	return ow, nil
}

// watchV2 watches cgroup v2's memory.events for a growing oom_kill count.
func (w *oomWatcher) watchV2(id string, pid int) (*oomWatch, error) {
	g, err := cgroupsv2.PidGroupPath(pid)
	if err != nil {
		return nil, fmt.Errorf("cgroup v2 path of pid %d: %w", pid, err)
	}
	if err := cgroupsv2.VerifyGroupPath(g); err != nil {
		return nil, fmt.Errorf("cgroup v2 path %s: %w", g, err)
	}
	path := filepath.Join("/sys/fs/cgroup", g)
	rawFd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("creating an inotify fd: %w", err)
	}
	for _, f := range []string{"memory.events", "cgroup.events"} {
		if _, err := unix.InotifyAddWatch(rawFd, filepath.Join(path, f), unix.IN_MODIFY); err != nil {
			unix.Close(rawFd)
			return nil, fmt.Errorf("watching %s: %w", filepath.Join(path, f), err)
		}
	}
	ow := &oomWatch{fd: os.NewFile(uintptr(rawFd), "oom-inotify"), done: make(chan struct{})}
	go func() {
		defer close(ow.done)
		var kills uint64
		buf := make([]byte, unix.SizeofInotifyEvent*10)
		for {
			if _, err := ow.fd.Read(buf); err != nil {
				return
			}
			n, err := oomKills(path)
			if err != nil {
				// The cgroup is gone.
				return
			}
			if n > kills {
				kills = n
				w.report(id, ow)
			}
		}
	}()
	return ow, nil
}

// oomKills reads the oom_kill count of a cgroup v2 directory.
func oomKills(path string) (uint64, error) {
	f, err := os.Open(filepath.Join(path, "memory.events"))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), " ")
		if ok && k == "oom_kill" {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	if err := s.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("memory.events has no oom_kill")
}
