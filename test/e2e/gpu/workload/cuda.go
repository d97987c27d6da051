package main

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/ebitengine/purego"
	"golang.org/x/sys/unix"
)

// cudaError is a failed CUDA driver API call.
type cudaError struct {
	op   string
	code int32
	name string
	desc string
}

func (e *cudaError) Error() string {
	return fmt.Sprintf("%s: %q (%s, %d)", e.op, e.desc, e.name, e.code)
}

// Device attributes (CUdevice_attribute, cuda.h).
const (
	attrMultiprocessorCount = 16 // CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
	attrComputeCapMajor     = 75 // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
	attrComputeCapMinor     = 76 // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR
)

// JIT options (CUjit_option, cuda.h).
const (
	jitInfoLogBuffer       = 3 // CU_JIT_INFO_LOG_BUFFER
	jitInfoLogBufferSize   = 4 // CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES
	jitErrorLogBuffer      = 5 // CU_JIT_ERROR_LOG_BUFFER
	jitErrorLogBufferSize  = 6 // CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES
	jitLogBufferSizeBytes  = 16 << 10
	cmemSize               = 1 << 20 // PTX, logs, parameter blocks, out-parameters
	deviceNameBufferLength = 256
)

// cmem is memory outside the Go heap (an anonymous mmap) for everything the
// driver reads or writes through a pointer: out-parameters, the PTX image,
// JIT logs, kernel parameter blocks. The garbage collector neither moves nor
// frees it, and it holds no Go pointers, so handing its addresses to C is
// always safe. It is a bump allocator; nothing is freed before exit.
type cmem struct {
	buf []byte
	off uintptr
}

func newCMem(size int) (*cmem, error) {
	b, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("mmap %d bytes: %w", size, err)
	}
	return &cmem{buf: b}, nil
}

// alloc returns size zeroed bytes aligned to align (a power of two).
func (m *cmem) alloc(size, align uintptr) unsafe.Pointer {
	off := (m.off + align - 1) &^ (align - 1)
	if off+size > uintptr(len(m.buf)) {
		panic(fmt.Sprintf("cmem exhausted: %d + %d > %d bytes", off, size, len(m.buf)))
	}
	m.off = off + size
	return unsafe.Pointer(&m.buf[off])
}

func (m *cmem) int32() *int32     { return (*int32)(m.alloc(4, 4)) }
func (m *cmem) uint32() *uint32   { return (*uint32)(m.alloc(4, 4)) }
func (m *cmem) uint64() *uint64   { return (*uint64)(m.alloc(8, 8)) }
func (m *cmem) uintptr() *uintptr { return (*uintptr)(m.alloc(8, 8)) }

// bytes returns n zeroed bytes.
func (m *cmem) bytes(n int) []byte {
	return unsafe.Slice((*byte)(m.alloc(uintptr(n), 8)), n)
}

// cstring copies s with a terminating NUL.
func (m *cmem) cstring(s string) *byte {
	b := m.bytes(len(s) + 1)
	copy(b, s)
	return &b[0]
}

// pointers returns an array of n pointer-sized slots (void*[n]).
func (m *cmem) pointers(n int) []uintptr {
	return unsafe.Slice((*uintptr)(m.alloc(uintptr(n)*8, 8)), n)
}

