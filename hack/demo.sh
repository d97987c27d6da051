#!/usr/bin/env bash
# make demo: a private containerd runs a container through
# containerd-shim-runsc-cuda-v1 in gVisor, checkpoints it, kills it, restores
# it, and shows its state continuing, with timings. On a host with an NVIDIA
# GPU the container is a CUDA workload holding 1 GiB of device memory with
# known content; elsewhere it is a counter. Every ctr command is printed as
# run, so the demo doubles as a how-to.
#
# Needs: `make tools build` (the Makefile's demo target does both), root.
# On a host without Go (a GPU host), BUNDLE=<dir> uses the prebuilt binaries
# of `make gpu-bundle` instead.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib/containerd.sh

WORK=${WORK:-/var/lib/rcuda-demo}
IMG=localhost/rcuda-demo:latest
GO=${GO:-go}
BUNDLE=${BUNDLE:-}
if [ -n "$BUNDLE" ]; then
	BUNDLE=$(cd "$BUNDLE" && pwd)
	RCUDA_CONTAINERD_2_4=$BUNDLE/containerd RCUDA_CTR_2_4=$BUNDLE/ctr RCUDA_RUNSC=$BUNDLE/runsc RCUDA_BUSYBOX=$BUNDLE/busybox
	SHIM_DIR=$BUNDLE
else
	eval "$(hack/tools.sh env)"
	SHIM_DIR=$PWD/bin
fi

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { # print a command (ctr and ckptctl by name, without the private socket), then run it
	local shown="$*"
	shown=${shown//"$RCUDA_CTR_2_4 --address $WORK/c.sock --namespace rcuda"/ctr}
	shown=${shown//"$WORK.build/ckptctl --address $WORK/c.sock --namespace rcuda"/ckptctl}
	printf '$ %s\n' "$shown"
	"$@" 2> >(grep -v DEPRECATION >&2)
}
ms_since() { echo $(($(rc_now_ms) - $1)); }

trap 'rc_stop "$WORK"; rm -rf "$WORK.build"' EXIT

GPU=0
if rc_gpu; then GPU=1; fi

# The image: a static busybox and the workload, built here, imported
# without any registry.
mkdir -p "$WORK.build"
build() { # build NAME PACKAGE: a binary from the bundle, or built from the tree
	if [ -n "$BUNDLE" ]; then cp "$BUNDLE/$1" "$WORK.build/$1"; else CGO_ENABLED=0 $GO build -o "$WORK.build/$1" "$2"; fi
}
build mkimage ./test/e2e/gpu/mkimage
build ckptctl ./test/e2e/cmd/ckptctl
build rcuda-config ./test/e2e/cmd/rcuda-config
RC_CONFIG=$WORK.build/rcuda-config # rc_start writes the configs with it
if [ "$GPU" = 1 ]; then
	build workload ./test/e2e/gpu/workload
	MK=(--file "/workload=$WORK.build/workload" --ldd "$WORK.build/workload" --ldd "$SHIM_DIR/cuda-checkpoint"
		--ldd "$RC_LIBDIR/libcuda.so.1" --no-copy "$RC_LIBDIR")
	ARGS=(/workload --gib 1 --interval 1s)
	DEVICES=("${RC_DEVICES[@]}")
	PATTERN='^tick='
	say "GPU found: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1) — the demo checkpoints live CUDA state"
elif [ -n "$BUNDLE" ]; then
	build workload ./test/e2e/gpu/workload
	MK=(--file "/workload=$WORK.build/workload" --ldd "$WORK.build/workload")
	ARGS=(/workload --host-memory --gib 0.1 --interval 1s)
	DEVICES=()
	PATTERN='^tick='
	say "no GPU here: the demo checkpoints the GPU workload's host-memory variant"
else
	build workload ./test/e2e/workload
	MK=(--file "/workload=$WORK.build/workload")
	ARGS=(/workload counter --interval 1s --file /tmp/count)
	DEVICES=()
	PATTERN='^count='
	say "no GPU here: the demo checkpoints a counter (run it on an NVIDIA host for the CUDA path)"
fi
"$WORK.build/mkimage" --out "$WORK.build/image.tar" --ref "$IMG" --busybox "$RCUDA_BUSYBOX" "${MK[@]}" >/dev/null

say "start a private containerd ($WORK) with the shim on its PATH"
rc_start "$WORK" "$RCUDA_CONTAINERD_2_4" "$RCUDA_CTR_2_4" "$SHIM_DIR" "$RCUDA_RUNSC" "$SHIM_DIR/cuda-checkpoint" "${RC_LIBDIR:-}"
CTR=("${RC_CTR[@]}")
echo "shim config ($WORK/runsc-cuda.toml):"
sed 's/^/    /' "$WORK/runsc-cuda.toml"
run "${CTR[@]}" images import "$WORK.build/image.tar" >/dev/null

say "run the container in gVisor through the shim"
LOG1=$WORK/demo.log
run "${CTR[@]}" run -d "${RC_RUNTIME[@]}" "${DEVICES[@]}" --log-uri "file://$LOG1" "$IMG" demo "${ARGS[@]}"
rc_wait_line "$LOG1" "$PATTERN" 120
sleep 3
echo "its output so far:"
sed 's/^/    /' "$LOG1" | tail -4

say "checkpoint it into a containerd image (the task keeps running while containerd packs it)"
BEFORE=$(grep -E "$PATTERN" "$LOG1" | tail -1)
t=$(rc_now_ms)
run "${CTR[@]}" container checkpoint --task --image demo demo-checkpoint:1
CKPT_MS=$(ms_since "$t")
echo "checkpoint took ${CKPT_MS} ms; the last output before it: $BEFORE"
grep -h 'checkpoint written' "$WORK/containerd.log" | tail -1 | sed 's/.*msg=/    shim: /'

say "kill the container"
run "${CTR[@]}" tasks kill -s KILL demo
for _ in $(seq 50); do "${CTR[@]}" tasks ls 2>/dev/null | grep -q "demo .*STOPPED" && break; sleep 0.1; done
run "${CTR[@]}" tasks rm demo
run "${CTR[@]}" containers rm demo
[ "$GPU" = 1 ] && echo "GPU memory in use now: $(nvidia-smi --query-compute-apps=used_memory --format=csv,noheader | paste -sd+ - || echo none)"

say "restore it from the checkpoint image into a new task whose output goes to a log"
echo "(\`ctr container restore --live demo demo-checkpoint:1\` restores too, but gives the task ctr's own"
echo " stdio; ckptctl is the containerd client doing what \`ctr run --checkpoint\` would)"
LOG2=$WORK/demo-restored.log
t=$(rc_now_ms)
run "$WORK.build/ckptctl" --address "$WORK/c.sock" --namespace rcuda "${RC_RUNTIME[@]}" \
	restore --log "$LOG2" --wait-output demo-checkpoint:1 demo
RESTORE_MS=$(ms_since "$t")
sleep 3
echo "restore to first output took ${RESTORE_MS} ms; the restored container's output:"
sed 's/^/    /' "$LOG2" | head -4
AFTER=$(grep -E "$PATTERN" "$LOG2" | head -1)

say "result"
echo "last output before the checkpoint: $BEFORE"
echo "first output after the restore:   $AFTER  (it continues from the checkpoint; it did not start over)"
[ "$GPU" = 1 ] && echo "device memory: $(grep -c 'mismatches=0' "$LOG2") ticks after restore, all with mismatches=0 (bit-exact)"
echo "timings: checkpoint ${CKPT_MS} ms, restore to first output ${RESTORE_MS} ms"
