//go:build e2e

// Package checkpoint holds the end-to-end tests of checkpoint and restore: a real
// containerd (one private daemon per test, see test/e2e/harness), real runsc and the
// project's shim, driven through the containerd client, ctr and nerdctl.
//
// The workloads (test/e2e/workload) print their state, so every assertion is on what a
// restored process prints to its NEW task's stdio: a counter that continues instead of
// starting over, a memory checksum that still matches, files that still verify.
// Timeouts only bound waits; no assertion depends on timing.
package checkpoint

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	ckpt "github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/checkpoint"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/ckenv"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

const (
	startTimeout = ckenv.StartTimeout
	lineTimeout  = ckenv.LineTimeout
	// testTimeout bounds one test's client calls.
	testTimeout = 8 * time.Minute
)

// env is one test's daemon with the test image imported (ckenv.Env), plus this
// suite's own helpers.
type env struct{ *ckenv.Env }

// proc is a task with its output and exit channel.
type proc = ckenv.Proc

// setup starts a private containerd with the shim and imports the test image. The
// daemon's temporary directory is the test's own: containerd unpacks every checkpoint
// it restores from its content store into $XDG_RUNTIME_DIR or $TMPDIR
// (ctrd-checkpoint*, a full copy of the image) and never removes it.
func setup(t *testing.T, opts harness.Options) *env {
	t.Helper()
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("TMPDIR", t.TempDir())
	return &env{ckenv.Setup(t, opts, testTimeout)}
}

// sub returns e for a subtest: same daemon, the subtest's failures.
func (e *env) sub(t *testing.T) *env { return &env{e.Env.Sub(t)} }

// checkContinues fails unless the restored counter's first value lies in [lo, hi+1]
// (it continues where the checkpoint caught it: after the last value printed before
// the checkpoint started at the earliest, and right after the last one printed before
// it ended at the latest) and the values then keep increasing by one.
func checkContinues(t *testing.T, restored *harness.LineBuffer, lo, hi int) {
	t.Helper()
	first, i := ckenv.WaitCount(t, restored, 0, 0)
	ckenv.WaitCount(t, restored, i+1, first+2)
	c := ckenv.Counts(restored.Lines())
	if first < lo || first > hi+1 {
		t.Fatalf("restored counter started at %d; the checkpoint was taken between count=%d and count=%d, so it must continue from there (a restarted process starts at 0)", first, lo, hi)
	}
	for j := 1; j < len(c); j++ {
		if c[j] != c[j-1]+1 {
			t.Fatalf("restored counter is not contiguous: %v", c)
		}
	}
	t.Logf("checkpoint taken between count=%d and count=%d; restored counter continued at %d and reached %d", lo, hi, first, c[len(c)-1])
}

// checkContinuesFrom is checkContinues for a leave-running checkpoint, whose original
// keeps counting: the restored counter's first value is at least lo (the last value
// printed before the checkpoint started), follows a value the original printed (the
// original prints first-1 at some point, since it continues from the same state), and
// the values then keep increasing by one. No upper bound is taken from the original's
// output, which may still be in transit when the checkpoint returns.
func checkContinuesFrom(t *testing.T, restored, orig *harness.LineBuffer, lo int) {
	t.Helper()
	first, i := ckenv.WaitCount(t, restored, 0, 0)
	ckenv.WaitCount(t, restored, i+1, first+2)
	if first < lo {
		t.Fatalf("restored counter started at %d; the checkpoint was taken after count=%d, so it must continue from there (a restarted process starts at 0)", first, lo)
	}
	orig.WaitFor(t, fmt.Sprintf(`^count=%d$`, first-1), lineTimeout)
	c := ckenv.Counts(restored.Lines())
	for j := 1; j < len(c); j++ {
		if c[j] != c[j-1]+1 {
			t.Fatalf("restored counter is not contiguous: %v", c)
		}
	}
	t.Logf("checkpoint taken after count=%d; restored counter continued at %d (the original printed %d) and reached %d", lo, first, first-1, c[len(c)-1])
}

