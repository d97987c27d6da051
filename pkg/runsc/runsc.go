// Package runsc is a typed wrapper of the runsc command line: one method per
// runsc verb, options as structs, no shell.
//
// Every command is started through a Monitor so that it cooperates with the
// shim's child reaper (the shim is a subreaper and reaps every child; a plain
// exec.Cmd.Wait would race with it).
package runsc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// DefaultBinary is the runsc binary looked up on PATH when none is configured.
const DefaultBinary = "runsc"

// Monitor starts commands and waits for them; the shim passes its reaper.
type Monitor interface {
	Start(*exec.Cmd) (chan runc.Exit, error)
	Wait(*exec.Cmd, chan runc.Exit) (int, error)
}

// execMonitor is used when no Monitor is given (tests, tools).
type execMonitor struct{}

func (execMonitor) Start(c *exec.Cmd) (chan runc.Exit, error) {
	if err := c.Start(); err != nil {
		return nil, err
	}
	return nil, nil
}

func (execMonitor) Wait(c *exec.Cmd, _ chan runc.Exit) (int, error) {
	err := c.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), nil
	}
	if err != nil {
		return -1, err
	}
	return 0, nil
}

// Runsc runs runsc commands with a fixed set of global flags.
type Runsc struct {
	// Binary is the runsc executable (absolute path or name on PATH).
	Binary string
	// Root is runsc's state directory (--root).
	Root string
	// Log is the file runsc writes its JSON log and errors to (--log).
	Log string
	// Flags are global runsc flags (--key=value), e.g. platform or debug-log.
	Flags map[string]string
	// Monitor starts and waits for commands; nil means plain exec.
	Monitor Monitor
	// VersionCacheDir, when set, is a directory where Version keeps what
	// `runsc --version` said for the binary, for other processes (each
	// restored container has a shim of its own, which checks the version).
	VersionCacheDir string

	// version caches Version for the binary file it was read from.
	version versionCache
}

// versionCache holds `runsc --version` of one binary file, identified by
// its path, inode, size and modification time: every checkpoint records the
// version, and a replaced binary is noticed without running it again.
type versionCache struct {
	mu      sync.Mutex
	file    fileID
	version string
}

type fileID struct {
	Path  string `json:"path"`
	Ino   uint64 `json:"ino"`
	Size  int64  `json:"size"`
	Mtime int64  `json:"mtime"`
}

// cachedVersion is the file VersionCacheDir holds per binary path.
type cachedVersion struct {
	File    fileID `json:"file"`
	Version string `json:"version"`
}

// versionCacheFile is the cache file of binary path in dir.
func versionCacheFile(dir, path string) string {
	h := fnv.New64a()
	h.Write([]byte(path))
	return filepath.Join(dir, fmt.Sprintf(".runsc-version-%016x.json", h.Sum64()))
}

// readCachedVersion returns the version VersionCacheDir holds for id.
func (r *Runsc) readCachedVersion(id fileID) string {
	if r.VersionCacheDir == "" {
		return ""
	}
	data, err := os.ReadFile(versionCacheFile(r.VersionCacheDir, id.Path))
	if err != nil {
		return ""
	}
	var c cachedVersion
	if json.Unmarshal(data, &c) != nil || c.File != id {
		return ""
	}
	return c.Version
}

// writeCachedVersion records v for id in VersionCacheDir (atomically; a
// failure only means the next process asks runsc again).
func (r *Runsc) writeCachedVersion(id fileID, v string) {
	if r.VersionCacheDir == "" {
		return
	}
	data, err := json.Marshal(cachedVersion{File: id, Version: v})
	if err != nil || os.MkdirAll(r.VersionCacheDir, 0o711) != nil {
		return
	}
	f, err := os.CreateTemp(r.VersionCacheDir, ".runsc-version-*.tmp")
	if err != nil {
		return
	}
	_, werr := f.Write(data)
	if cerr := f.Close(); werr != nil || cerr != nil || os.Rename(f.Name(), versionCacheFile(r.VersionCacheDir, id.Path)) != nil {
		os.Remove(f.Name())
	}
}

