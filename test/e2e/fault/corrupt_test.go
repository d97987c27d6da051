//go:build e2e

package fault

import (
	"github.com/containerd/errdefs"
	"path/filepath"
	"strings"
	"testing"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/ckenv"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

// damagedMemoryImage runs the memhold workload args as id, takes an exit checkpoint
// of it into good and copies that into bad with the middle of pages.img overwritten.
// It returns the stopped task (its container stays for the restores), the workload's
// memory checksum and both directories.
func (e *env) damagedMemoryImage(id string, args []string) (p *proc, sum, good, bad string) {
	e.T.Helper()
	p = e.Run(id, args)
	sum = memholdSum(e.T, p.Out)
	p.Out.WaitFor(e.T, `^ok sum=`, lineTimeout)
	good = e.ImagePathDir("good")
	if err := e.checkpointToPath(p, good, true); err != nil {
		e.T.Fatal(err)
	}
	e.WaitExit(p)
	e.DeleteTask(p)
	checkCompleteImage(e.T, good)
	bad = ckenv.CopyImage(e.T, good, e.ImagePathDir("bad"))
	ckenv.Scribble(e.T, filepath.Join(bad, "pages.img"))
	return p, sum, good, bad
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
	p, sum, good, bad := e.damagedMemoryImage(id, args)
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
	p, sum, good, bad := e.damagedMemoryImage(id, args)
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
