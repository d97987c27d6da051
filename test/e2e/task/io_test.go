//go:build e2e

package task

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

// TestIO proves the stdio paths of init and exec'd processes through
// containerd's fifos: stdin round trips, CloseIO ends stdin, stdout and stderr
// stay apart.
func TestIO(t *testing.T) {
	e := newEnv(t, harness.Options{})

	t.Run("stdin-roundtrip-closeio", func(t *testing.T) {
		ctx := testCtx(t, 2*time.Minute)
		c := e.newContainer(ctx, t, harness.RandomID("cat"), nil, nil, "/workload", "cat")
		stdinR, stdinW := io.Pipe()
		out := harness.NewLineBuffer()
		task, err := c.NewTask(ctx, e.d.IO(stdinR, out, out))
		if err != nil {
			t.Fatal(err)
		}
		statusC, err := task.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := task.Start(ctx); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			line := fmt.Sprintf("line-%d-%s", i, strings.Repeat("x", 100*i))
			if _, err := io.WriteString(stdinW, line+"\n"); err != nil {
				t.Fatal(err)
			}
			out.WaitFor(t, "^"+line+"$", startWait)
		}
		// Our end of stdin is done; cat only sees EOF once CloseIO closes the
		// shim's end too.
		stdinW.Close()
		if err := task.CloseIO(ctx, containerd.WithStdinCloser); err != nil {
			t.Fatalf("close io: %v", err)
		}
		if st := waitExit(t, statusC, "cat"); st.ExitCode() != 0 {
			t.Errorf("cat exit status %d, want 0", st.ExitCode())
		}
		destroy(ctx, t, c)
	})

	t.Run("stdout-stderr-apart", func(t *testing.T) {
		ctx := testCtx(t, 2*time.Minute)
		c := e.newContainer(ctx, t, harness.RandomID("streams"), nil, nil, "/bin/sh", "-c", "echo to-out; echo to-err >&2; exit 7")
		stdout, stderr := harness.NewLineBuffer(), harness.NewLineBuffer()
		task, err := c.NewTask(ctx, e.d.IO(nil, stdout, stderr))
		if err != nil {
			t.Fatal(err)
		}
		statusC, err := task.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := task.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if st := waitExit(t, statusC, "sh"); st.ExitCode() != 7 {
			t.Errorf("exit status %d, want 7", st.ExitCode())
		}
		// Delete waits for the output copies, so everything has arrived after it.
		destroy(ctx, t, c)
		if got := stdout.String(); got != "to-out\n" {
			t.Errorf("stdout %q, want %q", got, "to-out\n")
		}
		if got := stderr.String(); got != "to-err\n" {
			t.Errorf("stderr %q, want %q", got, "to-err\n")
		}
	})

	t.Run("exec-stdin-closeio", func(t *testing.T) {
		ctx := testCtx(t, 2*time.Minute)
		c, task, _, _ := e.run(ctx, t, "execio", nil, "/workload", "sleep")
		stdinR, stdinW := io.Pipe()
		stdout, stderr := harness.NewLineBuffer(), harness.NewLineBuffer()
		proc, err := task.Exec(ctx, "cat", &specs.Process{Args: []string{"/workload", "cat"}, Cwd: "/"}, e.d.IO(stdinR, stdout, stderr))
		if err != nil {
			t.Fatal(err)
		}
		execC, err := proc.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := proc.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(stdinW, "ping\n"); err != nil {
			t.Fatal(err)
		}
		stdout.WaitFor(t, "^ping$", startWait)
		stdinW.Close()
		if err := proc.CloseIO(ctx, containerd.WithStdinCloser); err != nil {
			t.Fatal(err)
		}
		if st := waitExit(t, execC, "exec cat"); st.ExitCode() != 0 {
			t.Errorf("exec cat exit status %d, want 0", st.ExitCode())
		}
		if _, err := proc.Delete(ctx); err != nil {
			t.Fatal(err)
		}
		if stderr.String() != "" {
			t.Errorf("stderr %q, want nothing", stderr.String())
		}
		destroy(ctx, t, c)
	})
	waitNoLeftovers(t, e.d)
}

