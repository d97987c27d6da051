//go:build e2e

package task

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cgroupsv1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	eventstypes "github.com/containerd/containerd/api/events"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

const mib = 1 << 20

// metrics returns the task's metrics as cgroup v1 metrics (this host's cgroup
// version; the v2 conversion is unit tested in pkg/shim).
func metrics(ctx context.Context, t *testing.T, task containerd.Task) *cgroupsv1.Metrics {
	t.Helper()
	m, err := task.Metrics(ctx)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	v, err := typeurl.UnmarshalAny(m.Data)
	if err != nil {
		t.Fatalf("metrics data of type %s: %v", m.Data.GetTypeUrl(), err)
	}
	s, ok := v.(*cgroupsv1.Metrics)
	if !ok {
		t.Fatalf("metrics are %T, want cgroup v1 metrics on this host", v)
	}
	return s
}

// TestCompatStats proves Stats through the client's Task.Metrics and `ctr
// task metrics`: memory, CPU and pids of a container holding 64 MiB.
func TestCompatStats(t *testing.T) {
	e := newEnv(t, harness.Options{})
	ctx := testCtx(t, 3*time.Minute)
	c, task, _, out := e.run(ctx, t, "stats", nil, "/workload", "memhold", "--mib", "64")
	out.WaitFor(t, `^ready sum=`, startWait)

	m := metrics(ctx, t, task)
	t.Logf("metrics: memory usage %d limit %d max %d cache %d, cpu total %d user %d kernel %d, pids %d",
		m.GetMemory().GetUsage().GetUsage(), m.GetMemory().GetUsage().GetLimit(), m.GetMemory().GetUsage().GetMax(), m.GetMemory().GetCache(),
		m.GetCPU().GetUsage().GetTotal(), m.GetCPU().GetUsage().GetUser(), m.GetCPU().GetUsage().GetKernel(), m.GetPids().GetCurrent())
	if u := m.GetMemory().GetUsage().GetUsage(); u < 64*mib {
		t.Errorf("memory usage %d, want at least the 64 MiB the workload holds", u)
	}
	if m.GetCPU().GetUsage().GetTotal() == 0 {
		t.Error("cpu usage 0")
	}
	if m.GetPids().GetCurrent() < 1 {
		t.Errorf("pids current %d, want >= 1", m.GetPids().GetCurrent())
	}

	stdout, _, err := e.d.Ctr(ctx, "task", "metrics", c.ID())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ctr task metrics:\n%s", stdout)
	for _, want := range []string{"memory.usage_in_bytes", "cpuacct.usage", "pids.current"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("ctr task metrics lacks %s", want)
		}
	}
	destroy(ctx, t, c)
	waitNoLeftovers(t, e.d)
}

// TestCompatMetricsLimits: `ctr task metrics` of a container started with a memory
// and a pids limit reports them (runsc's own stats carry none; the shim reads the
// sandbox's host cgroup), and an Update shows in the next metrics.
func TestCompatMetricsLimits(t *testing.T) {
	e := newEnv(t, harness.Options{})
	ctx := testCtx(t, 3*time.Minute)
	c, task, _, out := e.run(ctx, t, "limits", []oci.SpecOpts{oci.WithMemoryLimit(256 * mib), oci.WithPidsLimit(64)}, "/workload", "memhold", "--mib", "16")
	out.WaitFor(t, `^ready sum=`, startWait)
	m := metrics(ctx, t, task)
	if got := m.GetMemory().GetUsage().GetLimit(); got != 256*mib {
		t.Errorf("memory limit %d, want %d", got, 256*mib)
	}
	if got := m.GetPids().GetLimit(); got != 64 {
		t.Errorf("pids limit %d, want 64", got)
	}
	stdout, _, err := e.d.Ctr(ctx, "task", "metrics", c.ID())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout, "268435456") {
		t.Errorf("ctr task metrics does not show the 256 MiB limit:\n%s", stdout)
	}
	limit := int64(512 * mib)
	if err := task.Update(ctx, containerd.WithResources(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}})); err != nil {
		t.Fatal(err)
	}
	if got := metrics(ctx, t, task).GetMemory().GetUsage().GetLimit(); got != 512*mib {
		t.Errorf("memory limit after the update %d, want %d", got, 512*mib)
	}
	destroy(ctx, t, c)
	waitNoLeftovers(t, e.d)
}

