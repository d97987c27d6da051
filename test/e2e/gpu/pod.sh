#!/usr/bin/env bash
# GPU pod scenario: a CUDA pod checkpointed through the Kubernetes CRI and
# restored into a new pod by the restore annotation, on containerd 2.4 (whose
# CRI has no restore of its own), driven with crictl as the kubelet drives
# the CRI (docs/kubernetes.md):
#
#   1. a pod annotated io.containerd.runsc-cuda.v1.gpu=true (its sandbox
#      starts with GPU support) on a CNI bridge network (the bridge, host-local and loopback
#      plugins; bridge rcgpu0 on 10.249.7.0/24, removed at the end) runs the
#      CUDA workload (test/e2e/gpu/workload) holding GIB GiB of device memory
#      with known content and a device-side counter, its GPU passed as the
#      device plugin passes it (CRI devices);
#   2. `crictl checkpoint --export` (the kubelet's checkpoint API does the
#      same) writes a checkpoint archive while the pod runs on; the pod is
#      then removed (`crictl rmp -f`), its GPU memory released;
#   3. a new pod annotated io.containerd.runsc-cuda.v1.restore-from=ARCHIVE
#      runs a container of the same name and image: it restores, its device
#      memory bit-exact and its counter continuing from the checkpoint;
#   4. crictl stats of the restored container, its stop and the pod's
#      removal; nothing left behind (runsc state, the unpacked archive).
#
# Inputs (environment), as test/e2e/gpu/run.sh: BIN (the bundle: containerd,
# ctr, crictl, runsc, criu, cni/{bridge,host-local,loopback}, the shim, cuda-checkpoint, workload,
# mkimage, rcuda-config, busybox), OUT (default ./gpu-pod-results), WORK
# (default /var/lib/rcuda-gpu-pod, not under /tmp), GIB (default 1), LIBDIR,
# DRY=1 (no GPU: the workload keeps its pattern in host memory).
# Writes $OUT/pod.log, $OUT/results.json, the containers' logs and
# containerd's log.
set -uo pipefail
. "$(dirname "$0")/../../../hack/lib/containerd.sh"

BIN=${BIN:?set BIN to the directory with the binaries (see the header)}
BIN=$(cd "$BIN" && pwd)
OUT=${OUT:-$PWD/gpu-pod-results}
WORK=${WORK:-/var/lib/rcuda-gpu-pod}
GIB=${GIB:-1}
DRY=${DRY:-0}
IMG=localhost/rcuda-gpu:latest
PAUSE=localhost/rcuda-pause:latest
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
case "$WORK" in /tmp | /tmp/*) echo "WORK must not be under /tmp (runsc's sandbox mounts a tmpfs there)" >&2; exit 2 ;; esac

log() { printf '%s %s\n' "$(date +%H:%M:%S.%3N)" "$*" | tee -a "$OUT/pod.log" >&2; }
FAILS=0
declare -a RESULTS=() TIMINGS=()
check() {
	local name=$1
	shift
	if "$@"; then log "PASS $name"; RESULTS+=("{\"check\":\"$name\",\"pass\":true}")
	else log "FAIL $name"; RESULTS+=("{\"check\":\"$name\",\"pass\":false}"); FAILS=$((FAILS + 1)); fi
}
timing() { log "TIME $1 gib=$GIB ms=$2"; TIMINGS+=("{\"phase\":\"$1\",\"gib\":$GIB,\"ms\":$2}"); }
now_ms() { rc_now_ms; }
crictl() { timeout -s KILL 600 "$BIN/crictl" --runtime-endpoint "unix://$WORK/c.sock" --image-endpoint "unix://$WORK/c.sock" --timeout 300s "$@"; }
kctr() { timeout -s KILL 300 "$BIN/ctr" --address "$WORK/c.sock" --namespace k8s.io "$@"; }
last_counter() { grep -oE 'counter=[0-9]+' "$1" | tail -1 | cut -d= -f2; }
first_counter() { grep -oE 'counter=[0-9]+' "$1" | head -1 | cut -d= -f2; }
no_mismatch() { [ -s "$1" ] && grep -q 'tick=' "$1" && ! grep -E 'tick=' "$1" | grep -vq 'mismatches=0'; }
gpu_used_mib() {
	[ "$DRY" = 1 ] && { echo 0; return; }
	timeout -s KILL 30 nvidia-smi --query-compute-apps=used_memory --format=csv,noheader,nounits | awk '{s+=$1} END {print s+0}'
}
wait_line() { rc_wait_line "$@" || { log "timeout waiting for /$2/ in $1"; return 1; }; }

CPID=
BRIDGE=rcgpu0
cleanup() {
	log "cleanup"
	if [ -n "$CPID" ]; then
		for p in $(crictl pods -q 2>/dev/null); do crictl rmp -f "$p" >/dev/null 2>&1; done
		kill "$CPID" 2>/dev/null && wait "$CPID" 2>/dev/null
	fi
	cp "$WORK/containerd.log" "$OUT/containerd.log" 2>/dev/null
	ip link del "$BRIDGE" 2>/dev/null
	find /sys/fs/cgroup -depth -type d -path '*/rcuda-gpu-pod*' -exec rmdir {} \; 2>/dev/null
	grep -o " $WORK[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
	rm -rf "$WORK"
	local IFS=,
	printf '{"scenario":"gpu-pod","dry":%s,"fails":%d,"checks":[%s],"timings":[%s]}\n' \
		"$([ "$DRY" = 1 ] && echo true || echo false)" "$FAILS" "${RESULTS[*]}" "${TIMINGS[*]}" >"$OUT/results.json"
}
trap cleanup EXIT

