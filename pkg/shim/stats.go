package shim

import (
	"encoding/json"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	cgroup1stats "github.com/containerd/cgroups/v3/cgroup1/stats"
	cgroupsv2 "github.com/containerd/cgroups/v3/cgroup2"
	cgroup2stats "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/console"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/anypb"
)

// withHostLimits fills in the memory and pids limits runsc leaves at 0 (the
// sandbox does not see them) from the cgroup of the sandbox process pid on
// the host, where runsc applied the spec's limits.
func withHostLimits(st *runc.Stats, pid int) {
	mem, pids, ok := hostLimits(pid)
	if !ok {
		return
	}
	if st.Memory.Usage.Limit == 0 {
		st.Memory.Usage.Limit = mem
	}
	if st.Pids.Limit == 0 {
		st.Pids.Limit = pids
	}
}

// hostLimits reads the memory and pids limits of pid's cgroup (0 for none).
func hostLimits(pid int) (mem, pids uint64, ok bool) {
	if pid <= 0 {
		return 0, 0, false
	}
	if cgroups.Mode() == cgroups.Unified {
		g, err := cgroupsv2.PidGroupPath(pid)
		if err != nil {
			return 0, 0, false
		}
		m, err := cgroupsv2.Load(g)
		if err != nil {
			return 0, 0, false
		}
		st, err := m.Stat()
		if err != nil {
			return 0, 0, false
		}
		if st.Memory != nil {
			mem = st.Memory.UsageLimit
		}
		if st.Pids != nil {
			pids = st.Pids.Limit
		}
		return mem, pids, true
	}
	cg, err := cgroup1.Load(cgroup1.PidPath(pid), cgroup1.WithHiearchy(cgroup1.Default))
	if err != nil {
		return 0, 0, false
	}
	st, err := cg.Stat(cgroup1.IgnoreNotExist)
	if err != nil {
		return 0, 0, false
	}
	if st.Memory != nil && st.Memory.Usage != nil {
		mem = st.Memory.Usage.Limit
	}
	if st.Pids != nil {
		pids = st.Pids.Limit
	}
	return mem, pids, true
}

// metricsFromStats converts the sandbox's stats (`runsc events --stats`,
// runc's format) into the cgroup metrics containerd expects from a shim on
// this host: cgroup v1 Metrics, or v2 Metrics on a unified host. runsc
// reports CPU times in nanoseconds; cgroup v2 metrics are in microseconds.
func metricsFromStats(st *runc.Stats, unified bool) (*anypb.Any, error) {
	if unified {
		return typeurl.MarshalAnyToProto(&cgroup2stats.Metrics{
			CPU: &cgroup2stats.CPUStat{
				UsageUsec:     st.Cpu.Usage.Total / 1000,
				UserUsec:      st.Cpu.Usage.User / 1000,
				SystemUsec:    st.Cpu.Usage.Kernel / 1000,
				NrPeriods:     st.Cpu.Throttling.Periods,
				NrThrottled:   st.Cpu.Throttling.ThrottledPeriods,
				ThrottledUsec: st.Cpu.Throttling.ThrottledTime / 1000,
			},
			Memory: &cgroup2stats.MemoryStat{
				Usage:      st.Memory.Usage.Usage,
				UsageLimit: st.Memory.Usage.Limit,
				MaxUsage:   st.Memory.Usage.Max,
				SwapUsage:  st.Memory.Swap.Usage,
				SwapLimit:  st.Memory.Swap.Limit,
				Slab:       st.Memory.Kernel.Usage,
				File:       st.Memory.Cache,
			},
			Pids: &cgroup2stats.PidsStat{Current: st.Pids.Current, Limit: st.Pids.Limit},
		})
	}
	entry := func(m runc.MemoryEntry) *cgroup1stats.MemoryEntry {
		return &cgroup1stats.MemoryEntry{Limit: m.Limit, Usage: m.Usage, Max: m.Max, Failcnt: m.Failcnt}
	}
	return typeurl.MarshalAnyToProto(&cgroup1stats.Metrics{
		CPU: &cgroup1stats.CPUStat{
			Usage: &cgroup1stats.CPUUsage{
				Total:  st.Cpu.Usage.Total,
				Kernel: st.Cpu.Usage.Kernel,
				User:   st.Cpu.Usage.User,
				PerCPU: st.Cpu.Usage.Percpu,
			},
			Throttling: &cgroup1stats.Throttle{
				Periods:          st.Cpu.Throttling.Periods,
				ThrottledPeriods: st.Cpu.Throttling.ThrottledPeriods,
				ThrottledTime:    st.Cpu.Throttling.ThrottledTime,
			},
		},
		Memory: &cgroup1stats.MemoryStat{
			Cache:     st.Memory.Cache,
			Usage:     entry(st.Memory.Usage),
			Swap:      entry(st.Memory.Swap),
			Kernel:    entry(st.Memory.Kernel),
			KernelTCP: entry(st.Memory.KernelTCP),
		},
		Pids: &cgroup1stats.PidsStat{Current: st.Pids.Current, Limit: st.Pids.Limit},
	})
}

func consoleSize(width, height uint32) console.WinSize {
	return console.WinSize{Width: uint16(width), Height: uint16(height)}
}

func jsonUnmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }
