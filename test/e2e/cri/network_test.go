//go:build e2e

package cri

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

// ncServer is a container command: busybox nc answering every TCP connection on port
// 8080 with hello n=<k>, k counting the connections in a file of the container's
// rootfs (so a restored checkpoint goes on counting), and logging served n=<k>.
var ncServer = []string{"nc", "-ll", "-p", "8080", "-e", "/bin/sh", "-c",
	`n=$(( $(cat /tmp/served 2>/dev/null || echo 0) + 1 )); echo $n >/tmp/served; echo "served n=$n" >&2; echo "hello n=$n"`}

// TestPodBridgeNetwork runs a pod with a network namespace of its own on the daemon's
// CNI bridge, with the runsc-cuda handler: it gets an address in the daemon's subnet
// and a veth on the bridge, its container's TCP server (ncServer) answers the test
// process at that address (through gVisor's netstack), and removing the pod takes its
// veth and network namespace away.
func TestPodBridgeNetwork(t *testing.T) {
	e := newBridgeCRIEnv(t, "")
	ctx := testCtx(t, 5*time.Minute)

	p := e.runPodOnNetwork(ctx, t, "net")
	ip := e.podIP(ctx, t, p.ID)
	_, subnet, err := net.ParseCIDR(e.d.PodSubnet)
	if err != nil {
		t.Fatal(err)
	}
	if !subnet.Contains(net.ParseIP(ip)) || ip == e.d.BridgeAddress {
		t.Fatalf("pod address %s is not a pod's address in the daemon's subnet %s (bridge %s)", ip, subnet, e.d.BridgeAddress)
	}
	if ports := e.d.BridgePorts(); len(ports) != 1 {
		t.Fatalf("bridge %s has ports %v, want the pod's veth", e.d.Bridge, ports)
	}
	t.Logf("pod %s at %s on bridge %s (%s)", p.ID, ip, e.d.Bridge, e.d.PodSubnet)

	srv := e.startContainer(ctx, t, p, "server", ncServer...)
	e.waitState(ctx, t, srv, "CONTAINER_RUNNING", startWait)
	addr := net.JoinHostPort(ip, "8080")
	if got := dialLine(t, addr, 30*time.Second); got != "hello n=1" {
		t.Fatalf("first answer from %s: %q, want hello n=1", addr, got)
	}
	if got := dialLine(t, addr, 10*time.Second); got != "hello n=2" {
		t.Fatalf("second answer from %s: %q, want hello n=2", addr, got)
	}
	e.waitLog(ctx, t, srv, `^served n=2$`, 10*time.Second)
	// The host reaches the subnet through the bridge only.
	if dev, err := harness.RouteDevice(e.d.PodSubnet); err != nil || dev != e.d.Bridge {
		t.Errorf("the host routes %s through %q (%v), want bridge %s", e.d.PodSubnet, dev, err, e.d.Bridge)
	}

	e.removePod(ctx, t, p)
	e.waitNoSandboxProcesses(t, 30*time.Second)
	if ports := e.d.BridgePorts(); len(ports) != 0 {
		t.Errorf("after rmp, bridge %s still has ports %v", e.d.Bridge, ports)
	}
	// The CRI keeps the pods' network namespaces in <state>/<CRI plugin>/netns.
	if dirs, _ := filepath.Glob(filepath.Join(e.d.State, "*", "netns")); len(dirs) != 1 {
		t.Errorf("network namespace directories under %s: %v, want the CRI's", e.d.State, dirs)
	} else if ns, _ := os.ReadDir(dirs[0]); len(ns) != 0 {
		t.Errorf("after rmp, network namespaces left in %s: %v", dirs[0], ns)
	}
}

// checkpointServer runs a pod on the daemon's CNI bridge whose container serves
// ncServer, has it answer twice (hello n=1, n=2), checkpoints the server into archive
// with crictl and force-removes the pod: its veth and address go with it.
func (e *criEnv) checkpointServer(ctx context.Context, t *testing.T, name, archive string) {
	t.Helper()
	p := e.runPodOnNetwork(ctx, t, name)
	srv := e.startContainer(ctx, t, p, "server", ncServer...)
	e.waitState(ctx, t, srv, "CONTAINER_RUNNING", startWait)
	addr := net.JoinHostPort(e.podIP(ctx, t, p.ID), "8080")
	for _, want := range []string{"hello n=1", "hello n=2"} {
		if got := dialLine(t, addr, 30*time.Second); got != want {
			t.Fatalf("answer from %s: %q, want %q", addr, got, want)
		}
	}
	e.crictl(ctx, t, "checkpoint", "--export="+archive, srv)
	e.forceRemovePod(ctx, t, p)
	e.waitNoSandboxProcesses(t, 30*time.Second)
	if ports := e.d.BridgePorts(); len(ports) != 0 {
		t.Fatalf("after rmp -f, bridge %s still has ports %v", e.d.Bridge, ports)
	}
}

