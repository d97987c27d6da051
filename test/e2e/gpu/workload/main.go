// Command workload is the GPU test workload of the end-to-end tests: a CUDA
// program with known device-memory contents that keeps using the GPU, so a
// test can checkpoint it, restore it and prove that its device memory and its
// progress survived.
//
// It loads libcuda.so.1 (purego, no cgo, no nvcc: the kernels are PTX that
// the driver compiles), fills --gib GiB of device memory with a deterministic
// pattern, prints "ready", and then every --interval:
//
//  1. increments a counter in device memory (kernel "increment"),
//  2. reads it back,
//  3. re-checks all the filled memory on the GPU (kernel "verify"), and
//  4. prints "tick=<host tick> counter=<device counter> mismatches=<n> gib=<N>".
//
// Host tick and device counter advance together, so counter == tick and
// mismatches == 0 on every line is the proof that host and device state were
// restored consistently. A CUDA error ends the program with exit status 2, a
// mismatch (at exit, or at once with --exit-on-mismatch) with 1.
//
// --selftest needs no GPU: it prints the PTX module and checks the host-side
// pattern.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"time"
)

// Exit codes.
const (
	exitOK       = 0
	exitMismatch = 1
	exitCUDA     = 2
	exitUsage    = 64
)

const (
	gib       = 1 << 30
	chunkSize = 1 * gib // largest single cuMemAlloc
)

type config struct {
	gib            float64
	interval       time.Duration
	ticks          int
	device         int
	seed           uint32
	block          int
	exitOnMismatch bool
	selftest       bool
	hostMemory     bool
	bandwidth      float64
}

// totalBytes is the size of the pattern memory: --gib GiB, rounded down to
// whole 32-bit words.
func (c config) totalBytes() uint64 {
	return uint64(c.gib*gib) &^ 3
}

// gibLabel prints --gib as given ("8", "0.5").
func (c config) gibLabel() string {
	return strconv.FormatFloat(c.gib, 'f', -1, 64)
}

func parseArgs(args []string, stderr io.Writer) (config, error) {
	var c config
	var seed uint64
	fs := flag.NewFlagSet("workload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Float64Var(&c.gib, "gib", 1, "GiB of device memory to fill and verify (fractions allowed, 0 for none)")
	fs.DurationVar(&c.interval, "interval", 500*time.Millisecond, "time between ticks")
	fs.IntVar(&c.ticks, "ticks", 0, "exit after this many ticks (0: run until killed)")
	fs.IntVar(&c.device, "device", 0, "CUDA device ordinal")
	fs.Uint64Var(&seed, "seed", 1, "seed of the memory pattern (32-bit)")
	fs.IntVar(&c.block, "block", 256, "threads per block of the fill and verify kernels")
	fs.BoolVar(&c.exitOnMismatch, "exit-on-mismatch", false, "exit with status 1 at the first tick that finds a mismatch")
	fs.BoolVar(&c.selftest, "selftest", false, "print the PTX module and check the host-side pattern; needs no GPU")
	fs.Float64Var(&c.bandwidth, "bandwidth", 0, "measure host<->device copy bandwidth over this many GiB (pinned memory) and exit")
	fs.BoolVar(&c.hostMemory, "host-memory", false, "no GPU: keep the pattern and the counter in host memory (dry runs of the GPU scenario)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	switch {
	case fs.NArg() > 0:
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	case c.gib < 0 || c.gib > 1<<20:
		return c, fmt.Errorf("--gib %v out of range", c.gib)
	case c.interval <= 0:
		return c, fmt.Errorf("--interval must be positive, got %v", c.interval)
	case c.ticks < 0:
		return c, fmt.Errorf("--ticks must not be negative, got %d", c.ticks)
	case c.device < 0:
		return c, fmt.Errorf("--device must not be negative, got %d", c.device)
	case seed > 1<<32-1:
		return c, fmt.Errorf("--seed %d does not fit in 32 bits", seed)
	case c.block < 32 || c.block > 1024 || c.block%32 != 0:
		return c, fmt.Errorf("--block must be a multiple of 32 in [32, 1024], got %d", c.block)
	}
	c.seed = uint32(seed)
	return c, nil
}

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	c, err := parseArgs(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		fmt.Fprintf(stderr, "workload: %v\n", err)
		return exitUsage
	}
	if c.selftest {
		return selftest(stdout, stderr)
	}
	// A CUDA context is current per OS thread: keep every CUDA call on this
	// one.
	runtime.LockOSThread()
	if c.bandwidth > 0 {
		err = runBandwidth(c, stdout)
	} else if c.hostMemory {
		err = runHost(c, stdout, stderr)
	} else {
		err = runWorkload(c, stdout, stderr)
	}
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errMismatch):
		fmt.Fprintf(stderr, "workload: %v\n", err)
		return exitMismatch
	default:
		fmt.Fprintf(stderr, "workload: %v\n", err)
		return exitCUDA
	}
}

