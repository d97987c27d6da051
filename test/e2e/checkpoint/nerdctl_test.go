//go:build e2e

package checkpoint

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/ckenv"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/testimage"
)

// nerdctl runs the pinned nerdctl against the test's daemon, namespace and snapshotter,
// with a private data root and no host config file.
func (e *env) nerdctl(dataRoot string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(e.Ctx, 2*time.Minute)
	defer cancel()
	full := append([]string{
		"--address", e.D.Address, "--namespace", e.D.Namespace, "--snapshotter", e.D.Snapshotter,
		"--data-root", dataRoot, "--cgroup-manager", "cgroupfs",
	}, args...)
	cmd := exec.CommandContext(ctx, e.D.Tools.Nerdctl, full...)
	cmd.Env = append(cmd.Environ(), "NERDCTL_TOML="+filepath.Join(dataRoot, "nerdctl.toml"))
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (e *env) mustNerdctl(dataRoot string, args ...string) string {
	e.T.Helper()
	out, err := e.nerdctl(dataRoot, args...)
	if err != nil {
		e.T.Fatalf("nerdctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// waitNerdctlCounts polls `nerdctl logs` until it shows at least n count lines and
// returns the counts.
func (e *env) waitNerdctlCounts(dataRoot, name string, n int) []int {
	e.T.Helper()
	deadline := time.Now().Add(startTimeout)
	for {
		out := e.mustNerdctl(dataRoot, "logs", name)
		lb := harness.NewLineBuffer()
		_, _ = lb.Write([]byte(out))
		if c := ckenv.Counts(lb.Lines()); len(c) >= n {
			return c
		}
		if time.Now().After(deadline) {
			e.T.Fatalf("nerdctl logs %s shows fewer than %d counts:\n%s", name, n, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitNerdctlRestored polls `nerdctl logs` until the count drops (the restored
// process continues from the checkpoint, behind where the original stopped) and three
// contiguous counts follow, and returns the counts from the drop on.
func (e *env) waitNerdctlRestored(dataRoot, name string) []int {
	e.T.Helper()
	deadline := time.Now().Add(startTimeout)
	for {
		c := e.waitNerdctlCounts(dataRoot, name, 0)
		for i := 1; i < len(c); i++ {
			if c[i] > c[i-1] {
				continue
			}
			restored := c[i:]
			for j := 1; j < len(restored); j++ {
				if restored[j] != restored[j-1]+1 {
					e.T.Fatalf("counts after the restore are not contiguous: %v", restored)
				}
			}
			if len(restored) >= 3 {
				return restored
			}
			break
		}
		if time.Now().After(deadline) {
			e.T.Fatalf("nerdctl logs %s shows no restored counts: %v", name, c)
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
	if e.D.Tools.Nerdctl == "" {
		t.Skip("nerdctl is not built (hack/tools.sh); it is optional")
	}
	dataRoot := filepath.Join(e.D.Dir, "nerdctl")
	name := harness.RandomID("nerdctl")
	out := e.mustNerdctl(dataRoot, append([]string{"run", "-d", "--name", name, "--network", "none",
		"--runtime", e.D.RuntimeName, testimage.Ref}, counterArgs...)...)
	fields := strings.Fields(out)
	if len(fields) == 0 {
		t.Fatal("nerdctl run -d printed no container ID")
	}
	id := fields[len(fields)-1] // nerdctl's container ID is containerd's
	before := e.waitNerdctlCounts(dataRoot, name, 3)
	lo := before[len(before)-1]

	if out := e.mustNerdctl(dataRoot, "checkpoint", "create", name, "ck1"); strings.TrimSpace(out) != "ck1" {
		t.Errorf("nerdctl checkpoint create printed %q", out)
	}
	after := e.waitNerdctlCounts(dataRoot, name, 0)
	if st := e.taskStatus(id); st != containerd.Running {
		t.Fatalf("container is %s after nerdctl checkpoint create, want running (no options = leave running)", st)
	}
	e.waitNerdctlCounts(dataRoot, name, len(after)+2)
	dir := filepath.Join(dataRoot, "checkpoints", "ck1")
	checkFlatDir(t, dir)
	if out := e.mustNerdctl(dataRoot, "checkpoint", "ls", name); !strings.Contains(out, "ck1") {
		t.Fatalf("nerdctl checkpoint ls does not list ck1:\n%s", out)
	}

	e.mustNerdctl(dataRoot, "stop", name)
	e.mustNerdctl(dataRoot, "start", "--checkpoint", "ck1", name)
	// The log holds the original's counts, which went on past the checkpoint, then
	// the restored process's: the restore point is where the count drops.
	restored := e.waitNerdctlRestored(dataRoot, name)
	if restored[0] < lo {
		t.Fatalf("restored counter started at %d; the checkpoint was taken after count=%d (a restarted process starts at 0)", restored[0], lo)
	}
	t.Logf("checkpoint taken after count=%d; restored counter continued at %d: %v", lo, restored[0], restored)
	if st := e.taskStatus(id); st != containerd.Running {
		t.Fatalf("container is %s after nerdctl start --checkpoint, want running", st)
	}

	e.mustNerdctl(dataRoot, "checkpoint", "rm", name, "ck1")
	if names := ckenv.DirNames(t, dir); names != nil {
		t.Fatalf("nerdctl checkpoint rm left %v", names)
	}
	if out := e.mustNerdctl(dataRoot, "checkpoint", "ls", name); strings.Contains(out, "ck1") {
		t.Fatalf("nerdctl checkpoint ls still lists ck1:\n%s", out)
	}
	e.mustNerdctl(dataRoot, "rm", "-f", name)
	e.CheckNoTrace(id)
}