// checkpointLayer returns the tar entries of the task checkpoint (the
// application/vnd.containerd.container.criu.checkpoint.criu.tar blob) of a checkpoint
// image, with the content of runsc-cuda.json.
func (e *env) checkpointLayer(img containerd.Image) ([]*tar.Header, *ckpt.Metadata) {
	e.T.Helper()
	return checkpointLayerOf(e.Ctx, e.T, e.Client, img)
}

func checkpointLayerOf(ctx context.Context, t *testing.T, client *containerd.Client, img containerd.Image) ([]*tar.Header, *ckpt.Metadata) {
	t.Helper()
	index := readIndex(ctx, t, client, img)
	var desc *ocispec.Descriptor
	for i, m := range index.Manifests {
		if m.MediaType == images.MediaTypeContainerd1Checkpoint {
			desc = &index.Manifests[i]
		}
	}
	if desc == nil {
		t.Fatalf("checkpoint image %s has no %s manifest: %+v", img.Name(), images.MediaTypeContainerd1Checkpoint, index.Manifests)
	}
	ra, err := client.ContentStore().ReaderAt(ctx, *desc)
	if err != nil {
		t.Fatal(err)
	}
	defer ra.Close()
	tr := tar.NewReader(content.NewReader(ra))
	var (
		hdrs []*tar.Header
		meta *ckpt.Metadata
	)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("reading checkpoint tar: %v", err)
		}
		hdrs = append(hdrs, h)
		if strings.TrimPrefix(h.Name, "/") == ckpt.MetadataFile {
			if meta, err = ckpt.Decode(tr); err != nil {
				t.Fatalf("decoding %s from the checkpoint image: %v", ckpt.MetadataFile, err)
			}
		}
	}
	return hdrs, meta
}

func readIndex(ctx context.Context, t *testing.T, client *containerd.Client, img containerd.Image) ocispec.Index {
	t.Helper()
	raw, err := content.ReadBlob(ctx, client.ContentStore(), img.Target())
	if err != nil {
		t.Fatal(err)
	}
	var index ocispec.Index
	if err := json.Unmarshal(raw, &index); err != nil {
		t.Fatal(err)
	}
	return index
}

// checkFlatLayer fails unless the checkpoint tar holds only regular files at its top
// level, runsc-cuda.json among them, and the metadata lists every other file with its
// size.
func checkFlatLayer(t *testing.T, hdrs []*tar.Header, meta *ckpt.Metadata) {
	t.Helper()
	var names []string
	sizes := map[string]int64{}
	for _, h := range hdrs {
		name := strings.TrimPrefix(strings.TrimPrefix(h.Name, "./"), "/")
		if h.Typeflag != tar.TypeReg || strings.Contains(name, "/") || name == "" {
			t.Errorf("checkpoint holds %q of type %q; only flat regular files are allowed (the CRI packs them file by file)", h.Name, string(h.Typeflag))
		}
		names = append(names, name)
		sizes[name] = h.Size
	}
	if meta == nil {
		t.Fatalf("checkpoint has no %s; files: %v", ckpt.MetadataFile, names)
	}
	for _, f := range meta.Files {
		if got, ok := sizes[f.Name]; !ok || got != f.Size {
			t.Errorf("metadata lists %s of %d bytes; the image has %d bytes (present %t)", f.Name, f.Size, got, ok)
		}
	}
	if len(meta.Files)+1 != len(names) {
		t.Errorf("image files %v, metadata lists %d besides itself", names, len(meta.Files))
	}
	t.Logf("checkpoint files: %v", names)
}

