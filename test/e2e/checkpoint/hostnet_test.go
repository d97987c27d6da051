//go:build e2e

package checkpoint

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

// lockHost takes the host-wide lock name, a file under the e2e base directory held with
// flock until the test ends (the kernel drops it when the test binary dies), for tests
// that use something of the host that tests of other binaries could use at the same
// time. It fails after 10 minutes of waiting.
func lockHost(t *testing.T, name string) {
	t.Helper()
	base, err := harness.BaseDir()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(base, "lock-"+name)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() }) // releases the lock
	deadline := time.Now().Add(10 * time.Minute)
	for waited := false; ; waited = true {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			t.Fatalf("flock %s: %v", path, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("host lock %s still held by another test after 10 minutes", path)
		}
		if !waited {
			t.Logf("waiting for the host lock %s (another test holds it)", path)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// What nerdctl's default network "bridge" (nerdctl pkg/netutil/netutil_unix.go: the
// bridge plugin with ipMasq on bridge nerdctl0, host-local IPAM, portmap, firewall,
// tuning) changes on the host, beside the containers' own network namespaces:
//   - the bridge nerdctl0 (its name is fixed for the default network; nerdctl.toml and
//     the environment set only its subnet, bridge_ip);
//   - iptables chains CNI-* and the rules that jump to them, in the filter and nat
//     tables (masquerading, CNI-FORWARD, CNI-ISOLATION-STAGE-*, CNI-HOSTPORT-*), which
//     every such network shares;
//   - host-local's leases in /var/lib/cni/networks/bridge and libcni's result cache
//     /var/lib/cni/results/bridge-* (the directories above them are the CRI's too);
//   - net.ipv4.ip_forward, which the bridge plugin turns on.
const (
	nerdctlBridge  = "nerdctl0"
	cniStateDir    = "/var/lib/cni"
	ipForwardPath  = "/proc/sys/net/ipv4/ip_forward"
	bridgeLeaseDir = cniStateDir + "/networks/bridge"
)

var iptablesTables = []string{"filter", "nat"}

// hostNetState is a snapshot of what nerdctl's default network changes on the host.
type hostNetState struct {
	Bridge    bool                // nerdctl0 exists
	IPTables  map[string][]string // table: its CNI chains (":NAME") and rules mentioning CNI- ("-A ...")
	CNIPaths  []string            // networks/bridge and results/bridge-* under /var/lib/cni
	CNIDirs   []string            // which of /var/lib/cni and its networks and results exist
	IPForward string
}

// unshared returns s without CNIDirs: the CRI's CNI plugins (of other tests, under no lock)
// use those directories too and may fill one that the test created meanwhile.
func (s hostNetState) unshared() hostNetState {
	s.CNIDirs = nil
	return s
}

// claimHost takes the host lock name for the test and, while the test runs, keeps a
// record of what it must put back, in a file under the e2e base directory: take checks
// the host and returns the record, undo puts the host back as a record says, when the
// test ends (run this before setup, so that it happens after the test's daemon is
// gone). A record left by a test binary that died is undone first.
func claimHost[S any](t *testing.T, name string, take func() (S, error), undo func(S) error) {
	t.Helper()
	lockHost(t, name)
	base, err := harness.BaseDir()
	if err != nil {
		t.Fatal(err)
	}
	record := filepath.Join(base, name+".record")
	if raw, err := os.ReadFile(record); err == nil {
		var old S
		if err := json.Unmarshal(raw, &old); err != nil {
			t.Fatalf("%s: %v", record, err)
		}
		t.Logf("%s is left by a test that died: putting the host back as it says", record)
		if err := undo(old); err != nil {
			t.Fatal(err)
		}
	}
	s, err := take()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(record, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := undo(s); err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		_ = os.Remove(record)
	})
}

// useDefaultNetwork lets the test use nerdctl's default network: one such test at a
// time on the host (the bridge's name is fixed and the iptables chains are shared, so
// nothing could be put back while another test uses them), and the host's nerdctl0,
// CNI chains and rules, leases, cache entries and ip_forward as they were before, when
// it ends (claimHost).
func useDefaultNetwork(t *testing.T) {
	t.Helper()
	tools, err := harness.Tools()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"bridge", "host-local", "portmap", "firewall", "tuning"} {
		if _, err := os.Stat(filepath.Join(tools.CNIBinDir, p)); err != nil {
			t.Fatalf("nerdctl's default network needs the CNI plugin %s: %v; run `make tools` (hack/tools.sh)", p, err)
		}
	}
	if _, err := os.Stat(sbin("iptables")); err != nil {
		t.Fatalf("nerdctl's default network needs iptables: %v; run `make tools` (hack/tools.sh installs Debian's iptables)", err)
	}
	claimHost(t, "nerdctl-bridge", func() (hostNetState, error) {
		s, err := snapshotHostNet()
		if err == nil && s.Bridge {
			err = fmt.Errorf("this host already has the bridge %s of nerdctl's default network (a nerdctl outside the tests?); the test would share it: remove it (ip link del %s) or run elsewhere", nerdctlBridge, nerdctlBridge)
		}
		return s, err
	}, func(s hostNetState) error {
		if err := restoreHostNet(s); err != nil {
			return fmt.Errorf("restoring the host network: %w", err)
		}
		if after, err := snapshotHostNet(); err != nil || !reflect.DeepEqual(after.unshared(), s.unshared()) {
			return fmt.Errorf("the host network after the cleanup differs from before the test (err %v):\nbefore %+v\nafter  %+v", err, s, after)
		}
		return nil
	})
}