// selftest prints the PTX (so it can be reviewed or fed to ptxas) and checks
// the host reference of the pattern against known values.
func selftest(stdout, stderr io.Writer) int {
	fmt.Fprint(stdout, kernelPTX(defaultTarget))
	for _, k := range knownPatterns {
		if got := pattern(k.index, k.seed); got != k.want {
			fmt.Fprintf(stderr, "workload: selftest: pattern(%d, %d) = %#08x, want %#08x\n", k.index, k.seed, got, k.want)
			return exitMismatch
		}
	}
	fmt.Fprintln(stderr, "workload: selftest ok")
	return exitOK
}

// knownPatterns pin the pattern function (and so the PTX, which the GPU run
// checks against it).
var knownPatterns = []struct {
	index uint64
	seed  uint32
	want  uint32
}{
	{0, 0, 0x7ba971df},
	{1, 0, 0x76c4335c},
	{0, 1, 0x76c4335c},
	{12345, 42, 0xfa0f182a},
	{1 << 32, 7, 0xa0961dd3},
	{1<<38 - 1, 0xffffffff, 0x490ea045},
}

// chunk is one device allocation of pattern memory.
type chunk struct {
	ptr   uint64 // CUdeviceptr
	words uint64
	seed  uint32
}

// runWorkload runs the workload until --ticks ticks or until killed.
func runWorkload(c config, stdout, stderr io.Writer) error {
	a, err := loadAPI()
	if err != nil {
		return err
	}
	m, err := newCMem(cmemSize)
	if err != nil {
		return err
	}
	if err := a.check("cuInit", a.cuInit(0)); err != nil {
		return err
	}
	ver, count, dev := m.int32(), m.int32(), m.int32()
	if err := a.check("cuDriverGetVersion", a.cuDriverGetVersion(ver)); err != nil {
		return err
	}
	if err := a.check("cuDeviceGetCount", a.cuDeviceGetCount(count)); err != nil {
		return err
	}
	if c.device >= int(*count) {
		return fmt.Errorf("--device %d: only %d CUDA device(s) visible", c.device, *count)
	}
	if err := a.check("cuDeviceGet", a.cuDeviceGet(dev, int32(c.device))); err != nil {
		return err
	}
	name := m.bytes(deviceNameBufferLength)
	if err := a.check("cuDeviceGetName", a.cuDeviceGetName(&name[0], int32(len(name)), *dev)); err != nil {
		return err
	}
	major, minor, sms := m.int32(), m.int32(), m.int32()
	for _, q := range []struct {
		v    *int32
		attr int32
	}{{major, attrComputeCapMajor}, {minor, attrComputeCapMinor}, {sms, attrMultiprocessorCount}} {
		if err := a.check("cuDeviceGetAttribute", a.cuDeviceGetAttribute(q.v, q.attr, *dev)); err != nil {
			return err
		}
	}
	total := m.uint64()
	if err := a.check("cuDeviceTotalMem_v2", a.cuDeviceTotalMem(total, *dev)); err != nil {
		return err
	}
	target := ptxTarget(int(*major), int(*minor))
	fmt.Fprintf(stderr, "workload: device %d: %s, compute capability %d.%d, %d SMs, %.1f GiB; CUDA driver %d.%d; PTX target %s\n",
		c.device, cString(name), *major, *minor, *sms, float64(*total)/gib, *ver/1000, (*ver%1000)/10, target)

	ctx := m.uintptr()
	if err := a.check("cuDevicePrimaryCtxRetain", a.cuDevicePrimaryCtxRetain(ctx, *dev)); err != nil {
		return err
	}
	if err := a.check("cuCtxSetCurrent", a.cuCtxSetCurrent(*ctx)); err != nil {
		return err
	}
	k, err := a.loadModule(m, kernelPTX(target))
	if err != nil {
		return err
	}

	// Device memory: the pattern chunks, the tick counter and the mismatch
	// counter.
	chunks, err := allocChunks(a, m, c)
	if err != nil {
		return err
	}
	counter, bad := m.uint64(), m.uint64()
	if err := a.check("cuMemAlloc_v2(counter)", a.cuMemAlloc(counter, 4)); err != nil {
		return err
	}
	if err := a.check("cuMemAlloc_v2(mismatch counter)", a.cuMemAlloc(bad, 4)); err != nil {
		return err
	}
	if err := a.check("cuMemsetD32_v2(counter)", a.cuMemsetD32(*counter, 0, 1)); err != nil {
		return err
	}

	// Argument blocks, reused for every launch.
	fillArgs := newKernelArgs(m, 8, 8, 4)
	verifyArgs := newKernelArgs(m, 8, 8, 4, 8)
	verifyArgs.setU64(3, *bad)
	incArgs := newKernelArgs(m, 8)
	incArgs.setU64(0, *counter)
	grid := func(words uint64) uint32 {
		g := (words + uint64(c.block) - 1) / uint64(c.block)
		return uint32(min(max(g, 1), 65535))
	}

	start := time.Now()
	for i, ch := range chunks {
		fillArgs.setU64(0, ch.ptr)
		fillArgs.setU64(1, ch.words)
		fillArgs.setU32(2, ch.seed)
		if err := a.launch(kernelFill, k.fill, grid(ch.words), uint32(c.block), fillArgs); err != nil {
			return fmt.Errorf("chunk %d: %w", i, err)
		}
	}
	if err := a.check("cuCtxSynchronize (after fill)", a.cuCtxSynchronize()); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "workload: filled %s GiB in %d chunk(s) in %v\n", c.gibLabel(), len(chunks), time.Since(start).Round(time.Millisecond))
	fmt.Fprintln(stdout, "ready")

	hostCounter, hostBad := m.uint32(), m.uint32()
	var totalBad uint64
	ticker := time.NewTicker(c.interval)
	defer ticker.Stop()
	for tick := 1; ; tick++ {
		if err := a.launch(kernelIncrement, k.increment, 1, 1, incArgs); err != nil {
			return err
		}
		if err := a.check("cuMemcpyDtoH_v2(counter)", a.cuMemcpyDtoH(unsafePointer(hostCounter), *counter, 4)); err != nil {
			return err
		}
		if err := a.check("cuMemsetD32_v2(mismatch counter)", a.cuMemsetD32(*bad, 0, 1)); err != nil {
			return err
		}
		for i, ch := range chunks {
			verifyArgs.setU64(0, ch.ptr)
			verifyArgs.setU64(1, ch.words)
			verifyArgs.setU32(2, ch.seed)
			if err := a.launch(kernelVerify, k.verify, grid(ch.words), uint32(c.block), verifyArgs); err != nil {
				return fmt.Errorf("chunk %d: %w", i, err)
			}
		}
		if err := a.check("cuMemcpyDtoH_v2(mismatch counter)", a.cuMemcpyDtoH(unsafePointer(hostBad), *bad, 4)); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "tick=%d counter=%d mismatches=%d gib=%s\n", tick, *hostCounter, *hostBad, c.gibLabel())
		totalBad += uint64(*hostBad)
		if *hostBad > 0 && c.exitOnMismatch {
			return fmt.Errorf("%w: %d mismatching words at tick %d", errMismatch, *hostBad, tick)
		}
		if c.ticks > 0 && tick >= c.ticks {
			break
		}
		<-ticker.C
	}
	if totalBad > 0 {
		return fmt.Errorf("%w: %d mismatching words over %d ticks", errMismatch, totalBad, c.ticks)
	}
	return nil
}

