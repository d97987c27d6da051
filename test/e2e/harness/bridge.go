package harness

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

const (
	// bridgeClaimDir holds one lock file per /24 of bridgeRange; a daemon holds an
	// exclusive flock on its subnet's file for its life, so concurrent test binaries
	// (any RCUDA_E2E_DIR) never pick the same one, and a killed one's claim ends with
	// it. It is on /run, which a reboot empties.
	bridgeClaimDir = "/run/rcuda-e2e/cni-bridge"
	// bridgePrefix names the bridges: bridgePrefix + the daemon's 8 hex digits, 13
	// characters (Linux allows 15).
	bridgePrefix = "rcbr-"
)

// bridgeRange is the /16 the CNIBridge subnets (/24s) come from.
var bridgeRange = net.IPv4(10, 88, 0, 0).To4()

// bridgeNet is the CNIBridge network of one daemon: its bridge, subnet and claim.
type bridgeNet struct {
	name    string     // the Linux bridge
	subnet  *net.IPNet // the pods' /24
	gateway *net.IPNet // the bridge's address in it (.1)
	claim   *os.File   // flocked while the daemon lives
}

// bridgeName is the bridge of the daemon whose directory is named id.
func bridgeName(id string) string { return bridgePrefix + id }

// setupBridge claims a /24 of bridgeRange that no other daemon holds and that no host
// interface address or route overlaps (trying from one derived from id, the daemon's
// 8 hex digits), and creates the daemon's bridge with the subnet's first address. The
// CNI bridge plugin then only attaches pods to it (isGateway stays false: with it the
// plugin would set the host-global net.ipv4.ip_forward).
func setupBridge(id string) (*bridgeNet, error) {
	if err := os.MkdirAll(bridgeClaimDir, 0o755); err != nil {
		return nil, err
	}
	seed, err := hex.DecodeString(id[:2])
	if err != nil {
		return nil, err
	}
	for i := range 256 {
		third := byte((int(seed[0]) + i) % 256)
		subnet := &net.IPNet{IP: net.IPv4(bridgeRange[0], bridgeRange[1], third, 0).To4(), Mask: net.CIDRMask(24, 32)}
		claim, ok, err := claimSubnet(subnet, id)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		b := &bridgeNet{
			name:    bridgeName(id),
			subnet:  subnet,
			gateway: &net.IPNet{IP: net.IPv4(bridgeRange[0], bridgeRange[1], third, 1).To4(), Mask: subnet.Mask},
			claim:   claim,
		}
		if err := createBridge(b.name, b.gateway); err != nil {
			claim.Close()
			return nil, err
		}
		return b, nil
	}
	return nil, fmt.Errorf("no free /24 in %s/16 for a CNI bridge (claims in %s)", bridgeRange, bridgeClaimDir)
}

// claimSubnet takes subnet's claim file unless another process holds it or the host
// already uses an overlapping network; the open file is the claim.
func claimSubnet(subnet *net.IPNet, owner string) (*os.File, bool, error) {
	f, err := os.OpenFile(filepath.Join(bridgeClaimDir, subnet.IP.String()), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, false, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, false, nil
		}
		return nil, false, err
	}
	// Checked under the lock: a bridge a killed daemon left keeps its address until
	// its directory is reaped.
	if used, err := hostUses(subnet); err != nil || used {
		f.Close()
		return nil, false, err
	}
	_ = f.Truncate(0)
	_, _ = fmt.Fprintf(f, "pid %d daemon %s\n", os.Getpid(), owner)
	return f, true, nil
}

// hostUses reports whether a host interface address or an IPv4 route (other than a
// default route) overlaps subnet.
func hostUses(subnet *net.IPNet) (bool, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false, err
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && overlaps(subnet, n) {
			return true, nil
		}
	}
	routes, err := ipv4Routes()
	if err != nil {
		return false, err
	}
	for _, r := range routes {
		if ones, _ := r.dst.Mask.Size(); ones > 0 && overlaps(subnet, r.dst) {
			return true, nil
		}
	}
	return false, nil
}

func overlaps(a, b *net.IPNet) bool {
	an := &net.IPNet{IP: a.IP.Mask(a.Mask), Mask: a.Mask}
	bn := &net.IPNet{IP: b.IP.Mask(b.Mask), Mask: b.Mask}
	return an.Contains(bn.IP) || bn.Contains(an.IP)
}

// route is one IPv4 route of the main table.
type route struct {
	dst *net.IPNet
	dev string
}

// ipv4Routes reads the main routing table (/proc/net/route).
func ipv4Routes() ([]route, error) {
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []route
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 8 {
			continue
		}
		dst, err1 := strconv.ParseUint(fields[1], 16, 32)
		mask, err2 := strconv.ParseUint(fields[7], 16, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		ip, m := make(net.IP, 4), make(net.IPMask, 4)
		binary.NativeEndian.PutUint32(ip, uint32(dst)) // the kernel prints the network-order words as host integers
		binary.NativeEndian.PutUint32(m, uint32(mask))
		out = append(out, route{dst: &net.IPNet{IP: ip, Mask: m}, dev: fields[0]})
	}
	return out, sc.Err()
}

// RouteDevice returns the interface of the host's route for exactly the network cidr
// (e.g. Daemon.PodSubnet), or "" when there is none.
func RouteDevice(cidr string) (string, error) {
	_, want, err := net.ParseCIDR(cidr)
	if err != nil {
		return "", err
	}
	routes, err := ipv4Routes()
	if err != nil {
		return "", err
	}
	for _, r := range routes {
		if r.dst.String() == want.String() {
			return r.dev, nil
		}
	}
	return "", nil
}

// BridgePorts lists the interfaces on the daemon's CNIBridge bridge: the host ends of
// its pods' veth pairs (none without CNIBridge).
func (d *Daemon) BridgePorts() []string {
	if d.Bridge == "" {
		return nil
	}
	return bridgePorts(d.Bridge)
}

// removeBridge deletes what is left on the daemon's bridge (pods' veth pairs whose
// network namespace outlived them) and the bridge, and returns the ports it found.
func removeBridge(name string) ([]string, error) {
	ports := bridgePorts(name)
	var errs []error
	for _, p := range ports {
		errs = append(errs, deleteLink(p))
	}
	errs = append(errs, deleteLink(name))
	return ports, errors.Join(errs...)
}

// cniCacheDir is where libcni (in containerd's CRI) caches each attachment's result
// until its CNI DEL: host-global, so a pod that was never torn down leaves its entries.
const cniCacheDir = "/var/lib/cni/results"

// removeCNICache removes libcni's cached results of attachments whose network
// namespace was under dir (the daemon's pods with CNIBridge, whose namespaces the CRI
// keeps in the daemon's state) and returns their file names.
func removeCNICache(dir string) []string {
	entries, _ := os.ReadDir(cniCacheDir)
	var removed []string
	for _, e := range entries {
		path := filepath.Join(cniCacheDir, e.Name())
		raw, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		var c struct {
			NetNS string `json:"netns"`
		}
		if json.Unmarshal(raw, &c) == nil && strings.HasPrefix(c.NetNS, dir+"/") && os.Remove(path) == nil {
			removed = append(removed, e.Name())
		}
	}
	return removed
}

// release deletes the bridge and ends the claim on its subnet.
func (b *bridgeNet) release() ([]string, error) {
	ports, err := removeBridge(b.name)
	b.claim.Close()
	return ports, err
}
