//go:build e2e

package checkpoint

import (
	"strings"
	"testing"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/ckenv"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

// TestCheckpointMemhold256MiB fills 256 MiB with pseudo-random data, checkpoints the
// container with exit and restores it, once per configurable compression ([checkpoint]
// compression = "none" and "flate-best-speed" in the shim config): the restored process
// re-verifies its checksum and prints the same sum, never CORRUPT, and the metadata
// records the compression used.
func TestCheckpointMemhold256MiB(t *testing.T) {
	e := setup(t, harness.Options{})
	for _, compression := range []string{"none", "flate-best-speed"} {
		t.Run(compression, func(t *testing.T) {
			e := e.sub(t)
			id := harness.RandomID("memhold")
			rt := e.shimRuntimeWith("[checkpoint]\ncompression = \"" + compression + "\"\n")
			p := e.StartTask(e.NewContainer(id, []string{"/workload", "memhold", "--mib", "256", "--seed", "7", "--interval", "500ms"}, rt))
			ready := p.Out.WaitFor(t, `^ready sum=[0-9a-f]{64}$`, startTimeout)
			sum := strings.TrimPrefix(ready, "ready sum=")
			p.Out.WaitFor(t, `^ok sum=`, lineTimeout)

			img, err := p.Task.Checkpoint(e.Ctx, containerd.WithCheckpointName("localhost/ckpt/"+id+":"+compression),
				ckenv.WithCheckpointOptions(&runcoptions.CheckpointOptions{Exit: true}))
			if err != nil {
				t.Fatalf("checkpoint: %v", err)
			}
			e.WaitExit(p)
			e.DeleteTask(p)
			hdrs, meta := e.checkpointLayer(img)
			checkFlatLayer(t, hdrs, meta)
			if meta.Compression != compression {
				t.Errorf("metadata compression %q, want %q", meta.Compression, compression)
			}
			t.Logf("image %d bytes, runsc checkpoint %d ms", meta.Size(), meta.Timings.Runsc)

			r := e.StartTask(p.C, containerd.WithTaskCheckpoint(img))
			_, i := r.Out.WaitForFrom(t, 0, `^ok sum=`, startTimeout)
			r.Out.WaitForFrom(t, i+1, `^ok sum=`, lineTimeout)
			for _, l := range r.Out.Lines() {
				if strings.HasPrefix(l, "ready") || strings.Contains(l, "CORRUPT") || (strings.HasPrefix(l, "ok sum=") && !strings.HasPrefix(l, "ok sum="+sum+" ")) {
					t.Fatalf("restored memhold printed %q; want only ok sum=%s", l, sum)
				}
			}
			e.KillAndDelete(r)
			e.CheckNoTrace(id)
		})
	}
}
