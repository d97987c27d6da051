package cuda

import (
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
)

// cgroup1Controllers are the cgroup v1 hierarchies PidsInSameCgroup tries, in
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

// PidsInSameCgroup returns the PIDs of every process in the cgroup of pid
// (and below it), pid included, sorted. On cgroup v1 the cgroup is pid's
// memory cgroup (or the next of cgroup1Controllers that has it).
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

func sortedUnique(v []int) []int {
	slices.Sort(v)
	return slices.Compact(v)
}
