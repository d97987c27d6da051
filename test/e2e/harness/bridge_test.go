//go:build e2e

package harness

import (
	"net"
	"strings"
	"testing"
)

// TestBridgeSetup creates two daemons' bridges (root: it changes the host's network
// interfaces, hence the e2e tag): distinct /24s of 10.88.0.0/16, each bridge up with
// its .1, claims held until released, nothing left after.
func TestBridgeSetup(t *testing.T) {
	ids := []string{strings.TrimPrefix(RandomID("x"), "x-"), strings.TrimPrefix(RandomID("x"), "x-")}
	var nets []*bridgeNet
	t.Cleanup(func() {
		for _, b := range nets {
			_, _ = b.release()
		}
	})
	for _, id := range ids {
		b, err := setupBridge(id)
		if err != nil {
			t.Fatal(err)
		}
		nets = append(nets, b)
		ifc, err := net.InterfaceByName(b.name)
		if err != nil {
			t.Fatalf("bridge %s not created: %v", b.name, err)
		}
		if ifc.Flags&net.FlagUp == 0 {
			t.Errorf("bridge %s is down", b.name)
		}
		addrs, _ := ifc.Addrs()
		if len(addrs) == 0 || addrs[0].String() != b.gateway.String() {
			t.Errorf("bridge %s has addresses %v, want %s", b.name, addrs, b.gateway)
		}
		if !b.subnet.Contains(b.gateway.IP) || !net.IPv4(10, 88, 0, 0).Equal(b.subnet.IP.Mask(net.CIDRMask(16, 32))) {
			t.Errorf("subnet %s, gateway %s", b.subnet, b.gateway)
		}
		if used, err := hostUses(b.subnet); err != nil || !used {
			t.Errorf("hostUses(%s) = %v, %v once the bridge has its address", b.subnet, used, err)
		}
	}
	if nets[0].subnet.String() == nets[1].subnet.String() {
		t.Fatalf("two daemons got the same subnet %s", nets[0].subnet)
	}
	for _, b := range nets {
		if _, err := b.release(); err != nil {
			t.Error(err)
		}
		if linkExists(b.name) {
			t.Errorf("bridge %s still exists after release", b.name)
		}
	}
	nets = nil
}
