#!/usr/bin/env bash
# GPU workload-class matrix for containerd-shim-runsc-cuda-v1.
#
# Runs, from the prebuilt bundle (`make bundle` / `make gpu-bundle`), through
# a private containerd, ctr and the shim, one container per workload class
# and checkpoints each with `ctr tasks checkpoint --image-path DIR` (the
# directory path), restoring with the bundled client
# (`ckptctl restore --from-path DIR --like NAME`):
#
#   1  PyTorch training (AdamW, GIB GiB of extra device memory): leave-running
#      checkpoint + clone; and an exit checkpoint + restore, compared with an
#      uninterrupted twin started at the same time
#   2  a small transformer decoding greedily with CUDA-graph replay
#   3  two independent CUDA processes in one container (leave-running, and
#      exit + restore vs twin)
#   4  class 1's image restored as 3 concurrent clones beside the original
#   5  CUDA IPC between a parent and a torch.multiprocessing (spawn) child;
#      again with the annotation io.containerd.runsc-cuda.v1.cuda-ipc=true
#   6  CUDA managed memory (<= 64 MiB)
#   7  a CPU-only process that initialises CUDA after the checkpoint, at a
#      step written into it (and into its clone) with `ctr task exec`
#
# Workloads: matrix_workload.py (the host's python3 and torch run inside the
# container: the scenario image with the host's /usr /lib /lib64 /etc /opt
# bound read-only over it, as run.sh's phase 5). Every step line holds only
# exact values, so a clone's lines for the steps after the checkpoint must
# equal the original's, bit for bit. Each case's outcome is recorded, not
# just pass/fail: $OUT/matrix.json, $OUT/matrix.md, and a summary on stdout.
# Independent classes run concurrently (one containerd, distinct names and
# logs); checkpoints are taken one at a time (SERIAL_CKPT=1) so their timings
# are not each other's.
#
# Inputs (environment):
#   BIN       the bundle directory (containerd, ctr, runsc, the shim,
#             cuda-checkpoint, mkimage, ckptctl, workload-cpu, busybox)
#   OUT       results and logs (default ./gpu-matrix-results)
#   WORK      scratch, not under /tmp (default /var/lib/rcuda-matrix)
#   LIBDIR    the host's NVIDIA driver library directory (default: found)
#   TORCH_PY  the python3 with PyTorch (default: python3 on PATH); it must
#             live under the bound directories (or add them to EXTRA_BINDS)
#   CLASSES   subset to run (default "1 2 3 4 5 6 7")
#   GIB       class 1's extra device memory (default 1)
#   INTERVAL  seconds between workload steps (default 0.1)
#   CMP_STEPS steps compared after each restore (default 10)
#   WARM      steps every workload prints before its checkpoint (default 5)
#   T_START   seconds a workload may take to reach WARM (default 300)
#   T_ALL     hard limit for the whole matrix in seconds (default 900)
#   SERIAL_CKPT  1 (default): one checkpoint at a time
#   EXTRA_BINDS  more host directories to bind read-only (space separated)
#   RUNSC_DEBUG=1  runsc debug logs (under $OUT/runsc-debug)
#   HOSTPY    python3 for the host-side helper (standard library only)
#   FAIL_CASES  cases (e.g. "6-managed") whose checkpoint is made to fail
#             (a file left in the image directory): tests the matrix itself
#   DRY=1     no GPU: the same classes, processes, triggers and checks with
#             matrix_workload.py's pure-Python stand-ins (MATRIX_FAKE=1) run
#             by the host's /usr/bin/python3; DRY=counter: the bundled
#             `workload-cpu counter` instead (no Python in the containers)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../../../hack/lib/containerd.sh"

