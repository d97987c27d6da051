package runsc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// One method per runsc verb. Each verb's options are a struct whose args
// method builds the verb's arguments, in a fixed order, container id last.

// CreateOpts are the options of `runsc create`.
type CreateOpts struct {
	// IO is the container's stdio, given to the sandbox (root container).
	IO            runc.IO
	ConsoleSocket runc.ConsoleSocket
	PidFile       string
	UserLog       string
}

func (o CreateOpts) args(id, bundle string) []string {
	args := []string{"create", "--bundle", bundle}
	if o.PidFile != "" {
		args = append(args, "--pid-file", o.PidFile)
	}
	if o.ConsoleSocket != nil {
		args = append(args, "--console-socket", o.ConsoleSocket.Path())
	}
	if o.UserLog != "" {
		args = append(args, "--user-log", o.UserLog)
	}
	return append(args, id)
}

// Create creates a container from a bundle; it does not start it.
func (r *Runsc) Create(ctx context.Context, id, bundle string, o CreateOpts) error {
	return r.withIO(ctx, o.args(id, bundle), o.IO)
}

// Start starts a created container. IO is given for subcontainers only.
func (r *Runsc) Start(ctx context.Context, id string, cio runc.IO) error {
	return r.withIO(ctx, []string{"start", id}, cio)
}

// RestoreOpts are the options of `runsc restore`.
type RestoreOpts struct {
	ImagePath string
	// Direct reads the image with O_DIRECT.
	Direct bool
	// Background lets the sandbox keep loading pages after restore returns
	// (uncompressed images only).
	Background bool
	IO         runc.IO
}

func (o RestoreOpts) args(id, bundle string) []string {
	args := []string{"restore", "--detach", "--bundle", bundle, "--image-path", o.ImagePath}
	if o.Direct {
		args = append(args, "--direct")
	}
	if o.Background {
		args = append(args, "--background")
	}
	return append(args, id)
}

// Restore restores a created container from a checkpoint image, detached.
func (r *Runsc) Restore(ctx context.Context, id, bundle string, o RestoreOpts) error {
	return r.withIO(ctx, o.args(id, bundle), o.IO)
}

// CheckpointOpts are the options of `runsc checkpoint`.
type CheckpointOpts struct {
	ImagePath    string
	LeaveRunning bool
	// Compression is "none" or "flate-best-speed"; empty keeps runsc's default.
	Compression               string
	Direct                    bool
	ExcludeCommittedZeroPages bool
	// CudaCheckpointPath is the toggle tool's path inside the container.
	CudaCheckpointPath       string
	CudaCheckpointSequential bool
}

// Args returns the checkpoint verb's arguments for container id (the shim
// logs them).
func (o CheckpointOpts) Args(id string) []string {
	args := []string{"checkpoint", "--image-path", o.ImagePath}
	if o.LeaveRunning {
		args = append(args, "--leave-running")
	}
	if o.Compression != "" {
		args = append(args, "--compression="+o.Compression)
	}
	if o.Direct {
		args = append(args, "--direct")
	}
	if o.ExcludeCommittedZeroPages {
		args = append(args, "--exclude-committed-zero-pages")
	}
	if o.CudaCheckpointPath != "" {
		args = append(args, "--cuda-checkpoint-path="+o.CudaCheckpointPath)
	}
	if o.CudaCheckpointSequential {
		args = append(args, "--cuda-checkpoint-sequential")
	}
	return append(args, id)
}

// Checkpoint saves the sandbox of container id.
func (r *Runsc) Checkpoint(ctx context.Context, id string, o CheckpointOpts) error {
	_, err := r.output(ctx, o.Args(id), nil)
	return err
}

// ExecOpts are the options of `runsc exec`.
type ExecOpts struct {
	IO            runc.IO
	ConsoleSocket runc.ConsoleSocket
	// PidFile receives the host pid of the detached `runsc exec` process,
	// which lives exactly as long as the process in the sandbox.
	PidFile string
	// InternalPidFile receives the pid inside the sandbox.
	InternalPidFile string
}

func (o ExecOpts) args(id, processFile string) []string {
	args := []string{"exec", "--detach", "--process", processFile, "--pid-file", o.PidFile, "--internal-pid-file", o.InternalPidFile}
	if o.ConsoleSocket != nil {
		args = append(args, "--console-socket", o.ConsoleSocket.Path())
	}
	return append(args, id)
}

