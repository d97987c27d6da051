//go:build e2e

package cri

import (
	"net"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// TestPodBridgeNetwork runs a pod with a network namespace of its own on the daemon's
// CNI bridge, with the runsc-cuda handler: it gets an address in the daemon's subnet
// and a veth on the bridge, its container's TCP server (the workload's serve) answers
// the test process at that address (through gVisor's netstack), and removing the pod
// takes its veth and network namespace away.
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

	srv := e.startContainer(ctx, t, p, "server", "/workload", "serve", "--addr", ":8080")
	e.waitLog(ctx, t, srv, `^listening addr=`, startWait)
	addr := net.JoinHostPort(ip, "8080")
	if got := dialLine(t, addr, 30*time.Second); got != "hello n=1" {
		t.Fatalf("first answer from %s: %q, want hello n=1", addr, got)
	}
	if got := dialLine(t, addr, 10*time.Second); got != "hello n=2" {
		t.Fatalf("second answer from %s: %q, want hello n=2", addr, got)
	}
	// The connections came from the host's address on the bridge.
	e.waitLog(ctx, t, srv, `^served n=2 remote=`+regexp.QuoteMeta(e.d.BridgeAddress)+`:\d+$`, 10*time.Second)

	e.removePod(ctx, t, p)
	e.waitNoSandboxProcesses(t, 30*time.Second)
	if ports := e.d.BridgePorts(); len(ports) != 0 {
		t.Errorf("after rmp, bridge %s still has ports %v", e.d.Bridge, ports)
	}
	if ns, _ := filepath.Glob(filepath.Join(e.d.State, "*", "netns", "*")); len(ns) != 0 {
		t.Errorf("after rmp, network namespaces left: %v", ns)
	}
	if _, err := os.Stat(e.d.State); err != nil {
		t.Fatal(err)
	}
}
