//go:build e2e

package checkpoint

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/testimage"
)

// nerdctlDefaultSubnet is the subnet of nerdctl's default network (nerdctl
// pkg/netutil DefaultCIDR) when nerdctl.toml sets no bridge_ip.
const nerdctlDefaultSubnet = "10.4.0.0/24"

// webCounterArgs serve the container's /srv over HTTP on port 8080 (busybox httpd,
// which puts itself in the background) and run the counter in the foreground.
var webCounterArgs = []string{"/bin/sh", "-c",
	"mkdir -p /srv && /bin/busybox hostname > /srv/index.html && /bin/busybox httpd -p 8080 -h /srv && exec " + strings.Join(counterArgs, " ")}

// containerIP returns the IPv4 address of the container's eth0 as the sandbox shows it
// (`ip -4 addr` inside), checking that it lies in nerdctl's default subnet and that
// host-local leased it on the host. (`nerdctl inspect` reports no address for a runsc
// container: it reads the interfaces of the task's network namespace on the host,
// whose addresses runsc has moved into its own network stack.)
func (n *nerdctl) containerIP(name string) net.IP {
	n.e.T.Helper()
	out := n.must("exec", name, "/bin/busybox", "ip", "-4", "-o", "addr", "show", "eth0")
	m := regexp.MustCompile(`inet (\d+\.\d+\.\d+\.\d+)/`).FindStringSubmatch(out)
	_, subnet, _ := net.ParseCIDR(nerdctlDefaultSubnet)
	if m == nil || !subnet.Contains(net.ParseIP(m[1])) {
		n.e.T.Fatalf("eth0 of %s has no address in nerdctl's default subnet %s:\n%s", name, nerdctlDefaultSubnet, out)
	}
	if _, err := os.Stat(filepath.Join(bridgeLeaseDir, m[1])); err != nil {
		n.e.T.Fatalf("%s has %s, which host-local did not lease: %v", name, m[1], err)
	}
	return net.ParseIP(m[1])
}

