package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/cuda/driver"
)

// Operations; exactly one per invocation.
const (
	opGetState      = "--get-state"
	opToggle        = "--toggle"
	opAction        = "--action"
	opGetRestoreTID = "--get-restore-tid"
	opHelp          = "--help"
	opVersion       = "--version"
)

// Actions of --action.
const (
	actionLock       = "lock"
	actionCheckpoint = "checkpoint"
	actionRestore    = "restore"
	actionUnlock     = "unlock"
)

// Environment variables the tool reads (see package driver).
const (
	envLockTimeout   = driver.EnvLockTimeout
	envInject        = driver.EnvInjectFailure
	envDeviceMap     = driver.EnvDeviceMap
	envDeviceMapFile = driver.EnvDeviceMapFile
)

// options is a parsed command line.
type options struct {
	op           string
	action       string
	pid          int
	pidSet       bool
	timeoutMs    uint32
	timeoutSet   bool
	deviceMap    string
	deviceMapSet bool
}

// usageError is a bad command line or environment (exit code exitUsage).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// parseArgs parses the command line the way NVIDIA's cuda-checkpoint takes
// it: "--flag value" or "--flag=value", short forms -p, -t and -h.
func parseArgs(args []string) (options, error) {
	var o options
	setOp := func(op string) error {
		if o.op != "" && o.op != op {
			return usagef("%s and %s cannot be combined: give one operation", o.op, op)
		}
		o.op = op
		return nil
	}
	for i := 0; i < len(args); i++ {
		arg := args[i]
		name, value, hasValue := strings.Cut(arg, "=")
		if !strings.HasPrefix(name, "--") {
			// Short flags take no "=": "-p=1" is not accepted.
			name, value, hasValue = arg, "", false
		}
		takeValue := func() (string, error) {
			if hasValue {
				return value, nil
			}
			if i+1 >= len(args) {
				return "", usagef("%s needs a value", name)
			}
			i++
			return args[i], nil
		}
		noValue := func() error {
			if hasValue {
				return usagef("%s takes no value", name)
			}
			return nil
		}
		switch name {
		case "--help", "-h":
			// Help wins over everything else, as with most tools.
			return options{op: opHelp}, nil
		case opVersion:
			if err := noValue(); err != nil {
				return o, err
			}
			if err := setOp(opVersion); err != nil {
				return o, err
			}
		case opGetState, opToggle, opGetRestoreTID:
			if err := noValue(); err != nil {
				return o, err
			}
			if err := setOp(name); err != nil {
				return o, err
			}
		case opAction:
			v, err := takeValue()
			if err != nil {
				return o, err
			}
			switch v {
			case actionLock, actionCheckpoint, actionRestore, actionUnlock:
			default:
				return o, usagef("unknown action %q: want lock, checkpoint, restore or unlock", v)
			}
			if err := setOp(opAction); err != nil {
				return o, err
			}
			if o.action != "" && o.action != v {
				return o, usagef("--action given twice (%s, %s)", o.action, v)
			}
			o.action = v
		case "--pid", "-p":
			v, err := takeValue()
			if err != nil {
				return o, err
			}
			pid, err := strconv.Atoi(v)
			if err != nil || pid <= 0 {
				return o, usagef("invalid pid %q: want a positive process id", v)
			}
			o.pid, o.pidSet = pid, true
		case "--timeout", "-t":
			v, err := takeValue()
			if err != nil {
				return o, err
			}
			ms, err := parseTimeout(v)
			if err != nil {
				return o, usagef("invalid %s %q: %v", name, v, err)
			}
			o.timeoutMs, o.timeoutSet = ms, true
		case "--device-map":
			v, err := takeValue()
			if err != nil {
				return o, err
			}
			o.deviceMap, o.deviceMapSet = v, true
		default:
			return o, usagef("unknown argument %q", arg)
		}
	}
	switch o.op {
	case "":
		return o, usagef("no operation given: use --get-state, --toggle, --action or --get-restore-tid")
	case opVersion:
		return o, nil
	}
	if !o.pidSet {
		return o, usagef("%s needs --pid <pid>", o.op)
	}
	if o.timeoutSet && !(o.op == opToggle || o.action == actionLock) {
		return o, usagef("--timeout applies only to --action lock and --toggle")
	}
	if o.deviceMapSet && !(o.op == opToggle || o.action == actionRestore) {
		return o, usagef("--device-map applies only to --action restore and --toggle")
	}
	return o, nil
}

