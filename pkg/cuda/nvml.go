package cuda

import (
	"errors"
	"fmt"
	"sort"

	"github.com/ebitengine/purego"
)

// LibNVML is the soname of NVIDIA's management library.
const LibNVML = "libnvidia-ml.so.1"

// errNVMLNotLoaded marks a failure to dlopen NVML (as opposed to NVML
// failing once loaded).
var errNVMLNotLoaded = errors.New("NVML not loaded")

// nvmlReturn_t values used here (nvml.h).
const (
	nvmlSuccess               = 0
	nvmlErrorInsufficientSize = 7
	nvmlErrorDriverNotLoaded  = 9
)

// nvmlValueNotAvailable is NVML_VALUE_NOT_AVAILABLE for unsigned long long
// fields: the driver cannot report the value.
const nvmlValueNotAvailable = ^uint64(0)

// Buffer sizes from nvml.h.
const (
	nvmlSystemDriverVersionBufferSize = 80 // NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE
	nvmlDeviceNameV2BufferSize        = 96 // NVML_DEVICE_NAME_V2_BUFFER_SIZE
	nvmlDeviceUUIDV2BufferSize        = 96 // NVML_DEVICE_UUID_V2_BUFFER_SIZE
)

// nvmlMemory mirrors nvmlMemory_t:
//
//	typedef struct nvmlMemory_st {
//	    unsigned long long total;
//	    unsigned long long free;
//	    unsigned long long used;
//	} nvmlMemory_t;
type nvmlMemory struct {
	total uint64
	free  uint64
	used  uint64
}

// nvmlProcessInfo mirrors nvmlProcessInfo_t (= nvmlProcessInfo_v2_t), the
// element type of nvmlDeviceGetComputeRunningProcesses_v3:
//
//	typedef struct nvmlProcessInfo_st {
//	    unsigned int pid;                  // offset 0
//	                                       // 4 bytes of padding
//	    unsigned long long usedGpuMemory;  // offset 8
//	    unsigned int gpuInstanceId;        // offset 16, 0xFFFFFFFF without MIG
//	    unsigned int computeInstanceId;    // offset 20, 0xFFFFFFFF without MIG
//	} nvmlProcessInfo_t;                   // 24 bytes
//
// The padding is explicit so the layout does not depend on Go's alignment
// rules; TestNVMLLayout checks it.
type nvmlProcessInfo struct {
	pid               uint32
	_                 uint32
	usedGpuMemory     uint64
	gpuInstanceID     uint32
	computeInstanceID uint32
}

// nvmlLib is NVML loaded with dlopen. Its functions are thread-safe;
// nvmlInit_v2 and nvmlShutdown are reference counted, so concurrent
// snapshots are fine.
type nvmlLib struct {
	path string

	nvmlInitV2                         func() int32
	nvmlShutdown                       func() int32
	nvmlErrorString                    func(r int32) string
	nvmlSystemGetDriverVersion         func(buf *byte, n uint32) int32
	nvmlDeviceGetCountV2               func(n *uint32) int32
	nvmlDeviceGetHandleByIndexV2       func(i uint32, dev *uintptr) int32
	nvmlDeviceGetName                  func(dev uintptr, buf *byte, n uint32) int32
	nvmlDeviceGetUUID                  func(dev uintptr, buf *byte, n uint32) int32
	nvmlDeviceGetMinorNumber           func(dev uintptr, minor *uint32) int32
	nvmlDeviceGetMemoryInfo            func(dev uintptr, mem *nvmlMemory) int32
	nvmlDeviceGetComputeRunningProcess func(dev uintptr, count *uint32, infos *nvmlProcessInfo) int32
}

// loadNVML dlopens NVML and resolves the functions Snapshot uses.
func loadNVML(path string) (*nvmlLib, error) {
	if path == "" {
		path = LibNVML
	}
	h, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_GLOBAL)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", errNVMLNotLoaded, path, err)
	}
	l := &nvmlLib{path: path}
	for _, f := range []struct {
		fn   any
		name string
	}{
		{&l.nvmlInitV2, "nvmlInit_v2"},
		{&l.nvmlShutdown, "nvmlShutdown"},
		{&l.nvmlErrorString, "nvmlErrorString"},
		{&l.nvmlSystemGetDriverVersion, "nvmlSystemGetDriverVersion"},
		{&l.nvmlDeviceGetCountV2, "nvmlDeviceGetCount_v2"},
		{&l.nvmlDeviceGetHandleByIndexV2, "nvmlDeviceGetHandleByIndex_v2"},
		{&l.nvmlDeviceGetName, "nvmlDeviceGetName"},
		{&l.nvmlDeviceGetUUID, "nvmlDeviceGetUUID"},
		{&l.nvmlDeviceGetMinorNumber, "nvmlDeviceGetMinorNumber"},
		{&l.nvmlDeviceGetMemoryInfo, "nvmlDeviceGetMemoryInfo"},
		{&l.nvmlDeviceGetComputeRunningProcess, "nvmlDeviceGetComputeRunningProcesses_v3"},
	} {
		sym, err := purego.Dlsym(h, f.name)
		if err != nil {
			_ = purego.Dlclose(h)
			return nil, fmt.Errorf("%w: %s has no %s (driver too old?): %v", errNVMLNotLoaded, path, f.name, err)
		}
		purego.RegisterFunc(f.fn, sym)
	}
	return l, nil
}

