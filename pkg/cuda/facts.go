package cuda

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/cuda/driver"
)

// GPUFacts are the GPU facts a checkpoint image records, so that a restore
// can be refused up front on a host where it cannot work.
type GPUFacts struct {
	// DriverVersion is the NVIDIA display driver version of the host that
	// made the checkpoint, e.g. "580.159.04". runsc restores only under the
	// same driver version.
	DriverVersion string `json:"driver_version"`
	// Devices are the GPUs the container was given.
	Devices []Device `json:"devices"`
	// UsedMemoryBytes is the device memory the container held when it was
	// checkpointed.
	UsedMemoryBytes uint64 `json:"used_memory_bytes"`
	// PerGPU breaks UsedMemoryBytes down by GPU.
	PerGPU []DeviceUsage `json:"per_gpu,omitempty"`
	// Source is where the facts came from: "nvml" or "nvidia-smi".
	Source string `json:"source,omitempty"`
}

// NewGPUFacts records the facts of a checkpoint taken on host: its driver
// version, the GPUs with the given minor numbers (VisibleDeviceIndexes of the
// container's spec; all GPUs of host when visible is empty) and the
// container's usage.
func NewGPUFacts(host HostGPUs, visible []int, usage Usage) GPUFacts {
	f := GPUFacts{
		DriverVersion:   host.DriverVersion,
		UsedMemoryBytes: usage.UsedMemoryBytes,
		PerGPU:          usage.PerGPU,
		Source:          host.Source,
	}
	for _, d := range host.Devices {
		if len(visible) == 0 || slices.Contains(visible, d.Minor) {
			f.Devices = append(f.Devices, d)
		}
	}
	return f
}

// ErrIncompatible is matched (errors.Is) by the errors of CheckCompatible.
var ErrIncompatible = errors.New("checkpoint is incompatible with this host's GPUs")

// IncompatibleError lists why a checkpoint cannot be restored on this host.
// It is a failed precondition in containerd's error classes
// (errdefs.IsFailedPrecondition).
type IncompatibleError struct {
	// Problems are the mismatches, each naming the checkpoint's value and
	// this host's.
	Problems []string
}

func (e *IncompatibleError) Error() string {
	return ErrIncompatible.Error() + ": " + strings.Join(e.Problems, "; ")
}

// Is makes errors.Is(err, ErrIncompatible) true.
func (e *IncompatibleError) Is(target error) bool { return target == ErrIncompatible }

// FailedPrecondition marks the error for containerd's errdefs, which maps it
// to gRPC's FailedPrecondition.
func (e *IncompatibleError) FailedPrecondition() {}

// CheckCompatible reports whether a checkpoint with the saved facts can be
// restored on host: same NVIDIA driver version, and for each GPU the
// container had (identified by its /dev/nvidiaN node, which the restored
// spec keeps) a GPU of the same model on this host. It returns nil or an
// *IncompatibleError naming both sides of every mismatch. Different GPU
// UUIDs are not a mismatch: see DeviceMap.
func CheckCompatible(saved GPUFacts, host HostGPUs) error {
	var problems []string
	if saved.DriverVersion != host.DriverVersion {
		problems = append(problems, fmt.Sprintf(
			"NVIDIA driver version mismatch: the checkpoint was taken with driver %s, this host has %s; restore it on a host with driver %s",
			orNone(saved.DriverVersion), orNone(host.DriverVersion), orNone(saved.DriverVersion)))
	}
	if len(host.Devices) < len(saved.Devices) {
		problems = append(problems, fmt.Sprintf(
			"not enough GPUs: the checkpoint needs %d (%s), this host has %d (%s)",
			len(saved.Devices), describeDevices(saved.Devices), len(host.Devices), describeDevices(host.Devices)))
	}
	for _, sd := range saved.Devices {
		hd, ok := host.DeviceByMinor(sd.Minor)
		if !ok {
			problems = append(problems, fmt.Sprintf(
				"GPU /dev/nvidia%d (%s) of the checkpoint does not exist on this host, which has %s",
				sd.Minor, sd.Name, describeDevices(host.Devices)))
			continue
		}
		if hd.Name != sd.Name {
			problems = append(problems, fmt.Sprintf(
				"GPU model mismatch on /dev/nvidia%d: the checkpoint has %s, this host has %s",
				sd.Minor, sd.Name, hd.Name))
		}
	}
	if len(problems) > 0 {
		return &IncompatibleError{Problems: problems}
	}
	return nil
}

// DeviceMap pairs each GPU of the checkpoint with the GPU of host that has
// the same /dev/nvidiaN node and returns the pairs in the syntax of
// cuda-checkpoint --device-map ("oldUuid=newUuid,...", driver r580+), also
// when every GPU kept its UUID (an identity map: a restore always takes the
// same path). It fails when host lacks one of the GPUs.
func DeviceMap(saved GPUFacts, host HostGPUs) (string, error) {
	var pairs []driver.GPUPair
	for _, sd := range saved.Devices {
		hd, ok := host.DeviceByMinor(sd.Minor)
		if !ok {
			return "", fmt.Errorf("GPU /dev/nvidia%d (%s) of the checkpoint does not exist on this host", sd.Minor, sd.UUID)
		}
		oldU, err := driver.ParseUUID(sd.UUID)
		if err != nil {
			return "", fmt.Errorf("checkpoint GPU /dev/nvidia%d: %w", sd.Minor, err)
		}
		newU, err := driver.ParseUUID(hd.UUID)
		if err != nil {
			return "", fmt.Errorf("host GPU /dev/nvidia%d: %w", hd.Minor, err)
		}
		pairs = append(pairs, driver.GPUPair{Old: oldU, New: newU})
	}
	return driver.FormatDeviceMap(pairs), nil
}

func describeDevices(ds []Device) string {
	if len(ds) == 0 {
		return "none"
	}
	items := make([]string, len(ds))
	for i, d := range ds {
		items[i] = fmt.Sprintf("/dev/nvidia%d %s", d.Minor, d.Name)
	}
	return strings.Join(items, ", ")
}

func orNone(s string) string {
	if s == "" {
		return "(unknown)"
	}
	return s
}
