//go:build e2e

package fault

import (
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/ckenv"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

// soakCyclesEnv sets how many cycles TestSoak runs; CI runs the default, `make soak`
// runs 200.
const (
	soakCyclesEnv     = "RCUDA_SOAK_CYCLES"
	defaultSoakCycles = 20
)

func soakCycles(t *testing.T) int {
	v := os.Getenv(soakCyclesEnv)
	if v == "" {
		return defaultSoakCycles
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number of cycles", soakCyclesEnv, v)
	}
	return n
}

// soakArgs is a counter (state in registers and the stack: it must continue) beside a
// 32 MiB memhold (state in memory: its checksum must hold) in one container.
var soakArgs = []string{"/bin/sh", "-c", "/workload memhold --mib 32 --seed 23 --interval 500ms & exec /workload counter --interval 100ms"}

// TestSoak checkpoints one workload with exit into an image_path directory, restores
// it from that directory (alternately through containerd's RestoreFromPath annotation
// and runc's CriuImagePath task option) and repeats, RCUDA_SOAK_CYCLES
// times (default 20; `make soak` runs 200). Every cycle the exit checkpoint ends the
// task with 137 and leaves a complete image; the restored counter continues where the
// checkpoint caught it, never from 0; the memory checksum still verifies. The image a
// cycle restored from is removed in the next one. The daemon's processes and mounts
// and the task bundles must not grow from cycle to cycle, and nothing is left at the
// end.
func TestSoak(t *testing.T) {
	cycles := soakCycles(t)
	e := setup(t, harness.Options{})
	id := harness.RandomID("soak")
	// runc options, so that the task option CriuImagePath is accepted (containerd
	// checks that a task's runc options match the container's runtime options).
	p := e.StartTask(e.NewContainer(id, soakArgs, e.runcRuntime()))
	sum := memholdSum(t, p.Out)
	ckenv.WaitCount(t, p.Out, 0, 2)

	start := time.Now()
	var ckptTimes, restoreTimes []time.Duration
	baseProcs, baseMounts, baseFifos, baseFDs := -1, -1, -1, -1
	prevDir := ""
	for i := 1; i <= cycles; i++ {
		dir := e.ImagePathDir("soak")
		lo := ckenv.LastCount(p.Out)
		t0 := time.Now()
		if err := e.checkpointToPath(p, dir, true); err != nil {
			t.Fatalf("cycle %d: checkpoint: %v", i, err)
		}
		ckptTimes = append(ckptTimes, time.Since(t0))
		if code := e.WaitExit(p); code != 137 {
			t.Fatalf("cycle %d: exit status %d after the exit checkpoint, want 137", i, code)
		}
		e.DeleteTask(p)
		hi := ckenv.LastCount(p.Out)
		checkCompleteImage(t, dir)

		t0 = time.Now()
		// Odd cycles restore through the RestoreFromPath annotation (the CRI's way),
		// even ones through runc's CriuImagePath task option.
		var r *proc
		var err error
		if i%2 == 1 {
			r, err = e.restoreFromPath(p.C, dir)
		} else {
			r, err = e.TryStartTask(p.C, containerd.WithRestoreImagePath(dir))
		}
		if err != nil {
			t.Fatalf("cycle %d: restore: %v", i, err)
		}
		restoreTimes = append(restoreTimes, time.Since(t0))
		first, _ := checkContinues(t, r.Out, lo, hi)
		checkMemhold(t, r.Out, 0, sum)
		p = r
		if prevDir != "" {
			if err := os.RemoveAll(prevDir); err != nil {
				t.Fatal(err)
			}
		}
		prevDir = dir

		// A restored sandbox goes on loading pages for a moment, watched by a
		// `runsc wait --restore` of the shim: a process that ends by itself.
		// Leaks stay; so count until the numbers settle, for a few seconds.
		var (
			procs  []harness.Process
			mounts []string
		)
		for settle := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			var err error
			if procs, err = e.D.Processes(); err != nil {
				t.Fatal(err)
			}
			if mounts, err = e.D.Mounts(); err != nil {
				t.Fatal(err)
			}
			if baseProcs < 0 || len(procs) <= baseProcs || time.Now().After(settle) {
				break
			}
		}
		bundles, _ := os.ReadDir(e.D.State + "/io.containerd.runtime.v2.task/" + e.D.Namespace)
		if len(bundles) != 1 {
			t.Fatalf("cycle %d: %d task bundles, want 1", i, len(bundles))
		}
		fifos := len(ckenv.DirNames(t, filepath.Join(e.D.Dir, "fifo")))
		if baseProcs < 0 {
			baseProcs, baseMounts, baseFifos, baseFDs = len(procs), len(mounts), fifos, openFDs(e.D.PID())
		} else if len(procs) > baseProcs || len(mounts) > baseMounts || fifos > baseFifos {
			t.Fatalf("cycle %d: %d processes, %d mounts, %d fifo entries; after the first cycle %d, %d, %d: something leaks\nprocesses: %v\nmounts: %v",
				i, len(procs), len(mounts), fifos, baseProcs, baseMounts, baseFifos, procs, mounts)
		}
		if i == 1 || i%10 == 0 || i == cycles {
			t.Logf("cycle %d/%d: checkpoint %v, restore %v, counter continued at %d (checkpoint between %d and %d)",
				i, cycles, ckptTimes[i-1].Round(time.Millisecond), restoreTimes[i-1].Round(time.Millisecond), first, lo, hi)
		}
	}
	// containerd's own descriptors are logged, not asserted: they are containerd's.
	t.Logf("containerd open file descriptors: %d after the first cycle, %d after the last", baseFDs, openFDs(e.D.PID()))
	e.KillAndDelete(p)
	e.CheckNoTrace(id)
	e.RemoveContainer(p.C)
	e.checkNoLeftovers()
	t.Logf("soak: %d checkpoint/restore cycles in %v; checkpoint median %v max %v; restore median %v max %v",
		cycles, time.Since(start).Round(time.Second), median(ckptTimes), slices.Max(ckptTimes).Round(time.Millisecond),
		median(restoreTimes), slices.Max(restoreTimes).Round(time.Millisecond))
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2].Round(time.Millisecond)
}

// openFDs returns how many file descriptors pid has open, or -1.
func openFDs(pid int) int {
	entries, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "fd"))
	if err != nil {
		return -1
	}
	return len(entries)
}
