# Shell helpers shared by the demo (hack/demo.sh), the GPU scenario
# (test/e2e/gpu/run.sh) and the benchmark (bench/): a private containerd with
# its own root, state and socket, configured for containerd-shim-runsc-cuda-v1.
# Source it; it defines functions and sets nothing until they are called.
#
#   rc_start WORK CONTAINERD CTR SHIM_DIR RUNSC [TOGGLE_TOOL [LIBDIR]]
#       writes WORK/config.toml and WORK/runsc-cuda.toml with rcuda-config
#       (test/e2e/cmd/rcuda-config, in the bundle; $RC_CONFIG, default
#       SHIM_DIR/rcuda-config), starts containerd (logging to
#       WORK/containerd.log) and sets RC_PID, RC_CTR (an array: the ctr
#       command line) and RC_RUNTIME (ctr's --runtime arguments).
#   rc_shim_config FILE [FLAG...]
#       writes the shim config rc_start wrote, with more rcuda-config shim
#       flags (e.g. --runsc-flag debug=true), to FILE.
#   rc_stop WORK       kills every task, stops containerd, unmounts and
#                      removes WORK.
#   rc_wait_line FILE REGEX TIMEOUT_S
#   rc_gpu             sets RC_LIBDIR and RC_DEVICES (ctr --device args) when
#                      an NVIDIA GPU and its driver are present; fails if not.
#   rc_now_ms

rc_now_ms() { date +%s%3N; }

rc_start() {
	local work=$1 containerd=$2 ctr=$3 shimdir=$4 runsc=$5 tool=${6:-} libdir=${7:-}
	case "$work" in /tmp | /tmp/*) echo "rc_start: $work is under /tmp, where runsc cannot run" >&2; return 2 ;; esac
	rm -rf "$work"
	mkdir -p "$work/root" "$work/state" "$work/tmp"
	RC_CONFIG=${RC_CONFIG:-$shimdir/rcuda-config}
	if [ ! -x "$RC_CONFIG" ]; then
		echo "rc_start: no $RC_CONFIG: build test/e2e/cmd/rcuda-config (make bundle does) or set RC_CONFIG" >&2
		return 2
	fi
	RC_SHIM_ARGS=(--runsc "$runsc" --root "$work/runsc")
	if [ -n "$tool" ]; then RC_SHIM_ARGS+=(--toggle-tool "$tool"); fi
	if [ -n "$libdir" ]; then RC_SHIM_ARGS+=(--driver-lib-dir "$libdir"); fi
	"$RC_CONFIG" containerd --dir "$work" --out "$work/config.toml" || return 1
	rc_shim_config "$work/runsc-cuda.toml" || return 1
	# containerd finds containerd-shim-runsc-cuda-v1 on its PATH; it unpacks
	# checkpoints into TMPDIR, kept inside WORK.
	PATH=$shimdir:$PATH TMPDIR=$work/tmp "$containerd" --config "$work/config.toml" >"$work/containerd.log" 2>&1 &
	RC_PID=$!
	RC_CTR=("$ctr" --address "$work/c.sock" --namespace rcuda)
	RC_RUNTIME=(--runtime io.containerd.runsc-cuda.v1 --runtime-config-path "$work/runsc-cuda.toml")
	local i
	for i in $(seq 100); do
		[ -S "$work/c.sock" ] && "${RC_CTR[@]}" version >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "containerd did not start; see $work/containerd.log" >&2
	return 1
}

rc_shim_config() {
	local file=$1
	shift
	"$RC_CONFIG" shim "${RC_SHIM_ARGS[@]}" "$@" --out "$file"
}

rc_stop() {
	local work=$1 t c
	if [ -n "${RC_PID:-}" ]; then
		for t in $(timeout 20 "${RC_CTR[@]}" tasks ls -q 2>/dev/null); do
			timeout 20 "${RC_CTR[@]}" tasks kill -s KILL "$t" >/dev/null 2>&1
		done
		sleep 1
		for t in $(timeout 20 "${RC_CTR[@]}" tasks ls -q 2>/dev/null); do
			timeout 20 "${RC_CTR[@]}" tasks rm -f "$t" >/dev/null 2>&1
		done
		for c in $(timeout 20 "${RC_CTR[@]}" containers ls -q 2>/dev/null); do
			timeout 20 "${RC_CTR[@]}" containers rm "$c" >/dev/null 2>&1
		done
		kill "$RC_PID" 2>/dev/null && wait "$RC_PID" 2>/dev/null
		RC_PID=
	fi
	grep -o " $work[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
	rm -rf "$work"
}

rc_wait_line() {
	local end=$((SECONDS + $3))
	while [ $SECONDS -lt $end ]; do
		grep -qE "$2" "$1" 2>/dev/null && return 0
		sleep 0.05
	done
	echo "timeout waiting for /$2/ in $1" >&2
	return 1
}

rc_gpu() {
	command -v nvidia-smi >/dev/null 2>&1 || [ -x /usr/local/nvidia/bin/nvidia-smi ] || return 1
	RC_LIBDIR=${LIBDIR:-}
	if [ -z "$RC_LIBDIR" ]; then
		local d
		for d in /usr/local/nvidia/lib64 /usr/lib/x86_64-linux-gnu /usr/lib64; do
			[ -e "$d/libcuda.so.1" ] && RC_LIBDIR=$d && break
		done
	fi
	[ -e "$RC_LIBDIR/libcuda.so.1" ] || return 1
	RC_DEVICES=()
	local dev
	for dev in /dev/nvidiactl /dev/nvidia-uvm /dev/nvidia-uvm-tools /dev/nvidia0; do
		[ -e "$dev" ] && RC_DEVICES+=(--device "$dev")
	done
	[ ${#RC_DEVICES[@]} -ge 6 ]
}