// allocChunks allocates the pattern memory in chunks of at most chunkSize.
func allocChunks(a *api, m *cmem, c config) ([]chunk, error) {
	total := c.totalBytes()
	var chunks []chunk
	for off := uint64(0); off < total; off += chunkSize {
		size := min(uint64(chunkSize), total-off)
		p := m.uint64()
		if err := a.check("cuMemAlloc_v2", a.cuMemAlloc(p, size)); err != nil {
			return nil, fmt.Errorf("allocating chunk %d (%d bytes; %s GiB in all): %w", len(chunks), size, c.gibLabel(), err)
		}
		chunks = append(chunks, chunk{ptr: *p, words: size / 4, seed: chunkSeed(c.seed, len(chunks))})
	}
	return chunks, nil
}

// runHost is runWorkload without a GPU: the same pattern, counter and output
// from host memory, so the GPU scenario's plumbing can be tried anywhere.
func runHost(c config, stdout, stderr io.Writer) error {
	words := c.totalBytes() / 4
	mem := make([]uint32, words)
	for i := range mem {
		mem[i] = pattern(uint64(i), c.seed)
	}
	fmt.Fprintf(stderr, "workload: host memory, %s GiB\n", c.gibLabel())
	fmt.Fprintln(stdout, "ready")
	var counter uint32
	var totalBad uint64
	ticker := time.NewTicker(c.interval)
	defer ticker.Stop()
	for tick := 1; ; tick++ {
		counter++
		var bad uint32
		for i, v := range mem {
			if v != pattern(uint64(i), c.seed) {
				bad++
			}
		}
		fmt.Fprintf(stdout, "tick=%d counter=%d mismatches=%d gib=%s\n", tick, counter, bad, c.gibLabel())
		totalBad += uint64(bad)
		if bad > 0 && c.exitOnMismatch {
			return fmt.Errorf("%w: %d mismatching words at tick %d", errMismatch, bad, tick)
		}
		if c.ticks > 0 && tick >= c.ticks {
			break
		}
		<-ticker.C
	}
	if totalBad > 0 {
		return fmt.Errorf("%w: %d mismatching words over %d ticks", errMismatch, totalBad, c.ticks)
	}
	return nil
}