// checkFlatDir is checkFlatLayer for a checkpoint directory (image_path).
func checkFlatDir(t *testing.T, dir string) *ckpt.Metadata {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, en := range entries {
		names = append(names, en.Name())
		if !en.Type().IsRegular() {
			t.Errorf("checkpoint directory holds %s of mode %v; only regular files are allowed", en.Name(), en.Type())
		}
	}
	meta, err := ckpt.Read(dir)
	if err != nil {
		t.Fatalf("checkpoint directory %s (files %v): %v", dir, names, err)
	}
	if err := meta.CheckFiles(dir); err != nil {
		t.Fatal(err)
	}
	if len(meta.Files)+1 != len(names) {
		t.Errorf("directory files %v, metadata lists %d besides itself", names, len(meta.Files))
	}
	return meta
}

// shimRuntimeWith writes a shim config (the daemon's, plus extra TOML that must not
// repeat its tables, e.g. [runsc_config]) to a new file and returns a runtime option
// that selects the shim with it.
func (e *env) shimRuntimeWith(extra string) containerd.NewContainerOpts {
	e.T.Helper()
	base, err := os.ReadFile(e.D.ShimConfigPath)
	if err != nil {
		e.T.Fatal(err)
	}
	path := filepath.Join(e.D.Dir, harness.RandomID("shim")+".toml")
	if err := os.WriteFile(path, append(append(base, '\n'), extra...), 0o644); err != nil {
		e.T.Fatal(err)
	}
	return withShimConfig(e.D, path)
}

// withShimConfig selects the shim with the config file at path.
func withShimConfig(d *harness.Daemon, path string) containerd.NewContainerOpts {
	return containerd.WithRuntime(d.RuntimeName, &runtimeoptions.Options{ConfigPath: path})
}

// exec runs args in the task and returns its output and exit status.
func (e *env) exec(p *proc, args ...string) (string, uint32) {
	e.T.Helper()
	spec, err := p.C.Spec(e.Ctx)
	if err != nil {
		e.T.Fatal(err)
	}
	ps := *spec.Process
	ps.Args = args
	ps.Terminal = false
	out := harness.NewLineBuffer()
	execID := harness.RandomID("exec")
	ep, err := p.Task.Exec(e.Ctx, execID, &ps, e.D.IO(nil, out, out))
	if err != nil {
		e.T.Fatalf("exec %v in %s: %v", args, p.C.ID(), err)
	}
	statusC, err := ep.Wait(e.Ctx)
	if err != nil {
		e.T.Fatal(err)
	}
	if err := ep.Start(e.Ctx); err != nil {
		e.T.Fatalf("start exec %v in %s: %v", args, p.C.ID(), err)
	}
	var code uint32
	select {
	case st := <-statusC:
		code = st.ExitCode()
	case <-time.After(startTimeout):
		e.T.Fatalf("exec %v in %s did not exit", args, p.C.ID())
	}
	if _, err := ep.Delete(e.Ctx); err != nil {
		e.T.Fatalf("delete exec %v: %v", args, err)
	}
	return out.String(), code
}

// mustExec runs args in the task and fails unless it exits 0.
func (e *env) mustExec(p *proc, args ...string) string {
	e.T.Helper()
	out, code := e.exec(p, args...)
	if code != 0 {
		e.T.Fatalf("exec %v in %s exited %d: %s", args, p.C.ID(), code, out)
	}
	return out
}

// layerEntries lists the entries of a gzip tar layer blob of an image's index.
func (e *env) layerEntries(desc ocispec.Descriptor) []string {
	e.T.Helper()
	ra, err := e.Client.ContentStore().ReaderAt(e.Ctx, desc)
	if err != nil {
		e.T.Fatal(err)
	}
	defer ra.Close()
	zr, err := gzip.NewReader(content.NewReader(ra))
	if err != nil {
		e.T.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var names []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return names
		}
		if err != nil {
			e.T.Fatal(err)
		}
		names = append(names, fmt.Sprintf("%s (%d bytes)", h.Name, h.Size))
	}
}
