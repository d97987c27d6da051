//go:build e2e

package checkpoint

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/testimage"
)

// TestCompatPausedStaysPaused: a task its user paused stays paused through every
// checkpoint command. `ctr container checkpoint` pauses and resumes the task itself,
// so it is refused, clearly, without touching the task (as runc's shim refuses a
// second pause); `ctr task checkpoint` (the client's task.Checkpoint) sees the task
// paused, neither pauses nor resumes it, and checkpoints it: it is still paused after,
// prints nothing while paused, and goes on when the user resumes it.
func TestCompatPausedStaysPaused(t *testing.T) {
	e := setup(t, harness.Options{})
	id := harness.RandomID("paused")
	logf := filepath.Join(e.D.Dir, "logs", id+".log")
	e.ctr(append(append(append([]string{"run", "-d"}, e.D.CtrRuntimeArgs()...), "--log-uri", "file://"+logf, testimage.Ref, id), counterArgs...)...)
	harness.WaitForFileLine(t, logf, `^count=3$`, startTimeout)
	e.ctr("task", "pause", id)

	_, stderr, err := e.D.Ctr(e.Ctx, "container", "checkpoint", "--task", "--image", id, "localhost/paused-ckpt:1")
	if err == nil || !strings.Contains(stderr+err.Error(), "already paused") {
		t.Fatalf("ctr container checkpoint of a paused task: %v\n%s\nwant a refusal saying it is already paused", err, stderr)
	}
	if st := e.taskStatus(id); st != containerd.Paused {
		t.Fatalf("task is %s after the refused checkpoint, want paused", st)
	}

	dir := e.ImagePathDir(id)
	e.ctr("task", "checkpoint", "--image-path", dir, id)
	if st := e.taskStatus(id); st != containerd.Paused {
		t.Fatalf("task is %s after `ctr task checkpoint`, want paused", st)
	}
	n := len(fileCounts(t, logf))
	time.Sleep(500 * time.Millisecond)
	if m := len(fileCounts(t, logf)); m != n {
		t.Fatalf("the paused task printed %d lines after the checkpoint", m-n)
	}
	checkFlatDir(t, dir)
	e.ctr("task", "resume", id)
	harness.WaitForFileLine(t, logf, fmt.Sprintf(`^count=%d$`, n+1), lineTimeout)
	e.ctr("task", "kill", "-s", "KILL", id)
	waitStopped(e, id)
	e.ctr("task", "rm", id)
	e.CheckNoTrace(id)
}
