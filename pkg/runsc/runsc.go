// Package runsc is a typed wrapper of the runsc command line: one method per
// runsc verb, options as structs with an args method, no shell, runsc's own
// error messages classified in containerd's error classes.
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
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	runc "github.com/containerd/go-runc"
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

func (execMonitor) Start(c *exec.Cmd) (chan runc.Exit, error) { return nil, c.Start() }

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

	version struct {
		mu   sync.Mutex
		file fileID
		v    string
	}
}

// fileID identifies a binary file: path, inode, size, modification time.
type fileID struct {
	path  string
	ino   uint64
	size  int64
	mtime int64
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
	return fileID{path: path, ino: st.Ino, size: st.Size, mtime: st.Mtim.Nano()}, true
}

func (r *Runsc) binary() string {
	if r.Binary == "" {
		return DefaultBinary
	}
	return r.Binary
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

// command returns the runsc command for args; globals adds the global flags.
func (r *Runsc) command(ctx context.Context, globals bool, args []string) *exec.Cmd {
	if globals {
		args = append(r.GlobalArgs(), args...)
	}
	cmd := exec.CommandContext(ctx, r.binary(), args...)
	// Never let a runsc invocation outlive the shim by accident.
	cmd.SysProcAttr = &unix.SysProcAttr{Pdeathsig: unix.SIGKILL}
	cmd.Env = os.Environ()
	return cmd
}

// output runs a command with the given stdin and returns its stdout.
func (r *Runsc) output(ctx context.Context, args []string, stdin io.Reader) ([]byte, error) {
	cmd := r.command(ctx, true, args)
	cmd.Stdin = stdin
	return r.exec(cmd, args, nil)
}

// withIO runs a command whose stdio belongs to the container (cio; nil for
// none).
func (r *Runsc) withIO(ctx context.Context, args []string, cio runc.IO) error {
	cmd := r.command(ctx, true, args)
	if cio != nil {
		cio.Set(cmd)
	}
	_, err := r.exec(cmd, args, cio)
	return err
}

// exec runs cmd and returns its stdout. A failure is an *Error with runsc's
// message: from stderr when nothing of the container's is attached to it,
// else from the errors runsc logged while the command ran, else (runsc
// checks its global flags before it opens its log) from a flag check.
func (r *Runsc) exec(cmd *exec.Cmd, args []string, cio runc.IO) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	captured := cmd.Stdout == nil && cmd.Stderr == nil
	if captured {
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
	}
	from := r.logSize()
	status, err := r.run(cmd, cio)
	if err != nil {
		return nil, fmt.Errorf("running runsc %s: %w", args[0], err)
	}
	if status == 0 {
		return stdout.Bytes(), nil
	}
	msg := strings.TrimSpace(stderr.String())
	if msg == "" {
		msg = r.logErrors(from)
	}
	if msg == "" && !captured {
		msg = r.flagError()
	}
	return stdout.Bytes(), &Error{Args: args[:1], Status: status, Msg: msg}
}

// run starts cmd through the monitor, closes the IO's ends the command
// inherited, and waits for it.
func (r *Runsc) run(cmd *exec.Cmd, cio runc.IO) (int, error) {
	m := r.monitor()
	ec, err := m.Start(cmd)
	if err != nil {
		return -1, err
	}
	if c, ok := cio.(runc.StartCloser); ok {
		if err := c.CloseAfterStart(); err != nil {
			return -1, err
		}
	}
	return m.Wait(cmd, ec)
}

// flagError returns what runsc says about its global flags, or "" when it
// accepts them. runsc checks them before it opens its log, so a typo in a flag
// name is only ever reported on stderr, which belongs to the container for
// IO-attached commands.
func (r *Runsc) flagError() string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := r.output(ctx, []string{"--version"}, nil)
	var re *Error
	if !errors.As(err, &re) {
		return ""
	}
	first, _, _ := strings.Cut(re.Msg, "\n")
	return first
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
// offset from on, distinct and in order, joined by "; "; when runsc logged
// no error, its warnings (it gives some reasons only as warnings: "cannot
// get events for container ... in state stopped"). The sandbox and the
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
	var errs, warnings []string
	dec := json.NewDecoder(bufio.NewReader(f))
	for {
		var e struct {
			Msg   string `json:"msg"`
			Level string `json:"level"`
		}
		if err := dec.Decode(&e); err != nil {
			break
		}
		m := strings.TrimSpace(e.Msg)
		switch {
		case m == "":
		case e.Level == "error" && !slices.Contains(errs, m):
			errs = append(errs, m)
		case (e.Level == "warning" || e.Level == "warn") && !slices.Contains(warnings, m):
			warnings = append(warnings, m)
		}
	}
	if len(errs) == 0 {
		errs = warnings
	}
	return strings.Join(errs, "; ")
}
