package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
)

// reapStaleDirs cleans up daemon directories whose test binary is gone (a killed or
// timed-out `go test` does not run its cleanups).
func reapStaleDirs(t testing.TB, base string) {
	entries, _ := os.ReadDir(base)
	for _, e := range entries {
		if !e.IsDir() || len(e.Name()) != 8 {
			continue
		}
		dir := filepath.Join(base, e.Name())
		raw, err := os.ReadFile(filepath.Join(dir, "owner"))
		if err != nil {
			continue // being created, or not ours
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
		if err != nil || processAlive(pid) {
			continue
		}
		killed, unmounted, err := cleanupDir(dir)
		t.Logf("reaped stale e2e directory %s of exited test process %d: killed %d processes, unmounted %d mounts, err %v",
			dir, pid, len(killed), len(unmounted), err)
		if br := bridgeName(e.Name()); linkExists(br) {
			ports, err := removeBridge(br)
			t.Logf("reaped its CNI bridge %s (ports %v): err %v", br, ports, err)
		}
		if cached := removeCNICache(dir); len(cached) > 0 {
			t.Logf("reaped its pods' CNI cache entries %v", cached)
		}
	}
}

// Processes returns the live processes that belong to this daemon (containerd, shims,
// runsc), found by their command line or working directory naming the daemon's Dir.
func (d *Daemon) Processes() ([]Process, error) { return processesReferencing(d.Dir) }

// Mounts returns the mount points under the daemon's Dir, deepest first, except the
// null-netns pins of containerd's runc shim running runsc: runsc bind-mounts an empty
// network namespace for its gofers at <runsc root>/null-netns and keeps it for the life
// of that root directory (the cleanup unmounts it). The project's shim removes its pin
// with the namespace's last sandbox, so its pins are listed.
func (d *Daemon) Mounts() ([]string, error) {
	all, err := mountsUnder(d.Dir)
	if err != nil {
		return nil, err
	}
	var mounts []string
	for _, m := range all {
		if filepath.Base(m) == runscNullNetNS && strings.HasPrefix(m, d.RuncRunscRoot+"/") {
			continue
		}
		mounts = append(mounts, m)
	}
	return mounts, nil
}

// runscNullNetNS is the file under a runsc root (--root, or its per-namespace
// subdirectory under containerd's runc shim) where runsc pins its gofers' empty
// network namespace (gvisor runsc/specutils.NullNetNSFilename).
const runscNullNetNS = "null-netns"

// cleanup tears everything of the daemon down; see StartContainerd.
func (d *Daemon) cleanup() {
	t := d.t
	if t.Failed() {
		d.logDiagnostics()
	}
	if d.Running() && d.client != nil {
		if d.bridge != nil {
			d.removePods()
		}
		d.deleteAll()
	}
	if err := d.Stop(); err != nil {
		t.Errorf("cleanup: %v", err)
	}
	if d.client != nil {
		_ = d.client.Close()
	}
	killed, unmounted, err := cleanupDir(d.Dir)
	if len(killed) > 0 {
		t.Logf("cleanup: killed leftover processes of %s:\n%s", d.Dir, joinProcesses(killed))
	}
	var unexpected []string
	for _, m := range unmounted {
		if filepath.Base(m) != runscNullNetNS {
			unexpected = append(unexpected, m)
		}
	}
	if len(unexpected) > 0 {
		t.Logf("cleanup: unmounted leftovers %v", unexpected)
	}
	if err != nil {
		t.Errorf("cleanup of %s: %v", d.Dir, err)
	}
	if d.bridge != nil {
		// After the processes: a pod's network namespace, and with it its veth pair,
		// lives as long as its sandbox.
		ports, err := d.bridge.release()
		if len(ports) > 0 {
			t.Logf("cleanup: deleted veths left on bridge %s: %v", d.Bridge, ports)
		}
		if err != nil {
			t.Errorf("cleanup: bridge %s: %v", d.Bridge, err)
		}
		if cached := removeCNICache(d.Dir); len(cached) > 0 {
			t.Logf("cleanup: removed CNI cache entries of pods never torn down: %v", cached)
		}
	}
}

// removePods stops and removes every pod through the CRI, which tears their networks
// down (CNI DEL: the veth pairs, the addresses host-local gave out) and removes their
// network namespaces.
func (d *Daemon) removePods() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, _, err := d.Crictl(ctx, "rmp", "--all", "--force"); err != nil {
		d.t.Logf("cleanup: crictl rmp --all --force: %v %s", err, out)
	}
}

