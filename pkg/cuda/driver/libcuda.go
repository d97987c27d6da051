package driver

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"github.com/ebitengine/purego"
)

// LibCUDA is the soname of the CUDA driver library. It is loaded with dlopen
// (purego), so binaries stay CGO_ENABLED=0; they are linked dynamically
// against libc, which dlopen needs.
const LibCUDA = "libcuda.so.1"

var (
	// ErrNoDriver means the CUDA driver library could not be loaded.
	ErrNoDriver = errors.New("no NVIDIA driver found")
	// ErrDriverTooOld means the driver lacks the checkpoint API (before r570).
	ErrDriverTooOld = errors.New("driver too old")
)

// Argument structs of the checkpoint API, laid out as in cuda.h (CUDA 13.0;
// CUDA 12.8 had the same sizes, with the restore struct all reserved). Every
// struct is 64 bytes; reserved fields must be zero. The field offsets are
// checked by TestCheckpointArgLayout.
//
//	typedef struct CUcheckpointLockArgs_st {
//	    unsigned int timeoutMs;   // 0: no timeout
//	    unsigned int reserved0;
//	    cuuint64_t reserved1[7];
//	} CUcheckpointLockArgs;
type lockArgs struct {
	timeoutMs uint32
	reserved0 uint32
	reserved1 [7]uint64
}

//	typedef struct CUcheckpointCheckpointArgs_st {
//	    cuuint64_t reserved[8];
//	} CUcheckpointCheckpointArgs;
type checkpointArgs struct {
	reserved [8]uint64
}

//	typedef struct CUcheckpointGpuPair_st {
//	    CUuuid oldUuid;           // struct { char bytes[16]; }
//	    CUuuid newUuid;
//	} CUcheckpointGpuPair;
type gpuPair struct {
	oldUUID [16]byte
	newUUID [16]byte
}

//	typedef struct CUcheckpointRestoreArgs_st {
//	    CUcheckpointGpuPair *gpuPairs;   // offset 0
//	    unsigned int gpuPairsCount;      // offset 8
//	    char reserved[44];               // offset 12
//	    cuuint64_t reserved1;            // offset 56
//	} CUcheckpointRestoreArgs;
//
// gpuPairs holds the address of pinned Go memory (see Restore), so it is a
// uintptr: the struct itself then carries no Go pointer.
type restoreArgs struct {
	gpuPairs      uintptr
	gpuPairsCount uint32
	reserved      [44]byte
	reserved1     uint64
}

//	typedef struct CUcheckpointUnlockArgs_st {
//	    cuuint64_t reserved[8];
//	} CUcheckpointUnlockArgs;
type unlockArgs struct {
	reserved [8]uint64
}

// Native is the CUDA driver loaded from libcuda.so.1. It implements Driver.
// Its methods may be called from any goroutine: none of them depends on a
// current CUDA context, and none needs cuInit.
type Native struct {
	version int

	// All of these are plain C functions returning CUresult (int32 in the
	// x86-64 and arm64 C ABIs); pointer arguments point at Go memory that the
	// driver only uses during the call.
	cuDriverGetVersion                    func(version *int32) int32
	cuGetErrorName                        func(code int32, name **byte) int32
	cuGetErrorString                      func(code int32, str **byte) int32
	cuCheckpointProcessGetState           func(pid int32, state *int32) int32
	cuCheckpointProcessLock               func(pid int32, args *lockArgs) int32
	cuCheckpointProcessCheckpoint         func(pid int32, args *checkpointArgs) int32
	cuCheckpointProcessRestore            func(pid int32, args *restoreArgs) int32
	cuCheckpointProcessUnlock             func(pid int32, args *unlockArgs) int32
	cuCheckpointProcessGetRestoreThreadId func(pid int32, tid *int32) int32
}

var _ Driver = (*Native)(nil)

// fallbackLibCUDA are the places where container setups commonly mount the
// driver's libcuda.so.1, tried when the dynamic loader's search path (for
// instance LD_LIBRARY_PATH) does not find it.
var fallbackLibCUDA = []string{
	"/usr/local/nvidia/lib64/" + LibCUDA,
	"/usr/lib/x86_64-linux-gnu/" + LibCUDA,
	"/usr/lib/aarch64-linux-gnu/" + LibCUDA,
	"/usr/lib64/" + LibCUDA,
}