// TestCompatTTY proves terminals: `ctr run -t` and `ctr task exec -t` on a
// real pty (the process sees a terminal of the pty's size; resizing the pty
// reaches it through ctr's ResizePty; keystrokes reach it and ^D ends its
// input), and the client's terminal IO with Task.Resize and Process.Resize.
func TestCompatTTY(t *testing.T) {
	e := newEnv(t, harness.Options{})

	t.Run("ctr-run-t", func(t *testing.T) {
		ctx := testCtx(t, 2*time.Minute)
		id := harness.RandomID("ctrtty")
		args := append([]string{"run", "-t", "--rm"}, e.d.CtrRuntimeArgs()...)
		args = append(args, e.ref, id, "/workload", "tty")
		term := startOnPty(ctx, t, e.d, winsize(30, 100), args...)
		term.out.WaitFor(t, `^stdin isatty=true$`, startWait)
		term.out.WaitFor(t, `^stdout isatty=true$`, startWait)
		term.out.WaitFor(t, `^winsize=30x100$`, startWait)
		term.resizeUntilSeen(t, term.out.Len(), 40, 120, exitWait)

		// An exec'd terminal in the same container.
		exec := startOnPty(ctx, t, e.d, winsize(20, 60), "task", "exec", "-t", "--exec-id", "tty2", id, "/workload", "tty")
		exec.out.WaitFor(t, `^stdin isatty=true$`, startWait)
		exec.out.WaitFor(t, `^winsize=20x60$`, startWait)
		exec.resizeUntilSeen(t, exec.out.Len(), 25, 70, exitWait)
		if _, _, err := e.d.Ctr(ctx, "task", "kill", "--exec-id", "tty2", "-s", "SIGKILL", id); err != nil {
			t.Fatal(err)
		}
		if code := exec.wait(t); code != 137 {
			t.Errorf("ctr task exec -t exited %d, want 137", code)
		}

		// Keystrokes reach an exec'd cat through the terminal; ^D ends it.
		cat := startOnPty(ctx, t, e.d, winsize(24, 80), "task", "exec", "-t", "--exec-id", "cat", id, "/workload", "cat")
		waitForExecRunning(ctx, t, e.d, id, "cat")
		cat.write(t, "hello-tty\r")
		cat.out.WaitFor(t, `hello-tty`, exitWait)
		cat.write(t, "\x04")
		if code := cat.wait(t); code != 0 {
			t.Errorf("ctr task exec -t cat exited %d after ^D, want 0; output:\n%s", code, cat.out)
		}

		if _, _, err := e.d.Ctr(ctx, "task", "kill", "-s", "SIGKILL", id); err != nil {
			t.Fatal(err)
		}
		if code := term.wait(t); code != 137 {
			t.Errorf("ctr run -t exited %d, want 137", code)
		}
	})

	t.Run("client-terminal", func(t *testing.T) {
		ctx := testCtx(t, 2*time.Minute)
		c := e.newContainer(ctx, t, harness.RandomID("cltty"), nil, []oci.SpecOpts{oci.WithTTY}, "/workload", "tty")
		out := harness.NewLineBuffer()
		task, err := c.NewTask(ctx, e.d.IO(nil, stripCR{out}, nil, cio.WithTerminal))
		if err != nil {
			t.Fatal(err)
		}
		statusC, err := task.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := task.Start(ctx); err != nil {
			t.Fatal(err)
		}
		out.WaitFor(t, `^stdout isatty=true$`, startWait)
		if err := task.Resize(ctx, 132, 43); err != nil {
			t.Fatalf("resize: %v", err)
		}
		out.WaitFor(t, `^winsize=43x132$`, exitWait)

		execOut := harness.NewLineBuffer()
		proc, err := task.Exec(ctx, "tty", &specs.Process{Args: []string{"/workload", "tty"}, Cwd: "/", Terminal: true}, e.d.IO(nil, stripCR{execOut}, nil, cio.WithTerminal))
		if err != nil {
			t.Fatal(err)
		}
		if err := proc.Start(ctx); err != nil {
			t.Fatal(err)
		}
		execOut.WaitFor(t, `^stdout isatty=true$`, startWait)
		if err := proc.Resize(ctx, 90, 33); err != nil {
			t.Fatalf("exec resize: %v", err)
		}
		execOut.WaitFor(t, `^winsize=33x90$`, exitWait)

		if err := task.Kill(ctx, syscall.SIGKILL, containerd.WithKillAll); err != nil {
			t.Fatal(err)
		}
		if st := waitExit(t, statusC, "tty task"); st.ExitCode() != 137 {
			t.Errorf("exit %d, want 137", st.ExitCode())
		}
		destroy(ctx, t, c)
	})

	// The last output of a terminal process arrives before Delete returns.
	t.Run("terminal-output-complete", func(t *testing.T) {
		ctx := testCtx(t, 2*time.Minute)
		c := e.newContainer(ctx, t, harness.RandomID("ttyout"), nil, []oci.SpecOpts{oci.WithTTY}, "/bin/sh", "-c", "seq 1 3000; echo last-line; exit 9")
		out := harness.NewLineBuffer()
		runToExit(ctx, t, c, e.d.IO(nil, stripCR{out}, nil, cio.WithTerminal), 9)
		lines := out.Lines()
		if len(lines) != 3001 || lines[2999] != "3000" || lines[3000] != "last-line" {
			t.Errorf("got %d lines ending %q, want 1..3000 and last-line", len(lines), lines[max(0, len(lines)-2):])
		}
	})
	waitNoLeftovers(t, e.d)
}