// api is the part of the CUDA driver API the workload uses, bound with
// purego. Every function is a plain C function returning CUresult (int32).
// Names with a _v2 suffix in cuda.h's #defines are bound to the _v2 symbols
// (the ones cuda.h's cuMemAlloc etc. resolve to). Pointer arguments always
// point into cmem.
type api struct {
	cuInit                   func(flags uint32) int32
	cuDriverGetVersion       func(v *int32) int32
	cuDeviceGetCount         func(n *int32) int32
	cuDeviceGet              func(dev *int32, ordinal int32) int32
	cuDeviceGetName          func(name *byte, length int32, dev int32) int32
	cuDeviceGetAttribute     func(v *int32, attr int32, dev int32) int32
	cuDeviceTotalMem         func(bytes *uint64, dev int32) int32
	cuDevicePrimaryCtxRetain func(ctx *uintptr, dev int32) int32
	cuCtxSetCurrent          func(ctx uintptr) int32
	cuCtxSynchronize         func() int32
	cuModuleLoadDataEx       func(mod *uintptr, image *byte, numOptions uint32, options *int32, values *uintptr) int32
	cuModuleGetFunction      func(fn *uintptr, mod uintptr, name *byte) int32
	cuMemAlloc               func(dptr *uint64, size uint64) int32
	cuMemsetD32              func(dptr uint64, value uint32, n uint64) int32
	cuMemcpyDtoH             func(dst unsafe.Pointer, src uint64, size uint64) int32
	// For the bandwidth mode: pinned host memory is C memory, held as uintptr.
	cuMemcpyHtoD     func(dst uint64, src uintptr, size uint64) int32
	cuMemcpyDtoHRaw  func(dst uintptr, src uint64, size uint64) int32
	cuMemHostAlloc   func(p *uintptr, size uint64, flags uint32) int32
	cuLaunchKernel   func(f uintptr, gx, gy, gz, bx, by, bz, sharedBytes uint32, stream uintptr, params *uintptr, extra *uintptr) int32
	cuGetErrorName   func(code int32, s **byte) int32
	cuGetErrorString func(code int32, s **byte) int32
}

