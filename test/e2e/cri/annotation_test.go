//go:build e2e

package cri

import (
	"archive/tar"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

// annotationRestore is the pod annotation that names the checkpoint a pod is restored
// from (pkg/shim AnnotationRestoreFrom); the harness's CRI handler passes the shim's
// pod annotations through (pod_annotations, as deploy/containerd-config.toml).
const annotationRestore = harness.RuntimeName + ".restore-from"

// counterCmd is the checkpointed container's command; a restore runs the same.
// initCmd is an init container's: it exits 0 at once.
var (
	counterCmd = []string{"/workload", "counter", "--interval", "200ms"}
	initCmd    = []string{"/workload", "exit", "--code", "0"}
)

// restoreEnv is a CRI environment whose shim restores from checkpoints under root
// (checkpoint.restore_roots) and unpacks archives into unpack (checkpoint.unpack_dir).
type restoreEnv struct {
	*criEnv
	root, unpack string
}

// newRestoreEnv starts a daemon with the CRI and opts (its CNI, version, extra config)
// whose shim allows restores from a directory of the test's own.
func newRestoreEnv(t *testing.T, opts harness.Options) *restoreEnv {
	t.Helper()
	base := t.TempDir()
	root, unpack := filepath.Join(base, "checkpoints"), filepath.Join(base, "unpack")
	for _, d := range []string{root, unpack} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	opts.ShimConfig = fmt.Sprintf("[checkpoint]\nrestore_roots = [%q]\nunpack_dir = %q\n", root, unpack)
	return &restoreEnv{criEnv: startCRIEnv(t, opts), root: root, unpack: unpack}
}

// restorePod runs a pod annotated to restore from checkpoint.
func (e *restoreEnv) restorePod(ctx context.Context, t *testing.T, name string, onNetwork bool, checkpoint string) pod {
	t.Helper()
	return e.startPod(ctx, t, name, podOpts{onNetwork: onNetwork, annotations: map[string]string{annotationRestore: checkpoint}})
}

// checkpointCounter runs a pod with a counter that also wrote /state into its rootfs,
// with an init container that ran to completion before it when withInit (the
// kubelet keeps such exited containers; the checkpoint leaves them out), checkpoints
// the counter into archive with crictl and force-removes the pod. It returns the
// counts the archive's container.log holds.
func (e *criEnv) checkpointCounter(ctx context.Context, t *testing.T, name, archive string, withInit bool) []int {
	t.Helper()
	p := e.runPod(ctx, t, name)
	if withInit {
		initc := e.startContainer(ctx, t, p, "init", initCmd...)
		e.waitState(ctx, t, initc, "CONTAINER_EXITED", exitWait)
	}
	counter := e.startContainer(ctx, t, p, "counter", counterCmd...)
	e.waitCountAbove(ctx, t, counter, 5, startWait)
	e.crictl(ctx, t, "exec", counter, "sh", "-c", "echo kept > /state")
	archived := e.exportCounter(ctx, t, counter, archive, 5)
	e.forceRemovePod(ctx, t, p)
	e.waitNoSandboxProcesses(t, 30*time.Second)
	return archived
}

// forceRemovePod removes a pod with crictl rmp -f, which must finish promptly.
func (e *criEnv) forceRemovePod(ctx context.Context, t *testing.T, p pod) {
	t.Helper()
	start := time.Now()
	e.crictl(ctx, t, "rmp", "-f", p.ID)
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("crictl rmp -f %s took %v", p.Name, d.Round(time.Millisecond))
	}
}

