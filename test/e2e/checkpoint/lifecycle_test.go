//go:build e2e

package checkpoint

import (
	"strings"
	"syscall"
	"testing"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

// TestRestoredTaskBehavesLikeFresh restores the `signals` workload (it prints
// got=<SIGNAL> for each signal and exits 0 on SIGTERM) through WithTaskCheckpoint and
// drives the restored task through the task API: it reports running and its pids,
// signals reach the restored process and print on the NEW stdout, execs run with their
// own exit status, pause and resume work, and SIGTERM ends it with status 0, reported by
// Wait and by Delete, after which nothing of it is left.
func TestRestoredTaskBehavesLikeFresh(t *testing.T) {
	e := setup(t, harness.Options{})
	id := harness.RandomID("signals")
	p := e.run(id, []string{"/workload", "signals"})
	ready := p.out.WaitFor(t, `^ready pid=\d+$`, startTimeout)
	if err := p.task.Kill(e.ctx, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	p.out.WaitFor(t, `^got=SIGUSR1$`, lineTimeout)
	img, err := p.task.Checkpoint(e.ctx, containerd.WithCheckpointName("localhost/ckpt/"+id+":exit"),
		withCheckpointOptions(&runcoptions.CheckpointOptions{Exit: true}))
	if err != nil {
		t.Fatal(err)
	}
	e.waitExit(p)
	e.deleteTask(p)

	r := e.startTask(p.c, containerd.WithTaskCheckpoint(img))
	st, err := r.task.Status(e.ctx)
	if err != nil || st.Status != containerd.Running {
		t.Fatalf("restored task status %v, %v; want running", st.Status, err)
	}
	if pids, err := r.task.Pids(e.ctx); err != nil || len(pids) == 0 {
		t.Fatalf("pids of the restored task: %v, %v", pids, err)
	}
	if err := r.task.Kill(e.ctx, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	r.out.WaitFor(t, `^got=SIGUSR2$`, lineTimeout)
	if got := e.mustExec(r, "/bin/sh", "-c", "echo exec-ok"); got != "exec-ok\n" {
		t.Errorf("exec output %q", got)
	}
	if _, code := e.exec(r, "/workload", "exit", "--code", "5"); code != 5 {
		t.Errorf("exec exit status %d, want 5", code)
	}
	if err := r.task.Pause(e.ctx); err != nil {
		t.Fatal(err)
	}
	if s := e.runscStatus(id); s != "paused" {
		t.Fatalf("runsc status %q after pause, want paused", s)
	}
	if err := r.task.Resume(e.ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.task.Kill(e.ctx, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	r.out.WaitFor(t, `^got=SIGHUP$`, lineTimeout)
	if err := r.task.Kill(e.ctx, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := e.waitExit(r); code != 0 {
		t.Fatalf("restored signals workload exited %d after SIGTERM, want 0", code)
	}
	if code := e.deleteTask(r); code != 0 {
		t.Fatalf("delete reported %d, want 0", code)
	}
	lines := r.out.Lines()
	if len(lines) == 0 || lines[len(lines)-1] != "term" || strings.Contains(r.out.String(), "ready") {
		t.Fatalf("restored output %q: want the signals and term, and no new ready line (the process was restored, not restarted; before: %q)", lines, ready)
	}
	e.checkNoTrace(id)
}
