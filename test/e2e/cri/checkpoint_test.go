//go:build e2e

package cri

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// TestCheckpointExportCompat checkpoints the application container of a pod (pause
// plus one container) with `crictl checkpoint --export`: the archive has the layout
// CRI consumers expect and the container keeps running.
func TestCheckpointExportCompat(t *testing.T) {
	e := newCRIEnv(t, "", "")
	ctx := testCtx(t, 5*time.Minute)

	p := e.runPod(ctx, t, "ckpt")
	counter := e.startContainer(ctx, t, p, "counter", "/workload", "counter", "--interval", "200ms")
	e.waitCountAbove(ctx, t, counter, 2, startWait)

	archive := filepath.Join(e.dir, "counter.tar")
	start := time.Now()
	e.crictl(ctx, t, "checkpoint", "--export="+archive, counter)
	t.Logf("crictl checkpoint took %v", time.Since(start).Round(time.Millisecond))

	entries := tarEntries(t, archive)
	t.Logf("archive entries: %v", names(entries))
	for _, want := range []string{"spec.dump", "config.dump", "status.dump", "status", "rootfs-diff.tar", "checkpoint/runsc-cuda.json", "checkpoint/checkpoint.img"} {
		if _, ok := entries[want]; !ok {
			t.Errorf("archive lacks %s", want)
		}
	}
	for name := range entries {
		if rest, ok := strings.CutPrefix(name, "checkpoint/"); ok && strings.Contains(rest, "/") {
			t.Errorf("checkpoint/ is not flat: %s", name)
		}
	}
	var cfg struct {
		ID         string `json:"id"`
		Name       string `json:"name"`
		OCIRuntime string `json:"runtime_name"`
	}
	if err := json.Unmarshal(entries["config.dump"], &cfg); err != nil {
		t.Fatalf("config.dump: %v", err)
	}
	if cfg.ID != counter || !strings.HasPrefix(cfg.Name, "counter_ckpt_") {
		t.Errorf("config.dump names %q (%s), want counter_ckpt_... (%s)", cfg.Name, cfg.ID, counter)
	}
	var meta struct {
		ContainerID  string `json:"container_id"`
		LeaveRunning bool   `json:"leave_running"`
	}
	if err := json.Unmarshal(entries["checkpoint/runsc-cuda.json"], &meta); err != nil {
		t.Fatalf("checkpoint metadata: %v", err)
	}
	if meta.ContainerID != counter || !meta.LeaveRunning {
		t.Errorf("checkpoint metadata: container %s leave_running %t, want %s and true", meta.ContainerID, meta.LeaveRunning, counter)
	}

	// The container and its pod keep running.
	n := e.lastCount(ctx, t, counter)
	e.waitCountAbove(ctx, t, counter, n, 10*time.Second)
	if st := e.inspect(ctx, t, counter); st.Status.State != "CONTAINER_RUNNING" {
		t.Fatalf("container %s after checkpoint, want CONTAINER_RUNNING", st.Status.State)
	}
	if st := e.podState(ctx, t, p.ID); st != "SANDBOX_READY" {
		t.Fatalf("pod %s after checkpoint, want SANDBOX_READY", st)
	}

	// Restoring the archive through CreateContainer is not offered here: containerd
	// 2.4 removed it, and 2.3.7 has it off unless enable_experimental_restore_via_create
	// is set (TestRestoreCRI).
	cfgPath := e.writeJSON(t, "ctr-restore.json", e.containerConfig("counter2", archive, "/workload", "counter", "--interval", "200ms"))
	want := "failed to resolve image" // 2.4: the archive is just an image name
	if strings.HasPrefix(e.d.Version, "2.3.") {
		want = "checkpoint restore via CreateContainer is disabled by configuration"
	}
	if out, err := e.crictlE(ctx, "create", "--no-pull", p.ID, cfgPath, p.Config); err == nil {
		t.Fatalf("containerd %s created container %s from a checkpoint archive without restore enabled", e.d.Version, out)
	} else if !strings.Contains(err.Error(), want) {
		t.Fatalf("containerd %s, CreateContainer from the archive: %v; want %q", e.d.Version, err, want)
	}

	e.removePod(ctx, t, p)
	e.waitNoSandboxProcesses(t, 30*time.Second)
}

