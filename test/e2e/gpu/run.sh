#!/usr/bin/env bash
# GPU end-to-end scenario for containerd-shim-runsc-cuda-v1.
#
# Runs on any Linux host with an NVIDIA GPU (driver r570 or newer), as root,
# with no network: a private containerd, runsc and the shim run a CUDA
# workload that holds N GiB of device memory with known content and a
# device-side counter, and this script drives checkpoint/restore through ctr:
#
#   1. exit checkpoint (`ctr task checkpoint --exit`): the GPU memory is
#      released; restore into a new container (the containerd client, as
#      `ctr run --checkpoint` would): device memory bit-exact and the counter
#      continuing;
#   2. leave-running checkpoint, then three clones restored concurrently from
#      that one image beside the still-running original (snapshot once, start
#      many), every one bit-exact;
#   3. an injected CUDA toggle failure leaves the workload running with its
#      CUDA state running;
#   4. a GPU container with no CUDA process checkpoints and restores like any
#      other;
#   5. where the host has PyTorch, a deterministic training loop checkpointed
#      mid-run; a clone restored from the image prints the same losses as the
#      original, bit for bit.
# It prints timings per phase and writes $OUT/results.json.
#
# Inputs (environment):
#   BIN   directory with containerd, ctr, runsc, containerd-shim-runsc-cuda-v1,
#         cuda-checkpoint, workload (test/e2e/gpu/workload), mkimage
#         (test/e2e/gpu/mkimage), ckptctl (test/e2e/cmd/ckptctl),
#         rcuda-config (test/e2e/cmd/rcuda-config) and a static busybox;
#         `make gpu-bundle` builds them on any machine with Go.
#   OUT   where results and logs go (default ./gpu-results)
#   GIBS  device memory sizes to run, in GiB (default "1 8"; empty: only the
#         pre-check, injected-failure and no-CUDA phases)
#   CLONE_GIBS  sizes that also run the three-clone phase (default "1")
#   LIBDIR  the host's NVIDIA driver library directory (default: found)
#   WORK  scratch directory, not under /tmp (default /var/lib/rcuda-gpu)
#   TORCH auto (default: phase 5 runs when TORCH_PY imports torch and sees a
#         GPU), 1 (fail if it cannot) or 0 (skip)
#   TORCH_PY  the python3 that holds PyTorch (default: python3 on PATH)
#   DRY=1 no GPU: the workload keeps its pattern in host memory and no
#         devices are passed (tries the plumbing on any machine)
set -uo pipefail
. "$(dirname "$0")/../../../hack/lib/containerd.sh"

BIN=${BIN:?set BIN to the directory with the binaries (see the header)}
BIN=$(cd "$BIN" && pwd)
OUT=${OUT:-$PWD/gpu-results}
GIBS=${GIBS-"1 8"}
CLONE_GIBS=${CLONE_GIBS:-"1"}
WORK=${WORK:-/var/lib/rcuda-gpu}
DRY=${DRY:-0}
TORCH=${TORCH:-auto}
TORCH_PY=${TORCH_PY:-$(command -v python3)}
SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd)
IMG=localhost/rcuda-gpu:latest
INTERVAL=500ms
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