// binaryID identifies the file bin resolves to; ok is false when it cannot
// be found (Version then runs it and reports the error).
func binaryID(bin string) (fileID, bool) {
	path, err := exec.LookPath(bin)
	if err != nil {
		return fileID{}, false
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fileID{}, false
	}
	return fileID{Path: path, Ino: st.Ino, Size: st.Size, Mtime: st.Mtim.Nano()}, true
}

// Error is a failed runsc invocation.
type Error struct {
	Args   []string
	Status int
	// Msg is runsc's own error message (stderr or its JSON log).
	Msg string
}

func (e *Error) Error() string {
	msg := conciseMsg(strings.TrimSpace(e.Msg))
	if msg == "" {
		msg = "no error message"
	}
	return fmt.Sprintf("runsc %s exited with status %d: %s", strings.Join(e.Args, " "), e.Status, msg)
}

// conciseMsg drops the Go stack trace runsc appends to some errors (a
// restore of a damaged image fails in the state decoder with one); the
// trace stays in runsc's debug log.
func conciseMsg(msg string) string {
	i := strings.Index(msg, "\ngoroutine ")
	if i < 0 {
		return msg
	}
	return strings.TrimRight(strings.TrimSpace(msg[:i]), ":") + " (stack trace in runsc's debug log)"
}

// IsNotExist reports whether err says the container does not exist in runsc.
func IsNotExist(err error) bool {
	var re *Error
	if !errors.As(err, &re) {
		return false
	}
	m := re.Msg
	return strings.Contains(m, "does not exist") || strings.Contains(m, "no such file or directory") || strings.Contains(m, "file does not exist")
}

func (r *Runsc) monitor() Monitor {
	if r.Monitor == nil {
		return execMonitor{}
	}
	return r.Monitor
}

// GlobalArgs returns the global flags in a stable order.
func (r *Runsc) GlobalArgs() []string {
	var args []string
	if r.Root != "" {
		args = append(args, "--root="+r.Root)
	}
	if r.Log != "" {
		args = append(args, "--log="+r.Log, "--log-format=json")
	}
	keys := make([]string, 0, len(r.Flags))
	for k := range r.Flags {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		args = append(args, fmt.Sprintf("--%s=%s", k, r.Flags[k]))
	}
	return args
}

func (r *Runsc) command(ctx context.Context, args ...string) *exec.Cmd {
	bin := r.Binary
	if bin == "" {
		bin = DefaultBinary
	}
	cmd := exec.CommandContext(ctx, bin, append(r.GlobalArgs(), args...)...)
	// Never let a runsc invocation outlive the shim by accident.
	cmd.SysProcAttr = &unix.SysProcAttr{Pdeathsig: unix.SIGKILL}
	cmd.Env = os.Environ()
	return cmd
}

// output runs cmd and returns its stdout; a failure carries stderr.
func (r *Runsc) output(cmd *exec.Cmd, verb []string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	from := r.logSize()
	if err := r.run(cmd); err != nil {
		return stdout.Bytes(), r.fail(err, verb, stderr.String(), from)
	}
	return stdout.Bytes(), nil
}

// run starts cmd through the monitor and waits for it.
func (r *Runsc) run(cmd *exec.Cmd) error {
	m := r.monitor()
	ec, err := m.Start(cmd)
	if err != nil {
		return err
	}
	status, err := m.Wait(cmd, ec)
	if err != nil {
		return err
	}
	if status != 0 {
		return &Error{Status: status}
	}
	return nil
}

// fail turns a failed run into an *Error naming the verb and runsc's message.
func (r *Runsc) fail(err error, verb []string, stderr string, logFrom int64) error {
	var re *Error
	if !errors.As(err, &re) {
		return fmt.Errorf("running runsc %s: %w", strings.Join(verb, " "), err)
	}
	msg := strings.TrimSpace(stderr)
	if msg == "" {
		msg = r.logErrors(logFrom)
	}
	return &Error{Args: verb, Status: re.Status, Msg: msg}
}