BIN=${BIN:?set BIN to the bundle directory (see the header)}
BIN=$(cd "$BIN" && pwd)
OUT=${OUT:-$PWD/gpu-matrix-results}
WORK=${WORK:-/var/lib/rcuda-matrix}
DRY=${DRY:-0}
CLASSES=${CLASSES:-"1 2 3 4 5 6 7"}
GIB=${GIB:-1}
INTERVAL=${INTERVAL:-0.1}
CMP_STEPS=${CMP_STEPS:-10}
WARM=${WARM:-5}
T_START=${T_START:-300}
T_STEP=${T_STEP:-120}
T_CKPT=${T_CKPT:-180}
T_CTR=${T_CTR:-120}
T_ALL=${T_ALL:-900}
SERIAL_CKPT=${SERIAL_CKPT:-1}
EXTRA_BINDS=${EXTRA_BINDS:-}
RUNSC_DEBUG=${RUNSC_DEBUG:-0}
HOSTPY=${HOSTPY:-python3}
LATE_MARGIN=${LATE_MARGIN:-80} # class 7: steps between the trigger and CUDA init
IMG=localhost/rcuda-matrix:latest
NS=rcuda
W=/rcuda-test/matrix_workload.py

case "$DRY" in
0) MODE=gpu ;;
1) MODE=fake ;;
counter) MODE=counter ;;
*) echo "DRY must be 0, 1 or counter" >&2; exit 2 ;;
esac
case "$WORK" in /tmp | /tmp/*) echo "WORK must not be under /tmp (runsc's sandbox mounts a tmpfs there)" >&2; exit 2 ;; esac
if [ -z "${TORCH_PY:-}" ]; then
	if [ "$MODE" = fake ]; then TORCH_PY=/usr/bin/python3; else TORCH_PY=$(command -v python3 || echo python3); fi
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RES=$OUT/res
rm -rf "$RES" "$OUT/logs" "$OUT/gpu" "$OUT/matrix.json" "$OUT/matrix.md" "$OUT/matrix.log" "$OUT/events.txt"
mkdir -p "$RES" "$OUT/logs" "$OUT/gpu"
T_BEGIN=$(rc_now_ms)
exec 7>&2 # the console, for log lines from the flows (whose stderr is their file)

log() { printf '%s %s\n' "$(date +%H:%M:%S.%3N)" "$*" | tee -a "$OUT/matrix.log" >&7; }
now_ms() { rc_now_ms; }
has_class() { [[ " $CLASSES " == *" $1 "* ]]; }
# fact CASE KEY VALUE / factj CASE KEY JSON: one fact of a case, for the report.
fact() { local v=${3//$'\n'/ | }; printf 's\t%s\t%s\n' "$2" "${v//$'\t'/ }" >>"$RES/$1.tsv"; }
factj() { local v=${3//$'\n'/ }; printf 'j\t%s\t%s\n' "$2" "${v:-null}" >>"$RES/$1.tsv"; }
ctr() { timeout -s KILL "$T_CTR" "${RC_CTR[@]}" "$@"; }
ckptctl() { timeout -s KILL "$T_CTR" "$BIN/ckptctl" --address "$WORK/c.sock" --namespace "$NS" "${RUNTIME[@]}" "$@"; }
tool() { timeout -s KILL $((T_START + T_STEP + 60)) "$HOSTPY" "$HERE/matrix_tool.py" "$@"; }
task_status() { local s; s=$(ctr tasks ls 2>/dev/null | awk -v t="$1" '$1 == t {print $3}'); echo "${s:-none}"; }
remove() { # remove NAME...: kill the task, delete task and container
	local n s
	for n in "$@"; do
		# events from here on are the removal's, not the case's
		[ -n "${CASE:-}" ] && fact "$CASE" "removed.$n" "$(now_ms)"
		T_CTR=30 ctr tasks kill -s KILL "$n" >/dev/null 2>&1
		for _ in $(seq 50); do
			s=$(task_status "$n")
			[ "$s" = none ] || [ "$s" = STOPPED ] && break
			sleep 0.1
		done
		T_CTR=30 ctr tasks rm -f "$n" >/dev/null 2>&1
		T_CTR=30 ctr containers rm "$n" >/dev/null 2>&1
	done
}
ntags() { # the number of step-line tags a workload kind prints
	case "$MODE:$1" in
	*:two | gpu:ipc | fake:ipc) echo 2 ;;
	*) echo 1 ;;
	esac
}

# ---------------------------------------------------------------- setup
FLOWS=()
FLOW_NAMES=()
FLOW_CASES=()
EV_PID=
WD_PID=
FINISHED=0
finish() {
	[ "$FINISHED" = 1 ] && return
	FINISHED=1
	trap - INT TERM
	local p
	local i c
	for i in "${!FLOWS[@]}"; do
		p=${FLOWS[$i]}
		kill -0 "$p" 2>/dev/null || continue
		log "stopping flow ${FLOW_NAMES[$i]} ($p): time limit or interrupt"
		kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null
		for c in ${FLOW_CASES[$i]}; do fact "$c" interrupted "stopped by the time limit (T_ALL=$T_ALL s) or a signal"; done
	done
	[ -n "$WD_PID" ] && { kill -KILL -- "-$WD_PID" 2>/dev/null || kill -KILL "$WD_PID" 2>/dev/null; }
	if [ -n "${RC_PID:-}" ]; then
		sleep 1 # the last events
		[ -n "$EV_PID" ] && kill -KILL "$EV_PID" 2>/dev/null
		tool report --res "$RES" --out "$OUT" --events "$OUT/events.txt" --gpu "$OUT/gpu" --dry "$DRY" --started-ms "$T_BEGIN" | tee "$OUT/summary.txt"
		REPORT_RC=${PIPESTATUS[0]}
		grep -hE 'checkpoint written|restored|CUDA|cuda' "$WORK/containerd.log" 2>/dev/null | sed 's/^.*msg=/msg=/' | tail -200 >"$OUT/shim-lines.txt"
		cp "$WORK/containerd.log" "$OUT/containerd.log" 2>/dev/null
		[ "$RUNSC_DEBUG" = 1 ] && cp -r "$WORK/runsc-debug" "$OUT/" 2>/dev/null
		log "cleanup: tasks, containerd, $WORK"
		rc_stop "$WORK"
	fi
	# Processes of this run that outlived containerd (a shim or a sandbox
	# of a task that could not be deleted): named by this run's WORK.
	for p in /proc/[0-9]*; do
		p=${p#/proc/}
		[ "$p" = $$ ] && continue
		if tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -qF -- "$WORK/"; then
			log "killing leftover process $p: $(tr '\0' ' ' <"/proc/$p/cmdline" | cut -c1-200)"
			kill -KILL "$p" 2>/dev/null
		fi
	done
	grep -o " $WORK[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
	rm -rf "$WORK"
	log "done in $(($(now_ms) - T_BEGIN)) ms; $OUT/matrix.md"
}
REPORT_RC=1
FORCE_RC=
trap 'finish; exit "${FORCE_RC:-$REPORT_RC}"' EXIT
trap 'log "interrupted"; FORCE_RC=130; exit 130' INT TERM

DEVICES=()
LIBDIR_USE=""
if [ "$MODE" = gpu ]; then
	rc_gpu || { echo "no NVIDIA GPU with libcuda.so.1 found (set LIBDIR), or run with DRY=1" >&2; exit 2; }
	LIBDIR_USE=$RC_LIBDIR
	DEVICES=("${RC_DEVICES[@]}")
	export PATH=$PATH:/usr/local/nvidia/bin
	timeout -s KILL 30 nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader | tee "$OUT/gpu.txt" >&7
fi

TORCH_OK=1
TORCH_INFO=""
if [ "$MODE" = gpu ]; then
	TORCH_INFO=$(timeout -s KILL 120 "$TORCH_PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())' 2>&1 | tail -1)
	[[ "$TORCH_INFO" == *"cuda True"* ]] || TORCH_OK=0
	CUPY_INFO=$(timeout -s KILL 120 "$TORCH_PY" -c 'import cupy; print("cupy", cupy.__version__)' 2>&1 | tail -1)
	log "host python $TORCH_PY: $TORCH_INFO; $CUPY_INFO"
fi
if [ "$MODE" != counter ]; then
	case "$TORCH_PY" in
	/usr/* | /opt/* | /lib/* | /lib64/*) ;;
	*)
		ok=0
		for d in $EXTRA_BINDS; do [[ "$TORCH_PY" == "$d"/* ]] && ok=1; done
		[ "$ok" = 1 ] || log "WARNING: TORCH_PY=$TORCH_PY is not under /usr, /opt, /lib or EXTRA_BINDS: the containers cannot run it"
		;;
	esac
fi

log "starting containerd ($("$BIN/containerd" --version | head -1)); runsc $("$BIN/runsc" --version | head -1); mode $MODE; classes $CLASSES"
rc_start "$WORK" "$BIN/containerd" "$BIN/ctr" "$BIN" "$BIN/runsc" "$BIN/cuda-checkpoint" "$LIBDIR_USE" || exit 1
RUNTIME=("${RC_RUNTIME[@]}")
if [ "$RUNSC_DEBUG" = 1 ]; then
	if declare -F rc_shim_config >/dev/null; then
		rc_shim_config "$WORK/runsc-cuda-debug.toml" --runsc-flag debug=true --runsc-flag debug-log="$WORK/runsc-debug/" || exit 1
	else
		{ cat "$WORK/runsc-cuda.toml"; printf '[runsc_config]\ndebug = "true"\ndebug-log = "%s/"\n' "$WORK/runsc-debug"; } >"$WORK/runsc-cuda-debug.toml"
	fi
	RUNTIME=(--runtime io.containerd.runsc-cuda.v1 --runtime-config-path "$WORK/runsc-cuda-debug.toml")
fi
mkdir -p "$WORK/img" "$WORK/steps"
: >"$WORK/ckpt.lock"
timeout -s KILL $((T_ALL + 300)) "${RC_CTR[@]}" events >"$OUT/events.txt" 2>&1 &
EV_PID=$!
disown "$EV_PID"

MK=("$BIN/mkimage" --out "$WORK/img.tar" --ref "$IMG" --busybox "$BIN/busybox" --file "/workload-cpu=$BIN/workload-cpu"
	--ldd "$BIN/cuda-checkpoint" --cmd /workload-cpu)
if [ -n "$LIBDIR_USE" ]; then
	MK+=(--ldd "$LIBDIR_USE/libcuda.so.1" --no-copy "$LIBDIR_USE")
	[ -e "$LIBDIR_USE/libnvidia-ml.so.1" ] && MK+=(--ldd "$LIBDIR_USE/libnvidia-ml.so.1")
fi
timeout -s KILL 300 "${MK[@]}" >>"$OUT/matrix.log" 2>&1 || { log "mkimage failed"; exit 1; }
ctr images import "$WORK/img.tar" >>"$OUT/matrix.log" 2>&1 || { log "image import failed"; exit 1; }

# The workloads' environment and mounts: the host's system directories
# bound read-only over the image, so the host's python3 and torch run
# unchanged (not the host's / as the rootfs: runsc then shows the shim's bind
# mount of the toggle tool as an empty file; see run.sh phase 5).
RUNARGS=()
if [ "$MODE" != counter ]; then
	RUNARGS+=(--mount "type=bind,src=$HERE,dst=/rcuda-test,options=rbind:ro")
	for d in /usr /lib /lib64 /etc /opt $EXTRA_BINDS; do
		[ -e "$d" ] && RUNARGS+=(--mount "type=bind,src=$(readlink -f "$d"),dst=$d,options=rbind:ro")
	done
	RUNARGS+=(--env HOME=/tmp --env PYTHONDONTWRITEBYTECODE=1 --env PYTHONUNBUFFERED=1 --env CUBLAS_WORKSPACE_CONFIG=:4096:8
		--env "INTERVAL=$INTERVAL" --env "GIB=$GIB")
	[ "$MODE" = fake ] && RUNARGS+=(--env MATRIX_FAKE=1)
	for v in MANAGED_IMPL MANAGED_HOST_TOUCH LD_LIBRARY_PATH; do
		[ -n "${!v:-}" ] && RUNARGS+=(--env "$v=${!v}")
	done
fi
ALL_NAMES=m1o,m1c,m1x,m1r,m1t,m4a,m4b,m4c,m2o,m2c,m3o,m3c,m3x,m3r,m3t,m5o,m5c,m5a,m5d,m6o,m6c,m7o,m7c

# start NAME KIND [ctr run options...]: a detached workload container, its
# output in $OUT/logs/NAME.log.
start() {
	local name=$1 kind=$2
	shift 2
	local cmd
	if [ "$MODE" = counter ]; then
		if [ "$kind" = two ]; then
			cmd=(sh -c "/workload-cpu counter --interval ${INTERVAL}s & /workload-cpu counter --interval ${INTERVAL}s --start 1000000 & wait")
		else
			cmd=(/workload-cpu counter --interval "${INTERVAL}s")
		fi
	elif [ "$kind" = two ]; then
		cmd=(sh -c "$TORCH_PY $W proc --tag a --seed 1 & $TORCH_PY $W proc --tag b --seed 2 & wait")
	else
		cmd=("$TORCH_PY" "$W" "$kind")
	fi
	ctr run -d "${RUNTIME[@]}" "${DEVICES[@]}" "${RUNARGS[@]}" --log-uri "file://$OUT/logs/$name.log" "$@" "$IMG" "$name" "${cmd[@]}"
}

# gpu_snap LABEL: nvidia-smi's view (GPU memory used, compute apps by container).
gpu_snap() {
	[ "$MODE" = gpu ] || return 0
	local f
	f=$OUT/gpu/$(now_ms)-$1
	timeout -s KILL 30 nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits >"$f.used" 2>/dev/null
	timeout -s KILL 30 nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits >"$f.apps" 2>/dev/null
	tool gpusnap --label "$1" --used "$f.used" --apps "$f.apps" --names "$ALL_NAMES" >"$f.json"
	rm -f "$f.used" "$f.apps"
}

# ckpt CASE NAME DIR [--exit]: one checkpoint, timed (one at a time).
ckpt() {
	local case=$1 name=$2 dir=$3 lock=$WORK/ckpt.lock out rc t0 ms
	shift 3
	[ "$SERIAL_CKPT" = 1 ] || lock=$WORK/ckpt-$case.lock
	# FAIL_CASES (a test of the matrix itself): a file in the image
	# directory makes the shim refuse the checkpoint (it never overwrites).
	local junk=
	if [[ " ${FAIL_CASES:-} " == *" $case "* ]]; then
		junk=$dir/matrix-fail-case
		mkdir -p "$dir" && echo x >"$junk"
	fi
	{
		flock -w "$T_ALL" 9 || log "$case: checkpoint lock not taken"
		log "$case: checkpoint${1:+ $1} of $name"
		t0=$(now_ms)
		out=$(timeout -s KILL "$T_CKPT" "${RC_CTR[@]}" tasks checkpoint "$@" --image-path "$dir" "$name" 2>&1)
		rc=$?
		ms=$(($(now_ms) - t0))
	} 9>>"$lock"
	[ -n "$junk" ] && rm -f "$junk"
	log "$case: checkpoint rc=$rc in $ms ms: $(echo "$out" | grep -v DEPRECATION | tail -2 | cut -c1-400)"
	fact "$case" ckpt_rc "$rc"
	fact "$case" ckpt_ms "$ms"
	fact "$case" ckpt_out "$out"
}

# restore CASE LIKE NEW DIR [PREFIX]: NEW restored from DIR with LIKE's spec
# and image; facts PREFIXrestore_rc, PREFIXrestore, PREFIXfirst.
restore() {
	local case=$1 like=$2 new=$3 dir=$4 pre=${5:-} out rc t0 w
	t0=$(now_ms)
	out=$(ckptctl restore --log "$OUT/logs/$new.log" --from-path "$dir" --like "$like" "$new" 2>&1)
	rc=$?
	fact "$case" "${pre}restore_rc" "$rc"
	if [ "$rc" -ne 0 ]; then
		fact "$case" "${pre}restore_out" "$out"
		log "$case: restore of $new failed: $(echo "$out" | tail -2)"
		return 1
	fi
	factj "$case" "${pre}restore" "$(echo "$out" | grep '^{' | tail -1)"
	w=$(tool wait "$OUT/logs/$new.log" --min-step 0 --ntags "$(ntags "$KIND")" --timeout "$T_STEP" --t0-ms "$t0")
	factj "$case" "${pre}first" "$w"
	log "$case: $new restored: $(echo "$out" | grep '^{' | tail -1); first step: $w"
}

# cuda_states CASE NAME: the toggle tool's view of each workload process
# (their pids from the ready lines).
cuda_states() {
	[ "$MODE" = gpu ] || return 0
	local case=$1 name=$2 pid s all=""
	for pid in $(grep -oE '^@[a-z.]+ ready .* pid=[0-9]+' "$OUT/logs/$name.log" | grep -oE ' pid=[0-9]+' | cut -d= -f2 | sort -un); do
		s=$(ctr tasks exec --exec-id "gs$pid-$RANDOM" "$name" /.runsc-cuda/cuda-checkpoint --get-state --pid "$pid" 2>&1 | tail -1)
		all="$all $pid=${s// /_}"
	done
	fact "$case" gpu_state "${all# }"
}

# trigger_late CASE ORIG CLONE: class 7's CUDA initialisation step, written
# into both containers; fact cuda_lines after the comparison.
LATE_K=0
trigger_late() {
	local case=$1 a b k rc1 rc2
	a=$(tool steps "$OUT/logs/$2.log" | grep -oE '"last": [0-9]+' | grep -oE '[0-9]+' | sort -n | tail -1)
	b=$(tool steps "$OUT/logs/$3.log" | grep -oE '"last": [0-9]+' | grep -oE '[0-9]+' | sort -n | tail -1)
	k=$(((${a:-0} > ${b:-0} ? ${a:-0} : ${b:-0}) + LATE_MARGIN))
	local sh="echo $k >/tmp/rcuda-late-init.t && mv /tmp/rcuda-late-init.t /tmp/rcuda-late-init"
	ctr tasks exec --exec-id trig1 "$2" sh -c "$sh" >/dev/null 2>&1
	rc1=$?
	ctr tasks exec --exec-id trig2 "$3" sh -c "$sh" >/dev/null 2>&1
	rc2=$?
	fact "$case" trigger "init_at=$k (original at ${a:-?}, clone at ${b:-?}); exec rc $rc1/$rc2"
	log "$case: CUDA initialisation at step $k written into $2 and $3 (exec rc $rc1/$rc2)"
	LATE_K=$k
}

# ---------------------------------------------------------------- flows
# flow_lr CASE KIND NAME CLONE [ctr run options...]: leave-running
# checkpoint of NAME, clone CLONE restored from it beside the original.
flow_lr() {
	local case=$1 name=$3 clone=$4
	KIND=$2
	CASE=$case
	shift 4
	local L=$OUT/logs/$name.log LC=$OUT/logs/$clone.log D=$WORK/img/$case S=$WORK/steps/$case out w t0
	mkdir -p "$S"
	factj "$case" names "[\"$name\",\"$clone\"]"
	t0=$(now_ms)
	if ! out=$(start "$name" "$KIND" "$@" 2>&1); then
		fact "$case" started 0
		fact "$case" start_error "$out"
		log "$case: $name did not start: $out"
		return
	fi
	if ! w=$(tool wait "$L" --min-step "$WARM" --ntags "$(ntags "$KIND")" --timeout "$T_START" --t0-ms "$t0"); then
		fact "$case" started 0
		fact "$case" start_error "$w $(tail -c 1500 "$L")"
		log "$case: $name did not reach step $WARM: $w"
		remove "$name"
		return
	fi
	fact "$case" started 1
	factj "$case" warm "$w"
	log "$case: $name at step $WARM after $(($(now_ms) - t0)) ms"
	gpu_snap "$case-before-checkpoint"
	tool steps "$L" >"$S/lo.json"
	ckpt "$case" "$name" "$D"
	tool steps "$L" >"$S/hi.json"
	fact "$case" status_after "$(task_status "$name")"
	factj "$case" meta "$(tool meta "$D")"
	gpu_snap "$case-after-checkpoint"
	w=$(tool wait "$L" --after "$S/hi.json" --by 3 --timeout 20)
	factj "$case" progress "$w"
	fact "$case" status_later "$(task_status "$name")"
	log "$case: original after the checkpoint: $(task_status "$name"), $w"
	cuda_states "$case" "$name"
	if [ -f "$D/runsc-cuda.json" ] && restore "$case" "$name" "$clone" "$D"; then
		if [ "$KIND" = late ] && [ "$MODE" != counter ]; then
			gpu_snap "$case-before-cuda-init"
			trigger_late "$case" "$name" "$clone"
			w=$(tool compare --ref "$L" --new "$LC" --through $((LATE_K + CMP_STEPS)) --lo "$S/lo.json" --hi "$S/hi.json" --timeout "$T_START")
			fact "$case" cuda_lines "$(grep -c 'phase=cuda' "$LC" 2>/dev/null)"
		else
			w=$(tool compare --ref "$L" --new "$LC" --count "$CMP_STEPS" --lo "$S/lo.json" --hi "$S/hi.json" --timeout "$T_STEP")
		fi
		factj "$case" compare "$w"
		log "$case: $clone against $name: $(echo "$w" | cut -c1-300)"
		gpu_snap "$case-with-clone"
	fi
	remove "$clone"
	if [ "$case" = 1-leave-running ] && has_class 4; then
		flow_clones "$name" "$D" "$S"
	fi
	remove "$name"
	rm -rf "$D"
}

# flow_clones LIKE DIR STEPS: class 4, three clones of class 1's image
# restored at the same time beside the running original.
flow_clones() {
	local like=$1 dir=$2 S=$3 case=4-clones L=$OUT/logs/$1.log n pids=()
	CASE=$case
	factj "$case" names '["m4a","m4b","m4c"]'
	fact "$case" started 1
	fact "$case" ckpt_rc "$(awk -F'\t' '$2 == "ckpt_rc" {print $3}' "$RES/1-leave-running.tsv" | tail -1)"
	if [ ! -f "$dir/runsc-cuda.json" ]; then
		fact "$case" skipped "class 1's checkpoint wrote no image"
		return
	fi
	tool steps "$L" >"$S/clones-start.json"
	for n in m4a m4b m4c; do
		(
			restore "$case.$n" "$like" "$n" "$dir"
		) &
		pids+=($!)
	done
	wait "${pids[@]}"
	gpu_snap "$case-running"
	for n in m4a m4b m4c; do
		# each clone's facts went to its own file; fold them into the case's
		sed 's/^\([sj]\)\t/\1\t'"$n"'./' "$RES/$case.$n.tsv" >>"$RES/$case.tsv" 2>/dev/null
		rm -f "$RES/$case.$n.tsv"
		if [ -s "$OUT/logs/$n.log" ]; then
			factj "$case" "$n.compare" "$(tool compare --ref "$L" --new "$OUT/logs/$n.log" --count "$CMP_STEPS" --lo "$S/lo.json" --hi "$S/hi.json" --timeout "$T_STEP")"
		fi
	done
	factj "$case" progress "$(tool wait "$L" --after "$S/clones-start.json" --by 3 --timeout 20)"
	log "$case: done"
	remove m4a m4b m4c
	CASE=1-leave-running
}

# flow_exit CASE KIND NAME TWIN RESTORED: exit checkpoint of NAME (a twin
# started with it runs uninterrupted), RESTORED restored from the image.
flow_exit() {
	local case=$1 name=$3 twin=$4 rst=$5
	KIND=$2
	CASE=$case
	local L=$OUT/logs/$name.log LT=$OUT/logs/$twin.log LR=$OUT/logs/$rst.log D=$WORK/img/$case S=$WORK/steps/$case out w t0 s
	mkdir -p "$S"
	factj "$case" names "[\"$name\",\"$twin\",\"$rst\"]"
	t0=$(now_ms)
	if ! out=$(start "$name" "$KIND" 2>&1) || ! out=$(start "$twin" "$KIND" 2>&1); then
		fact "$case" started 0
		fact "$case" start_error "$out"
		remove "$name" "$twin"
		return
	fi
	if ! w=$(tool wait "$L" --min-step "$WARM" --ntags "$(ntags "$KIND")" --timeout "$T_START" --t0-ms "$t0") ||
		! tool wait "$LT" --min-step "$WARM" --ntags "$(ntags "$KIND")" --timeout "$T_START" >/dev/null; then
		fact "$case" started 0
		fact "$case" start_error "$w $(tail -c 1500 "$L")"
		remove "$name" "$twin"
		return
	fi
	fact "$case" started 1
	factj "$case" warm "$w"
	gpu_snap "$case-before-checkpoint"
	ckpt "$case" "$name" "$D" --exit
	for _ in $(seq 100); do
		s=$(task_status "$name")
		[ "$s" = RUNNING ] || break
		sleep 0.1
	done
	fact "$case" status_after "$s"
	tool steps "$L" >"$S/pre.json"
	factj "$case" meta "$(tool meta "$D")"
	gpu_snap "$case-after-exit-checkpoint"
	if [ ! -f "$D/runsc-cuda.json" ]; then
		# no image: does the workload go on?
		factj "$case" progress "$(tool wait "$L" --after "$S/pre.json" --by 3 --timeout 20)"
		fact "$case" status_later "$(task_status "$name")"
	elif restore "$case" "$name" "$rst" "$D"; then
		w=$(tool compare --ref "$LT" --new "$LR" --count "$CMP_STEPS" --pre-steps "$S/pre.json" --pre-log "$L" --timeout "$T_STEP")
		factj "$case" compare "$w"
		log "$case: $rst against twin $twin: $(echo "$w" | cut -c1-300)"
		gpu_snap "$case-restored"
	fi
	remove "$rst" "$name" "$twin"
	rm -rf "$D"
}

# ---------------------------------------------------------------- run
MX_MODE=$MODE MX_CLASSES=$CLASSES MX_GIB=$GIB MX_INTERVAL=$INTERVAL MX_CMP_STEPS=$CMP_STEPS MX_TORCH_PY=$TORCH_PY \
	MX_GPU=$(if [ "$MODE" = gpu ]; then head -1 "$OUT/gpu.txt"; else echo "no GPU ($MODE)"; fi) \
	MX_RUNSC=$("$BIN/runsc" --version 2>&1 | head -1) MX_CONTAINERD=$("$BIN/containerd" --version 2>&1 | head -1) \
	MX_SHIM=sha256:$(sha256sum "$BIN/containerd-shim-runsc-cuda-v1" | cut -c1-16) MX_TORCH=$TORCH_INFO MX_HOST=$(hostname) \
	"$HOSTPY" -c 'import json, os, sys
json.dump({k[3:].lower(): v for k, v in os.environ.items() if k.startswith("MX_")}, open(sys.argv[1], "w"), sort_keys=True)' "$RES/env.json"

if [ "$MODE" = gpu ] && [ "$TORCH_OK" != 1 ]; then
	for c in 1-leave-running 1-exit 2-leave-running 3-leave-running 3-exit 4-clones 5-ipc 5-ipc-annotated 6-managed 7-late-init; do
		fact "$c" skipped "$TORCH_PY has no torch with CUDA: $TORCH_INFO"
	done
	FORCE_RC=1
	exit 1
fi

set -m # each flow in its own process group, so that a limit can stop it whole
launch() { # launch NAME FUNCTION CASE ARGS...: FUNCTION CASE ARGS... in the background
	local name=$1
	shift
	("$@") >>"$OUT/logs/flow-$name.txt" 2>&1 &
	FLOWS+=($!)
	FLOW_NAMES+=("$name")
	FLOW_CASES+=("$2$([ "$2" = 1-leave-running ] && echo " 4-clones")")
}
(
	sleep "$T_ALL"
	log "time limit of $T_ALL s reached"
	kill -TERM $$
) >/dev/null 2>&1 &
WD_PID=$!
disown "$WD_PID"
{ has_class 1 || has_class 4; } && launch 1lr flow_lr 1-leave-running train m1o m1c
has_class 1 && launch 1x flow_exit 1-exit train m1x m1t m1r
has_class 3 && launch 3lr flow_lr 3-leave-running two m3o m3c
has_class 3 && launch 3x flow_exit 3-exit two m3x m3t m3r
has_class 2 && launch 2lr flow_lr 2-leave-running graph m2o m2c
has_class 5 && launch 5 flow_lr 5-ipc ipc m5o m5c
has_class 5 && launch 5a flow_lr 5-ipc-annotated ipc m5a m5d --annotation io.containerd.runsc-cuda.v1.cuda-ipc=true
has_class 6 && launch 6 flow_lr 6-managed managed m6o m6c
has_class 7 && launch 7 flow_lr 7-late-init late m7o m7c
set +m
log "flows: ${FLOW_NAMES[*]}"
for i in "${!FLOWS[@]}"; do
	wait "${FLOWS[$i]}"
	log "flow ${FLOW_NAMES[$i]} done after $(($(now_ms) - T_BEGIN)) ms"
done
FLOWS=()
