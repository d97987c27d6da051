package main

import (
	"fmt"
	"strings"
)

// The kernels are hand-written PTX, compiled by the driver's JIT when the
// module is loaded (no nvcc needed). PTX ISA 7.0 (CUDA 11.0) is accepted by
// every driver that has the checkpoint API (r570+: PTX ISA 8.7 and later).
const ptxVersion = "7.0"

// defaultTarget is the PTX target for devices of compute capability 7.5 and
// up: the lowest target CUDA 13 still compiles for, and JIT-compiled for the
// actual device (sm_90 on an H200). Older devices get their own target, see
// ptxTarget.
const defaultTarget = "sm_75"

// Kernel names in the module.
const (
	kernelFill      = "fill"
	kernelVerify    = "verify"
	kernelIncrement = "increment"
)

// Constants of the pattern hash (see pattern).
const (
	hashHiMul = 0x9E3779B1 // golden-ratio multiplier folding in the high index word
	hashSalt  = 0x6A09E667 // keeps pattern(0, 0) from being 0
	hashMul1  = 0x7FEB352D // lowbias32 multipliers (Chris Wellons)
	hashMul2  = 0x846CA68B
)

// pattern is the value fill writes at word index i of a buffer filled with
// seed, and verify expects there. The PTX computes exactly this.
func pattern(i uint64, seed uint32) uint32 {
	x := uint32(i) ^ uint32(i>>32)*hashHiMul ^ seed ^ hashSalt
	x ^= x >> 16
	x *= hashMul1
	x ^= x >> 15
	x *= hashMul2
	x ^= x >> 16
	return x
}

// chunkSeed derives the seed of the c-th allocation chunk, so that chunks
// (whose word indexes all start at 0) hold different data.
func chunkSeed(seed uint32, c int) uint32 {
	return seed + uint32(c)*0x9E3779B9
}

// ptxTarget returns the PTX target for a device of compute capability
// major.minor.
func ptxTarget(major, minor int) string {
	if major*10+minor >= 75 {
		return defaultTarget
	}
	return fmt.Sprintf("sm_%d%d", major, minor)
}

// hashPTX emits the PTX of pattern: out = pattern(idx, seed).
// idx is a .u64 register, seed a .u32 register; t1 and t2 are .u32 and t64
// a .u64 scratch register.
func hashPTX(b *strings.Builder, idx, seed, out, t1, t2, t64 string) {
	ins := func(format string, args ...any) { fmt.Fprintf(b, "\t"+format+"\n", args...) }
	ins("// %s = pattern(%s, %s)", out, idx, seed)
	ins("cvt.u32.u64 \t%s, %s;", out, idx) // low word of the index
	ins("shr.u64 \t%s, %s, 32;", t64, idx)
	ins("cvt.u32.u64 \t%s, %s;", t1, t64) // high word of the index
	ins("mul.lo.u32 \t%s, %s, 0x%08X;", t1, t1, hashHiMul)
	ins("xor.b32 \t%s, %s, %s;", out, out, t1)
	ins("xor.b32 \t%s, %s, %s;", out, out, seed)
	ins("xor.b32 \t%s, %s, 0x%08X;", out, out, hashSalt)
	ins("shr.u32 \t%s, %s, 16;", t2, out)
	ins("xor.b32 \t%s, %s, %s;", out, out, t2)
	ins("mul.lo.u32 \t%s, %s, 0x%08X;", out, out, hashMul1)
	ins("shr.u32 \t%s, %s, 15;", t2, out)
	ins("xor.b32 \t%s, %s, %s;", out, out, t2)
	ins("mul.lo.u32 \t%s, %s, 0x%08X;", out, out, hashMul2)
	ins("shr.u32 \t%s, %s, 16;", t2, out)
	ins("xor.b32 \t%s, %s, %s;", out, out, t2)
}

// gridStridePrologue emits the global thread index (%rd4) and the grid
// stride (%rd6), both 64-bit, and branches to done when the first index is
// already past n (%rd2):
//
//	i = ctaid.x * ntid.x + tid.x;  stride = nctaid.x * ntid.x
func gridStridePrologue(b *strings.Builder, done string) {
	b.WriteString("\tmov.u32 \t%r2, %ctaid.x;\n")
	b.WriteString("\tmov.u32 \t%r3, %ntid.x;\n")
	b.WriteString("\tmov.u32 \t%r4, %tid.x;\n")
	b.WriteString("\tmov.u32 \t%r5, %nctaid.x;\n")
	b.WriteString("\tmul.wide.u32 \t%rd4, %r2, %r3;\n")
	b.WriteString("\tcvt.u64.u32 \t%rd5, %r4;\n")
	b.WriteString("\tadd.s64 \t%rd4, %rd4, %rd5;\n")
	b.WriteString("\tmul.wide.u32 \t%rd6, %r5, %r3;\n")
	b.WriteString("\tsetp.ge.u64 \t%p1, %rd4, %rd2;\n")
	fmt.Fprintf(b, "\t@%%p1 bra \t%s;\n", done)
}