// checkRestored checks that the counter id restored a checkpoint whose log held
// archived: its own, new, log starts with a count above 5 (a fresh counter starts at
// 0) and at most one past the archive's last, and it runs on.
func (e *restoreEnv) checkRestored(ctx context.Context, t *testing.T, id string, archived []int) {
	t.Helper()
	last := archived[len(archived)-1]
	e.waitCountAbove(ctx, t, id, last, startWait)
	st := e.waitState(ctx, t, id, "CONTAINER_RUNNING", startWait)
	counts := countsIn(e.logs(ctx, t, id))
	if counts[0] <= 5 || counts[0] > last+1 {
		t.Fatalf("the restored counter's log starts at count %d; want a value in (5, %d]: it did not resume from the checkpoint, or its log holds the old container's output", counts[0], last+1)
	}
	t.Logf("archived counts %d..%d; the restored counter's log starts at %d", archived[0], last, counts[0])
	// The CRI log file is the new container's: nothing of the checkpointed one's.
	b, err := os.ReadFile(st.Status.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	if got := countsIn(string(b)); len(got) == 0 || got[0] != counts[0] {
		t.Fatalf("log file %s holds counts %v, want those crictl logs shows (from %d)", st.Status.LogPath, got, counts[0])
	}
	// Its rootfs writes came back with it.
	if out := e.crictl(ctx, t, "exec", id, "cat", "/state"); out != "kept" {
		t.Fatalf("/state in the restored container: %q, want kept", out)
	}
	n := e.lastCount(ctx, t, id)
	e.waitCountAbove(ctx, t, id, n, 10*time.Second)
}

// unpacked returns the directories the shim unpacked archives into for containers
// that still exist.
func (e *restoreEnv) unpacked(t *testing.T) []string {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join(e.unpack, "*", "*"))
	if err != nil {
		t.Fatal(err)
	}
	return dirs
}

// checkNothingLeft checks, once every pod is gone, that no shim or sandbox runs and
// that neither an unpacked archive nor runsc state is left.
func (e *restoreEnv) checkNothingLeft(t *testing.T) {
	t.Helper()
	e.waitNoSandboxProcesses(t, 30*time.Second)
	if left := e.unpacked(t); len(left) != 0 {
		t.Errorf("unpacked checkpoints left in %s: %v", e.unpack, left)
	}
	left, err := harness.RunscLeftovers(filepath.Join(e.d.RunscRoot, harness.CRINamespace))
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("runsc state left: %v", left)
	}
}

// createWith creates a container in p from the CRI container config cfg
// (written to file), for configs containerConfig does not make (restart attempts).
func (e *criEnv) createWith(ctx context.Context, t *testing.T, p pod, file string, cfg map[string]any) string {
	t.Helper()
	path := e.writeJSON(t, file, cfg)
	id := e.crictl(ctx, t, "create", "--no-pull", p.ID, path, p.Config)
	t.Logf("container %s in pod %s: %s", file, p.Name, id)
	return id
}

