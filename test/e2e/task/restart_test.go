//go:build e2e

package task

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskv3 "github.com/containerd/containerd/api/runtime/task/v3"
	apitask "github.com/containerd/containerd/api/types/task"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

// TestCompatRestart proves that tasks survive a containerd restart in their
// shims: containerd reconnects (Connect), the tasks are still running with
// their pids and output, exec, pause/resume, kill, wait and delete work on the
// reloaded tasks through the client and ctr, events flow again, and nothing is
// left afterwards.
func TestCompatRestart(t *testing.T) {
	e := newEnv(t, harness.Options{})
	ctx := testCtx(t, 4*time.Minute)
	client := e.d.Client()

	a, taskA, _, outA := e.run(ctx, t, "restart-a", nil, "/workload", "counter")
	outA.WaitFor(t, `^count=\d+$`, startWait)
	b, taskB, _, outB := e.run(ctx, t, "restart-b", nil, "/workload", "signals")
	outB.WaitFor(t, `^ready pid=\d+$`, startWait)
	shimsBefore := shimProcesses(t, e.d)
	if len(shimsBefore) != 2 {
		t.Fatalf("want 2 shims before the restart, have %v", shimsBefore)
	}

	oldPID := e.d.PID()
	e.d.Restart(t)
	if e.d.PID() == oldPID {
		t.Fatal("containerd was not restarted")
	}
	events := subscribe(t, e.d)

	// The shims and their tasks kept running: the counter's output continues
	// through the same fifos.
	n := outA.Len()
	outA.WaitForFrom(t, n, `^count=\d+$`, exitWait)
	if shims := shimProcesses(t, e.d); len(shims) != 2 || shims[0].PID != shimsBefore[0].PID || shims[1].PID != shimsBefore[1].PID {
		t.Fatalf("shims after the restart %v, want the same as before %v", shims, shimsBefore)
	}

	// Reload A with the client.
	la, err := client.LoadContainer(ctx, a.ID())
	if err != nil {
		t.Fatal(err)
	}
	ta, err := la.Task(ctx, nil)
	if err != nil {
		t.Fatalf("reload task: %v", err)
	}
	if ta.Pid() != taskA.Pid() {
		t.Errorf("reloaded pid %d, want %d", ta.Pid(), taskA.Pid())
	}
	assertStatus(ctx, t, ta, containerd.Running)
	out, _, err := e.d.Ctr(ctx, "task", "ls")
	if err != nil {
		t.Fatal(err)
	}
	mustMatch(t, "ctr task ls", out, `(?m)^`+a.ID()+`\s+\d+\s+RUNNING$`)
	mustMatch(t, "ctr task ls", out, `(?m)^`+b.ID()+`\s+\d+\s+RUNNING$`)

	// Exec after the restart, with events.
	execOut := harness.NewLineBuffer()
	proc, err := ta.Exec(ctx, "after-restart", &specs.Process{Args: []string{"/bin/sh", "-c", "echo exec-after-restart; exit 5"}, Cwd: "/"}, e.d.IO(nil, execOut, execOut))
	if err != nil {
		t.Fatalf("exec after restart: %v", err)
	}
	execC, err := proc.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := proc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if st := waitExit(t, execC, "exec"); st.ExitCode() != 5 {
		t.Errorf("exec exit %d, want 5", st.ExitCode())
	}
	execOut.WaitFor(t, `^exec-after-restart$`, exitWait)
	events.waitFor(t, "/tasks/exec-started", forContainer(a.ID()))
	if _, err := proc.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	// ctr exec too.
	if stdout, _, err := e.d.Ctr(ctx, "task", "exec", "--exec-id", "ctr-exec", a.ID(), "/bin/sh", "-c", "echo ctr-exec-ok"); err != nil || !strings.Contains(stdout, "ctr-exec-ok") {
		t.Errorf("ctr task exec after restart: %q, %v", stdout, err)
	}

	// Pause and resume the reloaded task.
	if err := ta.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	events.waitFor(t, "/tasks/paused", forContainer(a.ID()))
	if err := ta.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	events.waitFor(t, "/tasks/resumed", forContainer(a.ID()))

	// Kill, wait and delete the reloaded task.
	statusC, err := ta.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ta.Kill(ctx, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if st := waitExit(t, statusC, "reloaded task"); st.ExitCode() != 143 {
		t.Errorf("exit %d, want 143", st.ExitCode())
	}
	ev := events.waitFor(t, "/tasks/exit", initExit(a.ID())).(*eventstypes.TaskExit)
	if ev.ExitStatus != 143 || ev.Pid != taskA.Pid() {
		t.Errorf("TaskExit %+v, want status 143 pid %d", ev, taskA.Pid())
	}
	if st, err := ta.Delete(ctx); err != nil || st.ExitCode() != 143 {
		t.Fatalf("delete reloaded task: %v, %v", st, err)
	}
	events.waitFor(t, "/tasks/delete", forContainer(a.ID()))
	if err := la.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
		t.Fatal(err)
	}

	// B through ctr: signal, wait for the handled exit, remove.
	if _, _, err := e.d.Ctr(ctx, "task", "kill", "-s", "SIGTERM", b.ID()); err != nil {
		t.Fatal(err)
	}
	outB.WaitFor(t, `^term$`, exitWait)
	waitTaskStatus(ctx, t, e.d, b.ID(), "STOPPED")
	ev = events.waitFor(t, "/tasks/exit", initExit(b.ID())).(*eventstypes.TaskExit)
	if ev.ExitStatus != 0 || ev.Pid != taskB.Pid() {
		t.Errorf("TaskExit %+v, want status 0 pid %d", ev, taskB.Pid())
	}
	if _, _, err := e.d.Ctr(ctx, "task", "rm", b.ID()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.d.Ctr(ctx, "container", "rm", b.ID()); err != nil {
		t.Fatal(err)
	}
	waitNoLeftovers(t, e.d)
}

// TestShimAPI calls the shim's task service directly over its ttrpc socket,
// for the methods containerd uses behind the scenes: Connect (the shim's and
// the task's pids, used when containerd reconnects), State, Stats, and
// Shutdown (refused while a container exists; after the task is deleted
// containerd shuts the shim down and it exits).
func TestShimAPI(t *testing.T) {
	e := newEnv(t, harness.Options{})
	ctx := testCtx(t, 2*time.Minute)
	c, task, _, out := e.run(ctx, t, "shimapi", nil, "/workload", "counter")
	out.WaitFor(t, `^count=\d+$`, startWait)

	shims := shimProcesses(t, e.d)
	if len(shims) != 1 {
		t.Fatalf("want one shim, have %v", shims)
	}
	svc := dialShim(t, e.d, c.ID())

	conn, err := svc.Connect(ctx, &taskv3.ConnectRequest{ID: c.ID()})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	if int(conn.ShimPid) != shims[0].PID || conn.TaskPid != task.Pid() {
		t.Errorf("connect: shim pid %d task pid %d, want %d and %d", conn.ShimPid, conn.TaskPid, shims[0].PID, task.Pid())
	}
	st, err := svc.State(ctx, &taskv3.StateRequest{ID: c.ID()})
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != apitask.Status_RUNNING || st.Pid != task.Pid() || st.Bundle == "" || st.Stdout == "" {
		t.Errorf("state %+v", st)
	}
	if _, err := svc.State(ctx, &taskv3.StateRequest{ID: "no-such-container"}); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("state of an unknown container: %v, want not found", err)
	}
	if _, err := svc.State(ctx, &taskv3.StateRequest{ID: c.ID(), ExecID: "no-such-exec"}); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("state of an unknown exec: %v, want not found", err)
	}
	stats, err := svc.Stats(ctx, &taskv3.StatsRequest{ID: c.ID()})
	if err != nil || stats.Stats == nil {
		t.Errorf("stats: %v, %v", stats, err)
	}

	// Shutdown while the container exists does nothing.
	if _, err := svc.Shutdown(ctx, &taskv3.ShutdownRequest{ID: c.ID()}); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if _, err := svc.Connect(ctx, &taskv3.ConnectRequest{ID: c.ID()}); err != nil {
		t.Fatalf("the shim stopped serving after a Shutdown with a live container: %v", err)
	}
	assertStatus(ctx, t, task, containerd.Running)

	// Deleting the task makes containerd shut the shim down.
	destroy(ctx, t, c)
	waitNoLeftovers(t, e.d)
}

