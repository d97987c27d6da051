//go:build e2e

package checkpoint

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	ckpt "github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/checkpoint"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/ckenv"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

// mountTinyTmpfs mounts a tmpfs of size bytes at a new directory under the daemon's
// directory and unmounts it when the test ends.
func (e *env) mountTinyTmpfs(size string) string {
	e.T.Helper()
	dir := e.ImagePathDir("tiny")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		e.T.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size="+size); err != nil {
		e.T.Fatalf("mount tmpfs at %s: %v", dir, err)
	}
	e.T.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			e.T.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// TestCheckpointFailureDiskFull checkpoints a counter into an image_path on a 1 MiB
// tmpfs, which fills up while runsc writes the image, with exit and without. The
// checkpoint fails with an error that says the checkpoint failed and why; the container
// keeps running, unpaused, and counting; the directory holds nothing (no partial runsc
// file, no runsc-cuda.json). A checkpoint with room then succeeds and restores.
func TestCheckpointFailureDiskFull(t *testing.T) {
	e := setup(t, harness.Options{})
	id := harness.RandomID("full")
	p := e.Run(id, counterArgs)
	ckenv.WaitCount(t, p.Out, 0, 2)
	tiny := e.mountTinyTmpfs("1m")
	for _, exit := range []bool{true, false} {
		name := map[bool]string{true: "exit", false: "leave-running"}[exit]
		t.Run(name, func(t *testing.T) {
			e := e.sub(t)
			dir := filepath.Join(tiny, name)
			_, err := p.Task.Checkpoint(e.Ctx, containerd.WithCheckpointName("localhost/ckpt/"+id+":"+name),
				ckenv.WithCheckpointOptions(&runcoptions.CheckpointOptions{Exit: exit, ImagePath: dir}))
			if err == nil {
				t.Fatalf("checkpoint into a full 1 MiB tmpfs succeeded: %v", ckenv.DirNames(t, dir))
			}
			t.Logf("checkpoint error: %v", err)
			msg := strings.ToLower(err.Error())
			if !strings.Contains(msg, "checkpoint") || !strings.Contains(msg, "keeps running") || !strings.Contains(msg, "no space left") {
				t.Errorf("error %q does not say that the checkpoint failed, that the container keeps running, and why (no space left)", err)
			}
			if names := ckenv.DirNames(t, dir); len(names) > 0 {
				t.Errorf("failed checkpoint left %v in %s", names, dir)
			}
			e.CheckRunning(p)
		})
	}
	lo := ckenv.LastCount(p.Out)
	img, err := p.Task.Checkpoint(e.Ctx, containerd.WithCheckpointName("localhost/ckpt/"+id+":ok"))
	if err != nil {
		t.Fatalf("checkpoint after the failed ones: %v", err)
	}
	e.CheckRunning(p)
	cloneID := harness.RandomID("full-clone")
	clone := e.StartTask(e.NewContainer(cloneID, counterArgs, nil), containerd.WithTaskCheckpoint(img))
	checkContinuesFrom(t, clone.Out, p.Out, lo)
	e.KillAndDelete(clone)
}