case "$WORK" in /tmp | /tmp/*) echo "WORK must not be under /tmp (runsc's sandbox mounts a tmpfs there)" >&2; exit 2 ;; esac

log() { printf '%s %s\n' "$(date +%H:%M:%S.%3N)" "$*" | tee -a "$OUT/run.log" >&2; }
now_ms() { rc_now_ms; }
FAILS=0
declare -a RESULTS=()
check() { # check NAME CONDITION-COMMAND...
	local name=$1
	shift
	if "$@"; then
		log "PASS $name"
		RESULTS+=("{\"check\":\"$name\",\"pass\":true}")
	else
		log "FAIL $name"
		RESULTS+=("{\"check\":\"$name\",\"pass\":false}")
		FAILS=$((FAILS + 1))
	fi
}
declare -a TIMINGS=()
timing() { # timing PHASE GIB MS
	log "TIME $1 gib=$2 ms=$3"
	TIMINGS+=("{\"phase\":\"$1\",\"gib\":$2,\"ms\":$3}")
}

ctr() { timeout -s KILL 600 "${RC_CTR[@]}" "$@" 2> >(grep -v DEPRECATION >&2); }

# ---------------------------------------------------------------- setup
cleanup() {
	log "cleanup"
	cp "$WORK/containerd.log" "$OUT/containerd.log" 2>/dev/null
	rc_stop "$WORK"
}
trap cleanup EXIT

if [ "$DRY" = 1 ]; then
	LIBDIR=""
	DEVICES=()
	WL_EXTRA=(--host-memory)
else
	rc_gpu || { echo "no NVIDIA GPU with libcuda.so.1 found (set LIBDIR), or run with DRY=1" >&2; exit 2; }
	LIBDIR=$RC_LIBDIR
	DEVICES=("${RC_DEVICES[@]}")
	WL_EXTRA=()
	export PATH=$PATH:/usr/local/nvidia/bin
	nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
fi

log "starting containerd ($("$BIN/containerd" --version | head -1)); runsc $("$BIN/runsc" --version | head -1)"
rc_start "$WORK" "$BIN/containerd" "$BIN/ctr" "$BIN" "$BIN/runsc" "$BIN/cuda-checkpoint" "$LIBDIR" || exit 1
NS=rcuda
RUNTIME=("${RC_RUNTIME[@]}")

MK=("$BIN/mkimage" --out "$WORK/img.tar" --ref "$IMG" --busybox "$BIN/busybox" --file "/workload=$BIN/workload"
	--ldd "$BIN/workload" --ldd "$BIN/cuda-checkpoint" --cmd /workload)
if [ -n "$LIBDIR" ]; then
	MK+=(--ldd "$LIBDIR/libcuda.so.1" --no-copy "$LIBDIR")
	[ -e "$LIBDIR/libnvidia-ml.so.1" ] && MK+=(--ldd "$LIBDIR/libnvidia-ml.so.1")
fi
"${MK[@]}" >>"$OUT/run.log" || exit 1
ctr images import "$WORK/img.tar" >/dev/null || exit 1

# ---------------------------------------------------------------- helpers
wait_line() { rc_wait_line "$@" || { log "timeout waiting for /$2/ in $1"; return 1; }; }
last_counter() { grep -oE 'counter=[0-9]+' "$1" | tail -1 | cut -d= -f2; }
first_counter() { grep -oE 'counter=[0-9]+' "$1" | head -1 | cut -d= -f2; }
ticks_in() { grep -c '^tick=' "$1" 2>/dev/null || echo 0; }
# all_exact FILE: every tick line has mismatches=0 and counter == tick + offset.
no_mismatch() { [ -s "$1" ] && ! grep -E '^tick=' "$1" | grep -vq 'mismatches=0'; }
gpu_used_mib() {
	[ "$DRY" = 1 ] && { echo 0; return; }
	nvidia-smi --query-compute-apps=used_memory --format=csv,noheader,nounits | awk '{s+=$1} END {print s+0}'
}
task_status() { ctr tasks ls 2>/dev/null | awk -v t="$1" '$1 == t {print $3}'; }
run_workload() { # run_workload NAME LOG GIB [ctr run options...]
	local name=$1 logf=$2 gib=$3
	shift 3
	ctr run -d "${RUNTIME[@]}" "${DEVICES[@]}" --log-uri "file://$logf" "$@" "$IMG" "$name" \
		/workload --gib "$gib" --interval "$INTERVAL" "${WL_EXTRA[@]}"
}
# restore NAME LOG REF: a new container restored from checkpoint image REF
# (ctr has no `run --checkpoint` on Linux; ckptctl does that with the
# containerd client, see test/e2e/cmd/ckptctl).
restore() {
	"$BIN/ckptctl" --address "$WORK/c.sock" --namespace "$NS" "${RUNTIME[@]}" restore --log "$2" "$3" "$1" >>"$OUT/run.log"
}
# containerd unpacks each checkpoint it restores into a temporary directory
# that it never removes; reclaim the disk between phases.
reclaim() { rm -rf "$WORK"/tmp/ctrd-checkpoint*; }
remove() { # remove NAME...
	for n in "$@"; do
		ctr tasks kill -s KILL "$n" >/dev/null 2>&1
		for _ in $(seq 50); do [ "$(task_status "$n")" = STOPPED ] && break; sleep 0.1; done
		ctr tasks rm "$n" >/dev/null 2>&1
		ctr containers rm "$n" >/dev/null 2>&1
	done
}
# metadata REF: the shim's runsc-cuda.json from inside a checkpoint image.
metadata() {
	local idx blob
	idx=$(ctr images ls 2>/dev/null | awk -v r="$1" '$1 == r {print $3}')
	blob=$(ctr content get "$idx" | python3 -c 'import json,sys; print([m["digest"] for m in json.load(sys.stdin)["manifests"] if m["mediaType"].endswith("criu.checkpoint.criu.tar")][0])')
	ctr content get "$blob" | tar -xO runsc-cuda.json
}
image_bytes() { ctr images ls 2>/dev/null | awk -v r="$1" '$1 == r {print $4, $5}'; }

# ---------------------------------------------------------------- scenario
for GIB in $GIBS; do
	log "=== $GIB GiB"
	L1=$OUT/w$GIB.log
	t=$(now_ms)
	run_workload "w$GIB" "$L1" "$GIB" || { check "w$GIB-run" false; continue; }
	wait_line "$L1" '^ready' 300 && wait_line "$L1" '^tick=3 ' 60
	timing start-to-ready "$GIB" $(($(now_ms) - t))
	used=$(gpu_used_mib)
	log "GPU memory in use: $used MiB"
	[ "$DRY" = 1 ] || check "w$GIB-holds-gpu-memory" test "$used" -gt $((GIB * 1000))

	# 1. exit checkpoint, GPU memory released, restore.
	t=$(now_ms)
	REF=$(ctr tasks checkpoint --exit "w$GIB" | tail -1)
	timing checkpoint-exit "$GIB" $(($(now_ms) - t))
	check "w$GIB-checkpoint-exit" test -n "$REF"
	log "checkpoint image $REF: $(image_bytes "$REF")"
	metadata "$REF" >"$OUT/w$GIB-metadata.json" && log "metadata: $(tr -d ' \n' <"$OUT/w$GIB-metadata.json" | cut -c1-600)"
	before=$(last_counter "$L1")
	for _ in $(seq 100); do [ "$(gpu_used_mib)" -eq 0 ] && break; sleep 0.1; done
	check "w$GIB-gpu-released-after-exit" test "$(gpu_used_mib)" -eq 0
	remove "w$GIB"

	L2=$OUT/w$GIB-restored.log
	t=$(now_ms)
	restore "w$GIB-r" "$L2" "$REF"
	timing restore-return "$GIB" $(($(now_ms) - t))
	wait_line "$L2" '^tick=' 120
	timing restore-to-first-tick "$GIB" $(($(now_ms) - t))
	wait_line "$L2" "counter=$((before + 3)) " 60
	first=$(first_counter "$L2")
	log "counter before checkpoint: $before, first after restore: $first"
	check "w$GIB-counter-continues" test "$first" -eq $((before + 1))
	check "w$GIB-device-memory-bit-exact" no_mismatch "$L2"
	[ "$DRY" = 1 ] || check "w$GIB-gpu-reacquired" test "$(gpu_used_mib)" -gt $((GIB * 1000))
	ctr images rm "$REF" >/dev/null
	reclaim

	# 2. leave-running checkpoint, then three concurrent clones.
	pre=$(last_counter "$L2")
	t=$(now_ms)
	REF2=$(ctr tasks checkpoint "w$GIB-r" | tail -1)
	timing checkpoint-leave-running "$GIB" $(($(now_ms) - t))
	check "w$GIB-checkpoint-leave-running" test -n "$REF2"
	at=$(last_counter "$L2")
	log "original's counter right after the checkpoint: $at"
	wait_line "$L2" "counter=$((at + 2)) " 60
	check "w$GIB-original-keeps-running" test "$(task_status "w$GIB-r")" = RUNNING
	if [[ " $CLONE_GIBS " == *" $GIB "* ]]; then
		t=$(now_ms)
		pids=()
		for i in 1 2 3; do
			(
				s=$(now_ms)
				restore "w$GIB-c$i" "$OUT/w$GIB-clone$i.log" "$REF2"
				echo $(($(now_ms) - s)) >"$WORK/clone$i.ms"
			) &
			pids+=($!)
		done
		wait "${pids[@]}"
		timing clones-3-restore-return "$GIB" $(($(now_ms) - t))
		for i in 1 2 3; do
			timing "clone$i-restore-return" "$GIB" "$(cat "$WORK/clone$i.ms")"
			Lc=$OUT/w$GIB-clone$i.log
			wait_line "$Lc" '^tick=' 120
			c1=$(first_counter "$Lc")
			wait_line "$Lc" "counter=$((c1 + 2)) " 60
			log "clone $i: first counter $c1 (original at $pre before and $at right after the checkpoint)"
			check "w$GIB-clone$i-continues-from-snapshot" test "$c1" -gt "$pre" -a "$c1" -le $((at + 1))
			check "w$GIB-clone$i-bit-exact" no_mismatch "$Lc"
		done
		n=$(last_counter "$L2")
		wait_line "$L2" "counter=$((n + 2)) " 60
		check "w$GIB-original-bit-exact-beside-clones" no_mismatch "$L2"
		[ "$DRY" = 1 ] || log "GPU memory in use with original and 3 clones: $(gpu_used_mib) MiB"
		remove "w$GIB-c1" "w$GIB-c2" "w$GIB-c3"
	fi
	remove "w$GIB-r"
	ctr images rm "$REF2" >/dev/null
	reclaim
	log "disk: $(df -h "$WORK" | tail -1)"
done

# 2b. Restore pre-checks refuse a host that does not match the checkpoint's
# GPUs, before anything is created; the unmodified image then restores (with
# the identity device map the shim always passes).
log "=== restore pre-checks"
LP=$OUT/precheck.log
run_workload wpc "$LP" 0.25
wait_line "$LP" '^tick=2 ' 120
PC=$WORK/precheck-image
ctr tasks checkpoint --exit --image-path "$PC" wpc >/dev/null
check precheck-image-written test -s "$PC/runsc-cuda.json"
pc_counter=$(last_counter "$LP")
cp "$PC/runsc-cuda.json" "$WORK/meta.orig"
try_restore() { # try_restore NAME: restore from $PC into NAME, print ckptctl's output
	"$BIN/ckptctl" --address "$WORK/c.sock" --namespace "$NS" "${RUNTIME[@]}" restore --log "$OUT/$1.log" \
		--from-path "$PC" --like wpc "$1" 2>&1
}
if [ "$DRY" != 1 ]; then
	python3 - "$PC/runsc-cuda.json" <<'PY'
import json, sys
p = sys.argv[1]; m = json.load(open(p)); m["gpu"]["driver_version"] = "999.1.2"; json.dump(m, open(p, "w"))
PY
	out=$(try_restore wpc-driver)
	log "restore with a different driver in the metadata: $out"
	check precheck-driver-mismatch-refused grep -q "999.1.2.*this host has" <<<"$out"
	cp "$WORK/meta.orig" "$PC/runsc-cuda.json"
	python3 - "$PC/runsc-cuda.json" <<'PY'
import json, sys
p = sys.argv[1]; m = json.load(open(p)); d = dict(m["gpu"]["devices"][0]); d["minor"] = d["index"] = 7
d["uuid"] = "GPU-00000000-0000-0000-0000-000000000007"; m["gpu"]["devices"].append(d); json.dump(m, open(p, "w"))
PY
	out=$(try_restore wpc-count)
	log "restore needing a GPU this host lacks: $out"
	check precheck-missing-gpu-refused grep -q "/dev/nvidia7" <<<"$out"
	check precheck-nothing-created test -z "$(task_status wpc-driver)$(task_status wpc-count)"
	ctr containers rm wpc-driver wpc-count >/dev/null 2>&1
	cp "$WORK/meta.orig" "$PC/runsc-cuda.json"
fi
out=$(try_restore wpc-r)
log "restore from the unmodified image: $out"
wait_line "$OUT/wpc-r.log" "counter=$((pc_counter + 2)) " 120
check precheck-unmodified-restores test "$(first_counter "$OUT/wpc-r.log")" -eq $((pc_counter + 1))
check precheck-restored-bit-exact no_mismatch "$OUT/wpc-r.log"
remove wpc-r wpc
rm -rf "$PC"

# 3. An injected toggle failure leaves the workload running, CUDA running.
log "=== injected toggle failure"
LF=$OUT/fail.log
run_workload wfail "$LF" 1 --env CUDA_CHECKPOINT_INJECT_FAILURE=checkpoint
wait_line "$LF" '^tick=2 ' 300
if [ "$DRY" = 1 ]; then
	log "DRY: no CUDA process, the toggle is not invoked"
else
	out=$(ctr tasks checkpoint wfail 2>&1)
	rc=$?
	log "checkpoint with injected failure: rc=$rc: $(echo "$out" | tail -2)"
	check "fail-checkpoint-refused" test "$rc" -ne 0
	check "fail-task-still-running" test "$(task_status wfail)" = RUNNING
	n=$(last_counter "$LF")
	wait_line "$LF" "counter=$((n + 3)) " 60
	check "fail-workload-progresses" test "$(last_counter "$LF")" -ge $((n + 3))
	check "fail-device-memory-bit-exact" no_mismatch "$LF"
	state=$(ctr tasks exec --exec-id st wfail /.runsc-cuda/cuda-checkpoint --get-state --pid 1 2>&1)
	log "CUDA state of the workload: $state"
	check "fail-cuda-state-running" test "$state" = running
fi
remove wfail

# 4. A GPU container with no CUDA process yet.
log "=== GPU container without a CUDA process"
LN=$OUT/nocuda.log
ctr run -d "${RUNTIME[@]}" "${DEVICES[@]}" --log-uri "file://$LN" "$IMG" nocuda \
	sh -c 'i=0; while true; do i=$((i+1)); echo n=$i; sleep 0.2; done'
wait_line "$LN" '^n=3$' 60
t=$(now_ms)
REF3=$(ctr tasks checkpoint --exit nocuda | tail -1)
timing nocuda-checkpoint-exit 0 $(($(now_ms) - t))
check nocuda-checkpoint test -n "$REF3"
last=$(grep -oE '^n=[0-9]+' "$LN" | tail -1 | cut -d= -f2)
remove nocuda
LN2=$OUT/nocuda-restored.log
restore nocuda-r "$LN2" "$REF3"
wait_line "$LN2" '^n=' 60
first=$(grep -oE '^n=[0-9]+' "$LN2" | head -1 | cut -d= -f2)
check nocuda-continues test "$first" -eq $((last + 1))
remove nocuda-r

# 5. PyTorch, where the host has it: a deterministic training loop,
# checkpointed while it runs; a clone restored from the image prints, for
# every step after the checkpoint, exactly the loss and parameter sum the
# original prints. The container is the scenario's image with the host's
# /usr, /lib, /lib64, /etc and /opt bound read-only over it, so the host's
# python3 and torch run unchanged. (Not the host's / as the rootfs: there
# runsc shows the shim's bind mount of the toggle tool as an empty file,
# "exec format error", runsc skips the toggle and the save fails on the
# process's device mappings; seen on the H200 on 2026-11-29.)
if [ "$DRY" != 1 ] && [ "$TORCH" != 0 ] && [ -n "$TORCH_PY" ] &&
	"$TORCH_PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then
	log "=== PyTorch ($TORCH_PY)"
	TCFG=$WORK/runsc-cuda-torch.toml
	# runsc's debug log (the sandbox's own account of the CUDA toggles) only
	# for this container.
	rc_shim_config "$TCFG" --runsc-flag debug=true --runsc-flag debug-log="$WORK/runsc-debug/"
	TRT=(--runtime io.containerd.runsc-cuda.v1 --runtime-config-path "$TCFG")
	TMOUNTS=(--mount "type=bind,src=$SCRIPT_DIR,dst=/rcuda-test,options=rbind:ro")
	for d in /usr /lib /lib64 /etc /opt; do
		[ -e "$d" ] && TMOUNTS+=(--mount "type=bind,src=$(readlink -f "$d"),dst=$d,options=rbind:ro")
	done
	LT=$OUT/torch.log
	LT2=$OUT/torch-clone.log
	TI=$WORK/torch-image
	step_line() { grep -m1 "^step=$2 " "$1"; }
	last_step() { grep -oE '^step=[0-9]+' "$1" | tail -1 | cut -d= -f2; }
	t=$(now_ms)
	ctr run -d "${TRT[@]}" "${DEVICES[@]}" "${TMOUNTS[@]}" --env HOME=/tmp --env GIB=1 --env CUBLAS_WORKSPACE_CONFIG=:4096:8 \
		--log-uri "file://$LT" "$IMG" torch "$TORCH_PY" /rcuda-test/torch_workload.py
	if wait_line "$LT" '^step=5 ' 300; then
		timing torch-start-to-step5 1 $(($(now_ms) - t))
		log "$(head -1 "$LT")"
		t=$(now_ms)
		out=$(ctr tasks checkpoint --image-path "$TI" torch 2>&1)
		timing torch-checkpoint-image-path 1 $(($(now_ms) - t))
		check torch-checkpoint test -s "$TI/runsc-cuda.json"
		log "checkpoint: $out $(du -sh "$TI" | cut -f1)"
		state=$(ctr tasks exec --exec-id gs torch /.runsc-cuda/cuda-checkpoint --get-state --pid 1 2>&1)
		log "CUDA state of the training process (toggle tool, after the checkpoint): $state"
		grep -h 'cuda-checkpoint\|CUDA PID\|pma' "$WORK"/runsc-debug/*boot* 2>/dev/null | grep -v '^D' | tail -8 | while read -r l; do log "runsc: ${l:0:400}"; done
	fi
	if [ -s "$TI/runsc-cuda.json" ]; then
		at=$(last_step "$LT")
		t=$(now_ms)
		out=$("$BIN/ckptctl" --address "$WORK/c.sock" --namespace "$NS" "${TRT[@]}" restore --log "$LT2" --from-path "$TI" --like torch torch-r 2>&1)
		log "clone restore: $out"
		wait_line "$LT2" '^step=' 120
		timing torch-restore-to-first-step 1 $(($(now_ms) - t))
		first=$(grep -oE '^step=[0-9]+' "$LT2" | head -1 | cut -d= -f2)
		log "original at step $at after the checkpoint; the clone's first step: $first"
		check torch-clone-continues test -n "$first" -a "${first:-0}" -gt 5 -a "${first:-0}" -le $((at + 1))
		if [ -n "$first" ]; then
			wait_line "$LT2" "^step=$((first + 10)) " 120
			wait_line "$LT" "^step=$((first + 10)) " 120
			same=1
			for n in $(seq "$first" $((first + 10))); do
				a=$(step_line "$LT" "$n")
				b=$(step_line "$LT2" "$n")
				[ -n "$a" ] && [ "$a" = "$b" ] || { same=0; log "step $n differs: original '$a', clone '$b'"; }
			done
			check torch-clone-outputs-identical test "$same" = 1
			check torch-device-memory-intact test -z "$(grep -h 'ballast=BAD' "$LT" "$LT2")"
		fi
	elif ! grep -q '^step=5 ' "$LT"; then
		check torch-start false
		tail -20 "$LT" | while read -r l; do log "torch: $l"; done
	fi
	remove torch-r torch
	rm -rf "$TI"
elif [ "$DRY" != 1 ] && [ "$TORCH" = 1 ]; then
	check torch-available false
fi

# ---------------------------------------------------------------- results
grep -hE 'checkpoint written|restored' "$WORK/containerd.log" | sed 's/^.*msg=/msg=/' >"$OUT/shim-timings.txt"
{
	printf '{"date":"%s","host":"%s","dry":%s,' "$(date -u +%FT%TZ)" "$(hostname)" "$([ "$DRY" = 1 ] && echo true || echo false)"
	printf '"gpu":"%s",' "$(cat "$OUT/gpu.txt" 2>/dev/null | tr -d '\n')"
	printf '"runsc":"%s",' "$("$BIN/runsc" --version | head -1)"
	printf '"timings":[%s],' "$(IFS=,; echo "${TIMINGS[*]}")"
	printf '"checks":[%s],"failures":%d}\n' "$(IFS=,; echo "${RESULTS[*]}")" "$FAILS"
} >"$OUT/results.json"
log "done: $FAILS failed check(s); results in $OUT/results.json"
[ "$FAILS" -eq 0 ]
