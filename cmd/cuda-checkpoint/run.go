package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime/debug"
	"strings"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/cuda/driver"
)

// Exit codes besides the CUresult of a failed driver call (see helpText).
const (
	exitOK       = 0
	exitFailure  = 1  // a state the operation cannot start from; other failures
	exitUsage    = 64 // EX_USAGE: bad command line or environment
	exitNoDriver = 69 // EX_UNAVAILABLE: no libcuda, or older than r570
)

// version is the tool's version, set at build time with
// -ldflags "-X main.version=<version>"; empty means the module build info.
var version string

// run executes one invocation and returns its exit code. getenv reads the
// environment; openDriver is called only for operations that need the
// driver.
func run(args []string, getenv func(string) string, stdout, stderr io.Writer, openDriver func() (driver.Driver, error)) int {
	o, err := parseArgs(args)
	if err != nil {
		fmt.Fprintf(stderr, "cuda-checkpoint: %v\nRun 'cuda-checkpoint --help' for usage.\n", err)
		return exitUsage
	}
	if o.op == opHelp {
		printHelp(stdout)
		return exitOK
	}
	if o.op == opVersion {
		return printVersion(stdout, stderr, openDriver)
	}

	cfg, err := configure(o, getenv)
	if err != nil {
		fmt.Fprintf(stderr, "cuda-checkpoint: %v\n", err)
		return exitUsage
	}
	drv, err := openDriver()
	if err != nil {
		fmt.Fprintf(stderr, "cuda-checkpoint: %v\n", err)
		return exitCode(err)
	}
	if len(cfg.inject) > 0 {
		drv = &faultyDriver{Driver: drv, fail: cfg.inject}
	}

	err = execute(drv, o, cfg, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "cuda-checkpoint: %v\n", err)
		if h := hint(err, o.pid, driverVersion(drv)); h != "" {
			fmt.Fprintf(stderr, "cuda-checkpoint: hint: %s\n", h)
		}
	}
	return exitCode(err)
}

// config is what the environment adds to the command line.
type config struct {
	timeoutMs uint32
	pairs     []driver.GPUPair
	// pairsFromEnv is set when the device map came from the environment
	// (the shim sets it for restores), not from --device-map.
	pairsFromEnv bool
	inject       map[string]bool
}

// configure resolves the lock timeout, the device map and the injected
// failures from the options and the environment.
func configure(o options, getenv func(string) string) (config, error) {
	var c config
	c.timeoutMs = o.timeoutMs
	if !o.timeoutSet {
		if v := strings.TrimSpace(getenv(envLockTimeout)); v != "" {
			ms, err := parseTimeout(v)
			if err != nil {
				return c, usagef("invalid %s=%q: %v", envLockTimeout, v, err)
			}
			c.timeoutMs = ms
		}
	}
	if o.op == opToggle || o.action == actionRestore {
		m, src, err := deviceMap(o, getenv)
		if err != nil {
			return c, err
		}
		if c.pairs, err = driver.ParseDeviceMap(m); err != nil {
			return c, usagef("%s: %v", src, err)
		}
		c.pairsFromEnv = src != "--device-map"
	}
	inject, err := parseInject(getenv(envInject))
	if err != nil {
		return c, err
	}
	c.inject = inject
	return c, nil
}

// deviceMap returns the device map text and where it came from.
func deviceMap(o options, getenv func(string) string) (string, string, error) {
	if o.deviceMapSet {
		return o.deviceMap, "--device-map", nil
	}
	if v := getenv(envDeviceMap); strings.TrimSpace(v) != "" {
		return v, envDeviceMap, nil
	}
	if p := strings.TrimSpace(getenv(envDeviceMapFile)); p != "" {
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			return "", "", nil
		}
		if err != nil {
			return "", "", usagef("%s=%s: %v", envDeviceMapFile, p, err)
		}
		return string(b), envDeviceMapFile + "=" + p, nil
	}
	return "", "", nil
}

