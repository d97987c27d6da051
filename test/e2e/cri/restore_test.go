//go:build e2e

package cri

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

// restoreConfig enables containerd 2.3's restore through CreateContainer (off by
// default there; containerd 2.4 removed it).
const restoreConfig = `
[plugins."io.containerd.cri.v1.runtime"]
enable_experimental_restore_via_create = true
`

// TestRestoreCRI checkpoints a pod's container with crictl and restores it into a new
// pod through CreateContainer with the checkpoint archive as its image, on containerd
// 2.3.7 (the last minor that offers it): the counter goes on from its checkpointed
// value with its rootfs writes, exec, logs, a further container, a second checkpoint
// and restore, and the pods' removal work afterwards.
func TestRestoreCRI(t *testing.T) {
	e := newCRIEnv(t, "2.3.7", restoreConfig)
	ctx := testCtx(t, 5*time.Minute)

	// An init-like container that ran and exited stays in the pod (the kubelet
	// keeps exited init containers); the checkpoint leaves it out.
	archive := filepath.Join(e.dir, "counter.tar")
	archived := e.checkpointCounter(ctx, t, "orig", archive, true)

	// Restore into a new pod, under another container name.
	p2 := e.runPod(ctx, t, "restored")
	cfg := e.writeJSON(t, "ctr-restore.json", e.containerConfig("counter-restored", archive, "/workload", "counter", "--interval", "200ms"))
	start := time.Now()
	id := e.crictl(ctx, t, "create", "--no-pull", p2.ID, cfg, p2.Config)
	e.crictl(ctx, t, "start", id)
	t.Logf("crictl create+start from the archive took %v", time.Since(start).Round(time.Millisecond))
	st := e.waitState(ctx, t, id, "CONTAINER_RUNNING", startWait)
	if st.Status.Annotations["restored"] != "true" {
		t.Errorf("restored container's annotations %v lack restored=true", st.Status.Annotations)
	}

	// The CRI copies the archived log into the new container's log; what follows
	// it is the restored counter, which goes on from its saved value.
	e.waitCountAbove(ctx, t, id, archived[len(archived)-1], startWait)
	all := countsIn(e.logs(ctx, t, id))
	if len(all) <= len(archived) {
		t.Fatalf("no new counts after the archived log: %v", all)
	}
	first := all[len(archived)]
	t.Logf("archived counts %d..%d; the restored counter printed %d first", archived[0], archived[len(archived)-1], first)
	if first <= 5 || first > archived[len(archived)-1]+1 {
		t.Fatalf("the restored counter printed %d first, want a value in (5, %d]: it did not resume from the checkpoint", first, archived[len(archived)-1]+1)
	}
	// The rootfs change made before the checkpoint is there, and exec works.
	if out := e.crictl(ctx, t, "exec", id, "cat", "/state"); out != "kept" {
		t.Fatalf("/state in the restored container: %q", out)
	}
	// The restored container can be checkpointed again.
	archive2 := filepath.Join(e.dir, "counter2.tar")
	e.crictl(ctx, t, "checkpoint", "--export="+archive2, id)

	// The restored pod is one sandbox served by one shim, and takes further
	// containers.
	if shims, sandboxes := e.shims(t), e.sandboxes(t); len(shims) != 1 || len(sandboxes) != 1 {
		t.Fatalf("restored pod runs %d shims and %d sandboxes, want 1 and 1", len(shims), len(sandboxes))
	}
	side := e.startContainer(ctx, t, p2, "side", "/workload", "counter", "--interval", "200ms")
	e.waitCountAbove(ctx, t, side, 1, startWait)
	// It shares the restored pod's PID namespace.
	if out := e.crictl(ctx, t, "exec", side, "ps"); strings.Count(out, "/workload counter") != 2 {
		t.Fatalf("ps in the restored pod's new container does not list both counters:\n%s", out)
	}
	if st := e.podState(ctx, t, p2.ID); st != "SANDBOX_READY" {
		t.Fatalf("restored pod is %s, want SANDBOX_READY", st)
	}
	n := e.lastCount(ctx, t, id)
	e.waitCountAbove(ctx, t, id, n, 10*time.Second)

	e.removePod(ctx, t, p2)
	e.waitNoSandboxProcesses(t, 30*time.Second)

	// The checkpoint of the restored container restores too (under its first name).
	archived2 := countsIn(string(tarEntries(t, archive2)["container.log"]))
	p3 := e.runPod(ctx, t, "restored-again")
	cfg3 := e.writeJSON(t, "ctr-restore2.json", e.containerConfig("counter", archive2, "/workload", "counter", "--interval", "200ms"))
	id3 := e.crictl(ctx, t, "create", "--no-pull", p3.ID, cfg3, p3.Config)
	e.crictl(ctx, t, "start", id3)
	e.waitCountAbove(ctx, t, id3, archived2[len(archived2)-1], startWait)
	all = countsIn(e.logs(ctx, t, id3))
	if first := all[len(archived2)]; first <= archived[len(archived)-1] {
		t.Fatalf("restored twice, the counter printed %d first; want more than %d, where the first checkpoint left it", first, archived[len(archived)-1])
	}
	if out := e.crictl(ctx, t, "exec", id3, "cat", "/state"); out != "kept" {
		t.Fatalf("/state after the second restore: %q", out)
	}
	e.removePod(ctx, t, p3)
	e.waitNoSandboxProcesses(t, 30*time.Second)
}

