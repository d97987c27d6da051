//go:build e2e

package checkpoint

import (
	"strings"
	"testing"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

// TestCheckpointFilesRootfsAndTmpfs writes files into the container's rootfs and into a
// tmpfs mount of its spec, checkpoints it the way `ctr container checkpoint --task --rw
// --image` does (pause, container.Checkpoint with task, rw layer, image and runtime,
// resume), deletes the container, and restores it from the image the way `ctr container
// restore --live --rw` does (client.Restore with image, spec, runtime and rw layer,
// then NewTask WithTaskCheckpoint) but with the test's own IO. The restored `files`
// workload keeps verifying its files (files-ok, never written again), and every file in
// both places has the same digest as before the checkpoint.
//
// Under gVisor the rootfs changes live in the sandbox's overlay, so they travel in the
// runsc image. The shim keeps the overlay's filestore beside the rw layer (runsc
// --overlay2=root:dir=<snapshot dir>), so the rw layer containerd captures holds nothing
// of it; with runsc's root:self it would hold the .gvisor.filestore file, which the shim
// removes at restore.
func TestCheckpointFilesRootfsAndTmpfs(t *testing.T) {
	e := setup(t, harness.Options{})
	id := harness.RandomID("files")
	tmpfs := oci.WithMounts([]specs.Mount{{Destination: "/scratch", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "size=16m"}}})
	p := e.run(id, []string{"/workload", "files", "--dir", "/data/files", "--count", "20", "--interval", "300ms"}, tmpfs)
	p.out.WaitFor(t, `^files-ok$`, startTimeout)
	e.mustExec(p, "/bin/sh", "-c", "mkdir -p /scratch/t && seq 1 20000 > /scratch/t/seq && seq 7 30000 > /data/seq2")
	sums := e.mustExec(p, "/bin/sh", "-c", "sha256sum /data/files/* /data/seq2 /scratch/t/seq")
	if n := strings.Count(sums, "\n"); n != 22 {
		t.Fatalf("sha256sum printed %d lines:\n%s", n, sums)
	}

	ref := "localhost/ckpt/" + id + ":rw"
	if err := p.task.Pause(e.ctx); err != nil {
		t.Fatal(err)
	}
	img, err := p.c.Checkpoint(e.ctx, ref, containerd.WithCheckpointRuntime, containerd.WithCheckpointImage,
		containerd.WithCheckpointRW, containerd.WithCheckpointTask)
	if err != nil {
		t.Fatalf("container checkpoint: %v", err)
	}
	if err := p.task.Resume(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.checkRunningFiles(p)
	hdrs, meta := e.checkpointLayer(img)
	checkFlatLayer(t, hdrs, meta)
	for _, m := range readIndex(e.ctx, t, e.client, img).Manifests {
		if m.MediaType == ocispec.MediaTypeImageLayerGzip {
			t.Logf("rw layer captured by containerd: %v", e.layerEntries(m))
		}
	}

	e.killAndDelete(p)
	if err := p.c.Delete(e.ctx, containerd.WithSnapshotCleanup); err != nil {
		t.Fatal(err)
	}
	e.checkNoTrace(id)

	c, err := e.client.Restore(e.ctx, id, img, containerd.WithRestoreImage, containerd.WithRestoreSpec,
		containerd.WithRestoreRuntime, containerd.WithRestoreRW)
	if err != nil {
		t.Fatalf("client restore: %v", err)
	}
	r := e.startTask(c, containerd.WithTaskCheckpoint(img))
	_, i := r.out.WaitForFrom(t, 0, `^files-ok$`, startTimeout)
	r.out.WaitForFrom(t, i+1, `^files-ok$`, lineTimeout)
	for _, l := range r.out.Lines() {
		if l != "files-ok" {
			t.Fatalf("restored files workload printed %q (written again means it restarted; files-bad means content was lost)", l)
		}
	}
	if got := e.mustExec(r, "/bin/sh", "-c", "sha256sum /data/files/* /data/seq2 /scratch/t/seq"); got != sums {
		t.Fatalf("file digests after restore:\n%s\nbefore:\n%s", got, sums)
	}
	e.killAndDelete(r)
}

// checkRunningFiles fails unless the files workload is running and still verifying.
func (e *env) checkRunningFiles(p *proc) {
	e.t.Helper()
	st, err := p.task.Status(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	if st.Status != containerd.Running {
		e.t.Fatalf("task %s is %s, want running", p.c.ID(), st.Status)
	}
	p.out.WaitForFrom(e.t, p.out.Len(), `^files-ok$`, lineTimeout)
}
