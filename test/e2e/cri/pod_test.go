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
