package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/defaults"
	"golang.org/x/sys/unix"
)

const (
	// DefaultNamespace is the containerd namespace tests use unless they choose another.
	DefaultNamespace = "rcuda-e2e"
	// CRINamespace is the namespace of the CRI plugin.
	CRINamespace = "k8s.io"
	// RuncRuntimeName is containerd's runc shim, used with runsc as its binary for
	// reference runs.
	RuncRuntimeName = "io.containerd.runc.v2"
	// CRIRuntimeHandler is the CRI runtime handler that selects our shim; it is also the
	// CRI default runtime.
	CRIRuntimeHandler = "runsc-cuda"
	// CRIRuncRunscHandler selects the runc shim with runsc as its binary under CRI.
	CRIRuncRunscHandler = "runc-runsc"

	defaultBaseDir = "/var/lib/rcuda-e2e"
	stopTimeout    = 10 * time.Second
	startTimeout   = 60 * time.Second
)

// Options configure StartContainerd.
type Options struct {
	// Version is the containerd version ("2.4.2", "2.3.7"); "" is the default pinned one.
	Version string
	// CRI enables the CRI plugins (disabled otherwise), with our shim as the default
	// runtime, the test image as the pinned sandbox image, restrict_oom_score_adj (runsc
	// cannot lower oom_score_adj here) and the pinned CNI plugins.
	CRI bool
	// ExtraConfig is TOML merged into containerd's generated config (its values win;
	// tables merge key by key, so it may repeat tables the harness writes).
	ExtraConfig string
	// ShimConfig is TOML merged into the shim's runsc-cuda.toml the same way; for
	// example "[runsc_config]\nnvproxy = \"true\"" adds a runsc flag.
	ShimConfig string
	// Snapshotter overrides the snapshotter ("" picks overlayfs when it works on this
	// host, else native).
	Snapshotter string
	// WithoutShim starts containerd without building the project's shim, for tests of
	// the harness itself and reference runs with other runtimes.
	WithoutShim bool
	// CNI selects the CRI's pod network (with CRI only): "" or CNIPtp is a private
	// ptp network per daemon, for pods with their own network namespace; CNILoopback
	// is a loopback-only conflist, enough for pods in the host network namespace
	// (linux.security_context.namespace_options.network = NODE), which the CRI does not
	// attach to CNI; a pod with its own network namespace fails on it with "failed to
	// find network info for sandbox". CNIBridge is a Linux bridge per daemon with a /24
	// of 10.88.0.0/16 no other daemon or host network uses (Daemon.Bridge,
	// Daemon.PodSubnet): pods with their own network namespace get an address on it
	// that the host (the test) reaches; the bridge, the pods' veth pairs and network
	// namespaces (kept under the daemon's state directory) go with the cleanup.
	CNI string
}

// Options.CNI values.
const (
	CNIPtp      = "ptp"
	CNILoopback = "loopback"
	CNIBridge   = "bridge"
)

// Daemon is a private containerd started for one test. Its fields are read-only.
type Daemon struct {
	Version      string // containerd version
	Dir          string // everything of this daemon lives here
	Root         string
	State        string
	Address      string // gRPC socket
	TTRPCAddress string
	Namespace    string // default namespace of Client and Ctr
	Snapshotter  string
	ConfigPath   string
	LogPath      string // containerd's log, which includes the shims' logs

	RuntimeName    string // io.containerd.runsc-cuda.v1
	ShimConfigPath string // the shim's TOML options (runtimeoptions ConfigPath)
	RunscRoot      string // runsc --root of our shim
	RunscLogDir    string // runsc debug logs of our shim
	RuncRunscRoot  string // runsc --root when run by containerd's runc shim

	// With Options.CNI = CNIBridge: the pods' bridge, the subnet of their addresses
	// and the host's address on the bridge; empty otherwise.
	Bridge        string
	PodSubnet     string // e.g. 10.88.7.0/24
	BridgeAddress string // e.g. 10.88.7.1

	Tools      ToolSet
	Shim       ShimBinaries    // zero with Options.WithoutShim
	Containerd ContainerdTools // this daemon's containerd and ctr binaries

	t    testing.TB
	opts Options
	env  []string

	bridge *bridgeNet // Options.CNI = CNIBridge

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
	client *containerd.Client
}