// parseTimeout parses milliseconds for CUcheckpointLockArgs.timeoutMs.
func parseTimeout(s string) (uint32, error) {
	v, err := strconv.ParseUint(strings.TrimSpace(s), 10, 32)
	if err != nil {
		var ne *strconv.NumError
		if errors.As(err, &ne) && errors.Is(ne.Err, strconv.ErrRange) {
			return 0, fmt.Errorf("at most %d milliseconds", uint32(1<<32-1))
		}
		return 0, errors.New("want milliseconds as a non-negative integer")
	}
	return uint32(v), nil
}

const helpText = `CUDA checkpoint and restore utility (containerd-shim-runsc-cuda).
Compatible with NVIDIA's cuda-checkpoint; built on the CUDA driver API
(cuCheckpointProcess*, NVIDIA driver r570 or newer).

Operations:
--get-state --pid <pid>
        Prints the current checkpoint state of the process specified by <pid>:
        running, locked, checkpointed or failed.

--action lock | checkpoint | restore | unlock --pid <pid> [--timeout <ms>] [--device-map <map>]
        Performs the specified action on <pid>.
        For the lock action a timeout can be provided, the lock operation will
        wait up to <ms> milliseconds for the operation to succeed.

--toggle --pid <pid> [--timeout <ms>] [--device-map <map>]
        Toggles the CUDA state in the specified process between the running and
        checkpointed states (lock + checkpoint, or restore + unlock). If the
        checkpoint step fails, the process is unlocked again and keeps running.

--get-restore-tid --pid <pid>
        Retrieves the CUDA restore thread ID of the process specified by <pid>

--version
        Prints the version of this tool and of the CUDA driver.

Options:
--pid|-p <pid>
        The pid upon which to perform the operation

--timeout|-t <timeout>
        Optional timeout that can be specified for the lock action in milliseconds
        (default: $CUDA_CHECKPOINT_LOCK_TIMEOUT_MS, else 0: the driver's default)

--device-map <oldUuid1=newUuid1,oldUuid2=newUuid2,...>
        GPU remapping for restore (driver r580+). UUIDs as nvidia-smi -L prints
        them (GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx); list every GPU the process
        can see. Default: $CUDA_CHECKPOINT_DEVICE_MAP, else the contents of the
        file named by $CUDA_CHECKPOINT_DEVICE_MAP_FILE (if it exists), else none.

--help|-h
        Print this help message

Environment:
CUDA_CHECKPOINT_LOCK_TIMEOUT_MS   default for --timeout
CUDA_CHECKPOINT_DEVICE_MAP        default for --device-map
CUDA_CHECKPOINT_DEVICE_MAP_FILE   file holding the default for --device-map
CUDA_CHECKPOINT_INJECT_FAILURE    testing only: comma-separated steps among
        get-state, lock, checkpoint, restore, unlock, get-restore-tid that fail
        with an injected CUDA_ERROR_UNKNOWN instead of calling the driver. The
        steps before still run, and a failed toggle rolls back as for a real
        failure.

Exit status:
0       success
1..255  the CUresult of the failing driver call, modulo 256 (as NVIDIA's tool:
        3 = CUDA_ERROR_NOT_INITIALIZED, e.g. not a CUDA process; 145 = 401
        CUDA_ERROR_ILLEGAL_STATE; 231 = 999 CUDA_ERROR_UNKNOWN, also injected
        failures); a code that is 0 modulo 256 exits 1
1       the process is in a state the operation cannot start from
64      bad command line or environment
69      no usable NVIDIA driver (libcuda.so.1 missing, or older than r570)
`

func printHelp(w io.Writer) {
	fmt.Fprint(w, helpText)
}
