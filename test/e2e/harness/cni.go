package harness

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// writeCNIConfig writes the pods' CNI network (Options.CNI) and crictl's config. The
// default is a ptp network (CRI needs a plugin that yields an IP address for a pod
// with its own network namespace; loopback alone fails with "failed to find network
// info for sandbox"). Each daemon gets its own network name, /24 subnet and IPAM data
// directory, and no IP masquerading, so nothing host-global but the pods' veth pairs
// is touched. CNILoopback writes a loopback-only conflist, for host-network pods.
// CNIBridge creates the daemon's bridge first (setupBridge).
func (d *Daemon) writeCNIConfig() error {
	dir := filepath.Join(d.Dir, "cni")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	id := filepath.Base(d.Dir) // 8 hex digits
	var conf string
	switch d.opts.CNI {
	case "", CNIPtp:
		var err error
		if conf, err = ptpConflist(id, filepath.Join(d.Dir, "cni-ipam")); err != nil {
			return err
		}
	case CNIBridge:
		var err error
		if conf, err = d.setupBridgeNetwork(id); err != nil {
			return err
		}
	case CNILoopback:
		conf = fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "rcuda-lo-%s",
  "plugins": [{"type": "loopback"}]
}
`, id)
	default:
		return fmt.Errorf("harness: unknown Options.CNI %q (want %q, %q or %q)", d.opts.CNI, CNIPtp, CNILoopback, CNIBridge)
	}
	if err := os.WriteFile(filepath.Join(dir, "10-rcuda.conflist"), []byte(conf), 0o644); err != nil {
		return err
	}
	crictl := fmt.Sprintf("runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 60\n", d.Address, d.Address)
	return os.WriteFile(d.CrictlConfigPath(), []byte(crictl), 0o644)
}

// ptpConflist returns the ptp network of the daemon with id (8 hex digits): its own
// network name, /24 subnet and IPAM data directory.
func ptpConflist(id, ipamDir string) (string, error) {
	b, err := hex.DecodeString(id[:4])
	if err != nil {
		return "", err
	}
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "rcuda-%s",
  "plugins": [{
    "type": "ptp",
    "ipMasq": false,
    "ipam": {"type": "host-local", "subnet": "10.%d.%d.0/24", "dataDir": %q}
  }]
}
`, id, 200+int(b[0])%50, b[1], ipamDir), nil
}

// setupBridgeNetwork creates the daemon's bridge (setupBridge) and returns its
// conflist: the bridge plugin attaching pods to it, host-local IPAM on its subnet with
// the IPAM state in the daemon's directory, and loopback.
func (d *Daemon) setupBridgeNetwork(id string) (string, error) {
	b, err := setupBridge(id)
	if err != nil {
		return "", err
	}
	d.bridge = b
	d.Bridge, d.PodSubnet, d.BridgeAddress = b.name, b.subnet.String(), b.gateway.IP.String()
	conf, err := json.MarshalIndent(map[string]any{
		"cniVersion": "1.0.0",
		"name":       "rcuda-br-" + id,
		"plugins": []map[string]any{
			{
				"type":      "bridge",
				"bridge":    b.name,
				"isGateway": false, // the harness gave the bridge its address (see setupBridge)
				"ipMasq":    false,
				"ipam": map[string]any{
					"type":    "host-local",
					"subnet":  b.subnet.String(),
					"gateway": b.gateway.IP.String(),
					"dataDir": filepath.Join(d.Dir, "cni-ipam"),
				},
			},
			{"type": "loopback"},
		},
	}, "", "  ")
	return string(conf) + "\n", err
}