// loadAPI dlopens libcuda.so.1 and binds the functions.
func loadAPI() (*api, error) {
	h, err := purego.Dlopen("libcuda.so.1", purego.RTLD_NOW|purego.RTLD_GLOBAL)
	if err != nil {
		return nil, fmt.Errorf("no NVIDIA driver found: libcuda.so.1 could not be loaded: %v; is the driver's library directory mounted in the container?", err)
	}
	a := &api{}
	for _, f := range []struct {
		fn   any
		name string
	}{
		{&a.cuInit, "cuInit"},
		{&a.cuDriverGetVersion, "cuDriverGetVersion"},
		{&a.cuDeviceGetCount, "cuDeviceGetCount"},
		{&a.cuDeviceGet, "cuDeviceGet"},
		{&a.cuDeviceGetName, "cuDeviceGetName"},
		{&a.cuDeviceGetAttribute, "cuDeviceGetAttribute"},
		{&a.cuDeviceTotalMem, "cuDeviceTotalMem_v2"},
		{&a.cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain"},
		{&a.cuCtxSetCurrent, "cuCtxSetCurrent"},
		{&a.cuCtxSynchronize, "cuCtxSynchronize"},
		{&a.cuModuleLoadDataEx, "cuModuleLoadDataEx"},
		{&a.cuModuleGetFunction, "cuModuleGetFunction"},
		{&a.cuMemAlloc, "cuMemAlloc_v2"},
		{&a.cuMemsetD32, "cuMemsetD32_v2"},
		{&a.cuMemcpyDtoH, "cuMemcpyDtoH_v2"},
		{&a.cuMemcpyHtoD, "cuMemcpyHtoD_v2"},
		{&a.cuMemcpyDtoHRaw, "cuMemcpyDtoH_v2"},
		{&a.cuMemHostAlloc, "cuMemHostAlloc"},
		{&a.cuLaunchKernel, "cuLaunchKernel"},
		{&a.cuGetErrorName, "cuGetErrorName"},
		{&a.cuGetErrorString, "cuGetErrorString"},
	} {
		sym, err := purego.Dlsym(h, f.name)
		if err != nil {
			return nil, fmt.Errorf("libcuda.so.1 has no %s: %v", f.name, err)
		}
		purego.RegisterFunc(f.fn, sym)
	}
	return a, nil
}

// check turns a CUresult into an error naming op.
func (a *api) check(op string, r int32) error {
	if r == 0 {
		return nil
	}
	e := &cudaError{op: op, code: r, name: fmt.Sprintf("CUDA_ERROR_%d", r), desc: "unknown error"}
	var p *byte
	if a.cuGetErrorName(r, &p) == 0 && p != nil {
		e.name = goString(p)
	}
	p = nil
	if a.cuGetErrorString(r, &p) == 0 && p != nil {
		e.desc = goString(p)
	}
	return e
}

// goString copies the NUL-terminated C string at p (at most 4 KiB).
func goString(p *byte) string {
	n := 0
	for n < 4096 && *(*byte)(unsafe.Add(unsafe.Pointer(p), n)) != 0 {
		n++
	}
	return string(unsafe.Slice(p, n))
}

// module is the loaded PTX module and its kernels.
type module struct {
	fill, verify, increment uintptr
}

// loadModule JIT-compiles ptx (cuModuleLoadDataEx) and looks up the kernels.
// A JIT failure returns the compiler's log.
func (a *api) loadModule(m *cmem, ptx string) (module, error) {
	errLog := m.bytes(jitLogBufferSizeBytes)
	infoLog := m.bytes(jitLogBufferSizeBytes)
	opts := unsafe.Slice((*int32)(m.alloc(4*4, 4)), 4)
	vals := m.pointers(4)
	opts[0], vals[0] = jitErrorLogBuffer, uintptr(unsafe.Pointer(&errLog[0]))
	opts[1], vals[1] = jitErrorLogBufferSize, uintptr(len(errLog)) // the value is the size itself, cast to void*
	opts[2], vals[2] = jitInfoLogBuffer, uintptr(unsafe.Pointer(&infoLog[0]))
	opts[3], vals[3] = jitInfoLogBufferSize, uintptr(len(infoLog))
	mod := m.uintptr()
	r := a.cuModuleLoadDataEx(mod, m.cstring(ptx), uint32(len(opts)), &opts[0], &vals[0])
	if err := a.check("cuModuleLoadDataEx (JIT of the PTX module)", r); err != nil {
		if log := cString(errLog); log != "" {
			return module{}, fmt.Errorf("%w; JIT log:\n%s", err, log)
		}
		return module{}, err
	}
	var k module
	for _, f := range []struct {
		dst  *uintptr
		name string
	}{{&k.fill, kernelFill}, {&k.verify, kernelVerify}, {&k.increment, kernelIncrement}} {
		fn := m.uintptr()
		if err := a.check("cuModuleGetFunction("+f.name+")", a.cuModuleGetFunction(fn, *mod, m.cstring(f.name))); err != nil {
			return module{}, err
		}
		*f.dst = *fn
	}
	return k, nil
}

// kernelArgs is a kernelParams block for cuLaunchKernel: an array of
// pointers, each to one argument's value, all in cmem. It is built once per
// launch shape and reused; set changes the values in place.
type kernelArgs struct {
	ptrs []uintptr
	vals []unsafe.Pointer
}

// newKernelArgs lays out arguments of the given sizes (4 or 8 bytes).
func newKernelArgs(m *cmem, sizes ...uintptr) *kernelArgs {
	k := &kernelArgs{ptrs: m.pointers(len(sizes))}
	for i, s := range sizes {
		v := m.alloc(s, 8)
		k.vals = append(k.vals, v)
		k.ptrs[i] = uintptr(v)
	}
	return k
}

func (k *kernelArgs) setU64(i int, v uint64) { *(*uint64)(k.vals[i]) = v }
func (k *kernelArgs) setU32(i int, v uint32) { *(*uint32)(k.vals[i]) = v }

// launch runs kernel f on a 1-D grid with the arguments of k.
func (a *api) launch(name string, f uintptr, grid, block uint32, k *kernelArgs) error {
	r := a.cuLaunchKernel(f, grid, 1, 1, block, 1, 1, 0, 0, &k.ptrs[0], nil)
	return a.check("cuLaunchKernel("+name+")", r)
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

var errMismatch = errors.New("device memory does not hold what was written")

// unsafePointer passes a cmem out-parameter as void*.
func unsafePointer(p *uint32) unsafe.Pointer { return unsafe.Pointer(p) }