// dialShim connects to the shim serving container id, by the address
// containerd recorded in its bundle, and closes the connection at the end of
// the test.
func dialShim(t *testing.T, d *harness.Daemon, id string) taskv3.TTRPCTaskService {
	t.Helper()
	bundle := filepath.Join(d.State, "io.containerd.runtime.v2.task", d.Namespace, id)
	var addr string
	if raw, err := os.ReadFile(filepath.Join(bundle, "bootstrap.json")); err == nil {
		var params struct {
			Address string `json:"address"`
		}
		if err := json.Unmarshal(raw, &params); err != nil {
			t.Fatalf("bootstrap.json: %v", err)
		}
		addr = params.Address
	} else if raw, err := os.ReadFile(filepath.Join(bundle, "address")); err == nil {
		addr = strings.TrimSpace(string(raw))
	} else {
		t.Fatalf("no shim address in %s: %v", bundle, err)
	}
	conn, err := net.Dial("unix", strings.TrimPrefix(addr, "unix://"))
	if err != nil {
		t.Fatalf("dial shim %s: %v", addr, err)
	}
	client := ttrpc.NewClient(conn)
	t.Cleanup(func() { client.Close() })
	return taskv3.NewTTRPCTaskClient(client)
}

// TestShimKilled proves the cleanup after a shim dies (containerd runs the
// shim binary's `delete`, Manager.Stop): containerd reports the task's exit,
// and the sandbox, its runsc state and the rootfs mount are gone.
func TestShimKilled(t *testing.T) {
	e := newEnv(t, harness.Options{})
	events := subscribe(t, e.d)
	ctx := testCtx(t, 2*time.Minute)
	c, task, _, out := e.run(ctx, t, "shimkill", nil, "/workload", "counter")
	out.WaitFor(t, `^count=\d+$`, startWait)
	shims := shimProcesses(t, e.d)
	if len(shims) != 1 {
		t.Fatalf("want one shim, have %v", shims)
	}
	sockets := harness.ShimSockets(shims[0])
	if err := syscall.Kill(shims[0].PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ev := events.waitFor(t, "/tasks/exit", initExit(c.ID())).(*eventstypes.TaskExit)
	if ev.Pid != task.Pid() || ev.ExitStatus != 137 {
		t.Errorf("TaskExit %+v, want pid %d status 137", ev, task.Pid())
	}
	if _, err := task.Delete(ctx); err != nil && !errdefs.IsNotFound(err) {
		t.Errorf("delete after the shim died: %v", err)
	}
	if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
		t.Fatal(err)
	}
	waitNoLeftovers(t, e.d)
	// The killed shim could not remove its socket; the shim's delete does.
	for _, s := range sockets {
		if _, err := os.Lstat(s); !os.IsNotExist(err) {
			t.Errorf("the killed shim's socket %s is still there (%v)", s, err)
		}
	}
}