func snapshotHostNet() (hostNetState, error) {
	var s hostNetState
	_, err := net.InterfaceByName(nerdctlBridge)
	s.Bridge = err == nil
	s.IPTables = map[string][]string{}
	for _, table := range iptablesTables {
		lines, err := cniIPTables(table)
		if err != nil {
			return s, err
		}
		s.IPTables[table] = lines
	}
	s.CNIPaths, s.CNIDirs = cniPaths()
	raw, err := os.ReadFile(ipForwardPath)
	if err != nil {
		return s, err
	}
	s.IPForward = strings.TrimSpace(string(raw))
	return s, nil
}

// cniIPTables returns the CNI chains (":NAME ...") and the rules that mention CNI-
// ("-A ...") of an iptables table, as iptables-save prints them.
func cniIPTables(table string) ([]string, error) {
	out, err := exec.Command(sbin("iptables-save"), "-t", table).Output()
	if err != nil {
		return nil, fmt.Errorf("iptables-save -t %s: %w", table, err)
	}
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, ":CNI-") || (strings.HasPrefix(l, "-A ") && strings.Contains(l, "CNI-")) {
			lines = append(lines, l)
		}
	}
	return lines, nil
}

// cniPaths lists what exists of networks/bridge and results/bridge-* under
// /var/lib/cni, and of /var/lib/cni and its networks and results directories.
func cniPaths() (paths, dirs []string) {
	for _, p := range []string{cniStateDir, cniStateDir + "/networks", cniStateDir + "/results"} {
		if _, err := os.Lstat(p); err == nil {
			dirs = append(dirs, p)
		}
	}
	if _, err := os.Lstat(bridgeLeaseDir); err == nil {
		paths = append(paths, bridgeLeaseDir)
	}
	results, _ := filepath.Glob(cniStateDir + "/results/bridge-*")
	return append(paths, results...), dirs
}

// restoreHostNet removes what nerdctl's default network added since s was taken.
func restoreHostNet(s hostNetState) error {
	var errs []error
	if _, err := net.InterfaceByName(nerdctlBridge); err == nil && !s.Bridge {
		if out, err := exec.Command("ip", "link", "del", nerdctlBridge).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip link del %s: %v: %s", nerdctlBridge, err, out))
		}
	}
	for _, table := range iptablesTables {
		if err := restoreIPTables(table, s.IPTables[table]); err != nil {
			errs = append(errs, err)
		}
	}
	paths, dirs := cniPaths()
	for _, p := range paths {
		if !slices.Contains(s.CNIPaths, p) {
			if err := os.RemoveAll(p); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// The directories the test created, deepest first, unless other tests have filled
	// them meanwhile.
	slices.Reverse(dirs)
	for _, d := range dirs {
		if slices.Contains(s.CNIDirs, d) {
			continue
		}
		if err := os.Remove(d); err != nil && !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.EEXIST) && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if raw, err := os.ReadFile(ipForwardPath); err == nil && strings.TrimSpace(string(raw)) != s.IPForward && s.IPForward != "" {
		if err := os.WriteFile(ipForwardPath, []byte(s.IPForward+"\n"), 0o644); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// restoreIPTables deletes the CNI rules and chains of table that are not in before, in
// one iptables-restore transaction: the new rules of chains that stay, then the new
// chains, flushed first (so that none still references another).
func restoreIPTables(table string, before []string) error {
	now, err := cniIPTables(table)
	if err != nil {
		return err
	}
	left := map[string]int{}
	for _, l := range before {
		left[l]++
	}
	var added []string
	for _, l := range now {
		if left[l] > 0 {
			left[l]--
			continue
		}
		added = append(added, l)
	}
	var newChains, dels []string
	for _, l := range added {
		if strings.HasPrefix(l, ":") {
			newChains = append(newChains, strings.Fields(l)[0][1:])
		}
	}
	for _, l := range added {
		if strings.HasPrefix(l, "-A ") && !slices.Contains(newChains, strings.Fields(l)[1]) {
			dels = append(dels, "-D "+strings.TrimPrefix(l, "-A "))
		}
	}
	if len(newChains) == 0 && len(dels) == 0 {
		return nil
	}
	script := []string{"*" + table}
	script = append(script, dels...)
	for _, c := range newChains {
		script = append(script, "-F "+c)
	}
	for _, c := range newChains {
		script = append(script, "-X "+c)
	}
	script = append(script, "COMMIT", "")
	cmd := exec.Command(sbin("iptables-restore"), "--noflush")
	cmd.Stdin = strings.NewReader(strings.Join(script, "\n"))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("iptables-restore --noflush (table %s): %v: %s\n%s", table, err, out, strings.Join(script, "\n"))
	}
	return nil
}

// sbin returns the path of an administration command (PATH may lack /usr/sbin).
func sbin(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	return "/usr/sbin/" + name
}
