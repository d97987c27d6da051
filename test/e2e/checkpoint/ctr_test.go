//go:build e2e

package checkpoint

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/ckenv"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/testimage"
)

// ctr runs ctr and fails the test on error.
func (e *env) ctr(args ...string) string {
	e.T.Helper()
	out, _, err := e.D.Ctr(e.Ctx, args...)
	if err != nil {
		e.T.Fatal(err)
	}
	return out
}

// fileCounts returns the count=N values in a log file written by the shim.
func fileCounts(t *testing.T, path string) []int {
	t.Helper()
	lb := harness.NewLineBuffer()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = lb.Write(data)
	return ckenv.Counts(lb.Lines())
}

// taskStatus returns containerd's status of id's task.
func (e *env) taskStatus(id string) containerd.ProcessStatus {
	e.T.Helper()
	c, err := e.Client.LoadContainer(e.Ctx, id)
	if err != nil {
		e.T.Fatal(err)
	}
	task, err := c.Task(e.Ctx, nil)
	if err != nil {
		e.T.Fatal(err)
	}
	st, err := task.Status(e.Ctx)
	if err != nil {
		e.T.Fatal(err)
	}
	return st.Status
}

// execCount reads the counter's --file through `ctr task exec`.
func (e *env) execCount(id string) int {
	e.T.Helper()
	out := e.ctr("task", "exec", "--exec-id", harness.RandomID("cat"), id, "/bin/cat", "/tmp/count")
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		e.T.Fatalf("cat /count in %s printed %q", id, out)
	}
	return n
}

