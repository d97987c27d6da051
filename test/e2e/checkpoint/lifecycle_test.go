//go:build e2e

package checkpoint

import (
	"strings"
	"syscall"
	"testing"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/ckenv"
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
	p := e.Run(id, []string{"/workload", "signals"})
	ready := p.Out.WaitFor(t, `^ready pid=\d+$`, startTimeout)
	if err := p.Task.Kill(e.Ctx, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	p.Out.WaitFor(t, `^got=SIGUSR1$`, lineTimeout)
	img, err := p.Task.Checkpoint(e.Ctx, containerd.WithCheckpointName("localhost/ckpt/"+id+":exit"),
		ckenv.WithCheckpointOptions(&runcoptions.CheckpointOptions{Exit: true}))
	if err != nil {
		t.Fatal(err)
	}
	e.WaitExit(p)
	e.DeleteTask(p)

	r := e.StartTask(p.C, containerd.WithTaskCheckpoint(img))
	st, err := r.Task.Status(e.Ctx)
	if err != nil || st.Status != containerd.Running {
		t.Fatalf("restored task status %v, %v; want running", st.Status, err)
	}
	if pids, err := r.Task.Pids(e.Ctx); err != nil || len(pids) == 0 {
		t.Fatalf("pids of the restored task: %v, %v", pids, err)
	}
	if err := r.Task.Kill(e.Ctx, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	r.Out.WaitFor(t, `^got=SIGUSR2$`, lineTimeout)
	if got := e.mustExec(r, "/bin/sh", "-c", "echo exec-ok"); got != "exec-ok\n" {
		t.Errorf("exec output %q", got)
	}
	if _, code := e.exec(r, "/workload", "exit", "--code", "5"); code != 5 {
		t.Errorf("exec exit status %d, want 5", code)
	}
	if err := r.Task.Pause(e.Ctx); err != nil {
		t.Fatal(err)
	}
	if s := e.RunscStatus(id); s != "paused" {
		t.Fatalf("runsc status %q after pause, want paused", s)
	}
	if err := r.Task.Resume(e.Ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Task.Kill(e.Ctx, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	r.Out.WaitFor(t, `^got=SIGHUP$`, lineTimeout)
	if err := r.Task.Kill(e.Ctx, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := e.WaitExit(r); code != 0 {
		t.Fatalf("restored signals workload exited %d after SIGTERM, want 0", code)
	}
	if code := e.DeleteTask(r); code != 0 {
		t.Fatalf("delete reported %d, want 0", code)
	}
	lines := r.Out.Lines()
	if len(lines) == 0 || lines[len(lines)-1] != "term" || strings.Contains(r.Out.String(), "ready") {
		t.Fatalf("restored output %q: want the signals and term, and no new ready line (the process was restored, not restarted; before: %q)", lines, ready)
	}
	e.CheckNoTrace(id)
}
