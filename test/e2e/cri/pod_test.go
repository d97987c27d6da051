//go:build e2e

// Package cri holds the end-to-end tests of the shim under containerd's CRI, driven
// by crictl (sigs.k8s.io/cri-tools v1.37.0) against a private containerd: pods with a
// pause container and several application containers, CheckpointContainer
// (`crictl checkpoint --export`) and, on containerd 2.3, restore through
// CreateContainer from a checkpoint archive. Tests named *Compat* also run against
// containerd 2.3.7 (make e2e-compat).
//
// Test pods share the host network namespace (the CRI attaches no CNI network to them,
// and runsc gives the sandbox a network namespace of its own with loopback only), with
// a loopback-only conflist in the CNI conf dir; those of newBridgeCRIEnv and
// runPodOnNetwork have their own network namespace on the daemon's CNI bridge
// (harness.CNIBridge), reachable from the test at their pod IP.
package cri

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestPodCompat runs a pod of a pause container and two application containers in
// one sandbox and one shim: run, exec, logs, exits, stop and remove.
func TestPodCompat(t *testing.T) {
	e := newCRIEnv(t, "", "")
	ctx := testCtx(t, 5*time.Minute)

	p := e.runPod(ctx, t, "pod")
	if st := e.podState(ctx, t, p.ID); st != "SANDBOX_READY" {
		t.Fatalf("pod state %s, want SANDBOX_READY", st)
	}
	counter := e.startContainer(ctx, t, p, "counter", "/workload", "counter", "--interval", "200ms")
	sleeper := e.startContainer(ctx, t, p, "sleeper", "/workload", "signals")
	first := e.waitCountAbove(ctx, t, counter, 0, startWait)
	e.waitState(ctx, t, sleeper, "CONTAINER_RUNNING", startWait)

	// One shim and one sandbox serve the whole pod.
	if shims, sandboxes := e.shims(t), e.sandboxes(t); len(shims) != 1 || len(sandboxes) != 1 {
		t.Fatalf("pod with 3 containers runs %d shims (%s) and %d sandboxes (%s), want 1 and 1",
			len(shims), fmtProcs(shims), len(sandboxes), fmtProcs(sandboxes))
	}

	// exec runs in the right container: each sees its own rootfs.
	e.crictl(ctx, t, "exec", counter, "touch", "/only-in-counter")
	if out := e.crictl(ctx, t, "exec", counter, "ls", "/only-in-counter"); out != "/only-in-counter" {
		t.Fatalf("exec ls in counter: %q", out)
	}
	if out, err := e.crictlE(ctx, "exec", sleeper, "ls", "/only-in-counter"); err == nil {
		t.Fatalf("the file created in container counter is visible in container sleeper: %q", out)
	}
	if out := e.crictl(ctx, t, "exec", sleeper, "echo", "hello from sleeper"); out != "hello from sleeper" {
		t.Fatalf("exec echo in sleeper: %q", out)
	}
	// The pod shares one PID namespace (the CRI's default, POD): each container
	// sees the others' processes.
	if out := e.crictl(ctx, t, "exec", sleeper, "ps"); !strings.Contains(out, "/workload counter") {
		t.Fatalf("ps in sleeper does not list the counter of the same pod:\n%s", out)
	}
	// crictl exec returns the exit status of the process.
	if _, err := e.crictlE(ctx, "exec", counter, "sh", "-c", "exit 7"); err == nil || !strings.Contains(err.Error(), "exit code 7") {
		t.Fatalf("exec exit 7: %v", err)
	}

	// Logs keep flowing for both.
	e.waitCountAbove(ctx, t, counter, first+2, startWait)

	// A third container that exits on its own leaves the others running.
	exiter := e.startContainer(ctx, t, p, "exiter", "/workload", "exit", "--code", "3")
	st := e.waitState(ctx, t, exiter, "CONTAINER_EXITED", exitWait)
	if st.Status.ExitCode != 3 {
		t.Fatalf("exiter exit code %d, want 3", st.Status.ExitCode)
	}
	e.crictl(ctx, t, "rm", exiter)
	n := e.lastCount(ctx, t, counter)
	e.waitCountAbove(ctx, t, counter, n, 10*time.Second)

	// Stop sends SIGTERM: the signals workload exits 0 on it.
	e.crictl(ctx, t, "stop", "--timeout", "10", sleeper)
	st = e.waitState(ctx, t, sleeper, "CONTAINER_EXITED", exitWait)
	if st.Status.ExitCode != 0 {
		t.Fatalf("sleeper exit code after stop %d, want 0; log:\n%s", st.Status.ExitCode, e.logs(ctx, t, sleeper))
	}
	if log := e.logs(ctx, t, sleeper); !strings.Contains(log, "got=SIGTERM") {
		t.Fatalf("sleeper did not log SIGTERM:\n%s", log)
	}
	e.crictl(ctx, t, "rm", sleeper)
	// The counter runs on.
	n = e.lastCount(ctx, t, counter)
	e.waitCountAbove(ctx, t, counter, n, 10*time.Second)
	if st := e.podState(ctx, t, p.ID); st != "SANDBOX_READY" {
		t.Fatalf("pod state %s after a container was removed, want SANDBOX_READY", st)
	}

	// Stopping the pod stops its containers; removing it removes everything.
	e.removePod(ctx, t, p)
	e.waitNoSandboxProcesses(t, 30*time.Second)
	if out := e.crictl(ctx, t, "ps", "-a", "-q"); out != "" {
		t.Fatalf("containers left after rmp: %q", out)
	}
}

