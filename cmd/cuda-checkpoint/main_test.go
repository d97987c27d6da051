package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/cuda/driver"
)

// fakeDriver simulates the driver's checkpoint state machine for a few
// processes:
//
//	running --lock--> locked --checkpoint--> checkpointed --restore--> locked --unlock--> running
//
// A step from the wrong state fails with CUDA_ERROR_ILLEGAL_STATE, an
// unknown pid with CUDA_ERROR_NOT_INITIALIZED (as for a non-CUDA process).
type fakeDriver struct {
	version int
	states  map[int]driver.ProcessState
	fail    map[string]driver.Result // step -> CUresult to fail with
	calls   []string
}

func newFake(states map[int]driver.ProcessState) *fakeDriver {
	return &fakeDriver{version: 13000, states: states, fail: map[string]driver.Result{}}
}

func (f *fakeDriver) step(name string, pid int, from, to driver.ProcessState, op string) error {
	s, ok := f.states[pid]
	if !ok {
		return driver.NewError(op, driver.ErrorNotInitialized)
	}
	if code, ok := f.fail[name]; ok {
		// A failed step leaves the state as it was.
		return driver.NewError(op, code)
	}
	if s != from {
		return driver.NewError(op, driver.ErrorIllegalState)
	}
	f.states[pid] = to
	return nil
}

func (f *fakeDriver) Version() (int, error) { return f.version, nil }

func (f *fakeDriver) ProcessState(pid int) (driver.ProcessState, error) {
	f.calls = append(f.calls, fmt.Sprintf("get-state(%d)", pid))
	if code, ok := f.fail["get-state"]; ok {
		return 0, driver.NewError("cuCheckpointProcessGetState", code)
	}
	s, ok := f.states[pid]
	if !ok {
		return 0, driver.NewError("cuCheckpointProcessGetState", driver.ErrorNotInitialized)
	}
	return s, nil
}

func (f *fakeDriver) Lock(pid int, timeoutMs uint32) error {
	f.calls = append(f.calls, fmt.Sprintf("lock(%d,%d)", pid, timeoutMs))
	return f.step("lock", pid, driver.StateRunning, driver.StateLocked, "cuCheckpointProcessLock")
}

func (f *fakeDriver) Checkpoint(pid int) error {
	f.calls = append(f.calls, fmt.Sprintf("checkpoint(%d)", pid))
	return f.step("checkpoint", pid, driver.StateLocked, driver.StateCheckpointed, "cuCheckpointProcessCheckpoint")
}

func (f *fakeDriver) Restore(pid int, pairs []driver.GPUPair) error {
	f.calls = append(f.calls, fmt.Sprintf("restore(%d,%q)", pid, driver.FormatDeviceMap(pairs)))
	if code, ok := f.fail["restore-with-pairs"]; ok && len(pairs) > 0 {
		return driver.NewError("cuCheckpointProcessRestore", code)
	}
	return f.step("restore", pid, driver.StateCheckpointed, driver.StateLocked, "cuCheckpointProcessRestore")
}

func (f *fakeDriver) Unlock(pid int) error {
	f.calls = append(f.calls, fmt.Sprintf("unlock(%d)", pid))
	return f.step("unlock", pid, driver.StateLocked, driver.StateRunning, "cuCheckpointProcessUnlock")
}

func (f *fakeDriver) RestoreThreadID(pid int) (int, error) {
	f.calls = append(f.calls, fmt.Sprintf("get-restore-tid(%d)", pid))
	if _, ok := f.states[pid]; !ok {
		return 0, driver.NewError("cuCheckpointProcessGetRestoreThreadId", driver.ErrorNotInitialized)
	}
	return pid + 1, nil
}

const (
	gpuA = "GPU-00000000-0000-0000-0000-00000000000a"
	gpuB = "GPU-00000000-0000-0000-0000-00000000000b"
)