// logSize returns the size of runsc's log: where the messages of the next
// command begin.
func (r *Runsc) logSize() int64 {
	if r.Log == "" {
		return 0
	}
	fi, err := os.Stat(r.Log)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logErrors returns the error messages written to runsc's JSON log from
// offset from on, distinct and in order, joined by "; ". The sandbox and the
// gofer log there too, and their message often names the cause (a mount
// source that does not exist) where runsc's own last one does not ("waiting
// for sandbox to start: EOF"). runsc writes the JSON objects back to back,
// without newlines between them.
func (r *Runsc) logErrors(from int64) string {
	if r.Log == "" {
		return ""
	}
	f, err := os.Open(r.Log)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(from, io.SeekStart); err != nil {
		return ""
	}
	var msgs []string
	dec := json.NewDecoder(bufio.NewReader(f))
	for {
		var e struct {
			Msg   string `json:"msg"`
			Level string `json:"level"`
		}
		if err := dec.Decode(&e); err != nil {
			break
		}
		if m := strings.TrimSpace(e.Msg); e.Level == "error" && m != "" && !slices.Contains(msgs, m) {
			msgs = append(msgs, m)
		}
	}
	return strings.Join(msgs, "; ")
}

// flagError returns what runsc says about its global flags, or "" when it
// accepts them. runsc checks them before it opens its log, so a typo in a flag
// name is only ever reported on stderr, which belongs to the container for
// IO-attached commands.
func (r *Runsc) flagError() string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := r.command(ctx, "--version")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := r.run(cmd); err == nil {
		return ""
	}
	first, _, _ := strings.Cut(strings.TrimSpace(stderr.String()), "\n")
	return first
}

// withIO runs an IO-attached command: its stdio belongs to the container, so
// the error message comes from runsc's log.
func (r *Runsc) withIO(cmd *exec.Cmd, cio runc.IO, verb []string) error {
	if cio != nil {
		cio.Set(cmd)
	}
	if cmd.Stdout == nil && cmd.Stderr == nil {
		_, err := r.output(cmd, verb)
		return err
	}
	m := r.monitor()
	from := r.logSize()
	ec, err := m.Start(cmd)
	if err != nil {
		return fmt.Errorf("starting runsc %s: %w", strings.Join(verb, " "), err)
	}
	if c, ok := cio.(runc.StartCloser); ok {
		if err := c.CloseAfterStart(); err != nil {
			return err
		}
	}
	status, err := m.Wait(cmd, ec)
	if err != nil {
		return fmt.Errorf("waiting for runsc %s: %w", strings.Join(verb, " "), err)
	}
	if status != 0 {
		msg := r.logErrors(from)
		if msg == "" {
			msg = r.flagError()
		}
		return &Error{Args: verb, Status: status, Msg: msg}
	}
	return nil
}

// Version returns the first line of `runsc --version`, without the
// "runsc version " prefix. It is cached for as long as the binary file stays
// the same.
func (r *Runsc) Version(ctx context.Context) (string, error) {
	bin := r.Binary
	if bin == "" {
		bin = DefaultBinary
	}
	id, ok := binaryID(bin)
	r.version.mu.Lock()
	defer r.version.mu.Unlock()
	if ok && r.version.version != "" && r.version.file == id {
		return r.version.version, nil
	}
	if ok {
		if v := r.readCachedVersion(id); v != "" {
			r.version.file, r.version.version = id, v
			return v, nil
		}
	}
	cmd := exec.CommandContext(ctx, bin, "--version")
	out, err := r.output(cmd, []string{"--version"})
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(string(out), "\n")
	v := strings.TrimSpace(strings.TrimPrefix(line, "runsc version "))
	if ok && v != "" {
		r.version.file, r.version.version = id, v
		r.writeCachedVersion(id, v)
	}
	return v, nil
}

// CreateOpts are the options of `runsc create`.
type CreateOpts struct {
	// IO is the container's stdio, given to the sandbox (root container).
	IO            runc.IO
	ConsoleSocket runc.ConsoleSocket
	PidFile       string
	UserLog       string
}