// kernelPTX returns the PTX module with the three kernels for target:
//
//	fill(u32 *ptr, u64 n, u32 seed):              ptr[i] = pattern(i, seed) for i < n
//	verify(u32 *ptr, u64 n, u32 seed, u32 *bad):  atomically counts i < n with ptr[i] != pattern(i, seed) into *bad
//	increment(u32 *counter):                      atomically adds 1 to *counter
//
// fill and verify use a grid-stride loop with 64-bit indexing, so any grid
// covers any n.
func kernelPTX(target string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `//
// GPU test workload kernels of containerd-shim-runsc-cuda (hand-written PTX).
//
.version %s
.target %s
.address_size 64

`, ptxVersion, target)

	// fill
	b.WriteString(`// fill(ptr, n, seed): ptr[i] = pattern(i, seed) for every i < n.
.visible .entry fill(
	.param .u64 fill_param_ptr,
	.param .u64 fill_param_n,
	.param .u32 fill_param_seed
)
{
	.reg .pred 	%p<2>;
	.reg .b32 	%r<9>;
	.reg .b64 	%rd<10>;

	ld.param.u64 	%rd1, [fill_param_ptr];
	ld.param.u64 	%rd2, [fill_param_n];
	ld.param.u32 	%r1, [fill_param_seed];
	cvta.to.global.u64 	%rd3, %rd1;
`)
	gridStridePrologue(&b, "FILL_DONE")
	b.WriteString("FILL_LOOP:\n")
	hashPTX(&b, "%rd4", "%r1", "%r6", "%r7", "%r8", "%rd7")
	b.WriteString(`	shl.b64 	%rd8, %rd4, 2;
	add.s64 	%rd9, %rd3, %rd8;
	st.global.u32 	[%rd9], %r6;
	add.s64 	%rd4, %rd4, %rd6;
	setp.lt.u64 	%p1, %rd4, %rd2;
	@%p1 bra 	FILL_LOOP;
FILL_DONE:
	ret;
}

`)

	// verify
	b.WriteString(`// verify(ptr, n, seed, bad): *bad += number of i < n with ptr[i] != pattern(i, seed).
.visible .entry verify(
	.param .u64 verify_param_ptr,
	.param .u64 verify_param_n,
	.param .u32 verify_param_seed,
	.param .u64 verify_param_bad
)
{
	.reg .pred 	%p<3>;
	.reg .b32 	%r<11>;
	.reg .b64 	%rd<12>;

	ld.param.u64 	%rd1, [verify_param_ptr];
	ld.param.u64 	%rd2, [verify_param_n];
	ld.param.u32 	%r1, [verify_param_seed];
	ld.param.u64 	%rd10, [verify_param_bad];
	cvta.to.global.u64 	%rd3, %rd1;
	cvta.to.global.u64 	%rd11, %rd10;
`)
	gridStridePrologue(&b, "VERIFY_DONE")
	b.WriteString("VERIFY_LOOP:\n")
	hashPTX(&b, "%rd4", "%r1", "%r6", "%r7", "%r8", "%rd7")
	b.WriteString(`	shl.b64 	%rd8, %rd4, 2;
	add.s64 	%rd9, %rd3, %rd8;
	ld.global.u32 	%r9, [%rd9];
	setp.ne.b32 	%p2, %r9, %r6;
	@%p2 atom.global.add.u32 	%r10, [%rd11], 1;
	add.s64 	%rd4, %rd4, %rd6;
	setp.lt.u64 	%p1, %rd4, %rd2;
	@%p1 bra 	VERIFY_LOOP;
VERIFY_DONE:
	ret;
}

`)

	// increment
	b.WriteString(`// increment(counter): *counter += 1 (atomically; launched with one thread).
.visible .entry increment(
	.param .u64 increment_param_counter
)
{
	.reg .b32 	%r<2>;
	.reg .b64 	%rd<3>;

	ld.param.u64 	%rd1, [increment_param_counter];
	cvta.to.global.u64 	%rd2, %rd1;
	atom.global.add.u32 	%r1, [%rd2], 1;
	ret;
}
`)
	return b.String()
}