// TestCompatLogURI proves containerd's logging URIs: file:// and binary://,
// through ctr --log-uri and the client's cio.LogFile / cio.BinaryIO. The
// logging binary speaks containerd's protocol (stdout on fd 3, stderr on fd 4,
// readiness on fd 5) and must be gone after the task is deleted.
func TestCompatLogURI(t *testing.T) {
	e := newEnv(t, harness.Options{})
	logger := buildLogger(t)
	const script = "echo hello-out; echo hello-err >&2; exit 4"

	t.Run("client-file", func(t *testing.T) {
		ctx := testCtx(t, 2*time.Minute)
		path := filepath.Join(e.d.Dir, "logs", "client.log")
		c := e.newContainer(ctx, t, harness.RandomID("logfile"), nil, nil, "/bin/sh", "-c", script)
		runToExit(ctx, t, c, cio.LogFile(path), 4)
		assertFileLines(t, path, []string{"hello-out", "hello-err"})
	})

	t.Run("ctr-file", func(t *testing.T) {
		ctx := testCtx(t, 2*time.Minute)
		path := filepath.Join(e.d.Dir, "logs", "ctr.log")
		id := harness.RandomID("ctrfile")
		args := append([]string{"run", "--rm", "--log-uri", "file://" + path}, e.d.CtrRuntimeArgs()...)
		args = append(args, e.ref, id, "/bin/sh", "-c", script)
		if _, _, err := e.d.Ctr(ctx, args...); err == nil || !strings.Contains(err.Error(), "exit status 4") {
			t.Errorf("ctr run: %v, want exit status 4", err)
		}
		assertFileLines(t, path, []string{"hello-out", "hello-err"})
	})

	t.Run("client-binary", func(t *testing.T) {
		ctx := testCtx(t, 2*time.Minute)
		path := filepath.Join(e.d.Dir, "client-binary.log")
		id := harness.RandomID("logbin")
		c := e.newContainer(ctx, t, id, nil, nil, "/bin/sh", "-c", script)
		runToExit(ctx, t, c, cio.BinaryIO(logger, map[string]string{"out": path}), 4)
		assertFileLines(t, path, []string{"stdout " + id + " hello-out", "stderr " + id + " hello-err", "closed " + id})
	})

	t.Run("ctr-binary", func(t *testing.T) {
		ctx := testCtx(t, 2*time.Minute)
		path := filepath.Join(e.d.Dir, "ctr-binary.log")
		id := harness.RandomID("ctrbin")
		args := append([]string{"run", "--rm", "--log-uri", "binary://" + logger + "?out=" + path}, e.d.CtrRuntimeArgs()...)
		args = append(args, e.ref, id, "/bin/sh", "-c", script)
		if _, _, err := e.d.Ctr(ctx, args...); err == nil || !strings.Contains(err.Error(), "exit status 4") {
			t.Errorf("ctr run: %v, want exit status 4", err)
		}
		assertFileLines(t, path, []string{"stdout " + id + " hello-out", "stderr " + id + " hello-err", "closed " + id})
	})

	t.Run("exec-binary", func(t *testing.T) {
		ctx := testCtx(t, 2*time.Minute)
		path := filepath.Join(e.d.Dir, "exec-binary.log")
		c, task, _, _ := e.run(ctx, t, "execbin", nil, "/workload", "sleep")
		proc, err := task.Exec(ctx, "logged", &specs.Process{Args: []string{"/bin/sh", "-c", script}, Cwd: "/"}, cio.BinaryIO(logger, map[string]string{"out": path}))
		if err != nil {
			t.Fatal(err)
		}
		execC, err := proc.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := proc.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if st := waitExit(t, execC, "exec"); st.ExitCode() != 4 {
			t.Errorf("exec exit %d, want 4", st.ExitCode())
		}
		if _, err := proc.Delete(ctx); err != nil {
			t.Fatal(err)
		}
		assertFileLines(t, path, []string{"stdout logged hello-out", "stderr logged hello-err", "closed logged"})
		destroy(ctx, t, c)
	})
	waitNoLeftovers(t, e.d)
}

// runToExit runs c's task with the given IO until it exits with want, then
// deletes task and container.
func runToExit(ctx context.Context, t *testing.T, c containerd.Container, ioc cio.Creator, want uint32) {
	t.Helper()
	task, err := c.NewTask(ctx, ioc)
	if err != nil {
		t.Fatal(err)
	}
	statusC, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if st := waitExit(t, statusC, c.ID()); st.ExitCode() != want {
		t.Errorf("exit status %d, want %d", st.ExitCode(), want)
	}
	destroy(ctx, t, c)
}

// assertFileLines waits until the file at path holds each of want as a line.
func assertFileLines(t *testing.T, path string, want []string) {
	t.Helper()
	for _, w := range want {
		harness.WaitForFileLine(t, path, "^"+regexp.QuoteMeta(w)+"$", exitWait)
	}
}

var buildLoggerOnce = sync.OnceValues(func() (string, error) {
	base, err := harness.BaseDir()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp(base, "task-logger-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "logger")
	cmd := exec.Command("go", "build", "-o", bin, "./testdata/logger")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the test logger: %v\n%s", err, out)
	}
	return bin, nil
})

// buildLogger builds testdata/logger once per test binary.
func buildLogger(t *testing.T) string {
	t.Helper()
	bin, err := buildLoggerOnce()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}