func TestRun(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		states     map[int]driver.ProcessState // initial; nil: pid 42 running
		fail       map[string]driver.Result
		noDriver   error
		wantCode   int
		wantStdout string
		wantStderr []string // substrings
		wantCalls  []string // nil: not checked
		wantState  driver.ProcessState
	}{
		{
			name: "get-state running", args: []string{"--get-state", "--pid", "42"},
			wantCode: 0, wantStdout: "running\n", wantCalls: []string{"get-state(42)"}, wantState: driver.StateRunning,
		},
		{
			name: "get-state short flags and = form", args: []string{"--get-state", "-p", "42"},
			states: map[int]driver.ProcessState{42: driver.StateCheckpointed}, wantStdout: "checkpointed\n", wantState: driver.StateCheckpointed,
		},
		{
			name: "get-state locked", args: []string{"--get-state", "--pid=42"},
			states: map[int]driver.ProcessState{42: driver.StateLocked}, wantStdout: "locked\n", wantState: driver.StateLocked,
		},
		{
			name: "get-state failed", args: []string{"--pid", "42", "--get-state"},
			states: map[int]driver.ProcessState{42: driver.StateFailed}, wantStdout: "failed\n", wantState: driver.StateFailed,
		},
		{
			name: "get-state of a non-CUDA process fails with exit 3", args: []string{"--get-state", "--pid", "7"},
			wantCode: 3, wantStderr: []string{"error getting the CUDA state of process ID 7", "CUDA_ERROR_NOT_INITIALIZED", "hint: process ID 7 has no CUDA state"},
			wantState: driver.StateRunning,
		},
		{
			name: "toggle running to checkpointed", args: []string{"--toggle", "--pid", "42"},
			wantCalls: []string{"get-state(42)", "lock(42,0)", "checkpoint(42)"}, wantState: driver.StateCheckpointed,
		},
		{
			name: "toggle checkpointed to running", args: []string{"--toggle", "--pid", "42"},
			states:    map[int]driver.ProcessState{42: driver.StateCheckpointed},
			wantCalls: []string{"get-state(42)", `restore(42,"")`, "unlock(42)"}, wantState: driver.StateRunning,
		},
		{
			name: "toggle lock timeout from env", args: []string{"--toggle", "--pid", "42"},
			env:       map[string]string{envLockTimeout: "2500"},
			wantCalls: []string{"get-state(42)", "lock(42,2500)", "checkpoint(42)"}, wantState: driver.StateCheckpointed,
		},
		{
			name: "toggle --timeout beats env", args: []string{"--toggle", "--pid", "42", "-t", "10"},
			env:       map[string]string{envLockTimeout: "2500"},
			wantCalls: []string{"get-state(42)", "lock(42,10)", "checkpoint(42)"}, wantState: driver.StateCheckpointed,
		},
		{
			name: "toggle rolls back a failed checkpoint", args: []string{"--toggle", "--pid", "42"},
			fail:     map[string]driver.Result{"checkpoint": driver.ErrorNotSupported},
			wantCode: 801 & 0xff,
			wantStderr: []string{"checkpoint failed", "CUDA_ERROR_NOT_SUPPORTED", "rolled back: unlocked again",
				"CUDA state of process ID 42 is now running", "cannot checkpoint what process ID 42 uses: CUDA managed memory"},
			wantCalls: []string{"get-state(42)", "lock(42,0)", "checkpoint(42)", "unlock(42)", "get-state(42)"},
			wantState: driver.StateRunning,
		},
		{
			name: "toggle reports a failed rollback", args: []string{"--toggle", "--pid", "42"},
			fail:       map[string]driver.Result{"checkpoint": driver.ErrorUnknown, "unlock": driver.ErrorIllegalState},
			wantCode:   999 & 0xff,
			wantStderr: []string{"checkpoint failed", "rollback (unlock) failed too", "CUDA state of process ID 42 is now locked"},
			wantState:  driver.StateLocked,
		},
		{
			name: "toggle lock failure leaves the process running", args: []string{"--toggle", "--pid", "42"},
			fail:       map[string]driver.Result{"lock": driver.ErrorTimeout},
			wantCode:   909 & 0xff,
			wantStderr: []string{"lock failed", "CUDA_ERROR_TIMEOUT", "is now running", "hint: the lock timed out"},
			wantCalls:  []string{"get-state(42)", "lock(42,0)", "get-state(42)"},
			wantState:  driver.StateRunning,
		},
		{
			name: "toggle restore failure reports the state", args: []string{"--toggle", "--pid", "42"},
			states:     map[int]driver.ProcessState{42: driver.StateCheckpointed},
			fail:       map[string]driver.Result{"restore": driver.ErrorOutOfMemory},
			wantCode:   2,
			wantStderr: []string{"restore failed", "CUDA_ERROR_OUT_OF_MEMORY", "is now checkpointed", "hint: the GPUs have not enough free memory"},
			wantCalls:  []string{"get-state(42)", `restore(42,"")`, "get-state(42)"},
			wantState:  driver.StateCheckpointed,
		},
		{
			name: "toggle unlock failure after restore", args: []string{"--toggle", "--pid", "42"},
			states:     map[int]driver.ProcessState{42: driver.StateCheckpointed},
			fail:       map[string]driver.Result{"unlock": driver.ErrorUnknown},
			wantCode:   231,
			wantStderr: []string{"restored, but unlock failed", "is now locked", "retry with --action unlock"},
			wantState:  driver.StateLocked,
		},
		{
			name: "toggle refuses a locked process", args: []string{"--toggle", "--pid", "42"},
			states:   map[int]driver.ProcessState{42: driver.StateLocked},
			wantCode: exitFailure, wantStderr: []string{"it is locked", "--action unlock"},
			wantCalls: []string{"get-state(42)"}, wantState: driver.StateLocked,
		},
		{
			name: "toggle refuses a failed process", args: []string{"--toggle", "--pid", "42"},
			states:   map[int]driver.ProcessState{42: driver.StateFailed},
			wantCode: exitFailure, wantStderr: []string{"its CUDA state is failed"}, wantState: driver.StateFailed,
		},
		{
			name: "toggle restore with device map", args: []string{"--toggle", "--pid", "42", "--device-map", gpuA + "=" + gpuB},
			states:    map[int]driver.ProcessState{42: driver.StateCheckpointed},
			wantCalls: []string{"get-state(42)", `restore(42,"` + gpuA + "=" + gpuB + `")`, "unlock(42)"},
			wantState: driver.StateRunning,
		},
		{
			name: "toggle restore with device map from env", args: []string{"--toggle", "--pid", "42"},
			states:    map[int]driver.ProcessState{42: driver.StateCheckpointed},
			env:       map[string]string{envDeviceMap: gpuB + "=" + gpuA},
			wantCalls: []string{"get-state(42)", `restore(42,"` + gpuB + "=" + gpuA + `")`, "unlock(42)"},
			wantState: driver.StateRunning,
		},
		{
			name: "toggle restore retries in place when the env map does not apply", args: []string{"--toggle", "--pid", "42"},
			states:    map[int]driver.ProcessState{42: driver.StateCheckpointed},
			env:       map[string]string{envDeviceMap: gpuB + "=" + gpuA},
			fail:      map[string]driver.Result{"restore-with-pairs": driver.ErrorInvalidValue},
			wantCalls: []string{"get-state(42)", `restore(42,"` + gpuB + "=" + gpuA + `")`, `restore(42,"")`, "unlock(42)"},
			wantState: driver.StateRunning,
		},
		{
			name: "toggle restore does not second-guess an explicit --device-map", args: []string{"--toggle", "--pid", "42", "--device-map", gpuA + "=" + gpuB},
			states:     map[int]driver.ProcessState{42: driver.StateCheckpointed},
			fail:       map[string]driver.Result{"restore-with-pairs": driver.ErrorInvalidValue},
			wantCode:   1,
			wantStderr: []string{"restore failed", "could not be put back onto the GPUs", "CUDA IPC", "r610"},
			wantCalls:  []string{"get-state(42)", `restore(42,"` + gpuA + "=" + gpuB + `")`, "get-state(42)"},
			wantState:  driver.StateCheckpointed,
		},
		{
			name: "action sequence: lock with timeout", args: []string{"--action", "lock", "--pid", "42", "--timeout", "500"},
			wantCalls: []string{"lock(42,500)"}, wantState: driver.StateLocked,
		},
		{
			name: "action checkpoint", args: []string{"--action=checkpoint", "--pid", "42"},
			states: map[int]driver.ProcessState{42: driver.StateLocked}, wantCalls: []string{"checkpoint(42)"}, wantState: driver.StateCheckpointed,
		},
		{
			name: "action restore with device map", args: []string{"--action", "restore", "--pid", "42", "--device-map=" + gpuA + "=" + gpuB},
			states:    map[int]driver.ProcessState{42: driver.StateCheckpointed},
			wantCalls: []string{`restore(42,"` + gpuA + "=" + gpuB + `")`}, wantState: driver.StateLocked,
		},
		{
			name: "action unlock", args: []string{"--action", "unlock", "--pid", "42"},
			states: map[int]driver.ProcessState{42: driver.StateLocked}, wantCalls: []string{"unlock(42)"}, wantState: driver.StateRunning,
		},
		{
			name: "action from the wrong state", args: []string{"--action", "checkpoint", "--pid", "42"},
			wantCode: 401 & 0xff, wantStderr: []string{"error performing checkpoint on process ID 42", "CUDA_ERROR_ILLEGAL_STATE", "is now running"},
			wantState: driver.StateRunning,
		},
		{
			name: "get-restore-tid", args: []string{"--get-restore-tid", "--pid", "42"},
			wantStdout: "43\n", wantCalls: []string{"get-restore-tid(42)"}, wantState: driver.StateRunning,
		},
		{
			name: "get-restore-tid of a non-CUDA process", args: []string{"--get-restore-tid", "--pid", "7"},
			wantCode: 3, wantStderr: []string{"restore thread ID of process ID 7"}, wantState: driver.StateRunning,
		},

		// Injected failures.
		{
			name: "inject checkpoint: lock runs, checkpoint fails, unlock rolls back", args: []string{"--toggle", "--pid", "42"},
			env:        map[string]string{envInject: "checkpoint"},
			wantCode:   231,
			wantStderr: []string{"injected failure (CUDA_CHECKPOINT_INJECT_FAILURE=checkpoint)", "rolled back", "is now running"},
			wantCalls:  []string{"get-state(42)", "lock(42,0)", "unlock(42)", "get-state(42)"},
			wantState:  driver.StateRunning,
		},
		{
			name: "inject lock", args: []string{"--toggle", "--pid", "42"},
			env:       map[string]string{envInject: "lock"},
			wantCode:  231,
			wantCalls: []string{"get-state(42)", "get-state(42)"}, wantState: driver.StateRunning,
		},
		{
			name: "inject restore leaves the process checkpointed", args: []string{"--toggle", "--pid", "42"},
			states: map[int]driver.ProcessState{42: driver.StateCheckpointed},
			env:    map[string]string{envInject: " Restore "}, wantCode: 231,
			wantStderr: []string{"restore failed", "is now checkpointed"},
			wantCalls:  []string{"get-state(42)", "get-state(42)"}, wantState: driver.StateCheckpointed,
		},
		{
			name: "inject unlock after a real restore", args: []string{"--toggle", "--pid", "42"},
			states: map[int]driver.ProcessState{42: driver.StateCheckpointed},
			env:    map[string]string{envInject: "unlock"}, wantCode: 231,
			wantCalls: []string{"get-state(42)", `restore(42,"")`, "get-state(42)"}, wantState: driver.StateLocked,
		},
		{
			name: "inject get-state", args: []string{"--get-state", "--pid", "42"},
			env: map[string]string{envInject: "get-state"}, wantCode: 231, wantCalls: []string{}, wantState: driver.StateRunning,
		},
		{
			name: "inject checkpoint does not touch the other direction", args: []string{"--toggle", "--pid", "42"},
			states: map[int]driver.ProcessState{42: driver.StateCheckpointed},
			env:    map[string]string{envInject: "checkpoint,lock"}, wantState: driver.StateRunning,
		},

		// Usage errors: exit 64, no driver call.
		{name: "no arguments", args: nil, wantCode: exitUsage, wantStderr: []string{"no operation given", "--help"}, wantCalls: []string{}},
		{name: "no pid", args: []string{"--toggle"}, wantCode: exitUsage, wantStderr: []string{"--toggle needs --pid"}, wantCalls: []string{}},
		{name: "bad pid", args: []string{"--get-state", "--pid", "abc"}, wantCode: exitUsage, wantStderr: []string{`invalid pid "abc"`}},
		{name: "zero pid", args: []string{"--get-state", "--pid", "0"}, wantCode: exitUsage},
		{name: "pid without value", args: []string{"--get-state", "--pid"}, wantCode: exitUsage, wantStderr: []string{"--pid needs a value"}},
		{name: "two operations", args: []string{"--get-state", "--toggle", "--pid", "1"}, wantCode: exitUsage, wantStderr: []string{"cannot be combined"}},
		{name: "bad action", args: []string{"--action", "freeze", "--pid", "1"}, wantCode: exitUsage, wantStderr: []string{`unknown action "freeze"`}},
		{name: "unknown flag", args: []string{"--get-state", "--pid", "1", "--verbose"}, wantCode: exitUsage, wantStderr: []string{`unknown argument "--verbose"`}},
		{name: "timeout on get-state", args: []string{"--get-state", "--pid", "1", "--timeout", "5"}, wantCode: exitUsage, wantStderr: []string{"--timeout applies only"}},
		{name: "negative timeout", args: []string{"--action", "lock", "--pid", "1", "--timeout", "-5"}, wantCode: exitUsage},
		{name: "huge timeout", args: []string{"--action", "lock", "--pid", "1", "--timeout", "4294967296"}, wantCode: exitUsage, wantStderr: []string{"at most 4294967295"}},
		{name: "device map on lock", args: []string{"--action", "lock", "--pid", "1", "--device-map", gpuA + "=" + gpuB}, wantCode: exitUsage},
		{name: "bad device map", args: []string{"--toggle", "--pid", "42", "--device-map", "x=y"}, wantCode: exitUsage, wantStderr: []string{"--device-map: invalid GPU UUID"}, wantCalls: []string{}, wantState: driver.StateRunning},
		{name: "flag value on a switch", args: []string{"--toggle=yes", "--pid", "1"}, wantCode: exitUsage, wantStderr: []string{"takes no value"}},
		{name: "bad timeout env", args: []string{"--toggle", "--pid", "42"}, env: map[string]string{envLockTimeout: "soon"}, wantCode: exitUsage, wantStderr: []string{"invalid CUDA_CHECKPOINT_LOCK_TIMEOUT_MS"}, wantCalls: []string{}, wantState: driver.StateRunning},
		{name: "bad inject env", args: []string{"--toggle", "--pid", "42"}, env: map[string]string{envInject: "checkpoint,explode"}, wantCode: exitUsage, wantStderr: []string{`unknown step "explode"`}, wantCalls: []string{}, wantState: driver.StateRunning},

		// Help, version, driver problems.
		{name: "help", args: []string{"--help"}, wantCode: 0, wantCalls: []string{}},
		{name: "help wins", args: []string{"--toggle", "-h"}, wantCode: 0},
		{
			name: "no driver", args: []string{"--get-state", "--pid", "42"},
			noDriver: fmt.Errorf("%w: libcuda.so.1 could not be loaded: x; is the driver's library directory mounted in the container?", driver.ErrNoDriver),
			wantCode: exitNoDriver, wantStderr: []string{"no NVIDIA driver found", "mounted in the container"},
		},
		{
			name: "old driver", args: []string{"--toggle", "--pid", "42"},
			noDriver: fmt.Errorf("%w: checkpoint API needs r570+", driver.ErrDriverTooOld),
			wantCode: exitNoDriver, wantStderr: []string{"driver too old: checkpoint API needs r570+"},
		},
		{
			name: "version", args: []string{"--version"},
			wantCode: 0, wantStdout: "CUDA driver version 13.0 (cuDriverGetVersion 13000)\n",
		},
		{
			name: "version without driver", args: []string{"--version"},
			noDriver: fmt.Errorf("%w: nope", driver.ErrNoDriver), wantCode: exitNoDriver, wantStderr: []string{"no NVIDIA driver found"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			states := tt.states
			if states == nil {
				states = map[int]driver.ProcessState{42: driver.StateRunning}
			}
			fake := newFake(states)
			for k, v := range tt.fail {
				fake.fail[k] = v
			}
			opened := false
			open := func() (driver.Driver, error) {
				opened = true
				if tt.noDriver != nil {
					return nil, tt.noDriver
				}
				return fake, nil
			}
			getenv := func(k string) string { return tt.env[k] }
			var stdout, stderr bytes.Buffer
			code := run(tt.args, getenv, &stdout, &stderr, open)
			if code != tt.wantCode {
				t.Errorf("exit code = %d, want %d; stderr:\n%s", code, tt.wantCode, stderr.String())
			}
			if tt.wantStdout != "" && !strings.HasSuffix(stdout.String(), tt.wantStdout) {
				t.Errorf("stdout = %q, want (ending in) %q", stdout.String(), tt.wantStdout)
			}
			if tt.wantCode == 0 && tt.name != "version" && !strings.HasPrefix(tt.name, "help") && stderr.Len() > 0 {
				t.Errorf("stderr on success: %q", stderr.String())
			}
			if tt.wantCode != 0 && stdout.Len() > 0 && tt.name != "version without driver" {
				t.Errorf("stdout on failure: %q", stdout.String())
			}
			for _, w := range tt.wantStderr {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
				}
			}
			if tt.wantCalls != nil {
				calls := fake.calls
				if calls == nil {
					calls = []string{}
				}
				if !reflect.DeepEqual(calls, tt.wantCalls) {
					t.Errorf("driver calls = %q, want %q", calls, tt.wantCalls)
				}
			}
			if tt.wantCode == exitUsage && opened {
				t.Error("the driver was opened for a usage error")
			}
			if tt.noDriver == nil && tt.wantCode != exitUsage && !strings.HasPrefix(tt.name, "help") {
				if got := states[42]; got != tt.wantState {
					t.Errorf("final state of 42 = %s, want %s", got, tt.wantState)
				}
			}
		})
	}
}

