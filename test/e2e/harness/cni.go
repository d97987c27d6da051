package harness

import (
	"encoding/hex"
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
	case CNILoopback:
		conf = fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "rcuda-lo-%s",
  "plugins": [{"type": "loopback"}]
}
`, id)
	default:
		return fmt.Errorf("harness: unknown Options.CNI %q (want %q or %q)", d.opts.CNI, CNIPtp, CNILoopback)
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
