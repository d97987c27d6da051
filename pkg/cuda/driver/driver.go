package driver

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// ProcessState is the checkpoint state of a CUDA process (CUprocessState).
type ProcessState int32

// CUprocessState values (cuda.h, CUDA 12.8+).
const (
	// StateRunning is CU_PROCESS_STATE_RUNNING: the default state.
	StateRunning ProcessState = 0
	// StateLocked is CU_PROCESS_STATE_LOCKED: CUDA API locks are taken, so
	// further CUDA calls of the process block.
	StateLocked ProcessState = 1
	// StateCheckpointed is CU_PROCESS_STATE_CHECKPOINTED: device memory was
	// copied to host memory and the GPU resources released.
	StateCheckpointed ProcessState = 2
	// StateFailed is CU_PROCESS_STATE_FAILED: an uncorrectable error happened
	// during checkpoint or restore.
	StateFailed ProcessState = 3
)

// String returns the word NVIDIA's cuda-checkpoint prints for the state:
// "running", "locked", "checkpointed" or "failed" ("unknown(N)" otherwise).
func (s ProcessState) String() string {
	switch s {
	case StateRunning:
		return "running"
	case StateLocked:
		return "locked"
	case StateCheckpointed:
		return "checkpointed"
	case StateFailed:
		return "failed"
	default:
		return fmt.Sprintf("unknown(%d)", int32(s))
	}
}

// Driver is the part of the CUDA driver API that checkpoints and restores
// another process's CUDA state (cuCheckpointProcess*, libcuda r570+). None of
// it needs cuInit in the calling process.
//
// The calls block until the driver is done (a checkpoint copies all device
// memory to host memory) and cannot be cancelled, so they take no context.
type Driver interface {
	// Version returns the CUDA version the driver supports, as
	// cuDriverGetVersion reports it: 1000*major + 10*minor (13000 for r580).
	Version() (int, error)
	// ProcessState returns the checkpoint state of the CUDA process pid.
	ProcessState(pid int) (ProcessState, error)
	// Lock takes the CUDA API locks of the running process pid, waiting for
	// submitted work to finish. timeoutMs 0 means the driver's default
	// (wait indefinitely).
	Lock(pid int, timeoutMs uint32) error
	// Checkpoint moves the device memory of the locked process pid to host
	// memory and releases its GPUs.
	Checkpoint(pid int) error
	// Restore reacquires GPUs for the checkpointed process pid and copies its
	// memory back; pairs remap GPUs (r580+), nil restores onto the same GPUs.
	// The process stays locked.
	Restore(pid int, pairs []GPUPair) error
	// Unlock releases the CUDA API locks of the locked process pid.
	Unlock(pid int) error
	// RestoreThreadID returns the thread id of the CUDA restore thread of pid.
	RestoreThreadID(pid int) (int, error)
}

// MinCheckpointDriverVersion is the first cuDriverGetVersion value whose
// driver exports the cuCheckpointProcess* API: CUDA 12.8, driver r570.
const MinCheckpointDriverVersion = 12080

// FormatDriverVersion renders a cuDriverGetVersion value as "major.minor".
func FormatDriverVersion(v int) string {
	return fmt.Sprintf("%d.%d", v/1000, (v%1000)/10)
}

// UUID is a GPU UUID (CUuuid: 16 bytes).
type UUID [16]byte

// String formats u the way nvidia-smi and NVML do:
// "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx".
func (u UUID) String() string {
	h := hex.EncodeToString(u[:])
	return "GPU-" + h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// ParseUUID parses a GPU UUID as nvidia-smi prints it
// ("GPU-" followed by 32 hex digits in 8-4-4-4-12 groups). The "GPU-" prefix
// and the dashes are optional. MIG device UUIDs ("MIG-...") are rejected:
// checkpoint restore remaps whole GPUs.
func ParseUUID(s string) (UUID, error) {
	var u UUID
	t := strings.TrimSpace(s)
	if len(t) >= 4 && strings.EqualFold(t[:4], "MIG-") {
		return u, fmt.Errorf("invalid GPU UUID %q: MIG device UUIDs cannot be remapped, use the UUID of the whole GPU (nvidia-smi -L)", s)
	}
	if len(t) >= 4 && strings.EqualFold(t[:4], "GPU-") {
		t = t[4:]
	}
	t = strings.ReplaceAll(t, "-", "")
	if len(t) != 32 {
		return u, fmt.Errorf("invalid GPU UUID %q: want GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx (see nvidia-smi -L)", s)
	}
	if _, err := hex.Decode(u[:], []byte(t)); err != nil {
		return u, fmt.Errorf("invalid GPU UUID %q: %v", s, err)
	}
	return u, nil
}

// GPUPair maps the GPU a process was checkpointed on to the GPU to restore it
// onto (CUcheckpointGpuPair).
type GPUPair struct {
	Old UUID
	New UUID
}

// ParseDeviceMap parses the --device-map syntax of NVIDIA's cuda-checkpoint:
// "oldUuid1=newUuid1,oldUuid2=newUuid2,...". An empty string yields nil.
// NVIDIA's documentation asks for every GPU visible to the process to be
// listed, even unused ones.
func ParseDeviceMap(s string) ([]GPUPair, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var pairs []GPUPair
	seenOld := map[UUID]bool{}
	seenNew := map[UUID]bool{}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		oldS, newS, ok := strings.Cut(item, "=")
		if !ok {
			return nil, fmt.Errorf("invalid device map entry %q: want oldUuid=newUuid", item)
		}
		var p GPUPair
		var err error
		if p.Old, err = ParseUUID(oldS); err != nil {
			return nil, err
		}
		if p.New, err = ParseUUID(newS); err != nil {
			return nil, err
		}
		if seenOld[p.Old] {
			return nil, fmt.Errorf("invalid device map: GPU %s is mapped twice", p.Old)
		}
		if seenNew[p.New] {
			return nil, fmt.Errorf("invalid device map: two GPUs are mapped onto %s", p.New)
		}
		seenOld[p.Old], seenNew[p.New] = true, true
		pairs = append(pairs, p)
	}
	if len(pairs) == 0 {
		return nil, errors.New("invalid device map: no oldUuid=newUuid entries")
	}
	return pairs, nil
}

// FormatDeviceMap renders pairs in the --device-map syntax.
func FormatDeviceMap(pairs []GPUPair) string {
	items := make([]string, len(pairs))
	for i, p := range pairs {
		items[i] = p.Old.String() + "=" + p.New.String()
	}
	return strings.Join(items, ",")
}

// Environment variables of the cuda-checkpoint tool (cmd/cuda-checkpoint).
// runsc runs the tool with fixed arguments and the container's environment,
// so these are how the shim, or a test, configures it: set them in the
// container's environment.
const (
	// EnvLockTimeout is the lock timeout in milliseconds when --timeout is
	// not given (0: the driver's default, no timeout).
	EnvLockTimeout = "CUDA_CHECKPOINT_LOCK_TIMEOUT_MS"
	// EnvDeviceMap is the --device-map of restores when none is given.
	EnvDeviceMap = "CUDA_CHECKPOINT_DEVICE_MAP"
	// EnvDeviceMapFile names a file holding the device map of restores,
	// read at restore time; a missing file means no map.
	EnvDeviceMapFile = "CUDA_CHECKPOINT_DEVICE_MAP_FILE"
	// EnvInjectFailure makes the named steps fail (testing only): a
	// comma-separated list of get-state, lock, checkpoint, restore, unlock,
	// get-restore-tid.
	EnvInjectFailure = "CUDA_CHECKPOINT_INJECT_FAILURE"
)