// TestHelpIsNVIDIACompatible checks what tools probing the help text look
// for (CRIU's CUDA plugin runs "cuda-checkpoint -h" and searches it for the
// flags it needs).
func TestHelpIsNVIDIACompatible(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-h"}, func(string) string { return "" }, &stdout, &stderr, nil); code != 0 {
		t.Fatalf("-h exit code %d", code)
	}
	for _, flag := range []string{"--get-state", "--action", "lock | checkpoint | restore | unlock", "--toggle", "--get-restore-tid", "--pid|-p", "--timeout|-t", "--help|-h", "--device-map"} {
		if !strings.Contains(stdout.String(), flag) {
			t.Errorf("help lacks %q", flag)
		}
	}
}

func TestDeviceMapFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "device-map")
	if err := os.WriteFile(file, []byte(gpuA+"="+gpuB+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{name: "file", env: map[string]string{envDeviceMapFile: file}, want: gpuA + "=" + gpuB},
		{name: "missing file means no map", env: map[string]string{envDeviceMapFile: filepath.Join(dir, "absent")}, want: ""},
		{name: "literal beats file", env: map[string]string{envDeviceMapFile: file, envDeviceMap: gpuB + "=" + gpuA}, want: gpuB + "=" + gpuA},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fake := newFake(map[int]driver.ProcessState{42: driver.StateCheckpointed})
			var stdout, stderr bytes.Buffer
			code := run([]string{"--toggle", "--pid", "42"}, func(k string) string { return tt.env[k] }, &stdout, &stderr,
				func() (driver.Driver, error) { return fake, nil })
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			if want := fmt.Sprintf("restore(42,%q)", tt.want); fake.calls[1] != want {
				t.Errorf("calls = %q, want %s", fake.calls, want)
			}
		})
	}
}

func TestExitCode(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{nil, 0},
		{driver.NewError("x", driver.ErrorNotInitialized), 3},
		{fmt.Errorf("wrapped: %w", driver.NewError("x", driver.ErrorNotSupported)), 33},
		{driver.NewError("x", 512), 1}, // 0 modulo 256 must not look like success
		{usagef("bad"), exitUsage},
		{fmt.Errorf("%w: x", driver.ErrNoDriver), exitNoDriver},
		{&stateError{"locked"}, exitFailure},
		{errors.New("other"), exitFailure},
	}
	for _, tt := range tests {
		if got := exitCode(tt.err); got != tt.want {
			t.Errorf("exitCode(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}