// checkServes fails unless the container's HTTP server answers at ip from the host
// (through the bridge) with the container's hostname.
func checkServes(t *testing.T, ip net.IP, hostname string) {
	t.Helper()
	url := fmt.Sprintf("http://%s:8080/", ip)
	client := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(lineTimeout)
	for {
		resp, err := client.Get(url)
		if err == nil {
			body, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if rerr == nil && resp.StatusCode == http.StatusOK && strings.TrimSpace(string(body)) == hostname {
				t.Logf("GET %s from the host: %q", url, strings.TrimSpace(string(body)))
				return
			}
			err = fmt.Errorf("status %s, body %q, read error %v", resp.Status, body, rerr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s from the host: %v", url, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkReachesGateway fails unless the container reaches a TCP listener of the host
// on the bridge's address (the default route's gateway).
func (n *nerdctl) checkReachesGateway(name string) {
	n.e.T.Helper()
	iface, err := net.InterfaceByName(nerdctlBridge)
	if err != nil {
		n.e.T.Fatalf("bridge of nerdctl's default network: %v", err)
	}
	addrs, err := iface.Addrs()
	if err != nil || len(addrs) == 0 {
		n.e.T.Fatalf("addresses of %s: %v %v", nerdctlBridge, addrs, err)
	}
	gw := addrs[0].(*net.IPNet).IP
	l, err := net.Listen("tcp", net.JoinHostPort(gw.String(), "0"))
	if err != nil {
		n.e.T.Fatal(err)
	}
	defer l.Close()
	const token = "from-the-host"
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, token) }),
		ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	defer srv.Shutdown(context.Background())
	url := "http://" + l.Addr().String() + "/"
	out := n.must("exec", name, "/bin/busybox", "wget", "-q", "-O", "-", url) // no -T: Debian's busybox 1.35 wget crashes with it
	if strings.TrimSpace(out) != token {
		n.e.T.Fatalf("wget %s in the container printed %q, want %q", url, out, token)
	}
	n.e.T.Logf("the container reached %s (the bridge's address)", url)
}

// checkLoopback fails unless the container has a working loopback: lo with
// 127.0.0.1, and its own HTTP server answering there (runsc gives the sandbox only
// the interfaces that are up; nerdctl leaves lo down, the shim brings it up).
func (n *nerdctl) checkLoopback(name, hostname string) {
	n.e.T.Helper()
	if out := n.must("exec", name, "/bin/busybox", "ip", "-4", "-o", "addr", "show", "lo"); !strings.Contains(out, "inet 127.0.0.1/8") {
		n.e.T.Fatalf("lo of %s has no 127.0.0.1/8:\n%s", name, out)
	}
	deadline := time.Now().Add(lineTimeout)
	for {
		out, err := n.run("exec", name, "/bin/busybox", "wget", "-q", "-O", "-", "http://127.0.0.1:8080/")
		if err == nil && strings.TrimSpace(out) == hostname {
			return
		}
		if time.Now().After(deadline) {
			n.e.T.Fatalf("the container's own server does not answer on 127.0.0.1: %q, %v", out, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestNerdctlNoNetworkLoopback: with `--network none` a container still has a
// working loopback, as under runc.
func TestNerdctlNoNetworkLoopback(t *testing.T) {
	e := setup(t, harness.Options{})
	n := e.newNerdctl()
	name := harness.RandomID("lo")
	id := n.runDetached(append([]string{"--name", name, "--hostname", name, "--network", "none", "--runtime", e.D.RuntimeName, testimage.Ref}, webCounterArgs...)...)
	n.waitCounts(name, 2)
	n.checkLoopback(name, name)
	n.must("rm", "-f", name)
	e.CheckNoTrace(id)
}

// TestNerdctlDefaultNetwork runs a container under the shim on nerdctl's default
// network, as `nerdctl run` does without --network: the "bridge" network nerdctl
// creates on first use (bridge nerdctl0, 10.4.0.0/24, the bridge, portmap, firewall and
// tuning CNI plugins, with iptables; hack/tools.sh provides them). The container gets an
// address of that subnet, its HTTP server answers the host through the bridge, and it
// reaches a listener of the host on the bridge's address. Then a nerdctl checkpoint
// round trip on that network: `nerdctl checkpoint create`, `nerdctl stop`, `nerdctl
// start --checkpoint`; the counter continues from the checkpoint and the restored
// sandbox is on the network again (nerdctl's hook attaches its new network namespace):
// the server, restored with it, answers the host.
//
// nerdctl0 and the CNI iptables chains are the host's, so the test holds a host-wide
// lock and puts them back as they were (useDefaultNetwork).
func TestNerdctlDefaultNetwork(t *testing.T) {
	useDefaultNetwork(t)
	e := setup(t, harness.Options{})
	n := e.newNerdctl()
	name := harness.RandomID("web")
	id := n.runDetached(append([]string{"--name", name, "--hostname", name, "--runtime", e.D.RuntimeName, testimage.Ref}, webCounterArgs...)...)
	before := n.waitCounts(name, 3)
	ip := n.containerIP(name)
	t.Logf("%s is at %s on nerdctl's default network", name, ip)
	checkServes(t, ip, name)
	n.checkReachesGateway(name)
	n.checkLoopback(name, name)

	lo := before[len(before)-1]
	n.must("checkpoint", "create", name, "ck1")
	n.must("stop", name)
	n.must("start", "--checkpoint", "ck1", name)
	restored := n.waitRestored(name, 0)
	if restored[0] < lo {
		t.Fatalf("restored counter started at %d; the checkpoint was taken after count=%d (a restarted process starts at 0)", restored[0], lo)
	}
	t.Logf("checkpoint taken after count=%d; restored counter continued at %d", lo, restored[0])
	ip2 := n.containerIP(name)
	t.Logf("restored %s is at %s", name, ip2)
	checkServes(t, ip2, name)
	n.checkReachesGateway(name)

	n.must("rm", "-f", name)
	e.CheckNoTrace(id)
}
