//go:build e2e

package task

import (
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

// TestExecErrors proves that exec requests the shim or runsc cannot honour fail
// clearly and leave the container running (a missing binary, a duplicate exec
// id, an exec in a stopped container), and what a terminal IO without a
// terminal in the process spec gives.
func TestExecErrors(t *testing.T) {
	e := newEnv(t, harness.Options{})
	ctx := testCtx(t, 3*time.Minute)
	c, task, statusC, out := e.run(ctx, t, "execerr", nil, "/workload", "counter")
	out.WaitFor(t, `^count=\d+$`, startWait)

	t.Run("missing-binary", func(t *testing.T) {
		proc, err := task.Exec(ctx, "missing", &specs.Process{Args: []string{"/no/such/binary"}, Cwd: "/"}, e.d.IO(nil, nil, nil))
		if err != nil {
			t.Fatal(err)
		}
		err = proc.Start(ctx)
		t.Logf("start: %v", err)
		if err == nil || !strings.Contains(err.Error(), "/no/such/binary") {
			t.Errorf("start of a missing binary: %v, want an error naming it", err)
		}
		if _, err := proc.Delete(ctx); err != nil {
			t.Errorf("delete of the failed exec: %v", err)
		}
	})

	t.Run("duplicate-id", func(t *testing.T) {
		ps := &specs.Process{Args: []string{"/workload", "sleep"}, Cwd: "/"}
		proc, err := task.Exec(ctx, "dup", ps, e.d.IO(nil, nil, nil))
		if err != nil {
			t.Fatal(err)
		}
		_, err = task.Exec(ctx, "dup", ps, e.d.IO(nil, nil, nil))
		t.Logf("second exec: %v", err)
		if !errdefs.IsAlreadyExists(err) {
			t.Errorf("second exec with the same id: %v, want already exists", err)
		}
		if _, err := proc.Delete(ctx); err != nil {
			t.Fatal(err)
		}
	})

	// Unlike create, where runsc would hang, runsc exec honours a console
	// socket whatever the process spec says: the process gets a terminal.
	t.Run("terminal-io-without-spec-terminal", func(t *testing.T) {
		execOut := harness.NewLineBuffer()
		proc, err := task.Exec(ctx, "tty-io", &specs.Process{Args: []string{"/workload", "tty"}, Cwd: "/"}, e.d.IO(nil, stripCR{execOut}, nil, cio.WithTerminal))
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
		execOut.WaitFor(t, `^stdout isatty=true$`, startWait)
		if err := proc.Kill(ctx, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitExit(t, execC, "exec")
		if _, err := proc.Delete(ctx); err != nil {
			t.Fatal(err)
		}
	})

	assertStatus(ctx, t, task, containerd.Running)
	n := out.Len()
	out.WaitForFrom(t, n, `^count=\d+$`, exitWait)

	t.Run("in-stopped-container", func(t *testing.T) {
		if st := killAndWait(ctx, t, task, statusC, syscall.SIGKILL); st.ExitCode() != 137 {
			t.Errorf("exit %d, want 137", st.ExitCode())
		}
		proc, err := task.Exec(ctx, "late", &specs.Process{Args: []string{"/workload", "sleep"}, Cwd: "/"}, e.d.IO(nil, nil, nil))
		if err == nil {
			err = proc.Start(ctx)
			_, _ = proc.Delete(ctx)
		}
		t.Logf("exec in a stopped container: %v", err)
		if err == nil {
			t.Error("exec in a stopped container succeeded")
		}
	})
	destroy(ctx, t, c)
	waitNoLeftovers(t, e.d)
}
