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
	p := e.Run(id, []string{"/workload", "files", "--dir", "/data/files", "--count", "20", "--interval", "300ms"}, tmpfs)
	p.Out.WaitFor(t, `^files-ok$`, startTimeout)
	e.mustExec(p, "/bin/sh", "-c", "mkdir -p /scratch/t && seq 1 20000 > /scratch/t/seq && seq 7 30000 > /data/seq2")
	sums := e.mustExec(p, "/bin/sh", "-c", "sha256sum /data/files/* /data/seq2 /scratch/t/seq")
	if n := strings.Count(sums, "\n"); n != 22 {
		t.Fatalf("sha256sum printed %d lines:\n%s", n, sums)
	}

	ref := "localhost/ckpt/" + id + ":rw"
	img := e.checkpointContainerRW(p, ref)
	e.checkRunningFiles(p)
	hdrs, meta := e.checkpointLayer(img)
	checkFlatLayer(t, hdrs, meta)
	for _, m := range readIndex(e.Ctx, t, e.Client, img).Manifests {
		if m.MediaType == ocispec.MediaTypeImageLayerGzip {
			t.Logf("rw layer captured by containerd: %v", e.layerEntries(m))
		}
	}

	e.KillAndDelete(p)
	if err := p.C.Delete(e.Ctx, containerd.WithSnapshotCleanup); err != nil {
		t.Fatal(err)
	}
	e.CheckNoTrace(id)

	_, r := e.restoreContainerRW(id, img)
	_, i := r.Out.WaitForFrom(t, 0, `^files-ok$`, startTimeout)
	r.Out.WaitForFrom(t, i+1, `^files-ok$`, lineTimeout)
	for _, l := range r.Out.Lines() {
		if l != "files-ok" {
			t.Fatalf("restored files workload printed %q (written again means it restarted; files-bad means content was lost)", l)
		}
	}
	if got := e.mustExec(r, "/bin/sh", "-c", "sha256sum /data/files/* /data/seq2 /scratch/t/seq"); got != sums {
		t.Fatalf("file digests after restore:\n%s\nbefore:\n%s", got, sums)
	}
	e.KillAndDelete(r)
}

// checkRunningFiles fails unless the files workload is running and still verifying.
func (e *env) checkRunningFiles(p *proc) {
	e.T.Helper()
	st, err := p.Task.Status(e.Ctx)
	if err != nil {
		e.T.Fatal(err)
	}
	if st.Status != containerd.Running {
		e.T.Fatalf("task %s is %s, want running", p.C.ID(), st.Status)
	}
	p.Out.WaitForFrom(e.T, p.Out.Len(), `^files-ok$`, lineTimeout)
}

// checkpointContainerRW does what `ctr container checkpoint --task --rw --image REF`
// does: pause, checkpoint the task, the runtime, the image and the rw layer into
// image ref, resume.
func (e *env) checkpointContainerRW(p *proc, ref string) containerd.Image {
	e.T.Helper()
	if err := p.Task.Pause(e.Ctx); err != nil {
		e.T.Fatal(err)
	}
	img, err := p.C.Checkpoint(e.Ctx, ref, containerd.WithCheckpointRuntime, containerd.WithCheckpointImage,
		containerd.WithCheckpointRW, containerd.WithCheckpointTask)
	if err != nil {
		e.T.Fatalf("container checkpoint: %v", err)
	}
	if err := p.Task.Resume(e.Ctx); err != nil {
		e.T.Fatal(err)
	}
	return img
}

// restoreContainerRW does what `ctr container restore --live --rw ID REF` does:
// a container id from the checkpoint image's spec, runtime, image and rw layer, and
// its task restored (with fresh IO into a LineBuffer).
func (e *env) restoreContainerRW(id string, img containerd.Image) (containerd.Container, *proc) {
	e.T.Helper()
	c, err := e.Client.Restore(e.Ctx, id, img, containerd.WithRestoreImage, containerd.WithRestoreSpec,
		containerd.WithRestoreRuntime, containerd.WithRestoreRW)
	if err != nil {
		e.T.Fatalf("client restore: %v", err)
	}
	return c, e.StartTask(c, containerd.WithTaskCheckpoint(img))
}