// execute runs the operation of o.
func execute(d driver.Driver, o options, c config, stdout io.Writer) error {
	switch o.op {
	case opGetState:
		s, err := d.ProcessState(o.pid)
		if err != nil {
			return fmt.Errorf("error getting the CUDA state of process ID %d: %w", o.pid, err)
		}
		fmt.Fprintln(stdout, s)
		return nil
	case opGetRestoreTID:
		tid, err := d.RestoreThreadID(o.pid)
		if err != nil {
			return fmt.Errorf("error getting the CUDA restore thread ID of process ID %d: %w", o.pid, err)
		}
		fmt.Fprintln(stdout, tid)
		return nil
	case opToggle:
		return toggle(d, o.pid, c)
	case opAction:
		return action(d, o.action, o.pid, c)
	}
	return usagef("unknown operation %s", o.op)
}

// action performs one step. Steps do not roll back: their caller (CRIU's
// CUDA plugin, a test) sequences them.
func action(d driver.Driver, act string, pid int, c config) error {
	var err error
	switch act {
	case actionLock:
		err = d.Lock(pid, c.timeoutMs)
	case actionCheckpoint:
		err = d.Checkpoint(pid)
	case actionRestore:
		err = d.Restore(pid, c.pairs)
	case actionUnlock:
		err = d.Unlock(pid)
	default:
		return usagef("unknown action %q", act)
	}
	if err != nil {
		return fmt.Errorf("error performing %s on process ID %d: %w%s", act, pid, err, stateNote(d, pid))
	}
	return nil
}

// toggle moves a running process to checkpointed (lock, then checkpoint;
// unlocking again if the checkpoint fails) and a checkpointed one back to
// running (restore, then unlock).
func toggle(d driver.Driver, pid int, c config) error {
	s, err := d.ProcessState(pid)
	if err != nil {
		return fmt.Errorf("error toggling CUDA in process ID %d: %w", pid, err)
	}
	switch s {
	case driver.StateRunning:
		if err := d.Lock(pid, c.timeoutMs); err != nil {
			return fmt.Errorf("error toggling CUDA in process ID %d: lock failed: %w%s", pid, err, stateNote(d, pid))
		}
		if err := d.Checkpoint(pid); err != nil {
			if uerr := d.Unlock(pid); uerr != nil {
				return &stepError{step: actionCheckpoint, err: fmt.Errorf("error toggling CUDA in process ID %d: checkpoint failed: %w; rollback (unlock) failed too: %v%s",
					pid, err, uerr, stateNote(d, pid))}
			}
			return &stepError{step: actionCheckpoint, rolledBack: true, err: fmt.Errorf("error toggling CUDA in process ID %d: checkpoint failed: %w; rolled back: unlocked again%s",
				pid, err, stateNote(d, pid))}
		}
		return nil
	case driver.StateCheckpointed:
		err := d.Restore(pid, c.pairs)
		if code, ok := driver.ResultOf(err); ok && code == driver.ErrorInvalidValue && c.pairsFromEnv && len(c.pairs) > 0 {
			// The environment's map names the GPUs of the checkpoint this
			// container was restored from; a later checkpoint of the restored
			// container already refers to the new GPUs. Restore in place.
			err = d.Restore(pid, nil)
		}
		if err != nil {
			return &stepError{step: actionRestore, err: fmt.Errorf("error toggling CUDA in process ID %d: restore failed: %w%s", pid, err, stateNote(d, pid))}
		}
		if err := d.Unlock(pid); err != nil {
			return fmt.Errorf("error toggling CUDA in process ID %d: restored, but unlock failed: %w%s; retry with --action unlock",
				pid, err, stateNote(d, pid))
		}
		return nil
	case driver.StateLocked:
		return &stateError{fmt.Sprintf("cannot toggle CUDA in process ID %d: it is locked (neither running nor checkpointed); continue with --action checkpoint or resume with --action unlock", pid)}
	default:
		return &stateError{fmt.Sprintf("cannot toggle CUDA in process ID %d: its CUDA state is %s", pid, s)}
	}
}

// stepError is a toggle that failed in one of its steps.
type stepError struct {
	step string
	// rolledBack is set when the process was left running again.
	rolledBack bool
	err        error
}

