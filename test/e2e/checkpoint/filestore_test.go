//go:build e2e

package checkpoint

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	containerd "github.com/containerd/containerd/v2/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

// TestCheckpointRWLayerAndOverlayFilestore checkpoints a container that wrote to its
// rootfs the way `ctr container checkpoint --task --rw --image` does and restores it with
// its rw layer (`ctr container restore --live --rw`), once with the shim's default and
// once with runsc's own overlay2 = "root:self" set in the shim config. runsc keeps the
// rootfs writes in an overlay backed by a filestore file: by default the shim keeps that
// file beside the rw layer, so containerd's rw diff (gzipped on every checkpoint, with the
// container paused) holds none of it; with root:self the 1 GiB (apparent) file is in the
// rw layer, and the restore still works because the shim drops the stale file at create.
// Either way the files written before the checkpoint are intact after the restore.
func TestCheckpointRWLayerAndOverlayFilestore(t *testing.T) {
	e := setup(t, harness.Options{})
	base, err := os.ReadFile(e.D.ShimConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(base), "[runsc_config]\n") {
		t.Fatalf("the harness's shim config has no [runsc_config] table:\n%s", base)
	}
	self := filepath.Join(e.D.Dir, harness.RandomID("self")+".toml")
	if err := os.WriteFile(self, []byte(strings.Replace(string(base), "[runsc_config]\n", "[runsc_config]\noverlay2 = \"root:self\"\n", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name          string
		runtime       containerd.NewContainerOpts
		wantFilestore bool
	}{
		{"default", nil, false},
		{"root:self", withShimConfig(e.D, self), true},
	} {
		t.Run(strings.ReplaceAll(tc.name, ":", "-"), func(t *testing.T) {
			e := e.sub(t)
			id := harness.RandomID("fstore")
			p := e.StartTask(e.NewContainer(id, []string{"/workload", "files", "--dir", "/data/files", "--count", "5", "--interval", "300ms"}, tc.runtime))
			p.Out.WaitFor(t, `^files-ok$`, startTimeout)
			sums := e.mustExec(p, "/bin/sh", "-c", "sha256sum /data/files/*")

			ref := "localhost/ckpt/" + id + ":rw"
			img := e.checkpointContainerRW(p, ref)
			var entries []string
			for _, m := range readIndex(e.Ctx, t, e.Client, img).Manifests {
				if m.MediaType == ocispec.MediaTypeImageLayerGzip {
					entries = append(entries, e.layerEntries(m)...)
				}
			}
			hasFilestore := false
			for _, en := range entries {
				if strings.Contains(en, ".gvisor.filestore.") {
					hasFilestore = true
				}
			}
			t.Logf("rw layer captured by containerd: %v", entries)
			if hasFilestore != tc.wantFilestore {
				t.Fatalf("rw layer holds a runsc filestore: %t, want %t (entries %v)", hasFilestore, tc.wantFilestore, entries)
			}

			e.KillAndDelete(p)
			if err := p.C.Delete(e.Ctx, containerd.WithSnapshotCleanup); err != nil {
				t.Fatal(err)
			}
			c, r := e.restoreContainerRW(id, img)
			r.Out.WaitFor(t, `^files-ok$`, startTimeout)
			if got := e.mustExec(r, "/bin/sh", "-c", "sha256sum /data/files/*"); got != sums {
				t.Fatalf("file digests after restore:\n%s\nbefore:\n%s", got, sums)
			}
			e.KillAndDelete(r)
			if err := c.Delete(e.Ctx, containerd.WithSnapshotCleanup); err != nil {
				t.Fatal(err)
			}
		})
	}
}