// deleteAll kills and deletes every task and container in every namespace.
func (d *Daemon) deleteAll() {
	t := d.t
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nss, err := d.client.NamespaceService().List(ctx)
	if err != nil {
		t.Logf("cleanup: list namespaces: %v", err)
		return
	}
	for _, ns := range nss {
		nsctx := namespaces.WithNamespace(ctx, ns)
		containers, err := d.client.Containers(nsctx)
		if err != nil {
			t.Logf("cleanup: list containers in %s: %v", ns, err)
			continue
		}
		for _, c := range containers {
			if err := deleteContainer(nsctx, c); err != nil {
				t.Logf("cleanup: %s/%s: %v", ns, c.ID(), err)
			}
		}
	}
}

// deleteContainer kills the container's task, deletes it, and deletes the container
// with its snapshot; each step is bounded. The task is deleted without
// containerd.WithProcessKill once it has exited: that option sends `kill --all`, which
// runsc rejects for a stopped sandbox ("sandbox is not running"), failing the delete.
func deleteContainer(ctx context.Context, c containerd.Container) error {
	step := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 15*time.Second) }
	var errs []error
	sctx, cancel := step()
	task, err := c.Task(sctx, nil)
	cancel()
	if err == nil {
		exited := false
		sctx, cancel := step()
		if statusC, err := task.Wait(sctx); err == nil {
			if err := task.Kill(sctx, syscall.SIGKILL); err == nil || errdefs.IsNotFound(err) {
				select {
				case <-statusC:
					exited = true
				case <-sctx.Done():
				}
			}
		}
		cancel()
		var opts []containerd.ProcessDeleteOpts
		if !exited {
			opts = append(opts, containerd.WithProcessKill)
		}
		sctx, cancel = step()
		if _, err := task.Delete(sctx, opts...); err != nil {
			errs = append(errs, fmt.Errorf("delete task: %w", err))
		}
		cancel()
	}
	sctx, cancel = step()
	defer cancel()
	if err := c.Delete(sctx, containerd.WithSnapshotCleanup); err != nil {
		errs = append(errs, fmt.Errorf("delete container: %w", err))
	}
	return errors.Join(errs...)
}

// logDiagnostics logs the tails of containerd's log and of the newest runsc logs.
func (d *Daemon) logDiagnostics() {
	t := d.t
	t.Logf("containerd %s log (%s), last lines:\n%s", d.Version, d.LogPath, tail(d.Logs(), 80))
	var logs []string
	for _, dir := range []string{d.RunscLogDir, d.State} {
		_ = filepath.WalkDir(dir, func(path string, e os.DirEntry, err error) error {
			if err == nil && !e.IsDir() && (strings.HasSuffix(path, ".txt") || strings.HasSuffix(path, ".log") || filepath.Base(path) == "log.json") {
				logs = append(logs, path)
			}
			return nil
		})
	}
	sort.Slice(logs, func(i, j int) bool { return modTime(logs[i]).After(modTime(logs[j])) })
	for _, p := range logs[:min(len(logs), 6)] {
		b, err := os.ReadFile(p)
		if err == nil {
			t.Logf("%s, last lines:\n%s", p, tail(string(b), 25))
		}
	}
}

func modTime(path string) time.Time {
	fi, err := os.Stat(path)
	if err != nil {
		return time.Time{}
	}
	return fi.ModTime()
}

func joinProcesses(ps []Process) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = "  " + p.String()
	}
	return strings.Join(s, "\n")
}

// RunscStates lists runsc's container state files under a namespace's runsc
// directory nsRoot: the shim gives every sandbox a directory of its own
// (nsRoot/<sandbox id>), in which runsc keeps one <id>_sandbox:<id>.state
// file per container.
func RunscStates(nsRoot string) ([]string, error) {
	var out []string
	for _, pattern := range []string{"*.state", "*/*.state"} {
		m, err := filepath.Glob(filepath.Join(nsRoot, pattern))
		if err != nil {
			return nil, err
		}
		out = append(out, m...)
	}
	return out, nil
}

// RunscLeftovers lists what runsc or the shim left under nsRoot once no
// container exists: state files and sandbox directories (the shim removes a
// sandbox's directory with its last container). runsc's null-netns pin and
// its lock files stay for the life of the directory and are not listed.
func RunscLeftovers(nsRoot string) ([]string, error) {
	out, err := RunscStates(nsRoot)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(nsRoot)
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, "sandbox directory "+filepath.Join(nsRoot, e.Name()))
		}
	}
	return out, nil
}