// checkServerRestored checks that the restored pod p answers at its own address on
// the bridge with the restored server's listening socket and count (hello n=3, then
// n=4), then removes it without leftovers on the bridge.
func (e *criEnv) checkServerRestored(ctx context.Context, t *testing.T, p pod, srv string) {
	t.Helper()
	e.waitState(ctx, t, srv, "CONTAINER_RUNNING", startWait)
	ip := e.podIP(ctx, t, p.ID)
	if _, subnet, _ := net.ParseCIDR(e.d.PodSubnet); !subnet.Contains(net.ParseIP(ip)) {
		t.Fatalf("restored pod's address %s is not in the bridge's subnet %s", ip, subnet)
	}
	if ports := e.d.BridgePorts(); len(ports) != 1 {
		t.Fatalf("bridge %s has ports %v, want the restored pod's veth", e.d.Bridge, ports)
	}
	addr := net.JoinHostPort(ip, "8080")
	for _, want := range []string{"hello n=3", "hello n=4"} {
		if got := dialLine(t, addr, 30*time.Second); got != want {
			t.Fatalf("answer from the restored pod at %s: %q, want %q (the server's count goes on from the checkpoint)", addr, got, want)
		}
	}
	t.Logf("the restored pod answers at %s", addr)
	e.waitLog(ctx, t, srv, `^served n=4$`, 10*time.Second)
	if st := e.podState(ctx, t, p.ID); st != "SANDBOX_READY" {
		t.Fatalf("restored pod is %s, want SANDBOX_READY", st)
	}
	e.forceRemovePod(ctx, t, p)
	e.waitNoSandboxProcesses(t, 30*time.Second)
	if ports := e.d.BridgePorts(); len(ports) != 0 {
		t.Errorf("after rmp -f, bridge %s still has ports %v", e.d.Bridge, ports)
	}
}

// TestRestoreCRIBridgeNetwork restores a pod on the CNI bridge through containerd
// 2.3.7's CRI restore (CreateContainer with the checkpoint archive as the image): the
// new pod's address (a new one: the CRI gives the new pod its own veth) reaches the
// restored server, whose listening socket and count came back: the shim gave the
// pod's interface the addresses and routes runsc took from it at the replaced
// sandbox's start.
func TestRestoreCRIBridgeNetwork(t *testing.T) {
	e := startCRIEnv(t, harness.Options{Version: "2.3.7", CNI: harness.CNIBridge, ExtraConfig: restoreConfig})
	ctx := testCtx(t, 5*time.Minute)
	archive := filepath.Join(e.dir, "server.tar")
	e.checkpointServer(ctx, t, "orig", archive)

	p := e.runPodOnNetwork(ctx, t, "restored")
	cfg := e.writeJSON(t, "ctr-restore-server.json", e.containerConfig("server", archive, ncServer...))
	srv := e.crictl(ctx, t, "create", "--no-pull", p.ID, cfg, p.Config)
	e.crictl(ctx, t, "start", srv)
	e.checkServerRestored(ctx, t, p, srv)
}

// TestRestoreAnnotationBridgeNetworkCompat is TestRestoreCRIBridgeNetwork through the
// restore annotation, on containerd 2.4 (and 2.3 without its CRI restore): a new pod
// on the bridge annotated with the archive, and its container of the checkpointed
// name and command.
func TestRestoreAnnotationBridgeNetworkCompat(t *testing.T) {
	e := newRestoreEnv(t, harness.Options{CNI: harness.CNIBridge})
	ctx := testCtx(t, 5*time.Minute)
	archive := filepath.Join(e.root, "server.tar")
	e.checkpointServer(ctx, t, "orig", archive)

	p := e.restorePod(ctx, t, "restored", true, archive)
	srv := e.startContainer(ctx, t, p, "server", ncServer...)
	e.checkServerRestored(ctx, t, p, srv)
	e.checkNothingLeft(t)
}
