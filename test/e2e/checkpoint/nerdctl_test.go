//go:build e2e

package checkpoint

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/ckenv"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/testimage"
)

// nerdctl is one test's nerdctl 2.2.2: the test's daemon, namespace and snapshotter,
// and its own data root and CNI network config directory, all set in its own
// nerdctl.toml (NERDCTL_TOML), so that nothing of the host's nerdctl config is read or
// written. The CNI plugins are the pinned ones (hack/tools.sh).
type nerdctl struct {
	e        *env
	bin      string
	dataRoot string
	toml     string
}

// newNerdctl writes the config of a new nerdctl for the test's daemon; it skips the
// test when nerdctl is not built (it is optional in hack/tools.sh).
func (e *env) newNerdctl() *nerdctl {
	e.T.Helper()
	if e.D.Tools.Nerdctl == "" {
		e.T.Skip("nerdctl is not built (hack/tools.sh); it is optional")
	}
	dir := filepath.Join(e.D.Dir, harness.RandomID("nerdctl"))
	n := &nerdctl{e: e, bin: e.D.Tools.Nerdctl, dataRoot: filepath.Join(dir, "data"), toml: filepath.Join(dir, "nerdctl.toml")}
	conf := fmt.Sprintf(`address = %q
namespace = %q
snapshotter = %q
data_root = %q
cni_path = %q
cni_netconfpath = %q
cgroup_manager = "cgroupfs"
`, e.D.Address, e.D.Namespace, e.D.Snapshotter, n.dataRoot, e.D.Tools.CNIBinDir, filepath.Join(dir, "cni"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		e.T.Fatal(err)
	}
	if err := os.WriteFile(n.toml, []byte(conf), 0o644); err != nil {
		e.T.Fatal(err)
	}
	return n
}

// run runs nerdctl with args and returns its combined output.
func (n *nerdctl) run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(n.e.Ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, n.bin, args...)
	cmd.Env = append(cmd.Environ(), "NERDCTL_TOML="+n.toml)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (n *nerdctl) must(args ...string) string {
	n.e.T.Helper()
	out, err := n.run(args...)
	if err != nil {
		n.e.T.Fatalf("nerdctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// runDetached runs `nerdctl run -d` with args and returns the container's ID
// (nerdctl's container ID is containerd's).
func (n *nerdctl) runDetached(args ...string) string {
	n.e.T.Helper()
	fields := strings.Fields(n.must(append([]string{"run", "-d"}, args...)...))
	if len(fields) == 0 {
		n.e.T.Fatal("nerdctl run -d printed no container ID")
	}
	return fields[len(fields)-1]
}

// runCounter runs the counter under the shim (`--runtime io.containerd.runsc-cuda.v1`,
// no runtime options: the shim reads $RUNSC_CUDA_CONFIG) without a network, and
// returns the container's ID.
func (n *nerdctl) runCounter(name string) string {
	n.e.T.Helper()
	return n.runDetached(append([]string{"--name", name, "--network", "none", "--runtime", n.e.D.RuntimeName, testimage.Ref}, counterArgs...)...)
}

// waitCounts polls `nerdctl logs` until it shows at least k count lines and returns
// the counts.
func (n *nerdctl) waitCounts(name string, k int) []int {
	n.e.T.Helper()
	deadline := time.Now().Add(startTimeout)
	for {
		out := n.must("logs", name)
		lb := harness.NewLineBuffer()
		_, _ = lb.Write([]byte(out))
		if c := ckenv.Counts(lb.Lines()); len(c) >= k {
			return c
		}
		if time.Now().After(deadline) {
			n.e.T.Fatalf("nerdctl logs %s shows fewer than %d counts:\n%s", name, k, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// settledCounts polls `nerdctl logs` of a stopped container until it shows the same
// counts twice, 300 ms apart (nerdctl's logging process may still be writing the last
// lines), and returns them.
func (n *nerdctl) settledCounts(name string) []int {
	n.e.T.Helper()
	prev := n.waitCounts(name, 0)
	for {
		time.Sleep(300 * time.Millisecond)
		c := n.waitCounts(name, 0)
		if slices.Equal(c, prev) {
			return c
		}
		prev = c
	}
}

// waitCountsFrom polls `nerdctl logs` until at least three counts follow the first
// from ones, and returns those that follow, failing unless they are contiguous.
func (n *nerdctl) waitCountsFrom(name string, from int) []int {
	n.e.T.Helper()
	c := n.waitCounts(name, from+3)[from:]
	for j := 1; j < len(c); j++ {
		if c[j] != c[j-1]+1 {
			n.e.T.Fatalf("counts after the restore are not contiguous: %v", c)
		}
	}
	return c
}

// waitRestored polls `nerdctl logs` until, at or after the from-th count, the count
// drops (the process restored from a checkpoint continues behind where the last one
// stopped) and three contiguous counts follow, and returns the counts from the drop
// on.
func (n *nerdctl) waitRestored(name string, from int) []int {
	n.e.T.Helper()
	deadline := time.Now().Add(startTimeout)
	for {
		c := n.waitCounts(name, 0)
		for i := max(from, 1); i < len(c); i++ {
			if c[i] > c[i-1] {
				continue
			}
			restored := c[i:]
			for j := 1; j < len(restored); j++ {
				if restored[j] != restored[j-1]+1 {
					n.e.T.Fatalf("counts after the restore are not contiguous: %v", restored)
				}
			}
			if len(restored) >= 3 {
				return restored
			}
			break
		}
		if time.Now().After(deadline) {
			n.e.T.Fatalf("nerdctl logs %s shows no restored counts: %v", name, c)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestNerdctlCheckpointCreateListRemoveStart runs a counter with nerdctl 2.2.2 under
// the shim (`--runtime io.containerd.runsc-cuda.v1`, no runtime options: the shim reads
// $RUNSC_CUDA_CONFIG) and drives its checkpoint commands:
//   - `nerdctl checkpoint create` sends no checkpoint options for a non-runc runtime
//     (nerdctl pkg/cmd/checkpoint/create.go, withCheckpointOpts), so the container keeps
//     running; nerdctl unpacks the image into <data-root>/checkpoints/<name>, which
//     holds only flat regular files with runsc-cuda.json;
//   - `nerdctl checkpoint ls` lists it;
//   - after `nerdctl stop`, `nerdctl start --checkpoint` uploads the directory and
//     restores through CreateTaskRequest.Checkpoint (pkg/taskutil/taskutil.go): the log
//     continues the count from the checkpoint instead of 0;
//   - `nerdctl checkpoint rm` removes it.
func TestNerdctlCheckpointCreateListRemoveStart(t *testing.T) {
	e := setup(t, harness.Options{})
	n := e.newNerdctl()
	name := harness.RandomID("nerdctl")
	id := n.runCounter(name)
	before := n.waitCounts(name, 3)
	lo := before[len(before)-1]

	if out := n.must("checkpoint", "create", name, "ck1"); strings.TrimSpace(out) != "ck1" {
		t.Errorf("nerdctl checkpoint create printed %q", out)
	}
	after := n.waitCounts(name, 0)
	if st := e.taskStatus(id); st != containerd.Running {
		t.Fatalf("container is %s after nerdctl checkpoint create, want running (no options = leave running)", st)
	}
	n.waitCounts(name, len(after)+2)
	dir := filepath.Join(n.dataRoot, "checkpoints", "ck1")
	checkFlatDir(t, dir)
	if out := n.must("checkpoint", "ls", name); !strings.Contains(out, "ck1") {
		t.Fatalf("nerdctl checkpoint ls does not list ck1:\n%s", out)
	}

	n.must("stop", name)
	n.must("start", "--checkpoint", "ck1", name)
	// The log holds the original's counts, which went on past the checkpoint, then
	// the restored process's: the restore point is where the count drops.
	restored := n.waitRestored(name, 0)
	if restored[0] < lo {
		t.Fatalf("restored counter started at %d; the checkpoint was taken after count=%d (a restarted process starts at 0)", restored[0], lo)
	}
	t.Logf("checkpoint taken after count=%d; restored counter continued at %d: %v", lo, restored[0], restored)
	if st := e.taskStatus(id); st != containerd.Running {
		t.Fatalf("container is %s after nerdctl start --checkpoint, want running", st)
	}

	n.must("checkpoint", "rm", name, "ck1")
	if names := ckenv.DirNames(t, dir); names != nil {
		t.Fatalf("nerdctl checkpoint rm left %v", names)
	}
	if out := n.must("checkpoint", "ls", name); strings.Contains(out, "ck1") {
		t.Fatalf("nerdctl checkpoint ls still lists ck1:\n%s", out)
	}
	n.must("rm", "-f", name)
	e.CheckNoTrace(id)
}

// TestCompatNerdctlRestoreFromCheckpointDir restores checkpoint directories with
// nerdctl, the standard tool that can (docs/checkpoint-restore.md, "Restore from a
// directory"): `nerdctl start --checkpoint NAME --checkpoint-dir DIR` reads DIR/NAME,
// packs it into containerd's content store and restores through
// CreateTaskRequest.Checkpoint (nerdctl pkg/taskutil/taskutil.go), so any flat
// directory with runsc-cuda.json restores, whoever wrote it:
//   - one that `ctr task checkpoint --exit --image-path DIR/ck1` wrote (the fast
//     checkpoint: the shim writes the directory, containerd copies nothing): the counter
//     continues where the exit checkpoint stopped it;
//   - the same directory again, after `nerdctl stop`: a restore reads it and leaves it
//     as it was, so it restores as often as needed;
//   - one that `nerdctl checkpoint create --checkpoint-dir DIR` wrote (the container
//     keeps running).
func TestCompatNerdctlRestoreFromCheckpointDir(t *testing.T) {
	e := setup(t, harness.Options{})
	n := e.newNerdctl()
	name := harness.RandomID("fromdir")
	id := n.runCounter(name)
	lo := slices.Max(n.waitCounts(name, 3))
	dir := e.ImagePathDir("nerdctl")
	e.ctr("task", "checkpoint", "--exit", "--image-path", filepath.Join(dir, "ck1"), id)
	waitStopped(e, id)
	meta := checkFlatDir(t, filepath.Join(dir, "ck1"))
	before := n.settledCounts(name)
	hi := before[len(before)-1]

	n.must("start", "--checkpoint", "ck1", "--checkpoint-dir", dir, name)
	restored := n.waitCountsFrom(name, len(before))
	checkRange(t, restored[0], lo, hi)
	if st := e.taskStatus(id); st != containerd.Running {
		t.Fatalf("container is %s after nerdctl start --checkpoint, want running", st)
	}

	n.must("stop", name)
	stopped := len(n.settledCounts(name))
	n.must("start", "--checkpoint", "ck1", "--checkpoint-dir", dir, name)
	again := n.waitRestored(name, stopped)
	checkRange(t, again[0], lo, hi)
	if after := checkFlatDir(t, filepath.Join(dir, "ck1")); !slices.Equal(after.Files, meta.Files) {
		t.Fatalf("the restores changed the directory: files %+v, before %+v", after.Files, meta.Files)
	}

	lo2 := slices.Max(n.waitCounts(name, 0))
	if out := n.must("checkpoint", "create", "--checkpoint-dir", dir, name, "ck2"); strings.TrimSpace(out) != "ck2" {
		t.Errorf("nerdctl checkpoint create printed %q", out)
	}
	checkFlatDir(t, filepath.Join(dir, "ck2"))
	hi2 := slices.Max(n.waitCounts(name, 0))
	n.must("stop", name)
	stopped = len(n.settledCounts(name))
	n.must("start", "--checkpoint", "ck2", "--checkpoint-dir", dir, name)
	third := n.waitRestored(name, stopped)
	checkRange(t, third[0], lo2, hi2)

	n.must("rm", "-f", name)
	e.CheckNoTrace(id)
}
