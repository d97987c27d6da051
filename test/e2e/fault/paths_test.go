//go:build e2e

package fault

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/ckenv"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

// TestCheckpointPathsAndPermissions sends bad image paths and checks what a good one
// creates:
//
//   - a relative image_path and one with ".." are refused with InvalidArgument before
//     anything is written (the shim's working directory is the task's bundle, so a
//     relative path would land there); the task keeps running;
//   - a restore from a relative path or one with ".." (runc's CriuImagePath) is refused
//     with InvalidArgument before anything is created;
//   - an image_path holding only a subdirectory is refused as not empty, and the
//     subdirectory is untouched;
//   - an image_path whose parents do not exist is created with mode 0700 at every level
//     the shim creates, and every image file is 0600 (runsc creates them 0644; they
//     hold the container's memory, so the shim restricts them whatever the directory).
func TestCheckpointPathsAndPermissions(t *testing.T) {
	e := setup(t, harness.Options{})
	id := harness.RandomID("paths")
	p := e.Run(id, counterArgs)
	ckenv.WaitCount(t, p.Out, 0, 2)

	base := e.ImagePathDir("perm")
	for name, path := range map[string]string{
		"relative": "ckpt/" + id,
		"dotdot":   base + "/../escaped",
		"trailing": base + "/x/",
	} {
		t.Run("checkpoint-"+name, func(t *testing.T) {
			e := e.sub(t)
			err := e.checkpointToPath(p, path, false)
			if err == nil || !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "absolute and clean") {
				t.Fatalf("checkpoint to %q: %v, want InvalidArgument (absolute and clean)", path, err)
			}
			t.Logf("refused: %v", err)
			bundle := filepath.Join(e.D.State, "io.containerd.runtime.v2.task", e.D.Namespace, id)
			for _, p := range []string{filepath.Join(bundle, "ckpt"), filepath.Join(filepath.Dir(base), "escaped"), base} {
				if _, err := os.Stat(p); err == nil {
					t.Errorf("a refused checkpoint created %s", p)
				}
			}
			e.CheckRunning(p)
		})
	}

	for name, path := range map[string]string{"relative": "ckpt/" + id, "dotdot": base + "/../x"} {
		t.Run("restore-"+name, func(t *testing.T) {
			e := e.sub(t)
			cid := harness.RandomID("restore-" + name)
			_, err := e.TryStartTask(e.NewContainer(cid, counterArgs, e.runcRuntime()), containerd.WithRestoreImagePath(path))
			if err == nil || !errdefs.IsInvalidArgument(err) {
				t.Fatalf("restore from %q: %v, want InvalidArgument", path, err)
			}
			t.Logf("refused: %v", err)
			e.CheckNoTrace(cid)
			c, err := e.Client.LoadContainer(e.Ctx, cid)
			if err != nil {
				t.Fatal(err)
			}
			e.RemoveContainer(c)
		})
	}

	// A dangling symbolic link as the image path: not a bare "file exists" from
	// mkdir, but what the path is and what to do.
	t.Run("dangling-symlink", func(t *testing.T) {
		e := e.sub(t)
		link := filepath.Join(e.ImagePathDir("links"), "dangling")
		if err := os.MkdirAll(filepath.Dir(link), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join(filepath.Dir(link), "nowhere"), link); err != nil {
			t.Fatal(err)
		}
		err := e.checkpointToPath(p, link, false)
		if err == nil || !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "is a symbolic link to") || !strings.Contains(err.Error(), "does not exist") {
			t.Fatalf("checkpoint to a dangling link: %v, want InvalidArgument saying the link's target does not exist", err)
		}
		t.Logf("refused: %v", err)
		e.CheckRunning(p)
	})

	// A directory holding only a subdirectory used to count as empty (only regular
	// files were counted), and a failed checkpoint then removed everything it had
	// not listed before: the subdirectory with its contents.
	t.Run("subdirectory-only", func(t *testing.T) {
		e := e.sub(t)
		dir := e.ImagePathDir("subdir")
		keep := filepath.Join(dir, "keep", "data.txt")
		if err := os.MkdirAll(filepath.Dir(keep), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keep, []byte("mine\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		err := e.checkpointToPath(p, dir, false)
		if err == nil || !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "not empty") {
			t.Fatalf("checkpoint into a directory holding a subdirectory: %v, want FailedPrecondition (not empty)", err)
		}
		if b, err := os.ReadFile(keep); err != nil || string(b) != "mine\n" {
			t.Fatalf("the subdirectory's file is %q, %v after the refused checkpoint", b, err)
		}
		e.CheckRunning(p)
	})

	t.Run("modes", func(t *testing.T) {
		e := e.sub(t)
		dir := filepath.Join(base, "a", "b")
		if err := e.checkpointToPath(p, dir, false); err != nil {
			t.Fatal(err)
		}
		checkCompleteImage(t, dir)
		for _, d := range []string{base, filepath.Join(base, "a"), dir} {
			fi, err := os.Stat(d)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o700 {
				t.Errorf("%s has mode %v, want 0700 (the shim created it)", d, fi.Mode().Perm())
			}
		}
		for _, n := range ckenv.DirNames(t, dir) {
			fi, err := os.Stat(filepath.Join(dir, n))
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s %v", n, fi.Mode().Perm())
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("%s has mode %v, want 0600: the image holds the container's memory", n, fi.Mode().Perm())
			}
		}
		e.CheckRunning(p)
	})

	e.KillAndDelete(p)
	e.CheckNoTrace(id)
	e.RemoveContainer(p.C)
	e.checkNoLeftovers()
}
