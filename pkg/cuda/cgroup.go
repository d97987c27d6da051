package cuda

import (
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
)

// cgroup1Controllers are the cgroup v1 hierarchies CgroupPids tries, in
// order. runsc puts the sandbox into every controller it finds; any one of
// them lists the same processes.
var cgroup1Controllers = []cgroup1.Name{cgroup1.Memory, cgroup1.Pids, cgroup1.Devices, cgroup1.Cpu, cgroup1.Freezer}

// cgroupFS reads process membership from the cgroup filesystem. The zero
// value reads the host's: the mode from cgroups.Mode, v1 hierarchies from
// /proc/self/mountinfo, v2 from /sys/fs/cgroup.
type cgroupFS struct {
	// unified forces cgroup v2 (true) or v1 (false) when modeSet is true.
	unified bool
	modeSet bool
	// v1 replaces the v1 hierarchy discovery (tests).
	v1 cgroup1.Hierarchy
	// v2Mount replaces /sys/fs/cgroup (tests).
	v2Mount string
}

// CgroupPids returns the PIDs (in the caller's PID namespace) of every
// process in the cgroup at cgroupPath and in the cgroups below it, sorted.
//
// cgroupPath is the OCI spec's linux.cgroupsPath: a cgroupfs path such as
// "/k8s.io/<id>" or "/kubepods/besteffort/pod<uid>/<id>", or the systemd
// form "slice:prefix:name" (e.g. "system.slice:containerd:<id>"). On hosts
// with cgroup v1 (legacy or hybrid) it reads the first of the memory, pids,
// devices, cpu and freezer hierarchies that has the cgroup; on cgroup v2 the
// unified hierarchy.
func CgroupPids(cgroupPath string) ([]int, error) {
	return cgroupFS{}.pids(cgroupPath)
}

// PidsInSameCgroup returns the PIDs of every process in the cgroup of pid
// (and below it), pid included, sorted. On cgroup v1 the cgroup is pid's
// memory cgroup (or the next controller in CgroupPids's order).
func PidsInSameCgroup(pid int) ([]int, error) {
	return cgroupFS{}.pidsOf(pid)
}

func (c cgroupFS) isUnified() (bool, error) {
	if c.modeSet {
		return c.unified, nil
	}
	switch cgroups.Mode() {
	case cgroups.Unified:
		return true, nil
	case cgroups.Legacy, cgroups.Hybrid:
		return false, nil
	default:
		return false, errors.New("no cgroup filesystem mounted at /sys/fs/cgroup")
	}
}

func (c cgroupFS) pids(cgroupPath string) ([]int, error) {
	p, err := CgroupFSPath(cgroupPath)
	if err != nil {
		return nil, err
	}
	unified, err := c.isUnified()
	if err != nil {
		return nil, err
	}
	if unified {
		return c.v2Pids(p)
	}
	return c.v1Pids(cgroup1.StaticPath(p), p)
}

func (c cgroupFS) pidsOf(pid int) ([]int, error) {
	unified, err := c.isUnified()
	if err != nil {
		return nil, err
	}
	if unified {
		p, err := cgroup2.PidGroupPath(pid)
		if err != nil {
			return nil, fmt.Errorf("cgroup of PID %d: %w", pid, err)
		}
		return c.v2Pids(p)
	}
	return c.v1Pids(cgroup1.PidPath(pid), fmt.Sprintf("of PID %d", pid))
}

func (c cgroupFS) v2Pids(group string) ([]int, error) {
	var opts []cgroup2.InitOpts
	if c.v2Mount != "" {
		opts = append(opts, cgroup2.WithMountpoint(c.v2Mount))
	}
	m, err := cgroup2.Load(group, opts...)
	if err != nil {
		return nil, fmt.Errorf("cgroup v2 %s: %w", group, err)
	}
	procs, err := m.Procs(true)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("cgroup v2 %s does not exist (has the container exited?): %w", group, err)
		}
		return nil, fmt.Errorf("cgroup v2 %s: %w", group, err)
	}
	out := make([]int, 0, len(procs))
	for _, p := range procs {
		out = append(out, int(p))
	}
	return sortedUnique(out), nil
}