func (e *stepError) Error() string { return e.err.Error() }
func (e *stepError) Unwrap() error { return e.err }

// stateError is a process in a state the operation cannot start from.
type stateError struct{ msg string }

func (e *stateError) Error() string { return e.msg }

// stateNote reports the state a failure left the process in.
func stateNote(d driver.Driver, pid int) string {
	s, err := d.ProcessState(pid)
	if err != nil {
		return fmt.Sprintf("; CUDA state of process ID %d unknown: %v", pid, err)
	}
	return fmt.Sprintf("; CUDA state of process ID %d is now %s", pid, s)
}

// exitCode maps an error to the exit status (see helpText).
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var ue *usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	if errors.Is(err, driver.ErrNoDriver) || errors.Is(err, driver.ErrDriverTooOld) {
		return exitNoDriver
	}
	if code, ok := driver.ResultOf(err); ok {
		if c := int(uint32(code) & 0xff); c != 0 {
			return c
		}
	}
	return exitFailure
}

// hint says what a failure means and what to do about it; drv, when
// known, is the driver's version ("" when unknown).
func hint(err error, pid int, drv string) string {
	var se *stepError
	if errors.As(err, &se) {
		switch {
		case se.step == actionRestore && isCode(err, driver.ErrorOutOfMemory):
			return fmt.Sprintf("the GPUs have not enough free memory for the CUDA state of process ID %d (other processes hold it); free GPU memory and retry", pid)
		case se.step == actionRestore:
			return fmt.Sprintf("the CUDA state of process ID %d could not be put back onto the GPUs. A process that imported another process's device memory through CUDA IPC (cudaIpcOpenMemHandle; PyTorch's torch.multiprocessing passing CUDA tensors) cannot be restored by this NVIDIA driver (%s): NVIDIA supports checkpoints of CUDA IPC from driver r610. For a restore with a device map, check that each new UUID names a GPU of this host", pid, orUnknown(drv))
		case se.step == actionCheckpoint && isCode(err, driver.ErrorNotSupported):
			what := "the process keeps its CUDA state"
			if se.rolledBack {
				what = "the toggle was rolled back and the process keeps running"
			}
			return fmt.Sprintf("this NVIDIA driver (%s) cannot checkpoint what process ID %d uses: CUDA managed memory (cudaMallocManaged, unified memory) is not supported by the driver's checkpoint API, nor CUDA IPC memory before r610; %s", orUnknown(drv), pid, what)
		}
	}
	code, ok := driver.ResultOf(err)
	if !ok {
		return ""
	}
	switch code {
	case driver.ErrorNotInitialized:
		return fmt.Sprintf("process ID %d has no CUDA state this driver can reach: it is not a CUDA process, has not initialized CUDA yet, or runs outside this tool's PID namespace or sandbox (for a gVisor container, run the tool inside the sandbox, e.g. through runsc checkpoint --cuda-checkpoint-path)", pid)
	case driver.ErrorInvalidValue:
		return fmt.Sprintf("check that process ID %d exists in this PID namespace, and for a restore with a device map that each new UUID names a GPU of this host and that every GPU the process can see is listed", pid)
	case driver.ErrorIllegalState:
		return "the process is not in a state that allows this operation; check it with --get-state"
	case driver.ErrorNotPermitted:
		return "run as root (or as the process's user); on some hosts the GPUs need persistence mode (nvidia-smi -pm 1)"
	case driver.ErrorNotSupported:
		return "the driver cannot checkpoint this process (for example it uses managed (unified) memory, or CUDA IPC before driver r610)"
	case driver.ErrorTimeout:
		return "the lock timed out (--timeout, " + envLockTimeout + "); the process keeps running"
	}
	return ""
}

func isCode(err error, code driver.Result) bool {
	c, ok := driver.ResultOf(err)
	return ok && c == code
}

func orUnknown(v string) string {
	if v == "" {
		return "version unknown"
	}
	return v
}

