package harness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shim"
	"golang.org/x/sys/unix"
)

// Process is a host process found by the harness.
type Process struct {
	PID     int
	Cmdline []string
}

func (p Process) String() string {
	return fmt.Sprintf("%d %s", p.PID, strings.Join(p.Cmdline, " "))
}

// processAlive reports whether pid exists (it may be a zombie).
// ParentPID returns pid's parent, or 0 when it cannot be read.
func ParentPID(pid int) int {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// pid (comm) state ppid ...; comm may contain spaces and parentheses.
	s := string(raw)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(fields[1])
	return ppid
}

func processAlive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

// processesReferencing returns the processes, other than this one, whose command line
// names a path at or under dir, or whose working directory is at or under it. The
// harness gives every daemon a directory of its own with a random name, so these are
// exactly the processes started for that daemon: containerd, its shims (their -address
// and bundle working directory), and runsc (its --root).
func processesReferencing(dir string) ([]Process, error) {
	dir = filepath.Clean(dir)
	under := func(s string) bool {
		i := strings.Index(s, dir)
		if i < 0 {
			return false
		}
		rest := s[i+len(dir):]
		return rest == "" || rest[0] == '/' || rest[0] == '.' // dir, dir/..., dir.ttrpc-like sockets
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var procs []Process
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue // gone, or a kernel thread
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		match := false
		for _, a := range args {
			if under(a) {
				match = true
				break
			}
		}
		if !match {
			if cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd")); err == nil && under(cwd) {
				match = true
			}
		}
		if match {
			procs = append(procs, Process{PID: pid, Cmdline: args})
		}
	}
	sort.Slice(procs, func(i, j int) bool { return procs[i].PID < procs[j].PID })
	return procs, nil
}

// killProcessesReferencing SIGKILLs the processes that processesReferencing finds,
// repeating until none is left or timeout passes, and returns those it signalled.
func killProcessesReferencing(dir string, timeout time.Duration) ([]Process, error) {
	var killed []Process
	seen := map[int]bool{}
	deadline := time.Now().Add(timeout)
	for {
		procs, err := processesReferencing(dir)
		if err != nil {
			return killed, err
		}
		if len(procs) == 0 {
			return killed, nil
		}
		if time.Now().After(deadline) {
			return killed, fmt.Errorf("processes still running after SIGKILL: %v", procs)
		}
		for _, p := range procs {
			if !seen[p.PID] {
				seen[p.PID] = true
				killed = append(killed, p)
			}
			_ = unix.Kill(p.PID, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// mountsUnder returns the mount points at or under dir in this mount namespace,
// deepest first.
func mountsUnder(dir string) ([]string, error) {
	dir = filepath.Clean(dir)
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var mounts []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			mounts = append(mounts, mp)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	sort.SliceStable(mounts, func(i, j int) bool {
		return strings.Count(mounts[i], "/") > strings.Count(mounts[j], "/")
	})
	return mounts, nil
}

// unescapeMountinfo decodes the octal escapes (\040 for space, ...) of mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// unmountUnder lazily unmounts everything at or under dir, deepest first, until no
// mount is left (mounts may be stacked), and returns what it unmounted.
func unmountUnder(dir string) ([]string, error) {
	var done []string
	for range 10 {
		mounts, err := mountsUnder(dir)
		if err != nil || len(mounts) == 0 {
			return done, err
		}
		for _, m := range mounts {
			if err := unix.Unmount(m, unix.MNT_DETACH); err == nil {
				done = append(done, m)
			} else if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				return done, fmt.Errorf("unmount %s: %w", m, err)
			}
		}
	}
	mounts, err := mountsUnder(dir)
	if err == nil && len(mounts) > 0 {
		err = fmt.Errorf("mounts left under %s: %v", dir, mounts)
	}
	return done, err
}

// ShimSockets returns the socket paths that a shim started as
// `<shim> -namespace NS -id ID -address ADDR ...` listens on (containerd's
// shim.SocketAddress, with and without debug), or nil for other processes. A killed
// shim leaves them behind in /run/containerd/s.
func ShimSockets(p Process) []string {
	args := map[string]string{}
	for i := 0; i+1 < len(p.Cmdline); i++ {
		switch p.Cmdline[i] {
		case "-namespace", "-id", "-address":
			args[p.Cmdline[i]] = p.Cmdline[i+1]
		}
	}
	if len(args) != 3 {
		return nil
	}
	ctx := namespaces.WithNamespace(context.Background(), args["-namespace"])
	var paths []string
	for _, debug := range []bool{false, true} {
		addr, err := shim.SocketAddress(ctx, args["-address"], args["-id"], debug)
		if err == nil {
			paths = append(paths, strings.TrimPrefix(addr, "unix://"))
		}
	}
	return paths
}

// removeSockets removes the paths that are unix sockets.
func removeSockets(paths []string) {
	for _, p := range paths {
		if fi, err := os.Lstat(p); err == nil && fi.Mode()&os.ModeSocket != 0 {
			_ = os.Remove(p)
		}
	}
}

// cleanupDir kills the processes referencing dir (removing the sockets of the shims
// among them), unmounts everything under it and removes it. It returns what it had to
// kill and unmount.
func cleanupDir(dir string) (killed []Process, unmounted []string, err error) {
	killed, kerr := killProcessesReferencing(dir, 15*time.Second)
	for _, p := range killed {
		removeSockets(ShimSockets(p))
	}
	unmounted, uerr := unmountUnder(dir)
	var rerr error
	if uerr == nil {
		rerr = os.RemoveAll(dir)
	}
	return killed, unmounted, errors.Join(kerr, uerr, rerr)
}
