package cuda

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"testing"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/cuda/driver"
)

// The tests in this file need an NVIDIA GPU and skip without one.

func snapshotOrSkip(t *testing.T, d *HostDiscoverer) HostGPUs {
	t.Helper()
	snap, err := d.Snapshot(context.Background())
	if errors.Is(err, ErrNoGPU) {
		t.Skipf("no GPU: %v", err)
	}
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	return snap
}

func TestGPUSnapshot(t *testing.T) {
	snap := snapshotOrSkip(t, NewDiscoverer())
	t.Logf("snapshot: %+v", snap)
	if snap.Source != "nvml" {
		t.Errorf("source = %q, want nvml where NVML is installed", snap.Source)
	}
	if snap.DriverVersion == "" || len(snap.Devices) == 0 {
		t.Fatalf("incomplete snapshot %+v", snap)
	}
	for _, d := range snap.Devices {
		if _, err := driver.ParseUUID(d.UUID); err != nil {
			t.Errorf("device %d: %v", d.Index, err)
		}
		if d.Name == "" || d.MemoryTotal == 0 {
			t.Errorf("device %d incomplete: %+v", d.Index, d)
		}
		if _, err := os.Stat("/dev/nvidia" + strconv.Itoa(d.Minor)); err != nil {
			t.Errorf("device %d: minor %d has no device node: %v", d.Index, d.Minor, err)
		}
	}

	// nvidia-smi must agree with NVML on everything but memory rounding.
	if _, err := exec.LookPath("nvidia-smi"); err != nil {
		return
	}
	smi := snapshotOrSkip(t, &HostDiscoverer{DisableNVML: true})
	t.Logf("nvidia-smi snapshot: %+v", smi)
	if smi.DriverVersion != snap.DriverVersion || len(smi.Devices) != len(snap.Devices) {
		t.Fatalf("nvidia-smi %+v disagrees with NVML %+v", smi, snap)
	}
	for i := range smi.Devices {
		a, b := smi.Devices[i], snap.Devices[i]
		if a.UUID != b.UUID || a.Name != b.Name || a.Index != b.Index {
			t.Errorf("device %d: nvidia-smi %+v, NVML %+v", i, a, b)
		}
		if diff := int64(a.MemoryTotal) - int64(b.MemoryTotal); diff > 1<<20 || diff < -(1<<20) {
			t.Errorf("device %d memory: nvidia-smi %d, NVML %d", i, a.MemoryTotal, b.MemoryTotal)
		}
	}
	if err := CheckCompatible(NewGPUFacts(snap, nil, Usage{}), smi); err != nil {
		t.Errorf("a host is not compatible with itself: %v", err)
	}
}

// TestGPUProcessUsage checks the accounting against a running CUDA process
// named by CUDA_TEST_GPU_PID (the GPU workload, for instance).
func TestGPUProcessUsage(t *testing.T) {
	pid, err := strconv.Atoi(os.Getenv("CUDA_TEST_GPU_PID"))
	if err != nil {
		t.Skip("set CUDA_TEST_GPU_PID to the PID of a running CUDA process")
	}
	for _, d := range []*HostDiscoverer{NewDiscoverer(), {DisableNVML: true}} {
		snap := snapshotOrSkip(t, d)
		pids, err := PidsInSameCgroup(pid)
		if err != nil {
			t.Fatalf("PidsInSameCgroup(%d): %v", pid, err)
		}
		if !slices.Contains(pids, pid) {
			t.Fatalf("PidsInSameCgroup(%d) = %v lacks the process", pid, pids)
		}
		u := SandboxGPUUsage(snap, pids)
		t.Logf("%s: usage of the cgroup of %d: %+v", snap.Source, pid, u)
		if !slices.Contains(u.PIDs, pid) || u.UsedMemoryBytes == 0 {
			t.Errorf("%s: usage %+v does not show process %d holding GPU memory", snap.Source, u, pid)
		}
		if want := os.Getenv("CUDA_TEST_GPU_MIN_BYTES"); want != "" {
			min, _ := strconv.ParseUint(want, 10, 64)
			if u.UsedMemoryBytes < min {
				t.Errorf("%s: %d bytes used, want at least %d", snap.Source, u.UsedMemoryBytes, min)
			}
		}
	}
}
