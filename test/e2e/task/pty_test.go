//go:build e2e

package task

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/console"
	containerd "github.com/containerd/containerd/v2/client"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

// winsize is a terminal size of h rows and w columns.
func winsize(h, w uint16) console.WinSize { return console.WinSize{Height: h, Width: w} }

// pty is a ctr command running with a pseudo-terminal as its controlling
// terminal and stdio, as it would in an interactive shell.
type pty struct {
	master console.Console
	cmd    *exec.Cmd
	out    *harness.LineBuffer
	done   chan struct{}
}

// startOnPty starts ctr with args on a new pty of size ws. Everything ctr writes
// to the terminal is collected in out.
func startOnPty(ctx context.Context, t *testing.T, d *harness.Daemon, ws console.WinSize, args ...string) *pty {
	t.Helper()
	master, slavePath, err := console.NewPty()
	if err != nil {
		t.Fatalf("new pty: %v", err)
	}
	t.Cleanup(func() { master.Close() })
	if err := master.Resize(ws); err != nil {
		t.Fatal(err)
	}
	slave, err := os.OpenFile(slavePath, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer slave.Close()
	cmd := d.CtrCmd(ctx, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	// A session of its own with the pty as controlling terminal: resizing the
	// master sends SIGWINCH to ctr.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start ctr on a pty: %v", err)
	}
	p := &pty{master: master, cmd: cmd, out: harness.NewLineBuffer(), done: make(chan struct{})}
	go func() { _, _ = io.Copy(stripCR{p.out}, master) }() // ends with EIO once the slave is closed everywhere
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *pty) resize(t *testing.T, h, w uint16) {
	t.Helper()
	if err := p.master.Resize(winsize(h, w)); err != nil {
		t.Fatalf("resize pty: %v", err)
	}
}

// resizeUntilSeen resizes the pty until the process prints winsize=HxW.
// ctr installs its SIGWINCH handler only after its first resize of the
// task's console, so a resize that arrives before that is lost (ctr does not
// read the size again); the process's own output is the only proof.
func (p *pty) resizeUntilSeen(t *testing.T, from int, h, w uint16, timeout time.Duration) {
	t.Helper()
	want := regexp.MustCompile(fmt.Sprintf(`^winsize=%dx%d$`, h, w))
	deadline := time.Now().Add(timeout)
	for {
		p.resize(t, h, w)
		for _, l := range p.out.Lines()[min(from, p.out.Len()):] {
			if want.MatchString(l) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the process never saw winsize=%dx%d within %v; output so far:\n%s", h, w, timeout, p.out.String())
		}
		// Nudge: another size first, so the next resize is a change.
		time.Sleep(300 * time.Millisecond)
		p.resize(t, h+1, w+1)
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *pty) write(t *testing.T, s string) {
	t.Helper()
	if _, err := io.WriteString(p.master, s); err != nil {
		t.Fatalf("write to pty: %v", err)
	}
}

// wait waits for ctr to exit and returns its exit status.
func (p *pty) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(exitWait):
		t.Fatalf("ctr %v did not exit; output:\n%s", p.cmd.Args, p.out)
	}
	return p.cmd.ProcessState.ExitCode()
}

// waitForExecRunning waits until exec execID of container id runs.
func waitForExecRunning(ctx context.Context, t *testing.T, d *harness.Daemon, id, execID string) {
	t.Helper()
	deadline := time.Now().Add(startWait)
	for {
		c, err := d.Client().LoadContainer(ctx, id)
		if err == nil {
			var task containerd.Task
			if task, err = c.Task(ctx, nil); err == nil {
				var p containerd.Process
				if p, err = task.LoadProcess(ctx, execID, nil); err == nil {
					var st containerd.Status
					if st, err = p.Status(ctx); err == nil && st.Status == containerd.Running {
						return
					}
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("exec %s of %s not running within %v: %v", execID, id, startWait, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stripCR drops carriage returns, which terminals add to every line end (one
// per ONLCR translation on the way), before writing to w.
type stripCR struct{ w io.Writer }

func (s stripCR) Write(p []byte) (int, error) {
	if _, err := s.w.Write(bytes.ReplaceAll(p, []byte("\r"), nil)); err != nil {
		return 0, err
	}
	return len(p), nil
}
