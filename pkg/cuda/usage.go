package cuda

import (
	"slices"
	"sort"
)

// DeviceUsage is the device memory a set of processes holds on one GPU.
type DeviceUsage struct {
	UUID            string `json:"uuid"`
	Index           int    `json:"index"`
	Name            string `json:"name,omitempty"`
	UsedMemoryBytes uint64 `json:"used_memory_bytes"`
	PIDs            []int  `json:"pids"`
}

// Usage is the GPU footprint of a container: the GPU processes of a snapshot
// that belong to the container's cgroup.
type Usage struct {
	// UsedMemoryBytes is the device memory the processes hold on all GPUs.
	UsedMemoryBytes uint64 `json:"used_memory_bytes"`
	// PerGPU breaks it down by GPU, ordered by index.
	PerGPU []DeviceUsage `json:"per_gpu,omitempty"`
	// PIDs are the container's processes that hold a GPU context (for a
	// gVisor sandbox: the runsc-sandbox process), sorted.
	PIDs []int `json:"pids,omitempty"`
}

// HoldsGPU reports whether any of the processes holds a GPU context. After a
// checkpoint that released the GPUs (CUDA checkpointed, or the sandbox
// exited) it is false; a restored container that resumed CUDA holds one
// again.
func (u Usage) HoldsGPU() bool { return len(u.PIDs) > 0 }

// SandboxGPUUsage intersects the GPU processes of snap with pids (the
// processes of the container's cgroup, see CgroupPids) and sums their device
// memory per GPU.
func SandboxGPUUsage(snap HostGPUs, pids []int) Usage {
	members := make(map[int]bool, len(pids))
	for _, p := range pids {
		members[p] = true
	}
	var u Usage
	perGPU := map[string]*DeviceUsage{}
	for _, p := range snap.Processes {
		if !members[p.PID] {
			continue
		}
		du, ok := perGPU[p.GPUUUID]
		if !ok {
			du = &DeviceUsage{UUID: p.GPUUUID, Index: -1}
			if d, found := snap.DeviceByUUID(p.GPUUUID); found {
				du.Index, du.Name = d.Index, d.Name
			}
			perGPU[p.GPUUUID] = du
		}
		du.UsedMemoryBytes += p.UsedMemory
		if !slices.Contains(du.PIDs, p.PID) {
			du.PIDs = append(du.PIDs, p.PID)
		}
		u.UsedMemoryBytes += p.UsedMemory
		if !slices.Contains(u.PIDs, p.PID) {
			u.PIDs = append(u.PIDs, p.PID)
		}
	}
	for _, du := range perGPU {
		slices.Sort(du.PIDs)
		u.PerGPU = append(u.PerGPU, *du)
	}
	sort.Slice(u.PerGPU, func(a, b int) bool {
		if u.PerGPU[a].Index != u.PerGPU[b].Index {
			return u.PerGPU[a].Index < u.PerGPU[b].Index
		}
		return u.PerGPU[a].UUID < u.PerGPU[b].UUID
	})
	slices.Sort(u.PIDs)
	return u
}
