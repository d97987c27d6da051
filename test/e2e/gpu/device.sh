#!/usr/bin/env bash
# One GPU-host session in one go, from the bundle `make gpu-bundle` builds
# (for hosts without Go or network): unpack it, run the GPU scenario
# (run.sh) and then the GPU benchmark (bench/bench.py --mode gpu) with the
# time that is left, and leave everything under $OUT.
#
#   BUNDLE=.carry/gpu.tar.xz OUT=/var/lib/gpu-out LIMIT_S=540 test/e2e/gpu/device.sh
#
# Environment:
#   BUNDLE    the bundle (.tar.xz) or an unpacked bundle directory
#   OUT       results (scenario/, bench/, gpu-latest.{json,md,svg}, nvidia-smi.txt)
#   LIMIT_S   seconds the whole script may take (default 3600); the benchmark
#             gets what the scenario leaves, less a margin for its cleanup
#   GIBS, CLONE_GIBS  passed to run.sh (GIBS="" runs only its pre-check,
#             injected-failure and no-CUDA phases)
#   BENCH_SIZES  the benchmark's sizes (default: bench.py's, 1G 8G 24G);
#             empty: no benchmark
#   NO_SCENARIO=1  skip run.sh
#   MATRIX=1  first run the workload-class matrix (matrix.sh; its inputs
#             CLASSES, GIB, TORCH_PY, ... pass through) into $OUT/matrix,
#             capped at what LIMIT_S leaves (T_ALL, at most 900 s)
#   POD=1     also run the GPU pod scenario (pod.sh: CRI checkpoint, restore
#             by annotation into a new pod on a CNI bridge) into $OUT/pod,
#             after the matrix
#   DRY=1     no GPU: both run their plumbing on host memory (see run.sh)
set -uo pipefail
cd "$(dirname "$0")/../../.."
START=$(date +%s)
LIMIT_S=${LIMIT_S:-3600}
OUT=${OUT:?set OUT}
BUNDLE=${BUNDLE:?set BUNDLE to the .tar.xz made by make gpu-bundle, or its directory}
mkdir -p "$OUT"
log() { printf '%s device.sh: %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$OUT/device.log" >&2; }

if [ -d "$BUNDLE" ]; then
	BIN=$(cd "$BUNDLE" && pwd)
else
	mkdir -p /var/lib/rcuda-bundle
	tar -C /var/lib/rcuda-bundle -xJf "$BUNDLE" || exit 1
	BIN=/var/lib/rcuda-bundle/$(basename "$BUNDLE" .tar.xz)
fi
log "bundle $BIN unpacked after $(($(date +%s) - START)) s"
{ nvidia-smi; nvidia-smi --query-gpu=name,uuid,driver_version,memory.total --format=csv; } >"$OUT/nvidia-smi.txt" 2>&1
"$BIN/runsc" --version >"$OUT/versions.txt" 2>&1
"$BIN/containerd" --version >>"$OUT/versions.txt" 2>&1

rc=0
if [ "${MATRIX:-0}" = 1 ]; then
	left=$((LIMIT_S - ($(date +%s) - START) - 60))
	[ "$left" -gt 900 ] && left=900
	log "matrix: classes '${CLASSES:-1 2 3 4 5 6 7}', ${T_ALL:-$left} s limit"
	T_ALL=${T_ALL:-$left} BIN=$BIN OUT=$OUT/matrix test/e2e/gpu/matrix.sh || rc=1
	log "matrix done (rc $rc) after $(($(date +%s) - START)) s"
fi

if [ "${POD:-0}" = 1 ]; then
	log "pod scenario"
	timeout -s KILL 300 env BIN=$BIN OUT=$OUT/pod test/e2e/gpu/pod.sh || rc=1
	log "pod scenario done (rc $rc) after $(($(date +%s) - START)) s"
fi

if [ "${NO_SCENARIO:-0}" != 1 ]; then
	log "scenario: GIBS='${GIBS-1 8}'"
	BIN=$BIN OUT=$OUT/scenario test/e2e/gpu/run.sh || rc=1
	log "scenario done (rc $rc) after $(($(date +%s) - START)) s"
fi

if [ "${BENCH_SIZES-default}" != "" ]; then
	left=$((LIMIT_S - ($(date +%s) - START) - 30))
	sizes=()
	[ "${BENCH_SIZES-default}" != default ] && sizes=(--sizes "$BENCH_SIZES")
	[ "${DRY:-0}" = 1 ] && sizes+=(--dry)
	log "benchmark: ${left} s budget"
	# SIGTERM at the limit: bench.py keeps what it measured and writes it.
	timeout -s TERM -k 20 "$((left + 15))" python3 bench/bench.py run --mode gpu --bin "$BIN" \
		--out "$OUT/bench" --name gpu-latest --docs "$OUT" --budget "$left" "${sizes[@]}" >"$OUT/bench.txt" 2>&1 || rc=1
	tail -n 60 "$OUT/bench.txt"
	log "benchmark done after $(($(date +%s) - START)) s"
fi
exit $rc
