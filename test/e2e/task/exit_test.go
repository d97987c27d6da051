//go:build e2e

package task

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	containerd "github.com/containerd/containerd/v2/client"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

// TestCompatExitAndSignals proves exit statuses and signal delivery: exit
// codes reach Wait, TaskExit, Delete and ctr; SIGTERM reaches a handler,
// SIGKILL gives 137; kill --all reaches every process; a running task is
// force-deleted by the client (WithProcessKill) and by `ctr task rm -f`.
func TestCompatExitAndSignals(t *testing.T) {
	e := newEnv(t, harness.Options{})
	events := subscribe(t, e.d)

	t.Run("exit-codes", func(t *testing.T) {
		ctx := testCtx(t, 2*time.Minute)
		for _, code := range []uint32{0, 1, 42, 255} {
			c, task, statusC, out := e.run(ctx, t, "exit", nil, "/workload", "exit", "--code", fmt.Sprint(code))
			st := waitExit(t, statusC, "exit")
			if st.ExitCode() != code {
				t.Errorf("wait: exit status %d, want %d", st.ExitCode(), code)
			}
			ev := events.waitFor(t, "/tasks/exit", initExit(c.ID())).(*eventstypes.TaskExit)
			if ev.ExitStatus != code || ev.ID != c.ID() || ev.Pid != task.Pid() {
				t.Errorf("TaskExit %+v, want status %d for pid %d", ev, code, task.Pid())
			}
			dst, err := task.Delete(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if dst.ExitCode() != code {
				t.Errorf("delete: exit status %d, want %d", dst.ExitCode(), code)
			}
			out.WaitFor(t, fmt.Sprintf("^exiting code=%d$", code), exitWait)
			if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("ctr-run-exit-code", func(t *testing.T) {
		ctx := testCtx(t, 2*time.Minute)
		args := append([]string{"run", "--rm"}, e.d.CtrRuntimeArgs()...)
		args = append(args, e.ref, harness.RandomID("ctrexit"), "/workload", "exit", "--code", "42")
		stdout, _, err := e.d.Ctr(ctx, args...)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 42 {
			t.Errorf("ctr run: %v, want exit status 42", err)
		}
		mustMatch(t, "ctr run output", stdout, `(?m)^exiting code=42\r?$`)
	})

	t.Run("sigterm-handled", func(t *testing.T) {
		ctx := testCtx(t, 2*time.Minute)
		c, task, statusC, out := e.run(ctx, t, "sigterm", nil, "/workload", "signals")
		out.WaitFor(t, `^ready pid=\d+$`, startWait)
		if err := task.Kill(ctx, syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
		out.WaitFor(t, `^got=SIGUSR1$`, exitWait)
		if st := killAndWait(ctx, t, task, statusC, syscall.SIGTERM); st.ExitCode() != 0 {
			t.Errorf("exit status %d after SIGTERM, want 0 (handled)", st.ExitCode())
		}
		out.WaitFor(t, `^got=SIGTERM$`, exitWait)
		out.WaitFor(t, `^term$`, exitWait)
		destroy(ctx, t, c)
	})

	t.Run("sigkill", func(t *testing.T) {
		ctx := testCtx(t, 2*time.Minute)
		c, task, statusC, out := e.run(ctx, t, "sigkill", nil, "/workload", "signals")
		out.WaitFor(t, `^ready pid=\d+$`, startWait)
		if st := killAndWait(ctx, t, task, statusC, syscall.SIGKILL); st.ExitCode() != 137 {
			t.Errorf("exit status %d after SIGKILL, want 137", st.ExitCode())
		}
		ev := events.waitFor(t, "/tasks/exit", initExit(c.ID())).(*eventstypes.TaskExit)
		if ev.ExitStatus != 137 {
			t.Errorf("TaskExit status %d, want 137", ev.ExitStatus)
		}
		// WithProcessKill on an exited task: its kill --all gets NotFound,
		// which the client accepts.
		if st, err := task.Delete(ctx, containerd.WithProcessKill); err != nil || st.ExitCode() != 137 {
			t.Fatalf("delete with WithProcessKill of an exited task: %v, %v", st, err)
		}
		destroy(ctx, t, c)
	})

	// `ctr task kill -a` signals every process of the container: an exec'd
	// process gets the signal too, while the init process survives it.
	t.Run("ctr-kill-all", func(t *testing.T) {
		ctx := testCtx(t, 2*time.Minute)
		c, task, statusC, out := e.run(ctx, t, "killall", nil, "/bin/sh", "-c", `trap "echo init-got-term" TERM; echo init-ready; while true; do sleep 0.1; done`)
		out.WaitFor(t, `^init-ready$`, startWait)
		execOut := harness.NewLineBuffer()
		proc, err := task.Exec(ctx, "sig", &specs.Process{Args: []string{"/workload", "signals"}, Cwd: "/"}, e.d.IO(nil, execOut, execOut))
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
		execOut.WaitFor(t, `^ready pid=\d+$`, startWait)
		if _, _, err := e.d.Ctr(ctx, "task", "kill", "-a", "-s", "SIGTERM", c.ID()); err != nil {
			t.Fatal(err)
		}
		if st := waitExit(t, execC, "exec"); st.ExitCode() != 0 {
			t.Errorf("exec exit status %d, want 0 (handled SIGTERM)", st.ExitCode())
		}
		execOut.WaitFor(t, `^got=SIGTERM$`, exitWait)
		out.WaitFor(t, `^init-got-term$`, exitWait)
		if st, err := task.Status(ctx); err != nil || st.Status != containerd.Running {
			t.Errorf("init after kill -a SIGTERM: %+v, %v; want running (it traps SIGTERM)", st, err)
		}
		if _, err := proc.Delete(ctx); err != nil {
			t.Fatal(err)
		}
		if _, _, err := e.d.Ctr(ctx, "task", "kill", "-a", "-s", "SIGKILL", c.ID()); err != nil {
			t.Fatal(err)
		}
		if st := waitExit(t, statusC, "init"); st.ExitCode() != 137 {
			t.Errorf("init exit status %d after kill -a SIGKILL, want 137", st.ExitCode())
		}
		destroy(ctx, t, c)
	})

	// A created task has nothing running yet: a kill stops it, Delete works.
	t.Run("kill-created", func(t *testing.T) {
		ctx := testCtx(t, 2*time.Minute)
		c := e.newContainer(ctx, t, harness.RandomID("killcreated"), nil, nil, "/workload", "counter")
		task, err := c.NewTask(ctx, e.d.IO(nil, nil, nil))
		if err != nil {
			t.Fatal(err)
		}
		statusC, err := task.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st := killAndWait(ctx, t, task, statusC, syscall.SIGKILL); st.ExitCode() != 137 {
			t.Errorf("exit status %d, want 137", st.ExitCode())
		}
		ev := events.waitFor(t, "/tasks/exit", initExit(c.ID())).(*eventstypes.TaskExit)
		if ev.ExitStatus != 137 {
			t.Errorf("TaskExit %+v, want status 137", ev)
		}
		if err := task.Start(ctx); err == nil {
			t.Error("start of a killed task succeeded")
		}
		destroy(ctx, t, c)
		waitNoLeftovers(t, e.d)
	})

	// The client refuses to delete a created task without WithProcessKill.
	t.Run("force-delete-created", func(t *testing.T) {
		ctx := testCtx(t, 2*time.Minute)
		c := e.newContainer(ctx, t, harness.RandomID("delcreated"), nil, nil, "/workload", "counter")
		task, err := c.NewTask(ctx, e.d.IO(nil, nil, nil))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil {
			t.Fatalf("delete of a created task: %v", err)
		}
		events.waitFor(t, "/tasks/delete", forContainer(c.ID()))
		if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
			t.Fatal(err)
		}
		waitNoLeftovers(t, e.d)
	})

	// runsc refuses to signal a paused sandbox: SIGKILL thaws it first, other
	// signals are refused.
	t.Run("kill-paused", func(t *testing.T) {
		ctx := testCtx(t, 2*time.Minute)
		c, task, statusC, out := e.run(ctx, t, "killpaused", nil, "/workload", "counter")
		out.WaitFor(t, `^count=\d+$`, startWait)
		if err := task.Pause(ctx); err != nil {
			t.Fatal(err)
		}
		err := task.Kill(ctx, syscall.SIGTERM)
		if err == nil || !strings.Contains(err.Error(), "paused") {
			t.Errorf("SIGTERM to a paused task: %v, want runsc's refusal naming the paused state", err)
		}
		assertStatus(ctx, t, task, containerd.Paused)
		if st := killAndWait(ctx, t, task, statusC, syscall.SIGKILL); st.ExitCode() != 137 {
			t.Errorf("exit status %d, want 137", st.ExitCode())
		}
		destroy(ctx, t, c)
	})

	t.Run("client-force-delete", func(t *testing.T) {
		ctx := testCtx(t, 2*time.Minute)
		c, task, _, out := e.run(ctx, t, "forcedel", nil, "/workload", "counter")
		out.WaitFor(t, `^count=\d+$`, startWait)
		if _, err := task.Delete(ctx); err == nil {
			t.Fatal("delete of a running task without force succeeded")
		}
		st, err := task.Delete(ctx, containerd.WithProcessKill)
		if err != nil {
			t.Fatalf("force delete: %v", err)
		}
		if st.ExitCode() != 137 {
			t.Errorf("force delete exit status %d, want 137", st.ExitCode())
		}
		ev := events.waitFor(t, "/tasks/delete", forContainer(c.ID())).(*eventstypes.TaskDelete)
		if ev.ExitStatus != 137 || ev.Pid != task.Pid() {
			t.Errorf("TaskDelete %+v, want status 137 pid %d", ev, task.Pid())
		}
		if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
			t.Fatal(err)
		}
		waitNoLeftovers(t, e.d)
	})

	t.Run("ctr-task-rm-f", func(t *testing.T) {
		ctx := testCtx(t, 2*time.Minute)
		id := harness.RandomID("ctrrmf")
		args := append([]string{"run", "-d"}, e.d.CtrRuntimeArgs()...)
		args = append(args, e.ref, id, "/workload", "counter")
		if _, _, err := e.d.Ctr(ctx, args...); err != nil {
			t.Fatal(err)
		}
		waitTaskStatus(ctx, t, e.d, id, "RUNNING")
		if _, _, err := e.d.Ctr(ctx, "task", "rm", id); err == nil {
			t.Fatal("ctr task rm of a running task succeeded")
		}
		if _, _, err := e.d.Ctr(ctx, "task", "rm", "-f", id); err != nil {
			t.Fatal(err)
		}
		if _, _, err := e.d.Ctr(ctx, "container", "rm", id); err != nil {
			t.Fatal(err)
		}
		waitNoLeftovers(t, e.d)
	})
	waitNoLeftovers(t, e.d)
}

// waitTaskStatus waits until `ctr task ls` shows task id with status.
func waitTaskStatus(ctx context.Context, t *testing.T, d *harness.Daemon, id, status string) {
	t.Helper()
	deadline := time.Now().Add(startWait)
	for {
		out, _, err := d.Ctr(ctx, "task", "ls")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) == 3 && f[0] == id && f[2] == status {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s not %s within %v:\n%s", id, status, startWait, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