// TestPodStopBackgroundChildCompat stops pod containers whose main process started a
// background child, in a pod whose containers share the pod's PID namespace (the
// CRI's POD mode: crictl's default, the kubelet's with shareProcessNamespace) and in
// one where each container has its own (CONTAINER, the kubelet's default): a main
// process that exits on SIGTERM and one that ignores it (stopped by SIGKILL after the
// grace period). Each stop finishes within seconds, the container is exited with the
// main process's status, its child is gone, the pod's other container runs on,
// CRI stats of the pod's containers work throughout and containerd logs no metrics
// errors about the stopped ones, and rmp -f removes the pod promptly.
func TestPodStopBackgroundChildCompat(t *testing.T) {
	e := newCRIEnv(t, "", "")
	ctx := testCtx(t, 5*time.Minute)
	for _, mode := range []struct {
		name string
		pid  int
	}{{"shared PID namespace", pidPod}, {"PID namespace per container", pidContainer}} {
		t.Run(mode.name, func(t *testing.T) {
			logFrom := len(e.d.Logs())
			p := e.startPod(ctx, t, strings.ReplaceAll(mode.name, " ", "-"), podOpts{pid: mode.pid})
			start := func(name string, command ...string) string {
				cfg := e.containerConfig(name, e.ref, command...)
				cfg["linux"] = map[string]any{"security_context": map[string]any{"namespace_options": map[string]any{"pid": mode.pid}}}
				id := e.createWith(ctx, t, p, "ctr-"+p.Name+"-"+name+".json", cfg)
				e.crictl(ctx, t, "start", id)
				return id
			}
			counter := start("counter", "/workload", "counter", "--interval", "200ms")
			// sh forks the child and execs the workload, which exits 0 on SIGTERM.
			term := start("term", "sh", "-c", "sleep 100001 & exec /workload signals")
			// sh ignores SIGTERM (and so does its child) until SIGKILL.
			kill := start("kill", "sh", "-c", "trap '' TERM; sleep 100002 & while :; do sleep 1; done")
			for _, id := range []string{term, kill} {
				e.waitState(ctx, t, id, "CONTAINER_RUNNING", startWait)
			}
			e.waitCountAbove(ctx, t, counter, 1, startWait)
			e.waitLog(ctx, t, term, "^ready", startWait)
			if mode.pid == pidPod {
				e.waitPs(ctx, t, counter, "sleep 100001", true)
				e.waitPs(ctx, t, counter, "sleep 100002", true)
			}

			for _, c := range []struct {
				id, child   string
				grace, code int
				within      time.Duration
				main        string // what the main process does on SIGTERM
			}{
				{term, "sleep 100001", 10, 0, 5 * time.Second, "exits on SIGTERM"},
				{kill, "sleep 100002", 2, 137, 2*time.Second + 5*time.Second, "ignores SIGTERM"},
			} {
				begin := time.Now()
				if _, err := e.crictlE(ctx, "stop", "--timeout", strconv.Itoa(c.grace), c.id); err != nil {
					t.Fatalf("crictl stop of a container whose main process %s and has a background child: %v", c.main, err)
				}
				took := time.Since(begin)
				t.Logf("crictl stop --timeout %d of the container whose main process %s took %v", c.grace, c.main, took.Round(time.Millisecond))
				if took > c.within {
					t.Errorf("crictl stop took %v, want less than %v", took.Round(time.Millisecond), c.within)
				}
				st := e.waitState(ctx, t, c.id, "CONTAINER_EXITED", exitWait)
				if st.Status.ExitCode != c.code {
					t.Errorf("exit code %d after stop, want %d", st.Status.ExitCode, c.code)
				}
				if mode.pid == pidPod {
					e.waitPs(ctx, t, counter, c.child, false)
				}
			}
			n := e.lastCount(ctx, t, counter)
			e.waitCountAbove(ctx, t, counter, n, 10*time.Second)

			// Stats (ListContainerStats, what the kubelet asks) of the running
			// and the stopped containers; containerd's stats collector polls
			// the tasks each second meanwhile.
			for _, id := range []string{counter, term, kill} {
				if out, err := e.crictlE(ctx, "stats", "-a", "-o", "json", "--id", id); err != nil {
					t.Errorf("crictl stats of %s: %v", id, err)
				} else if !strings.Contains(out, id) {
					t.Errorf("crictl stats does not list %s:\n%s", id, out)
				}
			}
			if _, err := e.crictlE(ctx, "stats", "-a", "-o", "json"); err != nil {
				t.Errorf("crictl stats -a: %v", err)
			}
			time.Sleep(3 * time.Second)

			begin := time.Now()
			e.forceRemovePod(ctx, t, p)
			e.waitNoSandboxProcesses(t, 30*time.Second)
			t.Logf("rmp -f and the pod's processes gone in %v", time.Since(begin).Round(time.Millisecond))
			time.Sleep(3 * time.Second)
			t.Run("no metrics errors", func(t *testing.T) {
				e.checkNoMetricsErrors(t, logFrom, p.ID, counter, term, kill)
			})
		})
	}
}