// runBandwidth measures the PCIe copy bandwidth (pinned host memory, 1 GiB
// copies) in both directions: the physical reference for checkpoint and
// restore times.
func runBandwidth(c config, stdout io.Writer) error {
	a, err := loadAPI()
	if err != nil {
		return err
	}
	m, err := newCMem(cmemSize)
	if err != nil {
		return err
	}
	if err := a.check("cuInit", a.cuInit(0)); err != nil {
		return err
	}
	dev, ctx := m.int32(), m.uintptr()
	if err := a.check("cuDeviceGet", a.cuDeviceGet(dev, int32(c.device))); err != nil {
		return err
	}
	if err := a.check("cuDevicePrimaryCtxRetain", a.cuDevicePrimaryCtxRetain(ctx, *dev)); err != nil {
		return err
	}
	if err := a.check("cuCtxSetCurrent", a.cuCtxSetCurrent(*ctx)); err != nil {
		return err
	}
	const size = gib
	d := m.uint64()
	if err := a.check("cuMemAlloc_v2", a.cuMemAlloc(d, size)); err != nil {
		return err
	}
	hp := m.uintptr()
	if err := a.check("cuMemHostAlloc", a.cuMemHostAlloc(hp, size, 0)); err != nil {
		return err
	}
	host := *hp
	n := max(1, int(c.bandwidth))
	measure := func(copy func() int32, op string) (float64, error) {
		if err := a.check(op, copy()); err != nil { // warm up
			return 0, err
		}
		start := time.Now()
		for range n {
			if err := a.check(op, copy()); err != nil {
				return 0, err
			}
		}
		return float64(n) * size / time.Since(start).Seconds() / 1e9, nil
	}
	h2d, err := measure(func() int32 { return a.cuMemcpyHtoD(*d, host, size) }, "cuMemcpyHtoD_v2")
	if err != nil {
		return err
	}
	d2h, err := measure(func() int32 { return a.cuMemcpyDtoHRaw(host, *d, size) }, "cuMemcpyDtoH_v2")
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "bandwidth htod_gbs=%.1f dtoh_gbs=%.1f gib=%d\n", h2d, d2h, n)
	return nil
}