// BaseDir returns the directory under which daemons and shim builds live:
// $RCUDA_E2E_DIR or /var/lib/rcuda-e2e. It is never under /tmp, where runsc cannot run
// binaries or keep state.
func BaseDir() (string, error) {
	dir := os.Getenv("RCUDA_E2E_DIR")
	if dir == "" {
		dir = defaultBaseDir
	}
	dir = filepath.Clean(dir)
	if dir == "/tmp" || strings.HasPrefix(dir, "/tmp/") {
		return "", fmt.Errorf("RCUDA_E2E_DIR=%s is under /tmp, which the runsc sandbox covers with a tmpfs; choose another directory", dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	return dir, nil
}

// StartContainerd starts a private containerd for the test and registers its cleanup:
// every task and container is killed and deleted, the daemon stopped, leftover shims
// and runsc processes of this daemon killed, mounts under its directory unmounted and
// the directory removed; when the test failed, the tails of the logs are logged first.
func StartContainerd(t testing.TB, opts Options) *Daemon {
	t.Helper()
	tools, err := Tools()
	if err != nil {
		t.Fatal(err)
	}
	ctrd, err := tools.ContainerdVersion(opts.Version)
	if err != nil {
		t.Fatal(err)
	}
	base, err := BaseDir()
	if err != nil {
		t.Fatal(err)
	}
	reapStaleDirs(t, base)

	var shim ShimBinaries
	if !opts.WithoutShim {
		shim = RequireShim(t)
	}

	dir, err := makeDaemonDir(base)
	if err != nil {
		t.Fatal(err)
	}
	d := &Daemon{
		Version:        ctrd.Version,
		Dir:            dir,
		Root:           filepath.Join(dir, "root"),
		State:          filepath.Join(dir, "state"),
		Address:        filepath.Join(dir, "c.sock"),
		TTRPCAddress:   filepath.Join(dir, "c.sock.ttrpc"),
		Namespace:      DefaultNamespace,
		ConfigPath:     filepath.Join(dir, "containerd.toml"),
		LogPath:        filepath.Join(dir, "containerd.log"),
		RuntimeName:    RuntimeName,
		ShimConfigPath: filepath.Join(dir, "runsc-cuda.toml"),
		RunscRoot:      filepath.Join(dir, "runsc"),
		RunscLogDir:    filepath.Join(dir, "runsc-logs"),
		RuncRunscRoot:  filepath.Join(dir, "runsc-runc"),
		Tools:          tools,
		Shim:           shim,
		Containerd:     ctrd,
		t:              t,
		opts:           opts,
	}
	// Registered first, so it also runs when anything below fails.
	t.Cleanup(d.cleanup)

	d.Snapshotter = opts.Snapshotter
	if d.Snapshotter == "" {
		d.Snapshotter = chooseSnapshotter(dir)
	}
	for _, p := range []string{d.Root, d.State, d.RunscRoot, d.RunscLogDir, d.RuncRunscRoot} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.writeShimConfig(); err != nil {
		t.Fatal(err)
	}
	if err := d.writeConfig(); err != nil {
		t.Fatal(err)
	}
	d.env = d.daemonEnv()
	if err := d.start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, ns := range d.namespaces() {
		err := d.client.NamespaceService().Create(ctx, ns, map[string]string{defaults.DefaultSnapshotterNSLabel: d.Snapshotter})
		if err != nil {
			t.Fatalf("create namespace %s: %v", ns, err)
		}
	}
	t.Logf("containerd %s started: dir %s, snapshotter %s", d.Version, d.Dir, d.Snapshotter)
	return d
}

// namespaces are those the harness creates, with the default snapshotter label.
func (d *Daemon) namespaces() []string {
	if d.opts.CRI {
		return []string{d.Namespace, CRINamespace}
	}
	return []string{d.Namespace}
}

// makeDaemonDir creates base/<8 hex digits> (short: unix socket paths must stay under
// 108 bytes) and records the owning test binary in it.
func makeDaemonDir(base string) (string, error) {
	for range 10 {
		b := make([]byte, 4)
		if _, err := rand.Read(b); err != nil {
			return "", err
		}
		dir := filepath.Join(base, hex.EncodeToString(b))
		if err := os.Mkdir(dir, 0o711); errors.Is(err, os.ErrExist) {
			continue
		} else if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(dir, "owner"), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			return "", err
		}
		return dir, nil
	}
	return "", fmt.Errorf("could not create a unique directory under %s", base)
}

// chooseSnapshotter returns overlayfs when an overlay mount works under dir, else
// native (which copies layers, slower but works on any filesystem).
func chooseSnapshotter(dir string) string {
	probe := filepath.Join(dir, "overlay-probe")
	defer os.RemoveAll(probe)
	paths := map[string]string{}
	for _, p := range []string{"lower", "upper", "work", "merged"} {
		paths[p] = filepath.Join(probe, p)
		if err := os.MkdirAll(paths[p], 0o755); err != nil {
			return "native"
		}
	}
	data := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", paths["lower"], paths["upper"], paths["work"])
	if err := unix.Mount("overlay", paths["merged"], "overlay", 0, data); err != nil {
		return "native"
	}
	_ = unix.Unmount(paths["merged"], unix.MNT_DETACH)
	return "overlayfs"
}

// daemonEnv returns containerd's environment: the project's shim directory first on
// PATH (containerd finds containerd-shim-<name>-<version> there), then the runc shim's.
func (d *Daemon) daemonEnv() []string {
	var path []string
	if d.Shim.Dir != "" {
		path = append(path, d.Shim.Dir)
	}
	path = append(path, filepath.Dir(d.Tools.ShimRuncV2), filepath.Dir(d.Tools.Runsc))
	if d.Tools.Criu != "" {
		path = append(path, filepath.Dir(d.Tools.Criu))
	}
	path = append(path, os.Getenv("PATH"))
	env := []string{"PATH=" + strings.Join(path, ":")}
	if d.ShimConfigPath != "" {
		// Used by the shim when a client sends no runtime options (nerdctl,
		// ctr without --runtime-config-path).
		env = append(env, "RUNSC_CUDA_CONFIG="+d.ShimConfigPath)
	}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PATH=") && !strings.HasPrefix(kv, "CONTAINERD_") && !strings.HasPrefix(kv, "RUNSC_CUDA_CONFIG=") {
			env = append(env, kv)
		}
	}
	return env
}