// driverVersion names the driver's CUDA version for hints ("CUDA 13.0"),
// "" when unknown.
func driverVersion(d driver.Driver) string {
	v, err := d.Version()
	if err != nil || v <= 0 {
		return ""
	}
	return "CUDA " + driver.FormatDriverVersion(v)
}

// printVersion prints the tool's and the driver's versions.
func printVersion(stdout, stderr io.Writer, openDriver func() (driver.Driver, error)) int {
	fmt.Fprintf(stdout, "cuda-checkpoint %s (containerd-shim-runsc-cuda; compatible with NVIDIA cuda-checkpoint)\n", toolVersion())
	d, err := openDriver()
	if err != nil {
		fmt.Fprintf(stderr, "cuda-checkpoint: %v\n", err)
		return exitCode(err)
	}
	v, err := d.Version()
	if err != nil {
		fmt.Fprintf(stderr, "cuda-checkpoint: cuDriverGetVersion: %v\n", err)
		return exitCode(err)
	}
	fmt.Fprintf(stdout, "CUDA driver version %s (cuDriverGetVersion %d)\n", driver.FormatDriverVersion(v), v)
	return exitOK
}

func toolVersion() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(devel)"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += " " + s.Value[:12]
		}
	}
	if v == "" {
		v = "(devel)"
	}
	return v
}

// injectSteps are the steps CUDA_CHECKPOINT_INJECT_FAILURE can fail.
var injectSteps = []string{"get-state", actionLock, actionCheckpoint, actionRestore, actionUnlock, "get-restore-tid"}

func parseInject(v string) (map[string]bool, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return nil, nil
	}
	steps := map[string]bool{}
	for _, s := range strings.Split(v, ",") {
		s = strings.ToLower(strings.TrimSpace(s))
		if s == "" {
			continue
		}
		valid := false
		for _, known := range injectSteps {
			valid = valid || s == known
		}
		if !valid {
			return nil, usagef("invalid %s=%q: unknown step %q, want some of %s", envInject, v, s, strings.Join(injectSteps, ", "))
		}
		steps[s] = true
	}
	return steps, nil
}

// faultyDriver fails the steps named in CUDA_CHECKPOINT_INJECT_FAILURE
// without calling the driver for them; every other call goes through.
type faultyDriver struct {
	driver.Driver
	fail map[string]bool
}

func (f *faultyDriver) injected(step, op string) error {
	if !f.fail[step] {
		return nil
	}
	return &driver.Error{
		Op:          op,
		Code:        driver.ErrorUnknown,
		Name:        driver.ErrorUnknown.Name(),
		Description: fmt.Sprintf("injected failure (%s=%s)", envInject, step),
	}
}

func (f *faultyDriver) ProcessState(pid int) (driver.ProcessState, error) {
	if err := f.injected("get-state", "cuCheckpointProcessGetState"); err != nil {
		return 0, err
	}
	return f.Driver.ProcessState(pid)
}

func (f *faultyDriver) Lock(pid int, timeoutMs uint32) error {
	if err := f.injected(actionLock, "cuCheckpointProcessLock"); err != nil {
		return err
	}
	return f.Driver.Lock(pid, timeoutMs)
}

func (f *faultyDriver) Checkpoint(pid int) error {
	if err := f.injected(actionCheckpoint, "cuCheckpointProcessCheckpoint"); err != nil {
		return err
	}
	return f.Driver.Checkpoint(pid)
}

func (f *faultyDriver) Restore(pid int, pairs []driver.GPUPair) error {
	if err := f.injected(actionRestore, "cuCheckpointProcessRestore"); err != nil {
		return err
	}
	return f.Driver.Restore(pid, pairs)
}

func (f *faultyDriver) Unlock(pid int) error {
	if err := f.injected(actionUnlock, "cuCheckpointProcessUnlock"); err != nil {
		return err
	}
	return f.Driver.Unlock(pid)
}

func (f *faultyDriver) RestoreThreadID(pid int) (int, error) {
	if err := f.injected("get-restore-tid", "cuCheckpointProcessGetRestoreThreadId"); err != nil {
		return 0, err
	}
	return f.Driver.RestoreThreadID(pid)
}