// TestRestoreAnnotationCompat restores a pod on a containerd whose CRI has no restore
// of its own (2.4; 2.3 without enable_experimental_restore_via_create), through the
// pod annotation io.containerd.runsc-cuda.v1.restore-from: a counter pod is
// checkpointed with crictl checkpoint --export and removed; a new pod annotated with
// the archive, whose container has the checkpointed one's name and command, runs a
// counter that goes on from where it was, with its rootfs writes, in its new CRI log.
// The container started again in that pod starts fresh; a second application
// container is refused. The archive's checkpoint/ directory, unpacked, restores the
// same way and stays as it was. Nothing is left afterwards.
func TestRestoreAnnotationCompat(t *testing.T) {
	e := newRestoreEnv(t, harness.Options{CNI: harness.CNILoopback})
	ctx := testCtx(t, 8*time.Minute)

	archive := filepath.Join(e.root, "ckpt.tar")
	archived := e.checkpointCounter(ctx, t, "orig", archive, false)

	p := e.restorePod(ctx, t, "restored", false, archive)
	start := time.Now()
	id := e.startContainer(ctx, t, p, "counter", counterCmd...)
	t.Logf("crictl create+start of the restoring container took %v", time.Since(start).Round(time.Millisecond))
	e.checkRestored(ctx, t, id, archived)
	if st := e.podState(ctx, t, p.ID); st != "SANDBOX_READY" {
		t.Fatalf("restored pod is %s, want SANDBOX_READY", st)
	}
	if shims, sandboxes := e.shims(t), e.sandboxes(t); len(shims) != 1 || len(sandboxes) != 1 {
		t.Fatalf("restored pod runs %d shims and %d sandboxes, want 1 and 1", len(shims), len(sandboxes))
	}
	if u := e.unpacked(t); len(u) != 1 || filepath.Base(u[0]) != id {
		t.Fatalf("unpacked checkpoints %v, want the restored container's (%s)", u, id)
	}

	// The kubelet restarts a container as a new one of the same name: it starts
	// fresh, in the restored sandbox.
	e.crictl(ctx, t, "stop", "--timeout", "10", id)
	e.waitState(ctx, t, id, "CONTAINER_EXITED", exitWait)
	restart := e.containerConfig("counter", e.ref, counterCmd...)
	restart["metadata"] = map[string]any{"name": "counter", "attempt": 1}
	restart["log_path"] = "counter_1.log"
	id2 := e.createWith(ctx, t, p, "ctr-restart.json", restart)
	e.crictl(ctx, t, "start", id2)
	e.waitCountAbove(ctx, t, id2, 2, startWait)
	if counts := countsIn(e.logs(ctx, t, id2)); counts[0] != 0 {
		t.Fatalf("the restarted container's log starts at count %d, want 0 (a fresh start)", counts[0])
	}
	if out, err := e.crictlE(ctx, "exec", id2, "cat", "/state"); err == nil {
		t.Fatalf("the restarted container has the restored rootfs's /state (%q); want a fresh rootfs", out)
	}
	if st := e.inspect(ctx, t, id2); st.Status.State != "CONTAINER_RUNNING" {
		t.Fatalf("restarted container is %s", st.Status.State)
	}
	// The fresh start needs nothing of the checkpoint; an unpacked copy is only
	// work (an archive may hold gigabytes of GPU memory).
	if u := e.unpacked(t); len(u) != 0 {
		t.Logf("note: the shim unpacked the archive for the fresh restart too: %v", u)
	}

	// Another application container cannot join the restored pod.
	side := e.createContainer(ctx, t, p, "side", counterCmd...)
	e.expectStartError(ctx, t, side, "FailedPrecondition", "was restored from "+archive, "cannot also run side")
	n := e.lastCount(ctx, t, id2)
	e.waitCountAbove(ctx, t, id2, n, 10*time.Second)
	e.forceRemovePod(ctx, t, p)
	e.checkNothingLeft(t)

	// The archive's checkpoint directory, unpacked under the root, restores in
	// place and is left as it was.
	dir := filepath.Join(e.root, "ckpt")
	extractCheckpointDir(t, archive, dir)
	before := dirListing(t, dir)
	p2 := e.restorePod(ctx, t, "from-dir", false, dir)
	id3 := e.startContainer(ctx, t, p2, "counter", counterCmd...)
	e.checkRestored(ctx, t, id3, archived)
	if u := e.unpacked(t); len(u) != 0 {
		t.Errorf("a restore from a directory unpacked %v", u)
	}
	e.forceRemovePod(ctx, t, p2)
	e.checkNothingLeft(t)
	if after := dirListing(t, dir); !slices.Equal(before, after) {
		t.Errorf("the checkpoint directory changed: %v, then %v", before, after)
	}
}

// expectStartError starts container id and wants it to fail with a message holding
// every one of want; the container is then exited with reason StartError and the
// message, as the CRI reports a start that failed.
func (e *criEnv) expectStartError(ctx context.Context, t *testing.T, id string, want ...string) {
	t.Helper()
	_, err := e.crictlE(ctx, "start", id)
	if err == nil {
		t.Fatalf("crictl start %s succeeded; want it to fail saying %q", id, want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("crictl start %s: error does not say %q: %v", id, w, err)
		}
	}
	t.Logf("refused as expected: %v", err)
	st := e.inspect(ctx, t, id)
	if st.Status.State != "CONTAINER_EXITED" || st.Status.Reason != "StartError" || !strings.Contains(st.Status.Message, want[len(want)-1]) {
		t.Errorf("container after the failed start: %s, reason %q, message %q", st.Status.State, st.Status.Reason, st.Status.Message)
	}
}

// extractCheckpointDir puts the files of the archive's checkpoint/ directory into
// dir, flat, with the command docs/kubernetes.md gives for it.
func extractCheckpointDir(t *testing.T, archive, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("tar", "-xf", archive, "-C", dir, "--strip-components=1", "checkpoint/").CombinedOutput(); err != nil {
		t.Fatalf("tar -xf %s -C %s --strip-components=1 checkpoint/: %v\n%s", archive, dir, err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "runsc-cuda.json")); err != nil {
		t.Fatalf("the extracted checkpoint directory: %v", err)
	}
}

// dirListing returns "name size mtime" of every file in dir.
func dirListing(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, de := range entries {
		fi, err := de.Info()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s %d %d", de.Name(), fi.Size(), fi.ModTime().UnixNano()))
	}
	return out
}