// Create creates a container from a bundle; it does not start it.
func (r *Runsc) Create(ctx context.Context, id, bundle string, o CreateOpts) error {
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
	args = append(args, id)
	return r.withIO(r.command(ctx, args...), o.IO, args[:1])
}

// Start starts a created container. IO is given for subcontainers only.
func (r *Runsc) Start(ctx context.Context, id string, cio runc.IO) error {
	return r.withIO(r.command(ctx, "start", id), cio, []string{"start"})
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

// Restore restores a created container from a checkpoint image, detached.
func (r *Runsc) Restore(ctx context.Context, id, bundle string, o RestoreOpts) error {
	args := []string{"restore", "--detach", "--bundle", bundle, "--image-path", o.ImagePath}
	if o.Direct {
		args = append(args, "--direct")
	}
	if o.Background {
		args = append(args, "--background")
	}
	args = append(args, id)
	return r.withIO(r.command(ctx, args...), o.IO, args[:1])
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

// Args returns the checkpoint verb's arguments for container id.
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
	args := o.Args(id)
	_, err := r.output(r.command(ctx, args...), args[:1])
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
	args := []string{"exec", "--detach", "--process", f.Name(), "--pid-file", o.PidFile, "--internal-pid-file", o.InternalPidFile}
	if o.ConsoleSocket != nil {
		args = append(args, "--console-socket", o.ConsoleSocket.Path())
	}
	args = append(args, id)
	return r.withIO(r.command(ctx, args...), o.IO, args[:1])
}

// WaitResult is the JSON `runsc wait` prints.
type WaitResult struct {
	ID         string `json:"id"`
	ExitStatus int    `json:"exitStatus"`
}

// Wait blocks until container id exits and returns its exit status
// (128+signal for a signaled process).
func (r *Runsc) Wait(ctx context.Context, id string) (int, error) {
	out, err := r.output(r.command(ctx, "wait", id), []string{"wait"})
	if err != nil {
		return -1, err
	}
	var res WaitResult
	if err := json.Unmarshal(out, &res); err != nil {
		return -1, fmt.Errorf("parsing runsc wait output %q: %w", out, err)
	}
	return res.ExitStatus, nil
}

// State returns runsc's view of container id.
func (r *Runsc) State(ctx context.Context, id string) (*runc.Container, error) {
	out, err := r.output(r.command(ctx, "state", id), []string{"state"})
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

// Kill sends sig to container id.
func (r *Runsc) Kill(ctx context.Context, id string, sig int, o KillOpts) error {
	args := []string{"kill"}
	if o.All {
		args = append(args, "--all")
	}
	if o.Pid != 0 {
		args = append(args, "--pid", strconv.Itoa(o.Pid))
	}
	args = append(args, id, strconv.Itoa(sig))
	_, err := r.output(r.command(ctx, args...), args[:1])
	return err
}

// Pause pauses every process of container id.
func (r *Runsc) Pause(ctx context.Context, id string) error {
	_, err := r.output(r.command(ctx, "pause", id), []string{"pause"})
	return err
}

// Resume resumes container id.
func (r *Runsc) Resume(ctx context.Context, id string) error {
	_, err := r.output(r.command(ctx, "resume", id), []string{"resume"})
	return err
}

// Delete removes container id; Force kills it first.
func (r *Runsc) Delete(ctx context.Context, id string, force bool) error {
	args := []string{"delete"}
	if force {
		args = append(args, "--force")
	}
	args = append(args, id)
	_, err := r.output(r.command(ctx, args...), args[:1])
	return err
}

// Ps returns the pids (inside the sandbox) of container id's processes.
func (r *Runsc) Ps(ctx context.Context, id string) ([]int, error) {
	out, err := r.output(r.command(ctx, "ps", "--format", "json", id), []string{"ps"})
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
	out, err := r.output(r.command(ctx, "events", "--stats", id), []string{"events"})
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
	cmd := r.command(ctx, "update", "--resources=-", id)
	cmd.Stdin = bytes.NewReader(data)
	_, err = r.output(cmd, []string{"update"})
	return err
}
