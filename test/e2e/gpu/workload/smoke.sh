#!/usr/bin/env bash
# smoke.sh checks cuda-checkpoint and the GPU workload natively (no gVisor,
# no containerd) on a machine with an NVIDIA GPU and driver r570+: the
# toggle, the single actions, injected failures and their rollback, and that
# the workload's device memory and counter survive every round trip.
#
# Usage: smoke.sh <cuda-checkpoint binary> <workload binary> [GiB, default 2]
#
# Build both with CGO_ENABLED=0:
#   go build -o /tmp/cuda-checkpoint ./cmd/cuda-checkpoint
#   go build -o /tmp/workload ./test/e2e/gpu/workload
set -uo pipefail

CC=${1:?usage: smoke.sh <cuda-checkpoint> <workload> [GiB]}
WL=${2:?usage: smoke.sh <cuda-checkpoint> <workload> [GiB]}
GIB=${3:-2}
OUTF=$(mktemp) ERRF=$(mktemp)
FAILS=0
WPID=

cleanup() {
	[ -n "$WPID" ] && kill "$WPID" 2>/dev/null && wait "$WPID" 2>/dev/null
	rm -f "$OUTF" "$ERRF"
}
trap cleanup EXIT

fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
pass() { echo "ok:   $*"; }

# expect <wanted exit code> <description> <command...>
expect() {
	local want=$1 what=$2
	shift 2
	local out rc
	out=$("$@" 2>&1)
	rc=$?
	if [ "$rc" = "$want" ]; then pass "$what (exit $rc)"; else fail "$what: exit $rc, want $want: $out"; fi
}

# state_is <state>
state_is() {
	local got
	got=$("$CC" --get-state --pid "$WPID" 2>&1)
	if [ "$got" = "$1" ]; then pass "state $1"; else fail "state is '$got', want '$1'"; fi
}

last_tick() { grep '^tick=' "$OUTF" | tail -1 | sed 's/^tick=\([0-9]*\).*/\1/'; }

# advancing: the workload made progress in the last second.
advancing() {
	local before after
	before=$(last_tick)
	sleep 1
	after=$(last_tick)
	if [ "${after:-0}" -gt "${before:-0}" ]; then pass "workload advancing ($before -> $after)"; else fail "workload stuck at tick $before"; fi
}

"$WL" --gib "$GIB" --interval 100ms >"$OUTF" 2>"$ERRF" &
WPID=$!
for _ in $(seq 1 240); do
	grep -q '^ready$' "$OUTF" && break
	kill -0 "$WPID" 2>/dev/null || break
	sleep 0.25
done
grep -q '^ready$' "$OUTF" || { cat "$ERRF"; echo "FAIL: workload not ready"; exit 1; }
cat "$ERRF"

expect 0 "--version" "$CC" --version
state_is running
expect 3 "--get-state of a non-CUDA process" "$CC" --get-state --pid $$
expect 0 "--get-restore-tid" "$CC" --get-restore-tid --pid "$WPID"

expect 0 "toggle to checkpointed" "$CC" --toggle --pid "$WPID"
state_is checkpointed
if command -v nvidia-smi >/dev/null; then
	if nvidia-smi --query-compute-apps=pid --format=csv,noheader | grep -qx "$WPID"; then
		fail "checkpointed workload still holds GPU memory"
	else
		pass "checkpointed workload released the GPU"
	fi
fi
expect 0 "toggle to running" "$CC" --toggle --pid "$WPID"
state_is running
advancing

expect 0 "--action lock" "$CC" --action lock --pid "$WPID" --timeout 10000
state_is locked
expect 0 "--action checkpoint" "$CC" --action checkpoint --pid "$WPID"
state_is checkpointed
expect 0 "--action restore" "$CC" --action restore --pid "$WPID"
state_is locked
expect 0 "--action unlock" "$CC" --action unlock --pid "$WPID"
state_is running
expect 145 "--action unlock when running (CUDA_ERROR_ILLEGAL_STATE)" "$CC" --action unlock --pid "$WPID"
advancing

expect 231 "injected checkpoint failure" env CUDA_CHECKPOINT_INJECT_FAILURE=checkpoint "$CC" --toggle --pid "$WPID"
state_is running
advancing
expect 0 "toggle to checkpointed" "$CC" --toggle --pid "$WPID"
expect 231 "injected restore failure" env CUDA_CHECKPOINT_INJECT_FAILURE=restore "$CC" --toggle --pid "$WPID"
state_is checkpointed
expect 0 "toggle to running after the failed restore" "$CC" --toggle --pid "$WPID"
state_is running
advancing

kill "$WPID"
wait "$WPID" 2>/dev/null
WPID=
read -r lines bad mism < <(awk '/^tick=/ { split($1, t, "="); split($2, c, "="); split($3, m, "="); n++; if (t[2] != c[2]) b++; if (m[2] != 0) x++ } END { print n+0, b+0, x+0 }' "$OUTF")
if [ "$lines" -gt 0 ] && [ "$bad" = 0 ] && [ "$mism" = 0 ]; then
	pass "$lines ticks, counter == tick and no mismatches on every line"
else
	fail "$lines ticks: $bad with counter != tick, $mism with mismatches"
	grep '^tick=' "$OUTF" | tail -5
fi

expect 0 "workload --ticks 3" "$WL" --gib 0.25 --ticks 3 --interval 10ms

if [ "$FAILS" -gt 0 ]; then
	echo "$FAILS check(s) failed"
	exit 1
fi
echo "all checks passed"