// Exec starts a process described by spec in container id, detached.
func (r *Runsc) Exec(ctx context.Context, id string, spec specs.Process, o ExecOpts) error {
	f, err := os.CreateTemp(filepath.Dir(o.PidFile), "process-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := json.NewEncoder(f).Encode(spec); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return r.withIO(ctx, o.args(id, f.Name()), o.IO)
}

// Wait blocks until container id exits and returns its exit status
// (128+signal for a signaled process).
func (r *Runsc) Wait(ctx context.Context, id string) (int, error) {
	out, err := r.output(ctx, []string{"wait", id}, nil)
	if err != nil {
		return -1, err
	}
	var res struct {
		ID         string `json:"id"`
		ExitStatus int    `json:"exitStatus"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return -1, fmt.Errorf("parsing runsc wait output %q: %w", out, err)
	}
	return res.ExitStatus, nil
}

// State returns runsc's view of container id.
func (r *Runsc) State(ctx context.Context, id string) (*runc.Container, error) {
	out, err := r.output(ctx, []string{"state", id}, nil)
	if err != nil {
		return nil, err
	}
	var c runc.Container
	if err := json.Unmarshal(out, &c); err != nil {
		return nil, fmt.Errorf("parsing runsc state output: %w", err)
	}
	return &c, nil
}

// KillOpts select what a signal goes to.
type KillOpts struct {
	// All signals every process of the container.
	All bool
	// Pid signals one process, by its pid inside the sandbox.
	Pid int
}

func (o KillOpts) args(id string, sig int) []string {
	args := []string{"kill"}
	if o.All {
		args = append(args, "--all")
	}
	if o.Pid != 0 {
		args = append(args, "--pid", strconv.Itoa(o.Pid))
	}
	return append(args, id, strconv.Itoa(sig))
}

// Kill sends sig to container id.
func (r *Runsc) Kill(ctx context.Context, id string, sig int, o KillOpts) error {
	_, err := r.output(ctx, o.args(id, sig), nil)
	return err
}

// Pause pauses every process of container id.
func (r *Runsc) Pause(ctx context.Context, id string) error {
	_, err := r.output(ctx, []string{"pause", id}, nil)
	return err
}

// Resume resumes container id.
func (r *Runsc) Resume(ctx context.Context, id string) error {
	_, err := r.output(ctx, []string{"resume", id}, nil)
	return err
}

// Delete removes container id, killing it first (--force): the shim only
// deletes containers it is done with.
//
// On cgroup v2 runsc also removes the cgroups it created above the
// container's (the CRI's pod cgroup, ctr's namespace cgroup) and fails with
// EBUSY while other containers still use them, after it has removed the
// container: that is no failure of the deletion, and the shared cgroup is
// left (as runc leaves the parents of its cgroups).
func (r *Runsc) Delete(ctx context.Context, id string) error {
	_, err := r.output(ctx, []string{"delete", "--force", id}, nil)
	if path, ok := busyCgroup(err); ok {
		if _, serr := r.State(ctx, id); errors.Is(serr, errdefs.ErrNotFound) {
			log.G(ctx).WithField("id", id).WithField("cgroup", path).Info("runsc deleted the container; a cgroup it created above it is still in use by other containers and stays")
			return nil
		}
	}
	return err
}

var busyCgroupRE = regexp.MustCompile(`removing cgroup path "([^"]+)": device or resource busy`)

// busyCgroup returns the cgroup a runsc error says it could not remove
// because it is in use.
func busyCgroup(err error) (string, bool) {
	var e *Error
	if !errors.As(err, &e) {
		return "", false
	}
	m := busyCgroupRE.FindStringSubmatch(e.Msg)
	if m == nil {
		return "", false
	}
	return m[1], true
}

// Ps returns the pids (inside the sandbox) of container id's processes.
func (r *Runsc) Ps(ctx context.Context, id string) ([]int, error) {
	out, err := r.output(ctx, []string{"ps", "--format", "json", id}, nil)
	if err != nil {
		return nil, err
	}
	var pids []int
	if err := json.Unmarshal(out, &pids); err != nil {
		return nil, fmt.Errorf("parsing runsc ps output: %w", err)
	}
	return pids, nil
}

// Stats returns one stats sample of container id (`runsc events --stats`).
func (r *Runsc) Stats(ctx context.Context, id string) (*runc.Stats, error) {
	out, err := r.output(ctx, []string{"events", "--stats", id}, nil)
	if err != nil {
		return nil, err
	}
	var e runc.Event
	if err := json.Unmarshal(out, &e); err != nil {
		return nil, fmt.Errorf("parsing runsc events output: %w", err)
	}
	if e.Type != "stats" || e.Stats == nil {
		return nil, fmt.Errorf("runsc events --stats returned no stats (type %q)", e.Type)
	}
	return e.Stats, nil
}

// Update applies resource limits to container id.
func (r *Runsc) Update(ctx context.Context, id string, res *specs.LinuxResources) error {
	data, err := json.Marshal(res)
	if err != nil {
		return err
	}
	_, err = r.output(ctx, []string{"update", "--resources=-", id}, bytes.NewReader(data))
	return err
}

// Version returns the first line of `runsc --version`, without the
// "runsc version " prefix. It is asked once per binary file: every
// checkpoint records it, and a binary replaced on disk is asked again.
func (r *Runsc) Version(ctx context.Context) (string, error) {
	id, known := binaryID(r.binary())
	r.version.mu.Lock()
	defer r.version.mu.Unlock()
	if known && r.version.v != "" && r.version.file == id {
		return r.version.v, nil
	}
	// Without the global flags: runsc checks them first, and a flag error
	// would hide the version.
	args := []string{"--version"}
	out, err := r.exec(r.command(ctx, false, args), args, nil)
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(string(out), "\n")
	v := strings.TrimSpace(strings.TrimPrefix(line, "runsc version "))
	if known {
		r.version.file, r.version.v = id, v
	}
	return v, nil
}

// WaitRestore blocks until runsc's work after a restore of container id is
// done (the CUDA state toggled back, every page loaded), and returns why it
// failed when it did (runsc then stops the container).
func (r *Runsc) WaitRestore(ctx context.Context, id string) error {
	_, err := r.output(ctx, []string{"wait", "--restore", id}, nil)
	return err
}