// TestCheckpointRefusesNonEmptyImagePath checkpoints into an image_path that already
// holds a file, and into one that holds a complete checkpoint: both are refused with
// FailedPrecondition before runsc runs, nothing in the directory changes, and the
// container keeps running.
func TestCheckpointRefusesNonEmptyImagePath(t *testing.T) {
	e := setup(t, harness.Options{})
	id := harness.RandomID("nonempty")
	p := e.Run(id, counterArgs)
	ckenv.WaitCount(t, p.Out, 0, 1)

	foreign := e.ImagePathDir("foreign")
	if err := os.MkdirAll(foreign, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(foreign, "keep.txt"), []byte("mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	existing := e.ImagePathDir("existing")
	if _, err := p.Task.Checkpoint(e.Ctx, containerd.WithCheckpointName("localhost/ckpt/"+id+":first"),
		ckenv.WithCheckpointOptions(&runcoptions.CheckpointOptions{ImagePath: existing})); err != nil {
		t.Fatal(err)
	}
	checkFlatDir(t, existing)

	for name, dir := range map[string]string{"foreign-file": foreign, "existing-checkpoint": existing} {
		t.Run(name, func(t *testing.T) {
			e := e.sub(t)
			before := snapshotDir(t, dir)
			_, err := p.Task.Checkpoint(e.Ctx, containerd.WithCheckpointName("localhost/ckpt/"+id+":"+name),
				ckenv.WithCheckpointOptions(&runcoptions.CheckpointOptions{ImagePath: dir}))
			if err == nil {
				t.Fatal("checkpoint into a non-empty directory succeeded")
			}
			if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "not empty") {
				t.Fatalf("error %v: want FailedPrecondition saying the directory is not empty", err)
			}
			t.Logf("refused: %v", err)
			if after := snapshotDir(t, dir); !mapsEqual(before, after) {
				t.Fatalf("directory changed: %v -> %v", keys(before), keys(after))
			}
			e.CheckRunning(p)
		})
	}
}

// TestRestoreBrokenImage restores damaged copies of an image_path checkpoint through
// the RestoreFromPath annotation and through CriuImagePath: a missing directory, one
// without runsc-cuda.json (an interrupted checkpoint), one missing a runsc file, one
// with pages.img truncated, and one whose checkpoint.img is overwritten in the middle
// (same size, so only runsc can tell). Each fails with an error naming the problem and
// leaves no runsc state, bundle, mount or process behind.
func TestRestoreBrokenImage(t *testing.T) {
	e := setup(t, harness.Options{})
	_, good, _, _ := e.checkpointToPath(harness.RandomID("broken"))
	meta := checkFlatDir(t, good)
	var names []string
	for _, f := range meta.Files {
		names = append(names, f.Name)
	}
	if !slices.Contains(names, "pages.img") || !slices.Contains(names, "checkpoint.img") {
		t.Fatalf("the image has files %v; this test damages pages.img and checkpoint.img", names)
	}
	runcRuntime := containerd.WithRuntime(e.D.RuntimeName, &runcoptions.Options{BinaryName: e.D.Tools.Runsc, Root: e.D.RunscRoot})

	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, dir string)
		// precondition: refused at create by the shim's checks, not by runsc at start.
		precondition bool
		want         string
	}{
		{"missing-directory", func(t *testing.T, dir string) { removeAll(t, dir) }, true, "no " + ckpt.MetadataFile},
		{"no-metadata", func(t *testing.T, dir string) { remove(t, filepath.Join(dir, ckpt.MetadataFile)) }, true, "not a complete"},
		{"missing-file", func(t *testing.T, dir string) { remove(t, filepath.Join(dir, "pages_meta.img")) }, true, "pages_meta.img is missing"},
		{"truncated-pages", func(t *testing.T, dir string) { truncateHalf(t, filepath.Join(dir, "pages.img")) }, true, "pages.img is"},
		{"corrupt-state", func(t *testing.T, dir string) { ckenv.Scribble(t, filepath.Join(dir, "checkpoint.img")) }, false, "the checkpoint image is damaged"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			check := func(t *testing.T, err error) {
				t.Helper()
				if err == nil {
					t.Fatal("restore of a damaged image succeeded")
				}
				if tc.precondition && !errdefs.IsFailedPrecondition(err) {
					t.Errorf("error %v: want FailedPrecondition", err)
				}
				if !strings.Contains(err.Error(), tc.want) {
					t.Errorf("error %v: want it to mention %q", err, tc.want)
				}
				if strings.Contains(err.Error(), "\ngoroutine ") {
					t.Errorf("error carries a Go stack trace; it belongs in runsc's log: %v", err)
				}
				t.Logf("refused: %v", err)
			}
			t.Run("RestoreFromPath", func(t *testing.T) {
				e := e.sub(t)
				dir := ckenv.CopyImage(t, good, e.ImagePathDir(tc.name))
				tc.damage(t, dir)
				id := harness.RandomID("annotation")
				_, err := e.restoreFromPath(e.NewContainer(id, counterArgs, nil), dir)
				check(t, err)
				e.CheckNoTrace(id)
			})
			t.Run("CriuImagePath", func(t *testing.T) {
				e := e.sub(t)
				dir := ckenv.CopyImage(t, good, e.ImagePathDir(tc.name))
				tc.damage(t, dir)
				id := harness.RandomID("criupath")
				// tryStartTask deletes the task when Start fails, as a client would.
				_, err := e.TryStartTask(e.NewContainer(id, counterArgs, runcRuntime), containerd.WithRestoreImagePath(dir))
				check(t, err)
				e.CheckNoTrace(id)
			})
		})
	}
}

func remove(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}

func removeAll(t *testing.T, path string) {
	t.Helper()
	if err := os.RemoveAll(path); err != nil {
		t.Fatal(err)
	}
}

func truncateHalf(t *testing.T, path string) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, st.Size()/2); err != nil {
		t.Fatal(err)
	}
}

// snapshotDir returns the names and contents of the files in dir.
func snapshotDir(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, name := range ckenv.DirNames(t, dir) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		m[name] = string(b)
	}
	return m
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
