package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/cuda/driver"
)

// splitArgs turns a fuzzed string into a command line: arguments separated by
// NUL bytes, as in /proc/<pid>/cmdline.
func splitArgs(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, "\x00")
}

// FuzzParseArgs feeds arbitrary command lines to the tool's parser. It must
// never panic, and what it accepts must be one operation with what that
// operation needs: a positive pid (except --help and --version), a known
// action for --action, --timeout only for a lock, --device-map only for a
// restore. Seeds are in testdata/fuzz/FuzzParseArgs.
func FuzzParseArgs(f *testing.F) {
	f.Add("--toggle\x00--pid\x0042\x00--timeout=500")
	f.Fuzz(func(t *testing.T, cmdline string) {
		o, err := parseArgs(splitArgs(cmdline))
		if err != nil {
			if _, ok := err.(*usageError); !ok {
				t.Fatalf("parse error %T is not a usage error: %v", err, err)
			}
			return
		}
		switch o.op {
		case opHelp, opVersion:
			return
		case opGetState, opToggle, opGetRestoreTID:
			if o.action != "" {
				t.Fatalf("%s with action %q", o.op, o.action)
			}
		case opAction:
			switch o.action {
			case actionLock, actionCheckpoint, actionRestore, actionUnlock:
			default:
				t.Fatalf("accepted action %q", o.action)
			}
		default:
			t.Fatalf("accepted unknown operation %q", o.op)
		}
		if !o.pidSet || o.pid <= 0 {
			t.Fatalf("accepted %s without a positive pid: %+v", o.op, o)
		}
		if o.timeoutSet && o.op != opToggle && o.action != actionLock {
			t.Fatalf("accepted --timeout for %s %s", o.op, o.action)
		}
		if o.deviceMapSet && o.op != opToggle && o.action != actionRestore {
			t.Fatalf("accepted --device-map for %s %s", o.op, o.action)
		}
	})
}

// FuzzRun runs the whole tool, against the fake driver of main_test.go, with
// arbitrary command lines and environment (lock timeout, device map, injected
// failures). It must never panic; its exit status must be one the help text
// documents; a usage error must not touch the driver; and whatever happens,
// the fake process ends in a state of the driver's state machine, with a failed
// checkpoint toggle rolled back to running.
func FuzzRun(f *testing.F) {
	f.Add("--toggle\x00--pid\x0042", "", "", "", uint8(0))
	f.Fuzz(func(t *testing.T, cmdline, timeoutEnv, mapEnv, injectEnv string, initial uint8) {
		start := driver.ProcessState(initial % 4)
		fake := newFake(map[int]driver.ProcessState{42: start})
		env := map[string]string{envLockTimeout: timeoutEnv, envDeviceMap: mapEnv, envInject: injectEnv}
		opened := false
		var stdout, stderr bytes.Buffer
		code := run(splitArgs(cmdline), func(k string) string { return env[k] }, &stdout, &stderr,
			func() (driver.Driver, error) { opened = true; return fake, nil })
		if code < 0 || code > 255 {
			t.Fatalf("exit status %d", code)
		}
		if code == exitUsage && opened && !strings.Contains(cmdline, opVersion) {
			t.Fatalf("the driver was opened for a usage error: %s", stderr.String())
		}
		end := fake.states[42]
		if end < driver.StateRunning || end > driver.StateFailed {
			t.Fatalf("fake process left in state %d", end)
		}
		o, err := parseArgs(splitArgs(cmdline))
		if err != nil || o.op != opToggle || o.pid != 42 || start != driver.StateRunning {
			return
		}
		// A toggle of a running process ends checkpointed (success) or, when a
		// step failed, running again (rolled back) -- or locked when the
		// rollback itself failed, which the error says.
		switch {
		case code == exitOK && end != driver.StateCheckpointed:
			t.Fatalf("successful toggle left the process %s", end)
		case code != exitOK && end == driver.StateLocked && !strings.Contains(stderr.String(), "rollback (unlock) failed"):
			t.Fatalf("failed toggle left the process locked without saying so: %s", stderr.String())
		case code != exitOK && end == driver.StateCheckpointed:
			t.Fatalf("failed toggle left the process checkpointed: %s", stderr.String())
		}
	})
}