// nvmlError is a failed NVML call.
type nvmlError struct {
	op   string
	code int32
	msg  string
}

func (e *nvmlError) Error() string {
	return fmt.Sprintf("%s: %s (NVML error %d)", e.op, e.msg, e.code)
}

func (l *nvmlLib) err(op string, r int32) error {
	e := &nvmlError{op: op, code: r, msg: l.nvmlErrorString(r)}
	if r == nvmlErrorDriverNotLoaded {
		return fmt.Errorf("%w: the NVIDIA kernel driver is not loaded: %v", ErrNoGPU, e)
	}
	return e
}

// snapshot initializes NVML, reads the host's GPUs and compute processes, and
// shuts NVML down again.
func (l *nvmlLib) snapshot() (_ HostGPUs, retErr error) {
	if r := l.nvmlInitV2(); r != nvmlSuccess {
		return HostGPUs{}, l.err("nvmlInit_v2", r)
	}
	defer func() {
		if r := l.nvmlShutdown(); r != nvmlSuccess && retErr == nil {
			retErr = l.err("nvmlShutdown", r)
		}
	}()
	snap := HostGPUs{Source: "nvml"}

	buf := make([]byte, nvmlSystemDriverVersionBufferSize)
	if r := l.nvmlSystemGetDriverVersion(&buf[0], uint32(len(buf))); r != nvmlSuccess {
		return HostGPUs{}, l.err("nvmlSystemGetDriverVersion", r)
	}
	snap.DriverVersion = cString(buf)

	var count uint32
	if r := l.nvmlDeviceGetCountV2(&count); r != nvmlSuccess {
		return HostGPUs{}, l.err("nvmlDeviceGetCount_v2", r)
	}
	for i := uint32(0); i < count; i++ {
		var dev uintptr
		if r := l.nvmlDeviceGetHandleByIndexV2(i, &dev); r != nvmlSuccess {
			return HostGPUs{}, l.err(fmt.Sprintf("nvmlDeviceGetHandleByIndex_v2(%d)", i), r)
		}
		d := Device{Index: int(i), Minor: int(i)}
		name := make([]byte, nvmlDeviceNameV2BufferSize)
		if r := l.nvmlDeviceGetName(dev, &name[0], uint32(len(name))); r != nvmlSuccess {
			return HostGPUs{}, l.err(fmt.Sprintf("nvmlDeviceGetName(%d)", i), r)
		}
		d.Name = cString(name)
		uuid := make([]byte, nvmlDeviceUUIDV2BufferSize)
		if r := l.nvmlDeviceGetUUID(dev, &uuid[0], uint32(len(uuid))); r != nvmlSuccess {
			return HostGPUs{}, l.err(fmt.Sprintf("nvmlDeviceGetUUID(%d)", i), r)
		}
		d.UUID = cString(uuid)
		var minor uint32
		if r := l.nvmlDeviceGetMinorNumber(dev, &minor); r == nvmlSuccess {
			d.Minor = int(minor)
		}
		var mem nvmlMemory
		if r := l.nvmlDeviceGetMemoryInfo(dev, &mem); r != nvmlSuccess {
			return HostGPUs{}, l.err(fmt.Sprintf("nvmlDeviceGetMemoryInfo(%d)", i), r)
		}
		d.MemoryTotal = mem.total
		snap.Devices = append(snap.Devices, d)

		procs, err := l.computeProcesses(dev, i)
		if err != nil {
			return HostGPUs{}, err
		}
		for _, p := range procs {
			used := p.usedGpuMemory
			if used == nvmlValueNotAvailable {
				used = 0
			}
			snap.Processes = append(snap.Processes, GPUProcess{PID: int(p.pid), UsedMemory: used, GPUUUID: d.UUID})
		}
	}
	sort.SliceStable(snap.Processes, func(a, b int) bool { return snap.Processes[a].PID < snap.Processes[b].PID })
	return snap, nil
}

// computeProcesses lists the compute processes on dev, growing the buffer
// while processes come and go between the calls.
func (l *nvmlLib) computeProcesses(dev uintptr, index uint32) ([]nvmlProcessInfo, error) {
	op := fmt.Sprintf("nvmlDeviceGetComputeRunningProcesses_v3(%d)", index)
	var count uint32
	r := l.nvmlDeviceGetComputeRunningProcess(dev, &count, nil)
	if r == nvmlSuccess {
		return nil, nil
	}
	for attempt := 0; attempt < 5; attempt++ {
		if r != nvmlErrorInsufficientSize {
			return nil, l.err(op, r)
		}
		infos := make([]nvmlProcessInfo, count+8)
		count = uint32(len(infos))
		r = l.nvmlDeviceGetComputeRunningProcess(dev, &count, &infos[0])
		if r == nvmlSuccess {
			return infos[:count], nil
		}
	}
	return nil, l.err(op, r)
}

// cString returns the bytes of b up to the first NUL.
func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