// start starts containerd and waits until it serves requests.
func (d *Daemon) start() error {
	logf, err := os.OpenFile(d.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "=== harness: starting containerd %s at %s\n", d.Version, time.Now().Format(time.RFC3339Nano))

	cmd := exec.Command(d.Containerd.Containerd, "--config", d.ConfigPath)
	cmd.Env = d.env
	cmd.Dir = d.Dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	// Own process group: a ^C to `go test` reaches the test binary, not the daemon.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", d.Containerd.Containerd, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	d.mu.Lock()
	d.cmd, d.exited = cmd, exited
	d.mu.Unlock()

	if d.client == nil {
		client, err := containerd.New(d.Address, containerd.WithDefaultNamespace(d.Namespace))
		if err != nil {
			return fmt.Errorf("containerd client for %s: %w", d.Address, err)
		}
		d.client = client
	}
	deadline := time.Now().Add(startTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := d.client.Version(ctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("containerd %s exited during startup (%s); log:\n%s", d.Version, cmd.ProcessState, tail(d.Logs(), 60))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd %s not ready within %v: %v; log:\n%s", d.Version, startTimeout, err, tail(d.Logs(), 60))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop stops containerd (SIGTERM, then SIGKILL after 10s) by the PID the harness
// started. Shims and their tasks keep running. It is a no-op when already stopped.
func (d *Daemon) Stop() error {
	d.mu.Lock()
	cmd, exited := d.cmd, d.exited
	d.cmd = nil
	d.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		return nil
	case <-time.After(stopTimeout):
	}
	_ = cmd.Process.Kill()
	select {
	case <-exited:
		return fmt.Errorf("containerd did not stop within %v of SIGTERM and was killed", stopTimeout)
	case <-time.After(stopTimeout):
		return fmt.Errorf("containerd (pid %d) did not exit after SIGKILL", cmd.Process.Pid)
	}
}

// Running reports whether the daemon process is running.
func (d *Daemon) Running() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil {
		return false
	}
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// PID returns the daemon's process ID, or 0 when it is stopped.
func (d *Daemon) PID() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil {
		return 0
	}
	return d.cmd.Process.Pid
}

// Restart stops containerd and starts it again with the same root, state and config;
// running tasks stay in their shims and containerd reconnects to them. Client() keeps
// working (it reconnects).
func (d *Daemon) Restart(t testing.TB) {
	t.Helper()
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := d.start(); err != nil {
		t.Fatal(err)
	}
}

// Client returns the daemon's client, with Namespace as its default namespace. It is
// shared by the test and closed by the cleanup; do not close it.
func (d *Daemon) Client() *containerd.Client { return d.client }

// Logs returns containerd's log (which includes the shims' logs) so far.
func (d *Daemon) Logs() string {
	b, err := os.ReadFile(d.LogPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", d.LogPath, err)
	}
	return string(b)
}