func (c cgroupFS) v1Pids(p cgroup1.Path, desc string) ([]int, error) {
	var opts []cgroup1.InitOpts
	if c.v1 != nil {
		opts = append(opts, cgroup1.WithHierarchy(c.v1))
	}
	// Missing controllers are not an error here: one is enough.
	opts = append(opts, func(ic *cgroup1.InitConfig) error { ic.InitCheck = cgroup1.AllowAny; return nil })
	cg, err := cgroup1.Load(p, opts...)
	if err != nil {
		if errors.Is(err, cgroup1.ErrCgroupDeleted) {
			return nil, fmt.Errorf("cgroup v1 %s does not exist in any hierarchy (has the container exited?): %w", desc, err)
		}
		return nil, fmt.Errorf("cgroup v1 %s: %w", desc, err)
	}
	var errs []error
	for _, name := range cgroup1Controllers {
		procs, err := cg.Processes(name, true)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		out := make([]int, 0, len(procs))
		for _, pr := range procs {
			out = append(out, pr.Pid)
		}
		return sortedUnique(out), nil
	}
	return nil, fmt.Errorf("cgroup v1 %s: no usable controller: %w", desc, errors.Join(errs...))
}

// CgroupFSPath converts an OCI linux.cgroupsPath into the path of the cgroup
// below the hierarchy root. cgroupfs paths are cleaned and made absolute;
// the systemd form "slice:prefix:name" becomes
// "/<expanded slice>/<prefix>-<name>.scope", as runc and runsc do
// ("kubepods-besteffort.slice:cri-containerd:abc" becomes
// "/kubepods.slice/kubepods-besteffort.slice/cri-containerd-abc.scope").
func CgroupFSPath(cgroupPath string) (string, error) {
	if cgroupPath == "" {
		return "", errors.New("empty cgroups path: the spec has no linux.cgroupsPath")
	}
	if parts := strings.Split(cgroupPath, ":"); len(parts) == 3 && !strings.HasPrefix(cgroupPath, "/") {
		return systemdCgroupPath(parts[0], parts[1], parts[2])
	}
	if strings.Contains(cgroupPath, ":") {
		return "", fmt.Errorf("invalid cgroups path %q: want a cgroupfs path or slice:prefix:name", cgroupPath)
	}
	return path.Clean("/" + cgroupPath), nil
}

func systemdCgroupPath(slice, prefix, name string) (string, error) {
	if slice == "" {
		slice = "system.slice"
	}
	dir, err := expandSlice(slice)
	if err != nil {
		return "", err
	}
	if name == "" {
		return "", fmt.Errorf("invalid systemd cgroups path %s:%s:%s: empty name", slice, prefix, name)
	}
	if strings.HasSuffix(name, ".slice") {
		// A slice as the unit: the path is that slice's own.
		return expandSlice(name)
	}
	unit := name + ".scope"
	if prefix != "" {
		unit = prefix + "-" + unit
	}
	return path.Join(dir, unit), nil
}

// expandSlice turns a systemd slice name into its cgroup path:
// "a-b-c.slice" is "/a.slice/a-b.slice/a-b-c.slice"; "-.slice" is "/".
func expandSlice(slice string) (string, error) {
	base, ok := strings.CutSuffix(slice, ".slice")
	if !ok || strings.Contains(base, "/") {
		return "", fmt.Errorf("invalid systemd slice %q: want a name ending in .slice", slice)
	}
	if base == "-" {
		return "/", nil
	}
	p := "/"
	prefix := ""
	for _, comp := range strings.Split(base, "-") {
		if comp == "" {
			return "", fmt.Errorf("invalid systemd slice %q: empty component", slice)
		}
		p = path.Join(p, prefix+comp+".slice")
		prefix += comp + "-"
	}
	return p, nil
}

func sortedUnique(v []int) []int {
	slices.Sort(v)
	return slices.Compact(v)
}
