//go:build e2e

package cri

import (
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
