//go:build e2e

package fault

import (
	"bytes"
	"github.com/containerd/errdefs"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/ckenv"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

// copyImage copies the regular files of the checkpoint directory src into the new
// directory dst.
func copyImage(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range ckenv.DirNames(t, src) {
		in, err := os.Open(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		out, err := os.OpenFile(filepath.Join(dst, name), os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, in); err != nil {
			t.Fatal(err)
		}
		in.Close()
		if err := out.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// scribble overwrites the middle half of path with a pattern, keeping its size (so
// the size check of runsc-cuda.json passes and only the content is wrong).
func scribble(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	junk := bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, int(st.Size()/8)+1)[:st.Size()/2]
	if _, err := f.WriteAt(junk, st.Size()/4); err != nil {
		t.Fatal(err)
	}
}

// TestRestoreCorruptedMemoryImage overwrites the middle of pages.img (the memory of
// an uncompressed image; same size, so only the content is wrong) and restores it.
// runsc keeps no checksum of uncompressed memory and the shim records only sizes, so
// the restore itself succeeds: the damage is the application's to find. The
// memhold workload, which re-verifies its checksum, reports CORRUPT, and the task is
// otherwise an ordinary running task that kills, deletes and leaves nothing. (A
// damaged checkpoint.img, the kernel state, fails the restore: TestRestoreBrokenImage
// in test/e2e/checkpoint.) The undamaged image restores with its checksum intact.
func TestRestoreCorruptedMemoryImage(t *testing.T) {
	e := setup(t, harness.Options{})
	id := harness.RandomID("corrupt")
	args := []string{"/workload", "memhold", "--mib", "64", "--seed", "31", "--interval", "300ms"}
	p := e.Run(id, args)
	sum := memholdSum(t, p.Out)
	p.Out.WaitFor(t, `^ok sum=`, lineTimeout)
	good := e.ImagePathDir("good")
	if err := e.checkpointToPath(p, good, true); err != nil {
		t.Fatal(err)
	}
	e.WaitExit(p)
	e.DeleteTask(p)
	checkCompleteImage(t, good)

	bad := e.ImagePathDir("bad")
	copyImage(t, good, bad)
	scribble(t, filepath.Join(bad, "pages.img"))
	cid := harness.RandomID("corrupt-bad")
	r, err := e.restoreFromPath(e.NewContainer(cid, args, nil), bad)
	if err != nil {
		// Also a known state: refused, with nothing left.
		t.Logf("restore of the damaged memory image failed: %v", err)
		e.CheckNoTrace(cid)
	} else {
		line := r.Out.WaitFor(t, `^(ok|CORRUPT) sum=`, startTimeout)
		t.Logf("restored from the damaged memory image; the workload printed %q", line)
		if !strings.HasPrefix(line, "CORRUPT") {
			t.Errorf("the workload's memory survived a scribbled pages.img (%q): the test damaged nothing?", line)
		}
		e.KillAndDelete(r)
		e.CheckNoTrace(cid)
		e.RemoveContainer(r.C)
	}

	ok, err := e.restoreFromPath(p.C, good)
	if err != nil {
		t.Fatalf("restore of the undamaged image: %v", err)
	}
	checkMemhold(t, ok.Out, 0, sum)
	e.KillAndDelete(ok)
	e.CheckNoTrace(id)
	e.RemoveContainer(p.C)
	e.checkNoLeftovers()
}

// TestRestoreCorruptedMemoryImageVerified is the same damage with the shim's
// checkpoint.verify: the checkpoint records CRC-32C checksums and the restore
// refuses the damaged image before anything is created; the undamaged one
// restores.
func TestRestoreCorruptedMemoryImageVerified(t *testing.T) {
	e := setup(t, harness.Options{ShimConfig: "[checkpoint]\nverify = true\n"})
	id := harness.RandomID("verified")
	args := []string{"/workload", "memhold", "--mib", "64", "--seed", "37", "--interval", "300ms"}
	p := e.Run(id, args)
	sum := memholdSum(t, p.Out)
	p.Out.WaitFor(t, `^ok sum=`, lineTimeout)
	good := e.ImagePathDir("good")
	if err := e.checkpointToPath(p, good, true); err != nil {
		t.Fatal(err)
	}
	e.WaitExit(p)
	e.DeleteTask(p)
	checkCompleteImage(t, good)

	bad := e.ImagePathDir("bad")
	copyImage(t, good, bad)
	scribble(t, filepath.Join(bad, "pages.img"))
	cid := harness.RandomID("verified-bad")
	_, err := e.restoreFromPath(e.NewContainer(cid, args, nil), bad)
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "pages.img has CRC-32C") {
		t.Fatalf("restore of a damaged image with verify: %v, want FailedPrecondition naming pages.img's checksum", err)
	}
	e.CheckNoTrace(cid)

	ok, err := e.restoreFromPath(p.C, good)
	if err != nil {
		t.Fatalf("restore of the undamaged image: %v", err)
	}
	checkMemhold(t, ok.Out, 0, sum)
	e.KillAndDelete(ok)
	e.CheckNoTrace(id)
	e.RemoveContainer(p.C)
	e.checkNoLeftovers()
}
