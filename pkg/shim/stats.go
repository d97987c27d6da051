package shim

import (
	"encoding/json"

	cgroup1stats "github.com/containerd/cgroups/v3/cgroup1/stats"
	cgroup2stats "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/console"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/anypb"
)

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
