//go:build e2e

package checkpoint

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/ckenv"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

// annotationRestore is the restore annotation (pkg/shim AnnotationRestoreFrom).
const annotationRestore = "io.containerd.runsc-cuda.v1.restore-from"

// setupRestoreRoot starts a daemon whose shim allows restores from a directory of
// the test's own (checkpoint.restore_roots) and returns it.
func setupRestoreRoot(t *testing.T) (*env, string) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "checkpoints")
	if err := os.MkdirAll(root, 0o700); err != nil {
		t.Fatal(err)
	}
	e := setup(t, harness.Options{ShimConfig: "[checkpoint]\nrestore_roots = [\"" + root + "\"]\n"})
	return e, root
}

// TestCompatRestoreAnnotation restores a directory that `ctr task checkpoint
// --image-path` style checkpoints write, in place (no copy), into new containers whose
// spec names it with the restore annotation, as `ctr run --annotation` and `nerdctl run
// --annotation` do: the counter continues on the new task's IO, twice from the one
// directory, which stays as it was.
func TestCompatRestoreAnnotation(t *testing.T) {
	e, root := setupRestoreRoot(t)
	id := harness.RandomID("annot")
	p := e.Run(id, counterArgs)
	ckenv.WaitCount(t, p.Out, 0, 3)
	lo := ckenv.LastCount(p.Out)
	dir := filepath.Join(root, id)
	if _, err := p.Task.Checkpoint(e.Ctx, containerd.WithCheckpointName("localhost/ckpt/"+id+":annot"),
		ckenv.WithCheckpointOptions(&runcoptions.CheckpointOptions{Exit: true, ImagePath: dir})); err != nil {
		t.Fatalf("checkpoint to %s: %v", dir, err)
	}
	e.WaitExit(p)
	e.DeleteTask(p)
	hi := ckenv.LastCount(p.Out)
	before := ckenv.DirNames(t, dir)
	for i := range 2 {
		c := e.NewContainer(id+"-r"+string(rune('a'+i)), counterArgs, nil, oci.WithAnnotations(map[string]string{annotationRestore: dir}))
		r := e.StartTask(c)
		checkContinues(t, r.Out, lo, hi)
		e.CheckRunning(r)
		e.KillAndDelete(r)
		e.RemoveContainer(c)
	}
	if after := ckenv.DirNames(t, dir); strings.Join(after, " ") != strings.Join(before, " ") {
		t.Fatalf("the checkpoint directory changed: %v, then %v", before, after)
	}
	e.RemoveContainer(p.C)
}

// TestRestoreAnnotationBadInput: a restore annotation naming a path outside the
// allowed roots, a missing checkpoint, a symbolic link out of the root, or a directory
// that is no checkpoint fails the task's create with FailedPrecondition and a message
// that says what to do; nothing of the container is left.
func TestRestoreAnnotationBadInput(t *testing.T) {
	e, root := setupRestoreRoot(t)
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(root, "empty")
	if err := os.Mkdir(empty, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, path, want string }{
		{"outside", outside, "restored only from under " + root},
		{"missing", filepath.Join(root, "absent"), "no such checkpoint"},
		{"symlink", filepath.Join(root, "link"), "symbolic link"},
		{"not a checkpoint", empty, "not a complete runsc-cuda checkpoint"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := e.Sub(t)
			id := harness.RandomID("badannot")
			c := e.NewContainer(id, counterArgs, nil, oci.WithAnnotations(map[string]string{annotationRestore: tc.path}))
			_, err := e.TryStartTask(c)
			if err == nil || !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want FailedPrecondition saying %q", err, tc.want)
			}
			e.RemoveContainer(c)
			e.CheckNoTrace(id)
		})
	}
}
