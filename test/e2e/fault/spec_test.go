//go:build e2e

package fault

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/ckenv"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

// TestRestoreSpecChanged restores an exit checkpoint of a counter into containers
// whose spec differs from the checkpointed one:
//
//   - other args: refused at create by the shim with FailedPrecondition naming both
//     commands, before runsc runs (no runsc state, bundle, mount, cgroup or process);
//   - a mount added: refused the same way, naming both mount lists (through the
//     RestoreFromPath annotation and through runc's CriuImagePath);
//   - another working directory, which the shim does not compare: refused by runsc's
//     own spec validation at start, with its message naming Cwd, and nothing left;
//   - other environment variables, which runsc allows to change: restored, the counter
//     continues.
//
// The unchanged spec then restores too: the failed attempts cost nothing.
func TestRestoreSpecChanged(t *testing.T) {
	e := setup(t, harness.Options{})
	id := harness.RandomID("spec")
	p := e.Run(id, counterArgs)
	ckenv.WaitCount(t, p.Out, 0, 3)
	lo := ckenv.LastCount(p.Out)
	dir := e.ImagePathDir("spec")
	if err := e.checkpointToPath(p, dir, true); err != nil {
		t.Fatal(err)
	}
	e.WaitExit(p)
	e.DeleteTask(p)
	hi := ckenv.LastCount(p.Out)
	checkCompleteImage(t, dir)

	data := filepath.Join(e.D.Dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	withData := oci.WithMounts([]specs.Mount{{Destination: "/data", Type: "bind", Source: data, Options: []string{"rbind", "ro"}}})
	otherArgs := []string{"/workload", "counter", "--interval", "200ms"}

	for _, tc := range []struct {
		name     string
		args     []string
		opts     []oci.SpecOpts
		criuPath bool
		// want: substrings of the error; early: refused at create (FailedPrecondition).
		want  []string
		early bool
	}{
		{name: "args", args: otherArgs, want: []string{fmt.Sprintf("%q", counterArgs), fmt.Sprintf("%q", otherArgs)}, early: true},
		{name: "mount-added", args: counterArgs, opts: []oci.SpecOpts{withData}, want: []string{"mounts", "/data"}, early: true},
		{name: "mount-added-criu-path", args: counterArgs, opts: []oci.SpecOpts{withData}, criuPath: true, want: []string{"mounts", "/data"}, early: true},
		{name: "cwd", args: counterArgs, opts: []oci.SpecOpts{oci.WithProcessCwd("/tmp")}, want: []string{"Cwd"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := e.sub(t)
			cid := harness.RandomID("spec-" + tc.name)
			var err error
			if tc.criuPath {
				_, err = e.TryStartTask(e.NewContainer(cid, tc.args, e.runcRuntime(), tc.opts...), containerd.WithRestoreImagePath(dir))
			} else {
				_, err = e.restoreFromPath(e.NewContainer(cid, tc.args, nil, tc.opts...), dir)
			}
			if err == nil {
				t.Fatal("restore into a container with a changed spec succeeded")
			}
			t.Logf("refused: %v", err)
			if tc.early && !errdefs.IsFailedPrecondition(err) {
				t.Errorf("error %v: want FailedPrecondition at create", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %v: want it to name %q", err, w)
				}
			}
			e.CheckNoTrace(cid)
			c, lerr := e.Client.LoadContainer(e.Ctx, cid)
			if lerr != nil {
				t.Fatal(lerr)
			}
			e.RemoveContainer(c)
		})
	}

	t.Run("env", func(t *testing.T) {
		e := e.sub(t)
		cid := harness.RandomID("spec-env")
		r, err := e.restoreFromPath(e.NewContainer(cid, counterArgs, nil, oci.WithEnv([]string{"RCUDA_CHANGED=1"})), dir)
		if err != nil {
			t.Fatalf("restore with a changed environment: %v", err)
		}
		checkContinues(t, r.Out, lo, hi)
		e.KillAndDelete(r)
		e.CheckNoTrace(cid)
		e.RemoveContainer(r.C)
	})

	r, err := e.restoreFromPath(p.C, dir)
	if err != nil {
		t.Fatalf("restore with the unchanged spec after the refused ones: %v", err)
	}
	checkContinues(t, r.Out, lo, hi)
	e.KillAndDelete(r)
	e.CheckNoTrace(id)
	e.RemoveContainer(p.C)
	e.checkNoLeftovers()
}