// TestRestoreAnnotationCRIBadInput: a pod annotated with a checkpoint that is
// missing, outside the shim's restore roots, reached through a symbolic link out of
// them, or no checkpoint of this runtime (a tar of other files), or whose container
// has another name than the checkpointed one, fails its container's start with
// FailedPrecondition and a message that says why; the start creates nothing (no
// runsc container, no unpacked archive), the pod stays ready, and after the
// container of the checkpointed name restored, a second application container is
// refused too. A pod of another Kubernetes namespace is refused the checkpoint
// (PermissionDenied: it holds the checkpointed pod's memory). The pods are removed
// without leftovers.
func TestRestoreAnnotationCRIBadInput(t *testing.T) {
	e := newRestoreEnv(t, harness.Options{CNI: harness.CNILoopback})
	ctx := testCtx(t, 8*time.Minute)

	archive := filepath.Join(e.root, "ckpt.tar")
	archived := e.checkpointCounter(ctx, t, "orig", archive, false)
	outside := t.TempDir()
	copyFile(t, archive, filepath.Join(outside, "ckpt.tar"))
	if err := os.Symlink(outside, filepath.Join(e.root, "link")); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(e.root, "other.tar")
	writeTar(t, other, map[string]string{"hello.txt": "hello", "checkpoint/data.img": "not runsc's"})

	// Each refusal names the annotation and the path, or the checkpoint, and why.
	for i, tc := range []struct {
		name, path, container string
		want                  []string
		namespace             string
	}{
		{"missing", filepath.Join(e.root, "absent.tar"), "counter", []string{"no such checkpoint"}, ""},
		{"outside the roots", filepath.Join(outside, "ckpt.tar"), "counter", []string{"restored only from under " + e.root}, ""},
		{"symlink out of the root", filepath.Join(e.root, "link", "ckpt.tar"), "counter", []string{"symbolic link"}, ""},
		{"not a runsc-cuda checkpoint", other, "counter", []string{"is not a checkpoint of " + harness.RuntimeName}, ""},
		{"another container name", archive, "other", []string{"holds application container counter, but this container is other"}, ""},
		{"another namespace", archive, "counter", []string{"is of a pod in namespace", podNamespace, "and this pod is in", "elsewhere", "checkpoint.cross_namespace_restore"}, "elsewhere"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := e.startPod(ctx, t, fmt.Sprintf("bad%d", i), podOpts{namespace: tc.namespace, annotations: map[string]string{annotationRestore: tc.path}})
			id := e.createContainer(ctx, t, p, tc.container, counterCmd...)
			code := "FailedPrecondition"
			if tc.namespace != "" {
				code = "PermissionDenied"
			}
			names := []string{code, tc.path}
			if tc.container == "counter" && tc.namespace == "" {
				names = append(names, "annotation "+annotationRestore)
			}
			e.expectStartError(ctx, t, id, append(names, tc.want...)...)
			e.checkOnlySandbox(ctx, t, p)
			if tc.container != "counter" {
				// The pod is still usable: the container of the checkpointed
				// name restores it; no other can join it then.
				c := e.startContainer(ctx, t, p, "counter", counterCmd...)
				e.checkRestored(ctx, t, c, archived)
				side := e.createContainer(ctx, t, p, "side", counterCmd...)
				e.expectStartError(ctx, t, side, "FailedPrecondition", "cannot also run side")
			}
			e.forceRemovePod(ctx, t, p)
			e.checkNothingLeft(t)
		})
	}
}

// checkOnlySandbox checks that pod p is ready and runs its sandbox container alone:
// one sandbox, one runsc container (the pause container), no unpacked archive.
func (e *restoreEnv) checkOnlySandbox(ctx context.Context, t *testing.T, p pod) {
	t.Helper()
	if st := e.podState(ctx, t, p.ID); st != "SANDBOX_READY" {
		t.Errorf("pod %s is %s, want SANDBOX_READY", p.Name, st)
	}
	if sandboxes := e.sandboxes(t); len(sandboxes) != 1 {
		t.Errorf("%d sandboxes run, want the pod's one", len(sandboxes))
	}
	states, err := harness.RunscStates(filepath.Join(e.d.RunscRoot, harness.CRINamespace))
	if err != nil {
		t.Fatal(err)
	}
	if len(states) != 1 || !strings.Contains(filepath.Base(states[0]), p.ID) {
		t.Errorf("runsc containers %v, want only the pod's sandbox container %s", states, p.ID)
	}
	if u := e.unpacked(t); len(u) != 0 {
		t.Errorf("unpacked checkpoints left: %v", u)
	}
}