// Open loads the CUDA driver library and checks that it has the checkpoint
// API. It does not call cuInit. With path "" it loads LibCUDA through the
// dynamic loader's search path, then from the usual mount points of the
// driver's libraries.
//
// Errors wrap ErrNoDriver when the library cannot be loaded and
// ErrDriverTooOld when the driver predates r570.
func Open(path string) (*Native, error) {
	candidates := []string{path}
	if path == "" {
		candidates = append([]string{LibCUDA}, fallbackLibCUDA...)
	}
	var h uintptr
	var firstErr error
	for _, c := range candidates {
		lib, err := purego.Dlopen(c, purego.RTLD_NOW|purego.RTLD_GLOBAL)
		if err == nil {
			h, path = lib, c
			break
		}
		if firstErr == nil {
			// The soname's error is the telling one; the fallbacks mostly
			// do not exist.
			firstErr = fmt.Errorf("%s could not be loaded: %v", c, err)
		}
	}
	if h == 0 {
		return nil, fmt.Errorf("%w: %v; is the driver's library directory mounted in the container (and on the library path)?", ErrNoDriver, firstErr)
	}
	d := &Native{}
	base := []struct {
		fn   any
		name string
	}{
		{&d.cuDriverGetVersion, "cuDriverGetVersion"},
		{&d.cuGetErrorName, "cuGetErrorName"},
		{&d.cuGetErrorString, "cuGetErrorString"},
	}
	for _, f := range base {
		if err := register(h, f.fn, f.name); err != nil {
			return nil, fmt.Errorf("%w: %s has no %s: %v; is it really the NVIDIA driver library?", ErrNoDriver, path, f.name, err)
		}
	}
	var v int32
	if r := d.cuDriverGetVersion(&v); r != 0 {
		return nil, fmt.Errorf("%w: cuDriverGetVersion: %v", ErrNoDriver, d.err("cuDriverGetVersion", r))
	}
	d.version = int(v)
	if d.version < MinCheckpointDriverVersion {
		return nil, fmt.Errorf("%w: checkpoint API needs r570+ (CUDA %s), this driver supports CUDA %s; upgrade the NVIDIA driver on the host",
			ErrDriverTooOld, FormatDriverVersion(MinCheckpointDriverVersion), FormatDriverVersion(d.version))
	}
	checkpoint := []struct {
		fn   any
		name string
	}{
		{&d.cuCheckpointProcessGetState, "cuCheckpointProcessGetState"},
		{&d.cuCheckpointProcessLock, "cuCheckpointProcessLock"},
		{&d.cuCheckpointProcessCheckpoint, "cuCheckpointProcessCheckpoint"},
		{&d.cuCheckpointProcessRestore, "cuCheckpointProcessRestore"},
		{&d.cuCheckpointProcessUnlock, "cuCheckpointProcessUnlock"},
		{&d.cuCheckpointProcessGetRestoreThreadId, "cuCheckpointProcessGetRestoreThreadId"},
	}
	for _, f := range checkpoint {
		if err := register(h, f.fn, f.name); err != nil {
			return nil, fmt.Errorf("%w: checkpoint API needs r570+, %s (CUDA %s) has no %s; upgrade the NVIDIA driver on the host",
				ErrDriverTooOld, path, FormatDriverVersion(d.version), f.name)
		}
	}
	return d, nil
}

// register binds the C function name of library h to the Go function
// pointer fn, reporting a missing symbol as an error instead of panicking.
func register(h uintptr, fn any, name string) error {
	sym, err := purego.Dlsym(h, name)
	if err != nil {
		return err
	}
	purego.RegisterFunc(fn, sym)
	return nil
}

// Version implements Driver.
func (d *Native) Version() (int, error) { return d.version, nil }

// ProcessState implements Driver.
func (d *Native) ProcessState(pid int) (ProcessState, error) {
	var s int32
	if r := d.cuCheckpointProcessGetState(int32(pid), &s); r != 0 {
		return 0, d.err("cuCheckpointProcessGetState", r)
	}
	return ProcessState(s), nil
}

// Lock implements Driver.
func (d *Native) Lock(pid int, timeoutMs uint32) error {
	args := &lockArgs{timeoutMs: timeoutMs}
	if r := d.cuCheckpointProcessLock(int32(pid), args); r != 0 {
		return d.err("cuCheckpointProcessLock", r)
	}
	return nil
}

// Checkpoint implements Driver.
func (d *Native) Checkpoint(pid int) error {
	if r := d.cuCheckpointProcessCheckpoint(int32(pid), &checkpointArgs{}); r != 0 {
		return d.err("cuCheckpointProcessCheckpoint", r)
	}
	return nil
}

// Restore implements Driver. A device map needs driver r580+ (CUDA 13.0),
// whose cuda.h introduced gpuPairs; older drivers reject non-zero reserved
// fields.
func (d *Native) Restore(pid int, pairs []GPUPair) error {
	args := &restoreArgs{}
	var pin runtime.Pinner
	defer pin.Unpin()
	if len(pairs) > 0 {
		cp := make([]gpuPair, len(pairs))
		for i, p := range pairs {
			cp[i] = gpuPair{oldUUID: p.Old, newUUID: p.New}
		}
		// The driver reads the array through a pointer stored inside args:
		// pin it so that args holds no unpinned Go pointer (cgo rules).
		pin.Pin(&cp[0])
		args.gpuPairs = uintptr(unsafe.Pointer(&cp[0]))
		args.gpuPairsCount = uint32(len(cp))
		defer runtime.KeepAlive(cp)
	}
	if r := d.cuCheckpointProcessRestore(int32(pid), args); r != 0 {
		return d.err("cuCheckpointProcessRestore", r)
	}
	return nil
}

// Unlock implements Driver.
func (d *Native) Unlock(pid int) error {
	if r := d.cuCheckpointProcessUnlock(int32(pid), &unlockArgs{}); r != 0 {
		return d.err("cuCheckpointProcessUnlock", r)
	}
	return nil
}

// RestoreThreadID implements Driver.
func (d *Native) RestoreThreadID(pid int) (int, error) {
	var tid int32
	if r := d.cuCheckpointProcessGetRestoreThreadId(int32(pid), &tid); r != 0 {
		return 0, d.err("cuCheckpointProcessGetRestoreThreadId", r)
	}
	return int(tid), nil
}

// err builds an *Error for code r of op, with the driver's own name and
// description of the code where it has them.
func (d *Native) err(op string, r int32) *Error {
	e := NewError(op, Result(r))
	var p *byte
	if d.cuGetErrorName(r, &p) == 0 && p != nil {
		e.Name = goString(p)
	}
	p = nil
	if d.cuGetErrorString(r, &p) == 0 && p != nil {
		e.Description = goString(p)
	}
	return e
}

// goString copies the NUL-terminated C string at p (at most 4 KiB of it).
func goString(p *byte) string {
	const maxLen = 4096
	n := 0
	for n < maxLen && *(*byte)(unsafe.Add(unsafe.Pointer(p), n)) != 0 {
		n++
	}
	return string(unsafe.Slice(p, n))
}