// TestCheckpointPodRefusedCompat checks the pod rule: gVisor checkpoints a pod's
// sandbox as a whole, so a checkpoint of one of several running application
// containers is refused (FailedPrecondition, naming the others) and leaves the pod
// running; once the other has exited (not removed, as the kubelet keeps exited init
// containers), the checkpoint works and the exited container can still be removed.
func TestCheckpointPodRefusedCompat(t *testing.T) {
	e := newCRIEnv(t, "", "")
	ctx := testCtx(t, 5*time.Minute)

	p := e.runPod(ctx, t, "two")
	counter := e.startContainer(ctx, t, p, "counter", "/workload", "counter", "--interval", "200ms")
	other := e.startContainer(ctx, t, p, "other", "/workload", "signals")
	e.waitCountAbove(ctx, t, counter, 1, startWait)
	e.waitState(ctx, t, other, "CONTAINER_RUNNING", startWait)

	archive := filepath.Join(e.dir, "refused.tar")
	_, err := e.crictlE(ctx, "checkpoint", "--export="+archive, counter)
	if err == nil {
		t.Fatal("checkpoint of one of two application containers of a pod succeeded; want it refused")
	}
	for _, want := range []string{"FailedPrecondition", "whole pod sandbox", "also runs other (" + other + ")"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal does not say %q: %v", want, err)
		}
	}
	t.Logf("refused as expected: %v", err)
	if _, serr := os.Stat(archive); serr == nil {
		if fi, _ := os.Stat(archive); fi.Size() > 0 {
			t.Errorf("a refused checkpoint left an archive of %d bytes", fi.Size())
		}
	}
	// Both containers run on, unpaused.
	n := e.lastCount(ctx, t, counter)
	e.waitCountAbove(ctx, t, counter, n, 10*time.Second)
	if out := e.crictl(ctx, t, "exec", other, "echo", "alive"); out != "alive" {
		t.Fatalf("exec in other after the refused checkpoint: %q", out)
	}

	// Once the other container exited, the counter can be checkpointed.
	e.crictl(ctx, t, "stop", "--timeout", "10", other)
	e.crictl(ctx, t, "checkpoint", "--export="+archive, counter)
	if st := e.inspect(ctx, t, other); st.Status.State != "CONTAINER_EXITED" || st.Status.ExitCode != 0 {
		t.Fatalf("the exited container after the checkpoint: %s, exit code %d", st.Status.State, st.Status.ExitCode)
	}
	e.crictl(ctx, t, "rm", other)
	entries := tarEntries(t, archive)
	if _, ok := entries["checkpoint/runsc-cuda.json"]; !ok {
		t.Fatalf("archive lacks the checkpoint: %v", names(entries))
	}
	var meta struct {
		Pod struct {
			SandboxID  string `json:"sandbox_id"`
			Containers []struct {
				ID      string `json:"id"`
				Sandbox bool   `json:"sandbox"`
			} `json:"containers"`
		} `json:"pod"`
	}
	if err := json.Unmarshal(entries["checkpoint/runsc-cuda.json"], &meta); err != nil {
		t.Fatal(err)
	}
	if meta.Pod.SandboxID != p.ID || len(meta.Pod.Containers) != 2 || !meta.Pod.Containers[0].Sandbox || meta.Pod.Containers[1].ID != counter {
		t.Fatalf("checkpoint metadata's pod = %+v, want sandbox %s and container %s", meta.Pod, p.ID, counter)
	}
	n = e.lastCount(ctx, t, counter)
	e.waitCountAbove(ctx, t, counter, n, 10*time.Second)
	e.removePod(ctx, t, p)
	e.waitNoSandboxProcesses(t, 30*time.Second)
}

// tarEntries reads a tar archive into memory (the test archives are small), keyed by
// clean entry name; directories map to nil.
func tarEntries(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("reading %s: %v", path, err)
		}
		name := strings.TrimPrefix(filepath.Clean(h.Name), "./")
		if h.Typeflag == tar.TypeDir {
			out[name] = nil
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = data
	}
}

func names(m map[string][]byte) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