// TestRestoreCRIFailure restores a pod checkpoint with a spec runsc refuses only after
// the pod's sandbox was replaced (its validation: another working directory): the
// start fails with runsc's reason, the pod's sandbox container has exited (the pod is
// not ready), and the pod is removed without leftovers.
func TestRestoreCRIFailure(t *testing.T) {
	e := newCRIEnv(t, "2.3.7", restoreConfig)
	ctx := testCtx(t, 5*time.Minute)

	p := e.runPod(ctx, t, "orig")
	counter := e.startContainer(ctx, t, p, "counter", "/workload", "counter", "--interval", "200ms")
	e.waitCountAbove(ctx, t, counter, 1, startWait)
	archive := filepath.Join(e.dir, "counter.tar")
	e.crictl(ctx, t, "checkpoint", "--export="+archive, counter)
	e.removePod(ctx, t, p)

	p4 := e.runPod(ctx, t, "mismatch")
	bad := e.containerConfig("counter", archive, "/workload", "counter", "--interval", "200ms")
	bad["working_dir"] = "/bin"
	cfg4 := e.writeJSON(t, "ctr-restore-bad.json", bad)
	id4 := e.crictl(ctx, t, "create", "--no-pull", p4.ID, cfg4, p4.Config)
	if _, err := e.crictlE(ctx, "start", id4); err == nil || !strings.Contains(err.Error(), "Cwd") {
		t.Fatalf("restore with another working directory: %v; want runsc's Cwd mismatch", err)
	} else {
		t.Logf("refused as expected: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for e.podState(ctx, t, p4.ID) != "SANDBOX_NOTREADY" {
		if time.Now().After(deadline) {
			t.Fatalf("pod whose sandbox could not be restored is still %s", e.podState(ctx, t, p4.ID))
		}
		time.Sleep(200 * time.Millisecond)
	}
	e.removePod(ctx, t, p4)
	e.waitNoSandboxProcesses(t, 30*time.Second)
}

// exportCounter checkpoints the counter id with crictl checkpoint --export=archive
// and returns the counts the archive's container.log holds, which must reach past
// above.
func (e *criEnv) exportCounter(ctx context.Context, t *testing.T, id, archive string, above int) []int {
	t.Helper()
	e.crictl(ctx, t, "checkpoint", "--export="+archive, id)
	archived := countsIn(string(tarEntries(t, archive)["container.log"]))
	if len(archived) == 0 || archived[len(archived)-1] <= above {
		t.Fatalf("the archive's container.log holds counts %v, want some above %d", archived, above)
	}
	return archived
}

// countsIn returns the values of the count=N lines in a log, in order.
func countsIn(log string) []int {
	var out []int
	for _, l := range strings.Split(log, "\n") {
		if m := countRE.FindStringSubmatch(l); m != nil {
			v, _ := strconv.Atoi(m[1])
			out = append(out, v)
		}
	}
	return out
}

// checkpointAnnotation marks an OCI image as a container checkpoint for the CRI
// (checkpointctl's CheckpointAnnotationName, which containerd 2.3 reads).
const checkpointAnnotation = "org.criu.checkpoint.container.name"

// TestRestoreCRIImage restores from a checkpoint OCI image, the form a kubelet (which
// pulls the image of a pod's container) can hand the CRI: one uncompressed layer that
// is the checkpoint archive, the manifest annotated with the container's name. The
// image is put into containerd's store directly, as a pull would.
func TestRestoreCRIImage(t *testing.T) {
	e := newCRIEnv(t, "2.3.7", restoreConfig)
	ctx := testCtx(t, 5*time.Minute)

	p := e.runPod(ctx, t, "orig")
	counter := e.startContainer(ctx, t, p, "counter", "/workload", "counter", "--interval", "200ms")
	e.waitCountAbove(ctx, t, counter, 3, startWait)
	archive := filepath.Join(e.dir, "counter.tar")
	archived := e.exportCounter(ctx, t, counter, archive, 3)
	e.removePod(ctx, t, p)

	ref := "localhost/checkpoints/counter:1"
	e.importCheckpointImage(ctx, t, archive, ref, "counter")

	p2 := e.runPod(ctx, t, "from-image")
	cfg := e.writeJSON(t, "ctr-restore-image.json", e.containerConfig("counter", ref, "/workload", "counter", "--interval", "200ms"))
	id := e.crictl(ctx, t, "create", "--no-pull", p2.ID, cfg, p2.Config)
	e.crictl(ctx, t, "start", id)
	e.waitCountAbove(ctx, t, id, archived[len(archived)-1], startWait)
	all := countsIn(e.logs(ctx, t, id))
	if first := all[len(archived)]; first <= 3 || first > archived[len(archived)-1]+1 {
		t.Fatalf("the counter restored from the image printed %d first; want a value in (3, %d]", first, archived[len(archived)-1]+1)
	}
	e.removePod(ctx, t, p2)
	e.waitNoSandboxProcesses(t, 30*time.Second)
}

// importCheckpointImage stores a checkpoint OCI image named ref in the CRI's
// namespace: the archive as its one layer, the manifest annotated with name, and
// unpacks it (the CRI mounts a view of it).
func (e *criEnv) importCheckpointImage(ctx context.Context, t *testing.T, archive, ref, name string) {
	t.Helper()
	ctx = namespaces.WithNamespace(ctx, harness.CRINamespace)
	client := e.d.Client()
	layer, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	ctx, done, err := client.WithLease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer done(context.WithoutCancel(ctx))
	store := client.ContentStore()
	put := func(mediaType string, data []byte, labels map[string]string) ocispec.Descriptor {
		desc := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
		if err := content.WriteBlob(ctx, store, desc.Digest.String(), bytes.NewReader(data), desc, content.WithLabels(labels)); err != nil {
			t.Fatal(err)
		}
		return desc
	}
	platform := ocispec.Platform{OS: "linux", Architecture: "amd64"}
	layerDesc := put(ocispec.MediaTypeImageLayer, layer, nil)
	config, _ := json.Marshal(ocispec.Image{
		Platform: platform,
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{layerDesc.Digest}},
	})
	configDesc := put(ocispec.MediaTypeImageConfig, config, nil)
	manifest, _ := json.Marshal(ocispec.Manifest{
		Versioned:   specs.Versioned{SchemaVersion: 2},
		MediaType:   ocispec.MediaTypeImageManifest,
		Config:      configDesc,
		Layers:      []ocispec.Descriptor{layerDesc},
		Annotations: map[string]string{checkpointAnnotation: name},
	})
	// The manifest references its blobs for containerd's garbage collector.
	manifestDesc := put(ocispec.MediaTypeImageManifest, manifest, map[string]string{
		"containerd.io/gc.ref.content.config": configDesc.Digest.String(),
		"containerd.io/gc.ref.content.l.0":    layerDesc.Digest.String(),
	})
	img, err := client.ImageService().Create(ctx, images.Image{Name: ref, Target: manifestDesc})
	if err != nil {
		t.Fatal(err)
	}
	if err := containerd.NewImageWithPlatform(client, img, platforms.Only(platform)).Unpack(ctx, e.d.Snapshotter); err != nil {
		t.Fatalf("unpack %s: %v", ref, err)
	}
	// The CRI learns of the image from containerd's events.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if out, err := e.crictlE(ctx, "images", "-q", ref); err == nil && out != "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the CRI does not list %s", ref)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
