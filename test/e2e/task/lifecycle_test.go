//go:build e2e

package task

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"syscall"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

// TestCompatLifecycle drives a container through the task API with the Go
// client: Create, State, Start, Pids, Exec (start, wait, delete, kill),
// Pause, Resume, Kill, Wait, Delete, and the shim's Shutdown after the last
// task; it asserts every task event containerd receives, with its fields.
func TestCompatLifecycle(t *testing.T) {
	e := newEnv(t, harness.Options{})
	ctx := testCtx(t, 5*time.Minute)
	events := subscribe(t, e.d)

	id := harness.RandomID("life")
	c := e.newContainer(ctx, t, id, nil, nil, "/workload", "counter", "--interval", "100ms")
	out := harness.NewLineBuffer()

	// Create: the sandbox exists, nothing runs.
	task, err := c.NewTask(ctx, e.d.IO(nil, out, out))
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if task.Pid() == 0 {
		t.Fatal("create returned pid 0")
	}
	ev := events.waitFor(t, "/tasks/create", func(v any) bool { return containerOf(v) == id }).(*eventstypes.TaskCreate)
	if ev.Pid != task.Pid() || ev.Bundle == "" || ev.IO == nil || ev.IO.Stdout == "" || ev.IO.Terminal {
		t.Errorf("TaskCreate %+v: want pid %d, a bundle and stdout fifo, no terminal", ev, task.Pid())
	}
	assertStatus(ctx, t, task, containerd.Created)

	// Start.
	statusC, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatalf("start: %v", err)
	}
	start := events.waitFor(t, "/tasks/start", func(v any) bool { return containerOf(v) == id }).(*eventstypes.TaskStart)
	if start.Pid != task.Pid() {
		t.Errorf("TaskStart pid %d, want %d", start.Pid, task.Pid())
	}
	assertStatus(ctx, t, task, containerd.Running)
	_, i := out.WaitForFrom(t, 0, `^count=\d+$`, startWait)

	// Pids: the counter, inside the sandbox.
	pids, err := task.Pids(ctx)
	if err != nil {
		t.Fatalf("pids: %v", err)
	}
	if len(pids) == 0 {
		t.Fatal("pids: none")
	}

	// Exec a process that exits with a code.
	execID := "exit3"
	ps := specs.Process{Args: []string{"/workload", "exit", "--code", "3"}, Cwd: "/", Env: []string{"PATH=/bin"}}
	execOut := harness.NewLineBuffer()
	proc, err := task.Exec(ctx, execID, &ps, e.d.IO(nil, execOut, execOut))
	if err != nil {
		t.Fatalf("exec: %v", err)
	}
	added := events.waitFor(t, "/tasks/exec-added", func(v any) bool { return containerOf(v) == id }).(*eventstypes.TaskExecAdded)
	if added.ExecID != execID {
		t.Errorf("TaskExecAdded exec id %q, want %q", added.ExecID, execID)
	}
	execC, err := proc.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := proc.Start(ctx); err != nil {
		t.Fatalf("exec start: %v", err)
	}
	started := events.waitFor(t, "/tasks/exec-started", func(v any) bool {
		return containerOf(v) == id && v.(*eventstypes.TaskExecStarted).ExecID == execID
	}).(*eventstypes.TaskExecStarted)
	if started.Pid == 0 || started.Pid != proc.Pid() {
		t.Errorf("TaskExecStarted pid %d, want %d (non-zero)", started.Pid, proc.Pid())
	}
	st := waitExit(t, execC, "exec")
	if st.ExitCode() != 3 {
		t.Errorf("exec exit status %d, want 3", st.ExitCode())
	}
	exit := events.waitFor(t, "/tasks/exit", func(v any) bool {
		return containerOf(v) == id && v.(*eventstypes.TaskExit).ID == execID
	}).(*eventstypes.TaskExit)
	if exit.ExitStatus != 3 || exit.Pid != proc.Pid() {
		t.Errorf("exec TaskExit %+v: want status 3, pid %d", exit, proc.Pid())
	}
	execOut.WaitFor(t, `^exiting code=3$`, exitWait)
	if pst, err := proc.Status(ctx); err != nil || pst.Status != containerd.Stopped || pst.ExitStatus != 3 {
		t.Errorf("exec state %+v, %v: want stopped with 3", pst, err)
	}
	if st, err := proc.Delete(ctx); err != nil || st.ExitCode() != 3 {
		t.Fatalf("exec delete: %v, %v", st, err)
	}
	if _, err := task.LoadProcess(ctx, execID, nil); !errdefs.IsNotFound(err) {
		t.Errorf("load deleted exec: %v, want not found", err)
	}

	// A long-running exec shows up in Pids with its exec id, and is killed.
	sleeper, err := task.Exec(ctx, "sleeper", &specs.Process{Args: []string{"/workload", "sleep"}, Cwd: "/"}, e.d.IO(nil, nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	sleepC, err := sleeper.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := sleeper.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if pst, err := sleeper.Status(ctx); err != nil || pst.Status != containerd.Running {
		t.Errorf("exec state %+v, %v: want running", pst, err)
	}
	pids, err = task.Pids(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range pids {
		if p.Info == nil {
			continue
		}
		v, err := typeurl.UnmarshalAny(p.Info)
		if err != nil {
			t.Fatal(err)
		}
		if d, ok := v.(*runcoptions.ProcessDetails); ok && d.ExecID == "sleeper" {
			found = true
		}
	}
	if !found || len(pids) < 2 {
		t.Errorf("pids %v: want the init process and the exec with its exec id", pids)
	}
	if err := sleeper.Kill(ctx, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if st := waitExit(t, sleepC, "exec sleeper"); st.ExitCode() != 137 {
		t.Errorf("killed exec exit %d, want 137", st.ExitCode())
	}
	if _, err := sleeper.Delete(ctx); err != nil {
		t.Fatal(err)
	}

	// Pause and Resume.
	if err := task.Pause(ctx); err != nil {
		t.Fatalf("pause: %v", err)
	}
	events.waitFor(t, "/tasks/paused", func(v any) bool { return containerOf(v) == id })
	assertStatus(ctx, t, task, containerd.Paused)
	if _, err := task.Exec(ctx, "in-paused", &specs.Process{Args: []string{"/workload", "sleep"}, Cwd: "/"}, e.d.IO(nil, nil, nil)); err == nil {
		t.Error("exec in a paused container succeeded")
	}
	if err := task.Resume(ctx); err != nil {
		t.Fatalf("resume: %v", err)
	}
	events.waitFor(t, "/tasks/resumed", func(v any) bool { return containerOf(v) == id })
	assertStatus(ctx, t, task, containerd.Running)
	n := out.Len()
	_, i = out.WaitForFrom(t, max(n, i+1), `^count=\d+$`, exitWait)

	// Kill and Wait: the counter exits 128+SIGTERM.
	if err := task.Kill(ctx, syscall.SIGTERM); err != nil {
		t.Fatalf("kill: %v", err)
	}
	st = waitExit(t, statusC, "task")
	if st.ExitCode() != 143 {
		t.Errorf("exit status %d, want 143", st.ExitCode())
	}
	exit = events.waitFor(t, "/tasks/exit", func(v any) bool {
		return containerOf(v) == id && v.(*eventstypes.TaskExit).ID == id
	}).(*eventstypes.TaskExit)
	if exit.ExitStatus != 143 || exit.Pid != task.Pid() || exit.ExitedAt == nil {
		t.Errorf("TaskExit %+v: want status 143 pid %d", exit, task.Pid())
	}
	assertStatus(ctx, t, task, containerd.Stopped)
	if err := task.Kill(ctx, syscall.SIGKILL); !errdefs.IsNotFound(err) {
		t.Errorf("kill of an exited task: %v, want not found", err)
	}

	// Delete, then the shim shuts down and nothing is left.
	dst, err := task.Delete(ctx)
	if err != nil {
		t.Fatalf("delete: %v", err)
	}
	if dst.ExitCode() != 143 {
		t.Errorf("delete exit status %d, want 143", dst.ExitCode())
	}
	del := events.waitFor(t, "/tasks/delete", func(v any) bool { return containerOf(v) == id }).(*eventstypes.TaskDelete)
	if del.Pid != task.Pid() || del.ExitStatus != 143 {
		t.Errorf("TaskDelete %+v: want pid %d status 143", del, task.Pid())
	}
	if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
		t.Fatal(err)
	}
	waitNoLeftovers(t, e.d)
	if got := events.topics(id); !slices.Equal(got, []string{
		"/tasks/create", "/tasks/start",
		"/tasks/exec-added", "/tasks/exec-started", "/tasks/exit",
		"/tasks/exec-added", "/tasks/exec-started", "/tasks/exit",
		"/tasks/paused", "/tasks/resumed", "/tasks/exit", "/tasks/delete",
	}) {
		t.Errorf("event topics %v", got)
	}
}

func assertStatus(ctx context.Context, t *testing.T, task containerd.Task, want containerd.ProcessStatus) {
	t.Helper()
	st, err := task.Status(ctx)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	if st.Status != want {
		t.Fatalf("status %s, want %s", st.Status, want)
	}
}

// TestCompatCtrLifecycle drives the same task API through ctr: container
// create, task start -d, ls, ps, exec (exit code), pause, resume, metrics,
// kill, rm, with the events containerd receives.
func TestCompatCtrLifecycle(t *testing.T) {
	e := newEnv(t, harness.Options{})
	ctx := testCtx(t, 3*time.Minute)
	events := subscribe(t, e.d)
	id := harness.RandomID("ctrlife")
	ctr := func(args ...string) string {
		t.Helper()
		out, _, err := e.d.Ctr(ctx, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}

	ctr(append(append([]string{"container", "create"}, e.d.CtrRuntimeArgs()...), e.ref, id, "/workload", "counter")...)
	ctr("task", "start", "-d", id)
	create := events.waitFor(t, "/tasks/create", forContainer(id)).(*eventstypes.TaskCreate)
	start := events.waitFor(t, "/tasks/start", forContainer(id)).(*eventstypes.TaskStart)
	if create.Pid == 0 || start.Pid != create.Pid {
		t.Errorf("TaskCreate pid %d, TaskStart pid %d: want the same, non-zero", create.Pid, start.Pid)
	}
	waitTaskStatus(ctx, t, e.d, id, "RUNNING")
	mustMatch(t, "ctr task ls", ctr("task", "ls"), fmt.Sprintf(`(?m)^%s\s+%d\s+RUNNING$`, id, start.Pid))
	mustMatch(t, "ctr task ps", ctr("task", "ps", id), `(?m)^PID\s+INFO\s*\n\d+\s+-`)

	stdout, _, err := e.d.Ctr(ctx, "task", "exec", "--exec-id", "e1", id, "/bin/sh", "-c", "echo from-exec; exit 3")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Errorf("ctr task exec: %v, want exit status 3", err)
	}
	mustMatch(t, "exec output", stdout, `(?m)^from-exec$`)
	added := events.waitFor(t, "/tasks/exec-added", forContainer(id)).(*eventstypes.TaskExecAdded)
	started := events.waitFor(t, "/tasks/exec-started", forContainer(id)).(*eventstypes.TaskExecStarted)
	execExit := events.waitFor(t, "/tasks/exit", func(v any) bool {
		x, ok := v.(*eventstypes.TaskExit)
		return ok && x.ContainerID == id && x.ID == "e1"
	}).(*eventstypes.TaskExit)
	if added.ExecID != "e1" || started.ExecID != "e1" || started.Pid == 0 || execExit.Pid != started.Pid || execExit.ExitStatus != 3 {
		t.Errorf("exec events: %+v, %+v, %+v", added, started, execExit)
	}

	ctr("task", "pause", id)
	events.waitFor(t, "/tasks/paused", forContainer(id))
	waitTaskStatus(ctx, t, e.d, id, "PAUSED")
	ctr("task", "resume", id)
	events.waitFor(t, "/tasks/resumed", forContainer(id))
	waitTaskStatus(ctx, t, e.d, id, "RUNNING")
	mustMatch(t, "ctr task metrics", ctr("task", "metrics", id), `(?m)^memory\.usage_in_bytes\s+[1-9]\d*\s*$`)

	ctr("task", "kill", id)
	exit := events.waitFor(t, "/tasks/exit", initExit(id)).(*eventstypes.TaskExit)
	if exit.ExitStatus != 143 || exit.Pid != start.Pid {
		t.Errorf("TaskExit %+v, want status 143 pid %d", exit, start.Pid)
	}
	waitTaskStatus(ctx, t, e.d, id, "STOPPED")
	ctr("task", "rm", id)
	del := events.waitFor(t, "/tasks/delete", forContainer(id)).(*eventstypes.TaskDelete)
	if del.ExitStatus != 143 || del.Pid != start.Pid {
		t.Errorf("TaskDelete %+v, want status 143 pid %d", del, start.Pid)
	}
	ctr("container", "rm", id)
	waitNoLeftovers(t, e.d)
	if got := events.topics(id); !slices.Equal(got, []string{
		"/tasks/create", "/tasks/start", "/tasks/exec-added", "/tasks/exec-started", "/tasks/exit",
		"/tasks/paused", "/tasks/resumed", "/tasks/exit", "/tasks/delete",
	}) {
		t.Errorf("event topics %v", got)
	}
}
