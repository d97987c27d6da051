//go:build e2e

package fault

import (
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/errdefs"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/ckenv"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

// TestConcurrentCheckpointsOfOneTask starts a leave-running checkpoint of a task that
// holds 512 MiB and, while `runsc checkpoint` runs (held with SIGSTOP meanwhile, so
// the overlap is certain), asks for a second one
// through the client, and an exit checkpoint through containerd's task API. Both are
// refused at once with FailedPrecondition ("already in progress"), create no image
// directory, and neither stop nor resume the task; State answers while the first
// checkpoint runs. The first checkpoint completes, the task keeps running, and its
// image restores as a clone with the same memory checksum and a continuing counter.
func TestConcurrentCheckpointsOfOneTask(t *testing.T) {
	e := setup(t, harness.Options{})
	id := harness.RandomID("concurrent")
	p := e.Run(id, busyArgs)
	sum := memholdSum(t, p.Out)
	ckenv.WaitCount(t, p.Out, 0, 3)

	first := e.ImagePathDir("first")
	lo := ckenv.LastCount(p.Out)
	firstErr := make(chan error, 1)
	go func() { firstErr <- e.checkpointToPath(p, first, false) }()
	var runscCkpt harness.Process
	if !waitFor(time.Minute, func() bool {
		var ok bool
		runscCkpt, ok = e.runscCheckpointProcess(id)
		return ok
	}) {
		t.Fatalf("runsc checkpoint of %s never ran (first checkpoint: %v)", id, <-firstErr)
	}
	// Hold `runsc checkpoint` (SIGSTOP) while the others are asked for, so the first
	// checkpoint is certainly still running in the shim; the sandbox keeps saving.
	if err := syscall.Kill(runscCkpt.PID, syscall.SIGSTOP); err != nil {
		t.Fatalf("stop runsc checkpoint: %v", err)
	}
	cont := func() { _ = syscall.Kill(runscCkpt.PID, syscall.SIGCONT) }
	defer cont()

	checkInProgress := func(what string, err error) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s: a second checkpoint of %s succeeded while the first ran", what, id)
		}
		if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "already in progress") {
			t.Fatalf("%s: error %v, want FailedPrecondition saying a checkpoint is already in progress", what, err)
		}
		t.Logf("%s refused: %v", what, err)
	}
	second := e.ImagePathDir("second")
	t0 := time.Now()
	checkInProgress("client", e.checkpointToPath(p, second, false))
	checkInProgress("task API, exit", e.apiCheckpoint(id, &runcoptions.CheckpointOptions{Exit: true, ImagePath: second}))
	if _, err := p.Task.Status(e.Ctx); err != nil {
		t.Fatalf("state during the checkpoint: %v", err)
	}
	cont()
	if d := time.Since(t0); d > 10*time.Second {
		t.Errorf("the refusals and State took %v: they must not wait for the running checkpoint", d)
	}
	if names := ckenv.DirNames(t, second); names != nil {
		t.Errorf("a refused checkpoint created %s: %v", second, names)
	}

	if err := <-firstErr; err != nil {
		t.Fatalf("the first checkpoint failed: %v", err)
	}
	checkCompleteImage(t, first)
	n := p.Out.Len()
	e.CheckRunning(p)
	checkMemhold(t, p.Out, n, sum)

	cloneID := harness.RandomID("concurrent-clone")
	clone, err := e.restoreFromPath(e.NewContainer(cloneID, busyArgs, nil), first)
	if err != nil {
		t.Fatalf("restore of the first checkpoint: %v", err)
	}
	c, _ := ckenv.WaitCount(t, clone.Out, 0, 0)
	if c < lo {
		t.Errorf("clone counter started at %d, the checkpoint was taken after %d", c, lo)
	}
	checkMemhold(t, clone.Out, 0, sum)
	e.KillAndDelete(clone)
	e.CheckNoTrace(cloneID)
	e.RemoveContainer(clone.C)
	e.KillAndDelete(p)
	e.CheckNoTrace(id)
	e.RemoveContainer(p.C)
	e.checkNoLeftovers()
}

// manyTasks is how many tasks TestCheckpointManyTasks checkpoints at once.
const manyTasks = 8

// TestCheckpointManyTasks runs eight counters, each in its own shim and sandbox,
// checkpoints all of them at once with exit (image_path), and restores all of them at
// once: every checkpoint succeeds with a complete image, every task exits with 137,
// every restored counter continues where its own checkpoint caught it, and after they
// are deleted nothing is left.
func TestCheckpointManyTasks(t *testing.T) {
	e := setup(t, harness.Options{})
	type item struct {
		p      *proc
		dir    string
		lo, hi int
	}
	items := make([]*item, manyTasks)
	for i := range items {
		id := harness.RandomID(fmt.Sprintf("many%d", i))
		// Different start values: a mixed-up restore would show.
		p := e.Run(id, []string{"/workload", "counter", "--interval", "100ms", "--start", fmt.Sprint(i * 100000)})
		items[i] = &item{p: p, dir: e.ImagePathDir(id)}
	}
	for i, it := range items {
		ckenv.WaitCount(t, it.p.Out, 0, i*100000+2)
		it.lo = ckenv.LastCount(it.p.Out)
	}

	t0 := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, manyTasks)
	for i, it := range items {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = e.checkpointToPath(it.p, it.dir, true)
		}()
	}
	wg.Wait()
	t.Logf("%d exit checkpoints at once took %v", manyTasks, time.Since(t0).Round(time.Millisecond))
	for i, it := range items {
		if errs[i] != nil {
			t.Fatalf("checkpoint of %s: %v", it.p.C.ID(), errs[i])
		}
		if code := e.WaitExit(it.p); code != 137 {
			t.Errorf("%s exited with %d after the exit checkpoint, want 137", it.p.C.ID(), code)
		}
		e.DeleteTask(it.p)
		it.hi = ckenv.LastCount(it.p.Out)
		checkCompleteImage(t, it.dir)
	}

	t0 = time.Now()
	restored := make([]*proc, manyTasks)
	for i, it := range items {
		wg.Add(1)
		go func() {
			defer wg.Done()
			restored[i], errs[i] = e.restoreFromPath(it.p.C, it.dir)
		}()
	}
	wg.Wait()
	t.Logf("%d restores at once took %v", manyTasks, time.Since(t0).Round(time.Millisecond))
	for i, it := range items {
		if errs[i] != nil {
			t.Fatalf("restore of %s: %v", it.p.C.ID(), errs[i])
		}
		first, last := checkContinues(t, restored[i].Out, it.lo, it.hi)
		t.Logf("%s: checkpoint between %d and %d, restored at %d, reached %d", it.p.C.ID(), it.lo, it.hi, first, last)
	}
	for i, it := range items {
		e.KillAndDelete(restored[i])
		e.CheckNoTrace(it.p.C.ID())
		e.RemoveContainer(it.p.C)
	}
	e.checkNoLeftovers()
}
