//go:build e2e

package checkpoint

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images/archive"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/ckenv"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

// TestCheckpointMigrationBetweenDaemons checkpoints a counter in one containerd,
// exports the checkpoint image to a tar (client.Export, what `ctr images export` does),
// imports it into a second containerd with its own root, state and runsc root (`ctr
// images import`), and restores it there into a new container of the same image: the
// count continues where the first daemon's container stopped, and the metadata in the
// moved image still names the first container and the runsc version.
func TestCheckpointMigrationBetweenDaemons(t *testing.T) {
	src := setup(t, harness.Options{})
	dst := setup(t, harness.Options{})
	if src.D.Root == dst.D.Root || src.D.RunscRoot == dst.D.RunscRoot {
		t.Fatal("the two daemons share a root")
	}
	id := harness.RandomID("migrate")
	p := src.Run(id, counterArgs)
	ckenv.WaitCount(t, p.Out, 0, 5)
	lo := ckenv.LastCount(p.Out)
	ref := "localhost/ckpt/" + id + ":migrate"
	if _, err := p.Task.Checkpoint(src.Ctx, containerd.WithCheckpointName(ref),
		ckenv.WithCheckpointOptions(&runcoptions.CheckpointOptions{Exit: true})); err != nil {
		t.Fatal(err)
	}
	src.WaitExit(p)
	src.DeleteTask(p)
	hi := ckenv.LastCount(p.Out)

	tarPath := filepath.Join(src.D.Dir, "checkpoint.tar")
	f, err := os.Create(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Client.Export(src.Ctx, f, archive.WithImage(src.Client.ImageService(), ref)); err != nil {
		t.Fatalf("export %s: %v", ref, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(tarPath)
	t.Logf("exported %s: %d bytes", ref, st.Size())

	out := dst.ctr("images", "import", tarPath)
	t.Logf("ctr images import: %s", strings.TrimSpace(out))
	img, err := dst.Client.GetImage(dst.Ctx, ref)
	if err != nil {
		t.Fatalf("imported checkpoint image: %v", err)
	}
	hdrs, meta := dst.checkpointLayer(img)
	checkFlatLayer(t, hdrs, meta)
	if meta.ContainerID != id {
		t.Errorf("moved metadata names container %q, want %q", meta.ContainerID, id)
	}

	id2 := harness.RandomID("migrated")
	r := dst.StartTask(dst.NewContainer(id2, counterArgs, nil), containerd.WithTaskCheckpoint(img))
	checkContinues(t, r.Out, lo, hi)
	dst.CheckRunning(r)
	dst.KillAndDelete(r)
	dst.CheckNoTrace(id2)
}