// TestUpdate proves Update through the client (ctr 2.4 has no task update): new
// limits reach the sandbox's host cgroup (runsc's stats report no limits, so
// the cgroup is the reading that changes), and an update runsc cannot apply
// fails with its reason and leaves the task running.
func TestUpdate(t *testing.T) {
	e := newEnv(t, harness.Options{})
	ctx := testCtx(t, 3*time.Minute)
	c, task, _, _ := e.run(ctx, t, "update", []oci.SpecOpts{oci.WithMemoryLimit(256 * mib)}, "/workload", "sleep")
	spec, err := c.Spec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	memLimit := cgroupFile(t, "memory", spec.Linux.CgroupsPath, "memory.limit_in_bytes")
	cfsQuota := cgroupFile(t, "cpu", spec.Linux.CgroupsPath, "cpu.cfs_quota_us")
	assertFile(t, memLimit, "268435456")

	limit := int64(512 * mib)
	if err := task.Update(ctx, containerd.WithResources(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}})); err != nil {
		t.Fatalf("update: %v", err)
	}
	assertFile(t, memLimit, "536870912")

	limit = 384 * mib
	quota, period := int64(50000), uint64(100000)
	if err := task.Update(ctx, containerd.WithResources(&specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: &limit},
		CPU:    &specs.LinuxCPU{Quota: &quota, Period: &period},
	})); err != nil {
		t.Fatalf("update: %v", err)
	}
	assertFile(t, memLimit, "402653184")
	assertFile(t, cfsQuota, "50000")

	err = task.Update(ctx, containerd.WithResources(&specs.LinuxResources{CPU: &specs.LinuxCPU{Cpus: "no-such-cpus"}}))
	if err == nil {
		t.Fatal("update with an invalid cpuset succeeded")
	}
	for _, w := range []string{"runsc update", "cpuset", "invalid argument"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
	assertStatus(ctx, t, task, containerd.Running)
	assertFile(t, memLimit, "402653184")
	destroy(ctx, t, c)
	waitNoLeftovers(t, e.d)
}

// cgroupFile is the path of a cgroup v1 file of controller for cgroupsPath.
func cgroupFile(t *testing.T, controller, cgroupsPath, name string) string {
	t.Helper()
	if !strings.HasPrefix(cgroupsPath, "/") {
		t.Fatalf("cgroups path %q is not a cgroupfs path", cgroupsPath)
	}
	return filepath.Join("/sys/fs/cgroup", controller, cgroupsPath, name)
}

func assertFile(t *testing.T, path, want string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(b)); got != want {
		t.Errorf("%s = %s, want %s", path, got, want)
	}
}

// TestCompatOOM proves OOM handling: a container that allocates past its
// memory limit is killed (the host kernel's OOM killer kills the sandbox, in
// the container's cgroup), containerd gets TaskOOM for it, and the task exits
// with 137.
func TestCompatOOM(t *testing.T) {
	e := newEnv(t, harness.Options{})
	events := subscribe(t, e.d)
	ctx := testCtx(t, 3*time.Minute)
	c, _, statusC, out := e.run(ctx, t, "oom", []oci.SpecOpts{oci.WithMemoryLimit(128 * mib)}, "/workload", "alloc", "--step", "8")
	st := waitExit(t, statusC, "alloc")
	if st.ExitCode() != 137 {
		t.Errorf("exit status %d, want 137 (killed)", st.ExitCode())
	}
	ev := events.waitFor(t, "/tasks/oom", forContainer(c.ID())).(*eventstypes.TaskOOM)
	t.Logf("TaskOOM %+v after %s", ev, out.Lines()[max(0, out.Len()-1):])
	events.waitFor(t, "/tasks/exit", initExit(c.ID()))
	if out.Len() == 0 {
		t.Error("the workload printed nothing before it was killed")
	}
	destroy(ctx, t, c)
	waitNoLeftovers(t, e.d)
}
