package cuda

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"sync"
)

// ErrNoGPU means this host has no usable NVIDIA stack: neither NVML
// (libnvidia-ml.so.1) nor nvidia-smi is available, or the kernel driver is
// not loaded.
var ErrNoGPU = errors.New("no NVIDIA GPU found")

// Device is one GPU of the host.
type Device struct {
	// Index is the NVML / nvidia-smi index (PCI bus order).
	Index int `json:"index"`
	// Minor is the N of the device node /dev/nvidiaN. From nvidia-smi,
	// which does not report it, it is assumed equal to Index.
	Minor int `json:"minor"`
	// UUID is the GPU UUID, "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx".
	UUID string `json:"uuid"`
	// Name is the product name, e.g. "NVIDIA H200".
	Name string `json:"name"`
	// MemoryTotal is the device memory in bytes.
	MemoryTotal uint64 `json:"memory_total_bytes"`
}

// GPUProcess is a host process holding a compute context on a GPU. For a
// gVisor sandbox this is the runsc-sandbox process, not the application
// inside it.
type GPUProcess struct {
	// PID is the process id in the host's (the caller's) PID namespace.
	PID int `json:"pid"`
	// UsedMemory is the device memory the process holds on GPUUUID, in
	// bytes; 0 when the driver does not report it.
	UsedMemory uint64 `json:"used_memory_bytes"`
	// GPUUUID is the GPU the memory is on.
	GPUUUID string `json:"gpu_uuid"`
}

// HostGPUs is a snapshot of the host's GPUs and of the processes using them.
type HostGPUs struct {
	// DriverVersion is the NVIDIA display driver version, e.g. "580.159.04".
	DriverVersion string `json:"driver_version"`
	// Devices are the GPUs, ordered by Index.
	Devices []Device `json:"devices"`
	// Processes are the compute processes on all GPUs; a process using two
	// GPUs appears twice.
	Processes []GPUProcess `json:"processes,omitempty"`
	// Source says where the snapshot came from: "nvml" or "nvidia-smi".
	Source string `json:"source"`
}

// DeviceByUUID returns the device with the given UUID.
func (h HostGPUs) DeviceByUUID(uuid string) (Device, bool) {
	for _, d := range h.Devices {
		if d.UUID == uuid {
			return d, true
		}
	}
	return Device{}, false
}

// DeviceByMinor returns the device whose node is /dev/nvidia<minor>.
func (h HostGPUs) DeviceByMinor(minor int) (Device, bool) {
	for _, d := range h.Devices {
		if d.Minor == minor {
			return d, true
		}
	}
	return Device{}, false
}

// Discoverer takes snapshots of the host's GPUs.
type Discoverer interface {
	// Snapshot returns the host's driver version, GPUs and GPU processes.
	// It returns an error wrapping ErrNoGPU when the host has no NVIDIA
	// stack.
	Snapshot(ctx context.Context) (HostGPUs, error)
}

// CommandRunner runs a command and returns its standard output. Tests
// replace it to feed captured nvidia-smi output.
type CommandRunner func(ctx context.Context, name string, args ...string) ([]byte, error)

// HostDiscoverer is the Discoverer of the machine it runs on. It asks NVML
// (libnvidia-ml.so.1, loaded with dlopen on first use) and falls back to
// nvidia-smi when NVML cannot be loaded or fails. The zero value is ready to
// use; a HostDiscoverer must not be copied after first use.
type HostDiscoverer struct {
	// NVMLLibrary is the NVML library to load; "" means LibNVML.
	NVMLLibrary string
	// DisableNVML makes Snapshot use nvidia-smi only. It keeps NVML out of
	// the calling process.
	DisableNVML bool
	// NvidiaSMI is the nvidia-smi binary; "" means "nvidia-smi" from PATH.
	NvidiaSMI string
	// Run runs nvidia-smi; nil means os/exec.
	Run CommandRunner

	once    sync.Once
	nvml    *nvmlLib
	nvmlErr error
}

var _ Discoverer = (*HostDiscoverer)(nil)

// NewDiscoverer returns a HostDiscoverer with default settings. It loads
// nothing until the first Snapshot.
func NewDiscoverer() *HostDiscoverer { return &HostDiscoverer{} }

// Snapshot implements Discoverer.
func (d *HostDiscoverer) Snapshot(ctx context.Context) (HostGPUs, error) {
	if err := ctx.Err(); err != nil {
		return HostGPUs{}, err
	}
	var nvmlErr error
	if !d.DisableNVML {
		d.once.Do(func() { d.nvml, d.nvmlErr = loadNVML(d.NVMLLibrary) })
		if d.nvmlErr == nil {
			snap, err := d.nvml.snapshot()
			if err == nil {
				return snap, nil
			}
			if errors.Is(err, ErrNoGPU) {
				// The kernel driver is not loaded: nvidia-smi cannot do better.
				return HostGPUs{}, err
			}
			nvmlErr = err
		} else {
			nvmlErr = d.nvmlErr
		}
	}
	snap, smiErr := d.smiSnapshot(ctx)
	if smiErr == nil {
		return snap, nil
	}
	if nvmlErr == nil {
		return HostGPUs{}, smiErr
	}
	if errors.Is(smiErr, ErrNoGPU) && errors.Is(nvmlErr, errNVMLNotLoaded) {
		return HostGPUs{}, fmt.Errorf("%w: %v; %v", ErrNoGPU, nvmlErr, smiErr)
	}
	return HostGPUs{}, fmt.Errorf("NVML: %w; nvidia-smi fallback: %w", nvmlErr, smiErr)
}

func (d *HostDiscoverer) smiSnapshot(ctx context.Context) (HostGPUs, error) {
	bin := d.NvidiaSMI
	if bin == "" {
		bin = "nvidia-smi"
	}
	run := d.Run
	if run == nil {
		p, err := exec.LookPath(bin)
		if err != nil {
			return HostGPUs{}, fmt.Errorf("%w: nvidia-smi not found: %v", ErrNoGPU, err)
		}
		bin = p
		run = execRunner
	}
	return smiSnapshot(ctx, run, bin)
}

func execRunner(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && len(ee.Stderr) > 0 {
			return out, fmt.Errorf("%s: %w: %s", name, err, trimOutput(ee.Stderr))
		}
		if len(out) > 0 {
			// nvidia-smi prints its errors on stdout.
			return out, fmt.Errorf("%s: %w: %s", name, err, trimOutput(out))
		}
		return out, fmt.Errorf("%s: %w", name, err)
	}
	return out, nil
}

func trimOutput(b []byte) string {
	const max = 512
	s := string(b)
	if len(s) > max {
		s = s[:max] + "..."
	}
	return s
}
