//go:build e2e

package task

import (
	"path/filepath"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

// TestCompatPrefixIDs runs containers whose ids are prefixes of one another
// ("web", "web2", "web2x"), as people name them with ctr. runsc resolves the id
// it is given as a prefix when it has several candidates and then refuses it as
// ambiguous, so with one runsc state directory per namespace `runsc kill web`
// failed while "web2" existed (found with a checkpoint clone named "<id>r"). The
// shim gives each sandbox a state directory of its own: pause, resume, exec,
// checkpoint and kill reach the container named, and deleting them all leaves no
// state and no directory behind.
func TestCompatPrefixIDs(t *testing.T) {
	e := newEnv(t, harness.Options{})
	ctx := testCtx(t, 3*time.Minute)
	base := harness.RandomID("web")
	type running struct {
		c       containerd.Container
		task    containerd.Task
		statusC <-chan containerd.ExitStatus
		out     *harness.LineBuffer
	}
	var cs []running
	for _, id := range []string{base, base + "2", base + "2x"} {
		c, task, statusC, out := e.start(ctx, t, e.newContainer(ctx, t, id, nil, nil, "/workload", "counter", "--interval", "50ms"))
		out.WaitFor(t, `^count=3$`, startWait)
		cs = append(cs, running{c, task, statusC, out})
	}
	first := cs[0]
	if err := first.task.Pause(ctx); err != nil {
		t.Fatalf("pause %s beside %s2: %v", base, base, err)
	}
	if err := first.task.Resume(ctx); err != nil {
		t.Fatalf("resume %s: %v", base, err)
	}
	img := filepath.Join(e.d.Dir, harness.RandomID("prefix-ckpt"))
	if _, err := first.task.Checkpoint(ctx, containerd.WithCheckpointImagePath(img)); err != nil {
		t.Fatalf("checkpoint %s beside %s2: %v", base, base, err)
	}
	// Killing the shortest id stops that container and no other.
	if st := killAndWait(ctx, t, first.task, first.statusC, syscall.SIGKILL); st.ExitCode() != 137 {
		t.Errorf("%s: exit status %d after SIGKILL, want 137", base, st.ExitCode())
	}
	for _, r := range cs[1:] {
		st, err := r.task.Status(ctx)
		if err != nil || st.Status != containerd.Running {
			t.Errorf("%s after killing %s: status %v, %v; want running", r.c.ID(), base, st.Status, err)
		}
	}
	for _, r := range cs {
		destroy(ctx, t, r.c)
	}
	waitNoLeftovers(t, e.d)
}
