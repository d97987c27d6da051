package main

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/cuda/driver"
)

// TestToggleLockTimesOut is the toggle tool timing out on a GPU container: the
// shim's cuda.lock_timeout reaches the tool as CUDA_CHECKPOINT_LOCK_TIMEOUT_MS
// (pkg/shim TestPrepareGPU), runsc runs the tool with fixed arguments, and a
// process whose CUDA work does not drain in time fails the lock with
// CUDA_ERROR_TIMEOUT. The tool must pass the timeout to the driver, exit with
// the CUresult (909 & 0xff = 141) so runsc fails the checkpoint and rolls back,
// say that the process keeps running, and leave it running: nothing was locked.
func TestToggleLockTimesOut(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want []string
	}{
		{"toggle, timeout from the environment", []string{"--toggle", "--pid", "42"}, map[string]string{envLockTimeout: "50"},
			[]string{"get-state(42)", "lock(42,50)", "get-state(42)"}},
		{"toggle, --timeout", []string{"--toggle", "--pid", "42", "--timeout", "75"}, nil,
			[]string{"get-state(42)", "lock(42,75)", "get-state(42)"}},
		{"action lock", []string{"--action", "lock", "--pid", "42"}, map[string]string{envLockTimeout: "10"},
			[]string{"lock(42,10)", "get-state(42)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := newFake(map[int]driver.ProcessState{42: driver.StateRunning})
			fake.fail["lock"] = driver.ErrorTimeout
			var stdout, stderr bytes.Buffer
			code := run(tc.args, func(k string) string { return tc.env[k] }, &stdout, &stderr,
				func() (driver.Driver, error) { return fake, nil })
			if code != 909&0xff {
				t.Errorf("exit %d, want %d (CUDA_ERROR_TIMEOUT)", code, 909&0xff)
			}
			if !reflect.DeepEqual(fake.calls, tc.want) {
				t.Errorf("calls %q, want %q", fake.calls, tc.want)
			}
			for _, w := range []string{"CUDA_ERROR_TIMEOUT", "is now running", "the lock timed out", "the process keeps running"} {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
				}
			}
			if fake.states[42] != driver.StateRunning {
				t.Errorf("process left %s, want running", fake.states[42])
			}
		})
	}
}

// TestToggleFailureRollsBackEveryStep fails each step of a checkpoint toggle in
// turn (as a driver error would) and checks the state the process is left in and
// that the exit status is non-zero, so runsc aborts the checkpoint: a failure
// before the checkpoint step leaves the process running (unlocking it when it was
// locked), a failure of the rollback itself is reported with the locked state.
func TestToggleFailureRollsBackEveryStep(t *testing.T) {
	for _, tc := range []struct {
		fail  []string
		state driver.ProcessState
		want  string
	}{
		{[]string{"get-state"}, driver.StateRunning, "error toggling CUDA"},
		{[]string{"lock"}, driver.StateRunning, "lock failed"},
		{[]string{"checkpoint"}, driver.StateRunning, "rolled back: unlocked again"},
		{[]string{"checkpoint", "unlock"}, driver.StateLocked, "rollback (unlock) failed too"},
	} {
		t.Run(strings.Join(tc.fail, "+"), func(t *testing.T) {
			fake := newFake(map[int]driver.ProcessState{42: driver.StateRunning})
			for _, f := range tc.fail {
				fake.fail[f] = driver.ErrorUnknown
			}
			var stdout, stderr bytes.Buffer
			code := run([]string{"--toggle", "--pid", "42"}, func(string) string { return "" }, &stdout, &stderr,
				func() (driver.Driver, error) { return fake, nil })
			if code == exitOK {
				t.Fatalf("exit 0 after a failed %v", tc.fail)
			}
			if fake.states[42] != tc.state {
				t.Errorf("process left %s, want %s", fake.states[42], tc.state)
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr lacks %q:\n%s", tc.want, stderr.String())
			}
		})
	}
}
