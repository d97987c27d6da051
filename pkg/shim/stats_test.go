package shim

import (
	"testing"

	cgroup1stats "github.com/containerd/cgroups/v3/cgroup1/stats"
	cgroup2stats "github.com/containerd/cgroups/v3/cgroup2/stats"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/typeurl/v2"
)

func TestMetricsFromStats(t *testing.T) {
	st := &runc.Stats{}
	st.Cpu.Usage.Total = 5_000_000
	st.Cpu.Usage.User = 3_000_000
	st.Memory.Usage.Usage = 1 << 20
	st.Memory.Usage.Limit = 1 << 30
	st.Pids.Current = 4

	a, err := metricsFromStats(st, false)
	if err != nil {
		t.Fatal(err)
	}
	v, err := typeurl.UnmarshalAny(a)
	if err != nil {
		t.Fatal(err)
	}
	m1 := v.(*cgroup1stats.Metrics)
	if m1.CPU.Usage.Total != 5_000_000 || m1.Memory.Usage.Usage != 1<<20 || m1.Pids.Current != 4 {
		t.Errorf("v1 = %+v", m1)
	}

	a, err = metricsFromStats(st, true)
	if err != nil {
		t.Fatal(err)
	}
	v, err = typeurl.UnmarshalAny(a)
	if err != nil {
		t.Fatal(err)
	}
	m2 := v.(*cgroup2stats.Metrics)
	// cgroup v2 reports microseconds.
	if m2.CPU.UsageUsec != 5000 || m2.CPU.UserUsec != 3000 || m2.Memory.UsageLimit != 1<<30 || m2.Pids.Current != 4 {
		t.Errorf("v2 = %+v", m2)
	}
}