// waitPs waits until ps in container id lists (or, with !present, no longer lists) a
// process whose command line contains cmd.
func (e *criEnv) waitPs(ctx context.Context, t *testing.T, id, cmd string, present bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out := e.crictl(ctx, t, "exec", id, "ps")
		if strings.Contains(out, cmd) == present {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("ps in %s: %q present=%t after 10s, want %t:\n%s", id, cmd, !present, present, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkNoMetricsErrors fails the test when containerd logged, after byte from of its
// log, errors about metrics of any of ids. containerd asks a task's metrics (the
// shim's Stats) for CRI stats, each second for its stats collector, and once for
// an exit with status 137 (to tell an OOM kill); the shim must answer a container
// that is stopped or gone with NotFound, which containerd skips quietly. A request
// the shim's exit cut short (ttrpc: closed, at the pod's removal) is only logged.
func (e *criEnv) checkNoMetricsErrors(t *testing.T, from int, ids ...string) {
	t.Helper()
	perID := map[string][]string{}
	for _, l := range strings.Split(e.d.Logs()[from:], "\n") {
		if !strings.Contains(l, "level=error") || !strings.Contains(strings.ToLower(l), "metrics") {
			continue
		}
		for _, id := range ids {
			if !strings.Contains(l, id) {
				continue
			}
			if strings.Contains(l, "ttrpc: closed") {
				t.Logf("containerd asked metrics of %s as its shim exited: %s", id, l)
			} else {
				perID[id] = append(perID[id], l)
			}
			break
		}
	}
	for _, id := range ids {
		if bad := perID[id]; len(bad) > 0 {
			t.Errorf("containerd logged %d metrics errors about %s (repeated: %t); the first:\n%s", len(bad), id, len(bad) > 1, bad[0])
		}
	}
}
