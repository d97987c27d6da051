//go:build e2e

package e2e

import (
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

// TestSmokeHarness proves the harness with what exists without the project's shim:
// containerd's runc shim running runsc, a private containerd 2.4.2 that survives a
// restart, a clean teardown, and a containerd 2.3.7 daemon.
func TestSmokeHarness(t *testing.T) {
	var dir string
	t.Run("runc-shim-with-runsc", func(t *testing.T) {
		d := harness.StartContainerd(t, harness.Options{WithoutShim: true})
		dir = d.Dir
		ref := d.ImportTestImage(t)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		client := d.Client()
		image, err := client.GetImage(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}

		// A counter runs, is killed and deleted, and leaves nothing behind.
		c, task, out := startWorkload(ctx, t, d, image, "/workload", "counter", "--interval", "100ms")
		statusC, err := task.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		first, i := out.WaitForFrom(t, 0, `^count=\d+$`, time.Minute)
		second, _ := out.WaitForFrom(t, i+1, `^count=\d+$`, 10*time.Second)
		if countOf(t, second) <= countOf(t, first) {
			t.Fatalf("counter did not advance: %q then %q", first, second)
		}
		if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		select {
		case st := <-statusC:
			t.Logf("counter exited: %d", st.ExitCode())
		case <-ctx.Done():
			t.Fatal("task did not exit after SIGKILL")
		}
		if _, err := task.Delete(ctx); err != nil {
			t.Fatal(err)
		}
		if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
			t.Fatal(err)
		}
		waitNoLeftovers(t, d)

		// A task survives a daemon restart and keeps printing; the harness cleanup
		// then has to kill it.
		c2, task2, out2 := startWorkload(ctx, t, d, image, "/workload", "counter", "--interval", "100ms")
		out2.WaitFor(t, `^count=\d+$`, time.Minute)
		oldPID := d.PID()
		d.Restart(t)
		if d.PID() == oldPID {
			t.Fatal("Restart did not start a new containerd")
		}
		n := out2.Len()
		out2.WaitForFrom(t, n, `^count=\d+$`, 10*time.Second)
		loaded, err := client.LoadContainer(ctx, c2.ID())
		if err != nil {
			t.Fatal(err)
		}
		reloaded, err := loaded.Task(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		st, err := reloaded.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Status != containerd.Running || reloaded.Pid() != task2.Pid() {
			t.Fatalf("after restart: status %s pid %d, want running pid %d", st.Status, reloaded.Pid(), task2.Pid())
		}
		if _, _, err := d.Ctr(ctx, "tasks", "ls"); err != nil {
			t.Fatal(err)
		}
	})
	if dir == "" {
		t.Fatal("the first subtest did not start a daemon")
	}
	// The subtest's cleanup has run: its directory, processes and mounts are gone.
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("daemon directory %s still exists (err %v)", dir, err)
	}
	if procs := processesNaming(t, dir); len(procs) > 0 {
		t.Errorf("processes left after cleanup:\n%s", strings.Join(procs, "\n"))
	}
	if mounts := mountsNaming(t, dir); len(mounts) > 0 {
		t.Errorf("mounts left after cleanup: %v", mounts)
	}

	t.Run("containerd-2.3.7", func(t *testing.T) {
		d := harness.StartContainerd(t, harness.Options{Version: "2.3.7", WithoutShim: true})
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		v, err := d.Client().Version(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(v.Version, "2.3.7") && !strings.HasPrefix(v.Version, "v2.3.7") {
			t.Fatalf("version %q, want 2.3.7", v.Version)
		}
		out, _, err := d.Ctr(ctx, "version")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("ctr version:\n%s", out)
	})
}

// startWorkload creates and starts a container of the test image under containerd's
// runc shim with runsc as its binary, its output collected in a LineBuffer.
func startWorkload(ctx context.Context, t *testing.T, d *harness.Daemon, image containerd.Image, args ...string) (containerd.Container, containerd.Task, *harness.LineBuffer) {
	t.Helper()
	id := harness.RandomID("smoke")
	c, err := d.Client().NewContainer(ctx, id,
		containerd.WithImage(image),
		containerd.WithNewSnapshot(id, image),
		d.RuncRunscOpts(),
		containerd.WithNewSpec(oci.WithImageConfig(image), oci.WithProcessArgs(args...)),
	)
	if err != nil {
		t.Fatal(err)
	}
	out := harness.NewLineBuffer()
	task, err := c.NewTask(ctx, d.IO(nil, out, out))
	if err != nil {
		t.Fatalf("new task: %v", err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatalf("start task: %v\n%s", err, out)
	}
	return c, task, out
}

func countOf(t *testing.T, line string) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimPrefix(line, "count="))
	if err != nil {
		t.Fatalf("bad count line %q", line)
	}
	return n
}

// waitNoLeftovers waits until only containerd itself references the daemon's
// directory and nothing is mounted under it.
func waitNoLeftovers(t *testing.T, d *harness.Daemon) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		procs, err := d.Processes()
		if err != nil {
			t.Fatal(err)
		}
		var others []string
		for _, p := range procs {
			if p.PID != d.PID() {
				others = append(others, p.String())
			}
		}
		mounts, err := d.Mounts()
		if err != nil {
			t.Fatal(err)
		}
		if len(others) == 0 && len(mounts) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("left after delete: processes %v, mounts %v", others, mounts)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// processesNaming lists processes whose command line mentions dir.
func processesNaming(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		raw, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && strings.Contains(string(raw), dir) {
			found = append(found, e.Name()+" "+strings.ReplaceAll(string(raw), "\x00", " "))
		}
	}
	return found
}

// mountsNaming lists mountinfo lines that mention dir.
func mountsNaming(t *testing.T, dir string) []string {
	t.Helper()
	raw, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.Contains(line, dir) {
			found = append(found, line)
		}
	}
	return found
}