// TestRestoreAnnotationInitContainer restores a pod that has an init container, as the
// kubelet runs one: the checkpointed pod ran its init container to completion before
// its counter (the checkpoint leaves the exited container out), and the pod created
// from the same spec with the restore annotation runs its init container to
// completion too (a fresh start: it is not the checkpointed container), then restores
// the counter.
func TestRestoreAnnotationInitContainer(t *testing.T) {
	e := newRestoreEnv(t, harness.Options{CNI: harness.CNILoopback})
	ctx := testCtx(t, 5*time.Minute)
	archive := filepath.Join(e.root, "ckpt.tar")
	archived := e.checkpointCounter(ctx, t, "orig", archive, true)

	p2 := e.restorePod(ctx, t, "restored", false, archive)
	initc := e.createContainer(ctx, t, p2, "init", initCmd...)
	if _, err := e.crictlE(ctx, "start", initc); err != nil {
		t.Fatalf("the init container of a pod annotated to restore %s does not start: %v", archive, err)
	}
	if st := e.waitState(ctx, t, initc, "CONTAINER_EXITED", exitWait); st.Status.ExitCode != 0 {
		t.Fatalf("init container exit code %d, want 0", st.Status.ExitCode)
	}
	id := e.startContainer(ctx, t, p2, "counter", counterCmd...)
	e.checkRestored(ctx, t, id, archived)
	e.forceRemovePod(ctx, t, p2)
	e.checkNothingLeft(t)
}

// copyFile copies the file src to dst.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// writeTar writes a tar of regular files (name to content) to path.
func writeTar(t *testing.T, path string, files map[string]string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(files[name])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(files[name])); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestRestoreAnnotationVolume restores a pod whose container has a volume, as the
// kubelet gives every pod its own directory for a volume (emptyDir, the service
// account token: /var/lib/kubelet/pods/<uid>/volumes/...): the restored pod's volume
// is another host directory with the same files at the same mount point, and the
// restored counter reads them. A restoring container without the volume is refused
// before anything is created.
func TestRestoreAnnotationVolume(t *testing.T) {
	e := newRestoreEnv(t, harness.Options{CNI: harness.CNILoopback})
	ctx := testCtx(t, 5*time.Minute)
	volume := func(name string) map[string]any {
		dir := filepath.Join(t.TempDir(), name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "token"), []byte("secret\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return map[string]any{"container_path": "/data", "host_path": dir}
	}
	withVolume := func(m map[string]any) map[string]any {
		cfg := e.containerConfig("counter", e.ref, counterCmd...)
		if m != nil {
			cfg["mounts"] = []any{m}
		}
		return cfg
	}

	p := e.runPod(ctx, t, "orig")
	counter := e.createWith(ctx, t, p, "ctr-orig-counter.json", withVolume(volume("orig")))
	e.crictl(ctx, t, "start", counter)
	e.waitCountAbove(ctx, t, counter, 5, startWait)
	e.crictl(ctx, t, "exec", counter, "sh", "-c", "echo kept > /state")
	archive := filepath.Join(e.root, "ckpt.tar")
	archived := e.exportCounter(ctx, t, counter, archive, 5)
	e.forceRemovePod(ctx, t, p)
	e.waitNoSandboxProcesses(t, 30*time.Second)

	bad := e.restorePod(ctx, t, "no-volume", false, archive)
	id := e.createWith(ctx, t, bad, "ctr-novolume-counter.json", withVolume(nil))
	e.expectStartError(ctx, t, id, "FailedPrecondition", "runsc needs the same mount points")
	e.checkOnlySandbox(ctx, t, bad)
	e.forceRemovePod(ctx, t, bad)
	e.checkNothingLeft(t)

	p2 := e.restorePod(ctx, t, "restored", false, archive)
	id = e.createWith(ctx, t, p2, "ctr-restored-counter.json", withVolume(volume("restored")))
	e.crictl(ctx, t, "start", id)
	e.checkRestored(ctx, t, id, archived)
	if out := e.crictl(ctx, t, "exec", id, "cat", "/data/token"); out != "secret" {
		t.Fatalf("/data/token in the restored container: %q", out)
	}
	e.forceRemovePod(ctx, t, p2)
	e.checkNothingLeft(t)
}