// TestCompatCtrCheckpointRestore drives checkpoint and restore with ctr only:
// `ctr task checkpoint` (runc options, leave running) keeps the task running;
// `ctr task checkpoint --exit` stops it, and that image restores (as `ctr run
// --checkpoint` would, if ctr still had the flag) with a log file whose count
// continues; `ctr container checkpoint --task --rw --image` checkpoints the restored
// task (ctr pauses and resumes it), and after the container is deleted `ctr container
// restore --live --rw`
// brings it back: ctr gives the restored task its own stdio and returns at once, so the
// count is read from the counter's --file through `ctr task exec`, and keeps growing.
func TestCompatCtrCheckpointRestore(t *testing.T) {
	e := setup(t, harness.Options{})
	rt := e.D.CtrRuntimeArgs()
	args := []string{"/workload", "counter", "--interval", "100ms", "--file", "/tmp/count"}
	id := harness.RandomID("ctr")
	logA := filepath.Join(e.D.Dir, "logs", id+".log")
	e.ctr(append(append(append([]string{"run", "-d"}, rt...), "--log-uri", "file://"+logA, testimage.Ref, id), args...)...)
	harness.WaitForFileLine(t, logA, `^count=5$`, startTimeout)

	live := strings.TrimSpace(e.ctr("task", "checkpoint", id))
	if live == "" {
		t.Fatal("ctr task checkpoint printed no image name")
	}
	if st := e.taskStatus(id); st != containerd.Running {
		t.Fatalf("task is %s after `ctr task checkpoint`, want running", st)
	}
	n := len(fileCounts(t, logA))
	harness.WaitForFileLine(t, logA, fmt.Sprintf(`^count=%d$`, n+1), lineTimeout)

	// ctr names checkpoints by container and second; remove this one so the next
	// checkpoint, within the same second, does not collide with it.
	e.ctr("image", "rm", live)
	lo := fileCounts(t, logA)
	exitRef := strings.TrimSpace(e.ctr("task", "checkpoint", "--exit", id))
	waitStopped(e, id)
	e.ctr("task", "rm", id)
	e.CheckNoTrace(id)
	hi := fileCounts(t, logA)
	t.Logf("images: %s (leave running), %s (exit)", live, exitRef)

	// `ctr run --checkpoint` would restore it, but ctr 2.4.2 and 2.3.7 define no such
	// flag (run.go still reads cmd.String("checkpoint")); do what it would do: a new
	// task of the container, WithTaskCheckpoint, its output to a log file.
	img, err := e.Client.GetImage(e.Ctx, exitRef)
	if err != nil {
		t.Fatal(err)
	}
	c, err := e.Client.LoadContainer(e.Ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	// `ctr events` shows the shim's own restore event, decoded.
	evCtx, stopEvents := context.WithTimeout(e.Ctx, time.Minute)
	defer stopEvents()
	var events strings.Builder
	evCmd := e.D.CtrCmd(evCtx, "events")
	evCmd.Stdout, evCmd.Stderr = &events, &events
	if err := evCmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // subscribed
	logB := filepath.Join(e.D.Dir, "logs", id+"-restored.log")
	task, err := c.NewTask(e.Ctx, cio.LogFile(logB), containerd.WithTaskCheckpoint(img))
	if err != nil {
		t.Fatalf("restore of the `ctr task checkpoint --exit` image: %v", err)
	}
	if err := task.Start(e.Ctx); err != nil {
		t.Fatal(err)
	}
	first := harness.WaitForFileLine(t, logB, `^count=\d+$`, startTimeout)
	firstN, _ := strconv.Atoi(strings.TrimPrefix(first, "count="))
	harness.WaitForFileLine(t, logB, fmt.Sprintf(`^count=%d$`, firstN+2), lineTimeout)
	checkRange(t, firstN, lo[len(lo)-1], hi[len(hi)-1])
	stopEvents()
	_ = evCmd.Wait()
	if out := events.String(); !regexp.MustCompile(`/runsc-cuda/restore \{"id":"`+id+`","labels":\{[^}]*"restored":"true"`).MatchString(out) || strings.Contains(out, "cannot unmarshal") {
		t.Errorf("ctr events does not show the restore on /runsc-cuda/restore, decoded:\n%s", out)
	}

	id2 := id
	ref3 := "localhost/ckpt/" + id2 + ":ctr-rw"
	beforeCheckpoint := e.execCount(id2)
	e.ctr("container", "checkpoint", "--task", "--rw", "--image", id2, ref3)
	if st := e.taskStatus(id2); st != containerd.Running {
		t.Fatalf("task is %s after `ctr container checkpoint`, want running (ctr resumes it)", st)
	}
	e.ctr("task", "kill", "-s", "SIGKILL", id2)
	waitStopped(e, id2)
	e.ctr("task", "rm", id2)
	e.ctr("container", "rm", id2)
	e.CheckNoTrace(id2)

	e.ctr("container", "restore", "--live", "--rw", id2, ref3)
	if st := e.taskStatus(id2); st != containerd.Running {
		t.Fatalf("task is %s after `ctr container restore --live`, want running", st)
	}
	got := e.execCount(id2)
	if got < beforeCheckpoint {
		t.Fatalf("restored counter file holds %d; it held %d before the checkpoint (a restarted counter starts at 0)", got, beforeCheckpoint)
	}
	deadline := time.Now().Add(lineTimeout)
	for e.execCount(id2) <= got {
		if time.Now().After(deadline) {
			t.Fatalf("restored counter does not advance past %d", got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("ctr container restore: counter at %d before the checkpoint, %d after the restore", beforeCheckpoint, got)
	e.ctr("task", "kill", "-s", "SIGKILL", id2)
	waitStopped(e, id2)
	e.ctr("task", "rm", id2)
	e.CheckNoTrace(id2)
}

// checkRange fails unless a restored counter's first value lies in [lo, hi+1].
func checkRange(t *testing.T, first, lo, hi int) {
	t.Helper()
	if first < lo || first > hi+1 {
		t.Fatalf("restored counter started at %d; the checkpoint was taken between count=%d and count=%d", first, lo, hi)
	}
	t.Logf("checkpoint taken between count=%d and count=%d; restored counter continued at %d", lo, hi, first)
}

// waitStopped waits until id's task has stopped.
func waitStopped(e *env, id string) {
	e.T.Helper()
	c, err := e.Client.LoadContainer(e.Ctx, id)
	if err != nil {
		e.T.Fatal(err)
	}
	task, err := c.Task(e.Ctx, nil)
	if err != nil {
		e.T.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(e.Ctx, startTimeout)
	defer cancel()
	statusC, err := task.Wait(ctx)
	if err != nil {
		e.T.Fatal(err)
	}
	select {
	case <-statusC:
	case <-ctx.Done():
		e.T.Fatalf("task %s did not stop", id)
	}
}
