//go:build e2e

package checkpoint

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/testimage"
)

// TestCompatCloneHasItsOwnCgroup: a container restored from a checkpoint under a new
// id beside its running original (`ctr container restore --live`, which reuses the
// checkpoint's spec and so the original's cgroupsPath) runs in a cgroup of its own,
// /<namespace>/<clone id> as containerd would give it, with the original's memory
// limit; deleting it removes that cgroup and leaves the original's alone.
func TestCompatCloneHasItsOwnCgroup(t *testing.T) {
	e := setup(t, harness.Options{})
	id := harness.RandomID("orig")
	clone := id + "-clone"
	args := []string{"/workload", "counter", "--interval", "100ms", "--file", "/tmp/count"}
	logf := filepath.Join(e.D.Dir, "logs", id+".log")
	e.ctr(append(append(append([]string{"run", "-d", "--memory-limit", "268435456"}, e.D.CtrRuntimeArgs()...), "--log-uri", "file://"+logf, testimage.Ref, id), args...)...)
	harness.WaitForFileLine(t, logf, `^count=3$`, startTimeout)
	e.ctr("container", "checkpoint", "--task", "--image", id, "localhost/clone-ckpt:1")
	e.ctr("container", "restore", "--live", clone, "localhost/clone-ckpt:1")
	if n := e.execCount(clone); n < 3 {
		t.Fatalf("the clone's counter is at %d, want it to continue from at least 3", n)
	}

	mine, theirs := memCgroup(t, e, clone), memCgroup(t, e, id)
	if mine == "" || theirs == "" || mine == theirs {
		t.Fatalf("memory cgroups: clone %q, original %q; want one each", mine, theirs)
	}
	limit, err := os.ReadFile(filepath.Join(mine, "memory.limit_in_bytes"))
	if err != nil || strings.TrimSpace(string(limit)) != "268435456" {
		t.Fatalf("the clone's memory limit %q (%v), want the original's 268435456", limit, err)
	}

	e.ctr("task", "kill", "-s", "KILL", clone)
	waitStopped(e, clone)
	e.ctr("task", "rm", clone)
	e.ctr("container", "rm", clone)
	e.CheckNoTrace(clone)
	if n := e.execCount(id); n < 3 {
		t.Fatalf("the original's counter is at %d after the clone's deletion", n)
	}
	e.ctr("task", "kill", "-s", "KILL", id)
	waitStopped(e, id)
	e.ctr("task", "rm", id)
	e.CheckNoTrace(id)
}

// memCgroup is container id's memory cgroup directory on this host (cgroup v1), or
// the unified one.
func memCgroup(t *testing.T, e *env, id string) string {
	t.Helper()
	for _, cg := range e.CgroupsOf(id) {
		if strings.Contains(cg, "/memory/") || !strings.Contains(strings.TrimPrefix(cg, "/sys/fs/cgroup/"), "/"+e.D.Namespace+"/") {
			if _, err := os.Stat(filepath.Join(cg, "memory.limit_in_bytes")); err == nil {
				return cg
			}
		}
	}
	return ""
}
