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
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/oci"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	ckpt "github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/checkpoint"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

const (
	// startTimeout bounds a sandbox start or restore and the first output after it.
	startTimeout = 2 * time.Minute
	// lineTimeout bounds the wait for the next line of a running workload.
	lineTimeout = 30 * time.Second
	// testTimeout bounds one test's client calls.
	testTimeout = 8 * time.Minute
)

// env is one test's daemon with the test image imported.
type env struct {
	t      *testing.T
	d      *harness.Daemon
	ctx    context.Context
	client *containerd.Client
	image  containerd.Image
}

// setup starts a private containerd with the shim and imports the test image.
func setup(t *testing.T, opts harness.Options) *env {
	t.Helper()
	d := harness.StartContainerd(t, opts)
	ref := d.ImportTestImage(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	image, err := d.Client().GetImage(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, d: d, ctx: ctx, client: d.Client(), image: image}
}

// newContainer creates a container of the test image running args under the shim
// (with the daemon's shim config unless runtime is given).
func (e *env) newContainer(id string, args []string, runtime containerd.NewContainerOpts, specOpts ...oci.SpecOpts) containerd.Container {
	e.t.Helper()
	if runtime == nil {
		runtime = e.d.RuntimeOpts()
	}
	so := append([]oci.SpecOpts{oci.WithImageConfig(e.image), oci.WithProcessArgs(args...)}, specOpts...)
	c, err := e.client.NewContainer(e.ctx, id,
		containerd.WithImage(e.image),
		containerd.WithNewSnapshot(id, e.image),
		runtime,
		containerd.WithNewSpec(so...),
	)
	if err != nil {
		e.t.Fatalf("create container %s: %v", id, err)
	}
	return c
}

// proc is a task with its output and exit channel.
type proc struct {
	c     containerd.Container
	task  containerd.Task
	out   *harness.LineBuffer
	exitC <-chan containerd.ExitStatus
}

// startTask creates and starts c's task with fresh IO into a LineBuffer; with
// containerd.WithTaskCheckpoint among opts it restores instead.
func (e *env) startTask(c containerd.Container, opts ...containerd.NewTaskOpts) *proc {
	e.t.Helper()
	p, err := e.tryStartTask(c, opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

func (e *env) tryStartTask(c containerd.Container, opts ...containerd.NewTaskOpts) (*proc, error) {
	out := harness.NewLineBuffer()
	task, err := c.NewTask(e.ctx, e.d.IO(nil, out, out), opts...)
	if err != nil {
		return nil, fmt.Errorf("new task %s: %w", c.ID(), err)
	}
	exitC, err := task.Wait(e.ctx)
	if err != nil {
		return nil, fmt.Errorf("wait %s: %w", c.ID(), err)
	}
	if err := task.Start(e.ctx); err != nil {
		_, _ = task.Delete(e.ctx, containerd.WithProcessKill)
		return nil, fmt.Errorf("start %s: %w (output: %q)", c.ID(), err, out.String())
	}
	return &proc{c: c, task: task, out: out, exitC: exitC}, nil
}

// run creates a container running args and starts it.
func (e *env) run(id string, args []string, specOpts ...oci.SpecOpts) *proc {
	e.t.Helper()
	return e.startTask(e.newContainer(id, args, nil, specOpts...))
}

// waitExit waits for the task's exit and returns its status.
func (e *env) waitExit(p *proc) uint32 {
	e.t.Helper()
	select {
	case st := <-p.exitC:
		code, _, err := st.Result()
		if err != nil {
			e.t.Fatalf("exit of %s: %v", p.c.ID(), err)
		}
		return code
	case <-time.After(startTimeout):
		e.t.Fatalf("task %s did not exit; output:\n%s", p.c.ID(), p.out)
	}
	return 0
}

// deleteTask deletes an exited task and returns the exit status Delete reports. Delete
// also waits for the task's IO, so the LineBuffer is complete afterwards.
func (e *env) deleteTask(p *proc) uint32 {
	e.t.Helper()
	st, err := p.task.Delete(e.ctx)
	if err != nil {
		e.t.Fatalf("delete task %s: %v", p.c.ID(), err)
	}
	return st.ExitCode()
}

// killAndDelete kills the task with SIGKILL, waits for it and deletes it.
func (e *env) killAndDelete(p *proc) {
	e.t.Helper()
	if err := p.task.Kill(e.ctx, syscall.SIGKILL); err != nil {
		e.t.Fatalf("kill %s: %v", p.c.ID(), err)
	}
	if code := e.waitExit(p); code != 128+uint32(syscall.SIGKILL) {
		e.t.Errorf("%s exited with %d after SIGKILL, want %d", p.c.ID(), code, 128+syscall.SIGKILL)
	}
	e.deleteTask(p)
}

var countRE = regexp.MustCompile(`^count=(\d+)$`)

// counts returns the values of the count=N lines in lines.
func counts(lines []string) []int {
	var out []int
	for _, l := range lines {
		if m := countRE.FindStringSubmatch(l); m != nil {
			n, _ := strconv.Atoi(m[1])
			out = append(out, n)
		}
	}
	return out
}

// waitCount waits for a count line at index >= from whose value is at least min and
// returns the value and the line's index.
func waitCount(t *testing.T, out *harness.LineBuffer, from, atLeast int) (int, int) {
	t.Helper()
	for {
		line, i := out.WaitForFrom(t, from, `^count=\d+$`, lineTimeout)
		n, _ := strconv.Atoi(strings.TrimPrefix(line, "count="))
		if n >= atLeast {
			return n, i
		}
		from = i + 1
	}
}

// lastCount returns the last count printed, or -1.
func lastCount(out *harness.LineBuffer) int {
	c := counts(out.Lines())
	if len(c) == 0 {
		return -1
	}
	return c[len(c)-1]
}

// checkContinues fails unless the restored counter's first value lies in [lo, hi+1]
// (it continues where the checkpoint caught it: after the last value printed before
// the checkpoint started at the earliest, and right after the last one printed before
// it ended at the latest) and the values then keep increasing by one.
func checkContinues(t *testing.T, restored *harness.LineBuffer, lo, hi int) {
	t.Helper()
	first, i := waitCount(t, restored, 0, 0)
	waitCount(t, restored, i+1, first+2)
	c := counts(restored.Lines())
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
	first, i := waitCount(t, restored, 0, 0)
	waitCount(t, restored, i+1, first+2)
	if first < lo {
		t.Fatalf("restored counter started at %d; the checkpoint was taken after count=%d, so it must continue from there (a restarted process starts at 0)", first, lo)
	}
	orig.WaitFor(t, fmt.Sprintf(`^count=%d$`, first-1), lineTimeout)
	c := counts(restored.Lines())
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
	e.t.Helper()
	return checkpointLayerOf(e.ctx, e.t, e.client, img)
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

// dirNames returns the names in dir (nil when it does not exist).
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, en := range entries {
		names = append(names, en.Name())
	}
	return names
}

// runsc runs the daemon's runsc against the shim's state root of sandbox
// (nsRoot/<sandbox id>; a container that is its own sandbox has its id).
func (e *env) runsc(sandbox string, args ...string) (string, error) {
	root := filepath.Join(e.d.RunscRoot, e.d.Namespace, sandbox)
	ctx, cancel := context.WithTimeout(e.ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.d.Tools.Runsc, append([]string{"--root", root}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("runsc %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// runscStatus returns runsc's status of container id ("running", "paused", ...), or ""
// when runsc has no state for it.
func (e *env) runscStatus(id string) string {
	e.t.Helper()
	out, err := e.runsc(id, "list")
	if err != nil {
		if _, serr := os.Stat(filepath.Join(e.d.RunscRoot, e.d.Namespace, id)); os.IsNotExist(serr) {
			return ""
		}
		e.t.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == id {
			return f[2]
		}
	}
	return ""
}

// checkRunning fails unless the task is running for containerd and for runsc, and
// keeps printing counts.
func (e *env) checkRunning(p *proc) {
	e.t.Helper()
	st, err := p.task.Status(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	if st.Status != containerd.Running {
		e.t.Fatalf("task %s is %s, want running", p.c.ID(), st.Status)
	}
	if s := e.runscStatus(p.c.ID()); s != "running" {
		e.t.Fatalf("runsc reports %s as %q, want running", p.c.ID(), s)
	}
	n := p.out.Len()
	waitCount(e.t, p.out, n, lastCount(p.out)+1)
}

// checkNoTrace waits until nothing of container id's task is left: no runsc state, no
// task bundle, no mount naming it and no process (shim, sandbox, gofer) naming it.
func (e *env) checkNoTrace(id string) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var left []string
		if s := e.runscStatus(id); s != "" {
			left = append(left, "runsc state "+s)
		}
		bundle := filepath.Join(e.d.State, "io.containerd.runtime.v2.task", e.d.Namespace, id)
		if _, err := os.Stat(bundle); err == nil {
			left = append(left, "bundle "+bundle)
		}
		mounts, err := e.d.Mounts()
		if err != nil {
			e.t.Fatal(err)
		}
		for _, m := range mounts {
			if strings.Contains(m, id) {
				left = append(left, "mount "+m)
			}
		}
		procs, err := e.d.Processes()
		if err != nil {
			e.t.Fatal(err)
		}
		for _, p := range procs {
			if slices.ContainsFunc(p.Cmdline, func(a string) bool { return strings.Contains(a, id) }) {
				left = append(left, "process "+p.String())
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("left behind by %s:\n  %s", id, strings.Join(left, "\n  "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// imagePathDir returns a new, not yet existing directory under the daemon's directory
// for an image_path checkpoint (not under /tmp and not the test's TempDir, so the
// harness cleanup removes it with everything else).
func (e *env) imagePathDir(name string) string {
	dir := filepath.Join(e.d.Dir, "ckpt", harness.RandomID(name))
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		e.t.Fatal(err)
	}
	return dir
}

// withCheckpointOptions sets the runc CheckpointOptions the client sends.
func withCheckpointOptions(o any) containerd.CheckpointTaskOpts {
	return func(r *containerd.CheckpointTaskInfo) error {
		r.Options = o
		return nil
	}
}

// shimRuntimeWith writes a shim config (the daemon's, plus extra TOML that must not
// repeat its tables, e.g. [runsc_config]) to a new file and returns a runtime option
// that selects the shim with it.
func (e *env) shimRuntimeWith(extra string) containerd.NewContainerOpts {
	e.t.Helper()
	base, err := os.ReadFile(e.d.ShimConfigPath)
	if err != nil {
		e.t.Fatal(err)
	}
	path := filepath.Join(e.d.Dir, harness.RandomID("shim")+".toml")
	if err := os.WriteFile(path, append(append(base, '\n'), extra...), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return withShimConfig(e.d, path)
}

// withShimConfig selects the shim with the config file at path.
func withShimConfig(d *harness.Daemon, path string) containerd.NewContainerOpts {
	return containerd.WithRuntime(d.RuntimeName, &runtimeoptions.Options{ConfigPath: path})
}

// sub returns e for a subtest: same daemon, the subtest's failures.
func (e *env) sub(t *testing.T) *env {
	c := *e
	c.t = t
	return &c
}

// exec runs args in the task and returns its output and exit status.
func (e *env) exec(p *proc, args ...string) (string, uint32) {
	e.t.Helper()
	spec, err := p.c.Spec(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	ps := *spec.Process
	ps.Args = args
	ps.Terminal = false
	out := harness.NewLineBuffer()
	execID := harness.RandomID("exec")
	ep, err := p.task.Exec(e.ctx, execID, &ps, e.d.IO(nil, out, out))
	if err != nil {
		e.t.Fatalf("exec %v in %s: %v", args, p.c.ID(), err)
	}
	statusC, err := ep.Wait(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := ep.Start(e.ctx); err != nil {
		e.t.Fatalf("start exec %v in %s: %v", args, p.c.ID(), err)
	}
	var code uint32
	select {
	case st := <-statusC:
		code = st.ExitCode()
	case <-time.After(startTimeout):
		e.t.Fatalf("exec %v in %s did not exit", args, p.c.ID())
	}
	if _, err := ep.Delete(e.ctx); err != nil {
		e.t.Fatalf("delete exec %v: %v", args, err)
	}
	return out.String(), code
}

// mustExec runs args in the task and fails unless it exits 0.
func (e *env) mustExec(p *proc, args ...string) string {
	e.t.Helper()
	out, code := e.exec(p, args...)
	if code != 0 {
		e.t.Fatalf("exec %v in %s exited %d: %s", args, p.c.ID(), code, out)
	}
	return out
}

// layerEntries lists the entries of a gzip tar layer blob of an image's index.
func (e *env) layerEntries(desc ocispec.Descriptor) []string {
	e.t.Helper()
	ra, err := e.client.ContentStore().ReaderAt(e.ctx, desc)
	if err != nil {
		e.t.Fatal(err)
	}
	defer ra.Close()
	zr, err := gzip.NewReader(content.NewReader(ra))
	if err != nil {
		e.t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var names []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return names
		}
		if err != nil {
			e.t.Fatal(err)
		}
		names = append(names, fmt.Sprintf("%s (%d bytes)", h.Name, h.Size))
	}
}