DEVICES_JSON=()
if [ "$DRY" = 1 ]; then
	LIBDIR=""
	WL_EXTRA='"--host-memory"'
else
	rc_gpu || { echo "no NVIDIA GPU with libcuda.so.1 found (set LIBDIR), or run with DRY=1" >&2; exit 2; }
	LIBDIR=$RC_LIBDIR
	WL_EXTRA=
	for ((i = 1; i < ${#RC_DEVICES[@]}; i += 2)); do
		d=${RC_DEVICES[$i]}
		DEVICES_JSON+=("{\"container_path\":\"$d\",\"host_path\":\"$d\",\"permissions\":\"rwm\"}")
	done
fi

# ---------------------------------------------------------------- setup
rm -rf "$WORK"
mkdir -p "$WORK/root" "$WORK/state" "$WORK/tmp" "$WORK/ckpt" "$WORK/cni/net.d" "$WORK/cni/bin" "$WORK/logs"
cp "$BIN"/cni/* "$WORK/cni/bin/"
cat >"$WORK/cni/net.d/10-rcuda-gpu.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "rcuda-gpu-pod", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "subnet": "10.249.7.0/24", "dataDir": "$WORK/cni-ipam"}},
  {"type": "loopback"}]}
EOF
RC_CONFIG=$BIN/rcuda-config
RC_SHIM_ARGS=(--runsc "$BIN/runsc" --root "$WORK/runsc" --toggle-tool "$BIN/cuda-checkpoint")
[ -n "$LIBDIR" ] && RC_SHIM_ARGS+=(--driver-lib-dir "$LIBDIR")
rc_shim_config "$WORK/runsc-cuda.toml" --extra "$(printf '[checkpoint]\nrestore_roots = ["%s"]\nunpack_dir = "%s"\n' "$WORK/ckpt" "$WORK/unpack")" || exit 1
"$RC_CONFIG" containerd --dir "$WORK" --cri --sandbox-image "$PAUSE" --shim-config "$WORK/runsc-cuda.toml" \
	--cni-bin-dir "$WORK/cni/bin" --cni-conf-dir "$WORK/cni/net.d" --out "$WORK/config.toml" || exit 1
log "containerd $("$BIN/containerd" --version | head -1); runsc $("$BIN/runsc" --version | head -1)"
# The shim and criu (which the CRI checks for before a checkpoint) on PATH.
PATH=$BIN:$PATH TMPDIR=$WORK/tmp "$BIN/containerd" --config "$WORK/config.toml" >"$WORK/containerd.log" 2>&1 &
CPID=$!
for _ in $(seq 100); do crictl info >/dev/null 2>&1 && break; sleep 0.1; done
crictl info >/dev/null || { log "containerd's CRI did not come up"; exit 1; }

MK=("$BIN/mkimage" --out "$WORK/img.tar" --ref "$IMG" --busybox "$BIN/busybox" --file "/workload=$BIN/workload"
	--ldd "$BIN/workload" --ldd "$BIN/cuda-checkpoint" --cmd /workload)
if [ -n "$LIBDIR" ]; then
	MK+=(--ldd "$LIBDIR/libcuda.so.1" --no-copy "$LIBDIR")
	[ -e "$LIBDIR/libnvidia-ml.so.1" ] && MK+=(--ldd "$LIBDIR/libnvidia-ml.so.1")
fi
timeout -s KILL 120 "${MK[@]}" >>"$OUT/pod.log" || exit 1
timeout -s KILL 60 "$BIN/mkimage" --out "$WORK/pause.tar" --ref "$PAUSE" --busybox "$BIN/busybox" --cmd "/bin/sleep 2147483647" >>"$OUT/pod.log" || exit 1
kctr images import "$WORK/img.tar" >/dev/null && kctr images import "$WORK/pause.tar" >/dev/null || exit 1

# pod_config NAME [ANNOTATIONS...]: the pod's config, annotated for GPUs
# (its sandbox starts with nvproxy) unless DRY, in a pod cgroup of its own
# as the kubelet gives every pod (without one, on cgroup v2, every pod's
# sandbox shares the CRI's /k8s.io, which runsc then cannot remove when the
# pod restore replaces the sandbox); container_config NAME
pod_config() {
	local name=$1 a json annotations=()
	shift
	[ "$DRY" = 1 ] || annotations+=('"io.containerd.runsc-cuda.v1.gpu": "true"')
	for a in "$@"; do annotations+=("$a"); done
	json=$(IFS=,; echo "{${annotations[*]}}")
	set -- "$name"
	mkdir -p "$WORK/logs/$1"
	cat >"$WORK/pod-$1.json" <<EOF
{"metadata": {"name": "$1", "namespace": "gpu", "uid": "$1-$RANDOM$RANDOM", "attempt": 0},
 "log_directory": "$WORK/logs/$1",
 "linux": {"cgroup_parent": "/rcuda-gpu-pod/pod-$1", "security_context": {"namespace_options": {"pid": 1}}},
 "annotations": $json}
EOF
	echo "$WORK/pod-$1.json"
}
container_config() {
	local IFS=,
	cat >"$WORK/ctr-$1.json" <<EOF
{"metadata": {"name": "$1"}, "image": {"image": "$IMG"},
 "command": ["/workload"], "args": ["--gib", "$GIB", "--interval", "500ms"${WL_EXTRA:+,$WL_EXTRA}],
 "log_path": "$1.log", "devices": [${DEVICES_JSON[*]}],
 "linux": {}}
EOF
	echo "$WORK/ctr-$1.json"
}

# ---------------------------------------------------------------- 1. the pod
t=$(now_ms)
P1CFG=$(pod_config gpu-orig)
P1=$(crictl runp --runtime runsc-cuda "$P1CFG") || { log "runp failed"; exit 1; }
C1=$(crictl create "$P1" "$(container_config cuda)" "$P1CFG") && crictl start "$C1" >/dev/null || { log "container failed"; exit 1; }
L1=$WORK/logs/gpu-orig/cuda.log
wait_line "$L1" 'tick=3 ' 300
timing pod-start-to-tick3 $(($(now_ms) - t))
used=$(gpu_used_mib)
log "GPU memory in use: $used MiB"
[ "$DRY" = 1 ] || check pod-holds-gpu-memory test "$used" -gt $((GIB * 1000))
check pod-stats crictl stats -o json "$C1" >/dev/null
crictl inspectp -o go-template --template '{{.status.network.ip}}' "$P1" >"$WORK/ip1"

# ---------------------------------------------------------------- 2. checkpoint
ARCHIVE=$WORK/ckpt/cuda.tar
b0=$(last_counter "$L1")
t=$(now_ms)
crictl checkpoint --export="$ARCHIVE" "$C1" >>"$OUT/pod.log" 2>&1
timing cri-checkpoint-export $(($(now_ms) - t))
check checkpoint-archive-written test -s "$ARCHIVE"
log "archive: $(du -h "$ARCHIVE" | cut -f1); $(tar -tf "$ARCHIVE" | tr '\n' ' ' | cut -c1-300)"
tar -xOf "$ARCHIVE" checkpoint/runsc-cuda.json >"$OUT/metadata.json" 2>/dev/null
b1=$(last_counter "$L1")
wait_line "$L1" "counter=$((b1 + 2)) " 60
check original-runs-on test "$(crictl inspect -o go-template --template '{{.status.state}}' "$C1")" = CONTAINER_RUNNING
t=$(now_ms)
crictl rmp -f "$P1" >/dev/null
timing rmp-original $(($(now_ms) - t))
for _ in $(seq 100); do [ "$(gpu_used_mib)" -eq 0 ] && break; sleep 0.1; done
check gpu-released-after-removal test "$(gpu_used_mib)" -eq 0

# ---------------------------------------------------------------- 3. restore
t=$(now_ms)
P2CFG=$(pod_config gpu-restored "\"io.containerd.runsc-cuda.v1.restore-from\": \"$ARCHIVE\"")
P2=$(crictl runp --runtime runsc-cuda "$P2CFG") || { log "runp failed"; exit 1; }
C2=$(crictl create "$P2" "$(container_config cuda)" "$P2CFG") && crictl start "$C2" >>"$OUT/pod.log" 2>&1
timing restore-pod-runp-create-start $(($(now_ms) - t))
L2=$WORK/logs/gpu-restored/cuda.log
wait_line "$L2" 'tick=' 120
timing restore-pod-to-first-tick $(($(now_ms) - t))
first=$(first_counter "$L2")
# The image holds the counter of some moment during the checkpoint: the
# restored workload's first is past the last one printed before the
# checkpoint began and at most one past the last printed when it returned.
log "counter before the checkpoint: $b0, when it returned: $b1; first after the restore: $first"
check counter-continues test -n "$first" -a "${first:-0}" -gt "$b0" -a "${first:-0}" -le $((b1 + 1))
wait_line "$L2" "counter=$((first + 3)) " 60
check device-memory-bit-exact no_mismatch "$L2"
[ "$DRY" = 1 ] || check gpu-reacquired test "$(gpu_used_mib)" -gt $((GIB * 1000))
# The restored pod is on the network at its own new address (the shim
# moves the restored sandbox's interfaces to the new pod's).
IP1=$(cat "$WORK/ip1" 2>/dev/null)
IP2=$(crictl inspectp -o go-template --template '{{.status.network.ip}}' "$P2")
log "pod addresses: original $IP1, restored $IP2"
has_addr() { crictl exec "$C2" /bin/busybox ip -4 addr show eth0 2>&1 | tee -a "$OUT/pod.log" | grep -q "inet $IP2/"; }
check restored-pod-has-its-address has_addr
if command -v ping >/dev/null; then check restored-pod-answers-ping timeout -s KILL 20 ping -c 2 -W 5 "$IP2"; fi
check restored-stats crictl stats -o json "$C2" >/dev/null
check restored-running test "$(crictl inspect -o go-template --template '{{.status.state}}' "$C2")" = CONTAINER_RUNNING

# ---------------------------------------------------------------- 4. stop, remove
t=$(now_ms)
crictl stop --timeout 10 "$C2" >/dev/null
timing stop-restored $(($(now_ms) - t))
check restored-stopped test "$(crictl inspect -o go-template --template '{{.status.state}}' "$C2")" = CONTAINER_EXITED
crictl rmp -f "$P2" >/dev/null
check nothing-unpacked-left test -z "$(ls -A "$WORK/unpack/k8s.io" 2>/dev/null)"
check no-runsc-state-left test -z "$(ls -A "$WORK/runsc/k8s.io" 2>/dev/null)"
cp "$L1" "$OUT/cuda-orig.log"
cp "$L2" "$OUT/cuda-restored.log"
log "done: $FAILS failed"
[ "$FAILS" -eq 0 ]
