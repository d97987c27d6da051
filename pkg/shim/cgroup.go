package shim

import (
	"context"
	"errors"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	cgroupsv2 "github.com/containerd/cgroups/v3/cgroup2"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// The container's cgroup (the spec's linux.cgroupsPath), which runsc
// creates for the sandbox and removes with it.

// reassignCgroup gives a container restored under a new id a cgroup of its
// own: a checkpoint's spec carries the checkpointed container's
// cgroupsPath (`ctr container restore` reuses it), and the clone would share
// the original's limits and accounting and leave the cgroup behind. A path
// naming the checkpointed container (containerd's /<namespace>/<id>, or the
// systemd form slice:prefix:<id>) names the new one instead, as containerd
// would give it; the resource limits stay the checkpointed ones. It reports
// whether it changed the spec.
func reassignCgroup(spec *specs.Spec, from, to string) bool {
	if spec.Linux == nil || from == "" || from == to {
		return false
	}
	p := spec.Linux.CgroupsPath
	if parts := strings.Split(p, ":"); len(parts) == 3 && !strings.HasPrefix(p, "/") {
		if parts[2] != from {
			return false
		}
		parts[2] = to
		spec.Linux.CgroupsPath = strings.Join(parts, ":")
		return true
	}
	if path.Base(p) != from {
		return false
	}
	spec.Linux.CgroupsPath = path.Join(path.Dir(p), to)
	return true
}

// cgroupExists reports whether the cgroupfs path p (a cgroupsPath such as
// /<namespace>/<id>; systemd paths are not handled) exists on this host.
func cgroupExists(p string) bool {
	if !strings.HasPrefix(p, "/") {
		return false
	}
	var dir string
	if cgroups.Mode() == cgroups.Unified {
		dir = filepath.Join("/sys/fs/cgroup", p)
	} else {
		dir = filepath.Join("/sys/fs/cgroup/memory", p)
	}
	_, err := os.Stat(dir)
	return err == nil
}

// removeCgroup removes the cgroupfs path p in every controller, where it is
// empty: what a failed `runsc create` left.
func removeCgroup(ctx context.Context, p string) {
	if !strings.HasPrefix(p, "/") {
		return
	}
	var err error
	if cgroups.Mode() == cgroups.Unified {
		var m *cgroupsv2.Manager
		if m, err = cgroupsv2.Load(p); err == nil {
			err = m.Delete()
		}
	} else {
		var cg cgroup1.Cgroup
		if cg, err = cgroup1.Load(cgroup1.StaticPath(p)); err == nil {
			err = cg.Delete()
		}
	}
	if err != nil && !errors.Is(err, cgroup1.ErrCgroupDeleted) && !errors.Is(err, os.ErrNotExist) {
		log.G(ctx).WithError(err).WithField("cgroup", p).Warn("removing the cgroup of a container whose create failed")
	}
}

// nullNetNS is the file in a runsc shared root where runsc pins the empty
// network namespace its gofers share (gVisor's specutils.NullNetNSFilename).
const nullNetNS = "null-netns"

// removeNamespaceRoot removes a namespace's runsc directory (the shared root
// of its sandboxes) once no sandbox has a directory in it: its null-netns
// pin is unmounted (runsc stacks pins, so until none is left) and removed.
// runsc makes a new pin when it next needs one, so a sandbox created
// meanwhile by another shim loses at most the reuse of the pin.
func removeNamespaceRoot(ctx context.Context, dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.Name() != nullNetNS {
			return
		}
	}
	pin := filepath.Join(dir, nullNetNS)
	for unix.Unmount(pin, unix.MNT_DETACH) == nil {
	}
	if err := os.Remove(pin); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.G(ctx).WithError(err).WithField("pin", pin).Warn("removing runsc's null network namespace pin")
		return
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.EEXIST) {
		log.G(ctx).WithError(err).WithField("dir", dir).Warn("removing the namespace's runsc directory")
	}
}
