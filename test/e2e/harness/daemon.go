package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/defaults"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/testimage"
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
	// find network info for sandbox".
	CNI string
}

// Options.CNI values.
const (
	CNIPtp      = "ptp"
	CNILoopback = "loopback"
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

	Tools      ToolSet
	Shim       ShimBinaries    // zero with Options.WithoutShim
	Containerd ContainerdTools // this daemon's containerd and ctr binaries

	t    testing.TB
	opts Options
	env  []string

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

// reapStaleDirs cleans up daemon directories whose test binary is gone (a killed or
// timed-out `go test` does not run its cleanups).
func reapStaleDirs(t testing.TB, base string) {
	entries, _ := os.ReadDir(base)
	for _, e := range entries {
		if !e.IsDir() || len(e.Name()) != 8 {
			continue
		}
		dir := filepath.Join(base, e.Name())
		raw, err := os.ReadFile(filepath.Join(dir, "owner"))
		if err != nil {
			continue // being created, or not ours
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
		if err != nil || processAlive(pid) {
			continue
		}
		killed, unmounted, err := cleanupDir(dir)
		t.Logf("reaped stale e2e directory %s of exited test process %d: killed %d processes, unmounted %d mounts, err %v",
			dir, pid, len(killed), len(unmounted), err)
	}
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

func (d *Daemon) writeShimConfig() error {
	return writeTOML(d.ShimConfigPath, table{
		"binary_name": d.Tools.Runsc,
		"root":        d.RunscRoot,
		"log_level":   "debug",
		"runsc_config": table{
			"debug-log": d.RunscLogDir + "/",
			"debug":     "true",
		},
	}, d.opts.ShimConfig)
}

func (d *Daemon) writeConfig() error {
	cfg := table{
		"version":          3, // containerd 2.4 migrates it to 4; 2.3 reads it natively
		"root":             d.Root,
		"state":            d.State,
		"imports":          []string{},
		"disabled_plugins": []string{"io.containerd.nri.v1.nri"}, // its socket is host-global
		"grpc":             table{"address": d.Address},
		"ttrpc":            table{"address": d.TTRPCAddress},
		"debug":            table{"level": "debug"},
		"plugins":          table{},
	}
	if d.opts.CRI {
		cfg["plugins"] = d.criConfig()
		if err := d.writeCNIConfig(); err != nil {
			return err
		}
	} else {
		cfg["disabled_plugins"] = append(cfg["disabled_plugins"].([]string),
			"io.containerd.grpc.v1.cri",
			"io.containerd.cri.v1.images",
			"io.containerd.cri.v1.runtime",
			"io.containerd.podsandbox.controller.v1.podsandbox",
		)
	}
	return writeTOML(d.ConfigPath, cfg, d.opts.ExtraConfig)
}

func (d *Daemon) criConfig() table {
	return table{
		"io.containerd.cri.v1.images": table{
			"snapshotter":   d.Snapshotter,
			"pinned_images": table{"sandbox": testimage.Ref},
		},
		"io.containerd.cri.v1.runtime": table{
			// runsc cannot lower oom_score_adj without CAP_SYS_RESOURCE.
			"restrict_oom_score_adj": true,
			"containerd": table{
				"default_runtime_name": CRIRuntimeHandler,
				"runtimes": table{
					CRIRuntimeHandler: table{
						"runtime_type": RuntimeName,
						"options":      table{"ConfigPath": d.ShimConfigPath},
					},
					CRIRuncRunscHandler: table{
						"runtime_type": RuncRuntimeName,
						"options":      table{"BinaryName": d.Tools.Runsc, "Root": d.RuncRunscRoot},
					},
				},
			},
			"cni": table{
				"bin_dirs": []string{d.Tools.CNIBinDir},
				"conf_dir": filepath.Join(d.Dir, "cni"),
			},
		},
		"io.containerd.grpc.v1.cri": table{
			"stream_server_address": "127.0.0.1",
			"stream_server_port":    "0",
		},
	}
}

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

// CrictlConfigPath is crictl's config for this daemon (endpoints, a 60 s timeout: the
// default 2 s is too short for sandbox starts); written when CRI is enabled.
func (d *Daemon) CrictlConfigPath() string { return filepath.Join(d.Dir, "crictl.yaml") }

// Crictl runs crictl against this daemon's CRI and returns its output. Without a
// deadline on ctx it is killed after 2 minutes. It needs Options.CRI.
func (d *Daemon) Crictl(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, d.Tools.Crictl, append([]string{"--config", d.CrictlConfigPath()}, args...)...)
	cmd.Env = d.env
	cmd.WaitDelay = 5 * time.Second
	var outb, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &outb, &errb
	if err := cmd.Run(); err != nil {
		return outb.String(), errb.String(), fmt.Errorf("crictl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return outb.String(), errb.String(), nil
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

// RuntimeOpts selects the project's shim with its TOML options, for NewContainer.
func (d *Daemon) RuntimeOpts() containerd.NewContainerOpts {
	return containerd.WithRuntime(d.RuntimeName, &runtimeoptions.Options{ConfigPath: d.ShimConfigPath})
}

// RuncRunscOpts selects containerd's runc shim with runsc as its binary (a reference
// runtime, not the product), for NewContainer.
func (d *Daemon) RuncRunscOpts() containerd.NewContainerOpts {
	return containerd.WithRuntime(RuncRuntimeName, &runcoptions.Options{BinaryName: d.Tools.Runsc, Root: d.RuncRunscRoot})
}

// CtrRuntimeArgs are the `ctr run`/`ctr create` flags that select the project's shim.
func (d *Daemon) CtrRuntimeArgs() []string {
	return []string{"--runtime", d.RuntimeName, "--runtime-config-path", d.ShimConfigPath}
}

// CtrCmd returns a ctr command for this daemon and namespace, for tests that need
// their own stdin/stdout. ctx should carry a deadline: ctr forwards the signals it
// receives to the task, so it is stopped with SIGKILL when ctx ends.
func (d *Daemon) CtrCmd(ctx context.Context, args ...string) *exec.Cmd {
	full := append([]string{"--address", d.Address, "--namespace", d.Namespace}, args...)
	cmd := exec.CommandContext(ctx, d.Containerd.Ctr, full...)
	cmd.Env = d.env
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Ctr runs ctr against this daemon and namespace and returns its output. Without a
// deadline on ctx it is killed (SIGKILL) after 2 minutes.
func (d *Daemon) Ctr(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
	}
	cmd := d.CtrCmd(ctx, args...)
	var outb, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &outb, &errb
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (killed: %v)", err, ctx.Err())
	}
	if err != nil {
		err = fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return outb.String(), errb.String(), err
}

// IO returns a cio.Creator that streams the task's stdio to the given reader and
// writers (any may be nil), with its FIFOs under the daemon's Dir instead of the
// host-global /run/containerd/fifo.
func (d *Daemon) IO(stdin io.Reader, stdout, stderr io.Writer, opts ...cio.Opt) cio.Creator {
	opts = append([]cio.Opt{cio.WithStreams(stdin, stdout, stderr), cio.WithFIFODir(filepath.Join(d.Dir, "fifo"))}, opts...)
	return cio.NewCreator(opts...)
}

// ImportTestImage builds (cached) and imports the test image into the daemon's
// namespace, and into the CRI namespace when CRI is enabled, and returns its reference.
func (d *Daemon) ImportTestImage(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	base, err := BaseDir()
	if err != nil {
		t.Fatal(err)
	}
	tarPath, ref, err := testimage.BuildWithBusybox(ctx, filepath.Join(base, "image-cache"), d.Tools.Busybox)
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range d.namespaces() {
		if _, err := testimage.Import(namespaces.WithNamespace(ctx, ns), d.client, tarPath); err != nil {
			t.Fatalf("import test image into namespace %s: %v", ns, err)
		}
	}
	return ref
}

// Processes returns the live processes that belong to this daemon (containerd, shims,
// runsc), found by their command line or working directory naming the daemon's Dir.
func (d *Daemon) Processes() ([]Process, error) { return processesReferencing(d.Dir) }

// Mounts returns the mount points under the daemon's Dir, deepest first, except
// runsc's null-netns pins: runsc bind-mounts an empty network namespace for its gofers
// at <runsc root>/null-netns and keeps it for the life of that root directory, so it
// is no container's leftover (the cleanup unmounts it).
func (d *Daemon) Mounts() ([]string, error) {
	all, err := mountsUnder(d.Dir)
	if err != nil {
		return nil, err
	}
	var mounts []string
	for _, m := range all {
		if filepath.Base(m) == runscNullNetNS && (strings.HasPrefix(m, d.RunscRoot+"/") || strings.HasPrefix(m, d.RuncRunscRoot+"/")) {
			continue
		}
		mounts = append(mounts, m)
	}
	return mounts, nil
}

// runscNullNetNS is the file under a runsc root (--root, or its per-namespace
// subdirectory under containerd's runc shim) where runsc pins its gofers' empty
// network namespace (gvisor runsc/specutils.NullNetNSFilename).
const runscNullNetNS = "null-netns"

// cleanup tears everything of the daemon down; see StartContainerd.
func (d *Daemon) cleanup() {
	t := d.t
	if t.Failed() {
		d.logDiagnostics()
	}
	if d.Running() && d.client != nil {
		d.deleteAll()
	}
	if err := d.Stop(); err != nil {
		t.Errorf("cleanup: %v", err)
	}
	if d.client != nil {
		_ = d.client.Close()
	}
	killed, unmounted, err := cleanupDir(d.Dir)
	if len(killed) > 0 {
		t.Logf("cleanup: killed leftover processes of %s:\n%s", d.Dir, joinProcesses(killed))
	}
	var unexpected []string
	for _, m := range unmounted {
		if filepath.Base(m) != runscNullNetNS {
			unexpected = append(unexpected, m)
		}
	}
	if len(unexpected) > 0 {
		t.Logf("cleanup: unmounted leftovers %v", unexpected)
	}
	if err != nil {
		t.Errorf("cleanup of %s: %v", d.Dir, err)
	}
}

// deleteAll kills and deletes every task and container in every namespace.
func (d *Daemon) deleteAll() {
	t := d.t
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nss, err := d.client.NamespaceService().List(ctx)
	if err != nil {
		t.Logf("cleanup: list namespaces: %v", err)
		return
	}
	for _, ns := range nss {
		nsctx := namespaces.WithNamespace(ctx, ns)
		containers, err := d.client.Containers(nsctx)
		if err != nil {
			t.Logf("cleanup: list containers in %s: %v", ns, err)
			continue
		}
		for _, c := range containers {
			if err := deleteContainer(nsctx, c); err != nil {
				t.Logf("cleanup: %s/%s: %v", ns, c.ID(), err)
			}
		}
	}
}

// deleteContainer kills the container's task, deletes it, and deletes the container
// with its snapshot; each step is bounded. The task is deleted without
// containerd.WithProcessKill once it has exited: that option sends `kill --all`, which
// runsc rejects for a stopped sandbox ("sandbox is not running"), failing the delete.
func deleteContainer(ctx context.Context, c containerd.Container) error {
	step := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 15*time.Second) }
	var errs []error
	sctx, cancel := step()
	task, err := c.Task(sctx, nil)
	cancel()
	if err == nil {
		exited := false
		sctx, cancel := step()
		if statusC, err := task.Wait(sctx); err == nil {
			if err := task.Kill(sctx, syscall.SIGKILL); err == nil || errdefs.IsNotFound(err) {
				select {
				case <-statusC:
					exited = true
				case <-sctx.Done():
				}
			}
		}
		cancel()
		var opts []containerd.ProcessDeleteOpts
		if !exited {
			opts = append(opts, containerd.WithProcessKill)
		}
		sctx, cancel = step()
		if _, err := task.Delete(sctx, opts...); err != nil {
			errs = append(errs, fmt.Errorf("delete task: %w", err))
		}
		cancel()
	}
	sctx, cancel = step()
	defer cancel()
	if err := c.Delete(sctx, containerd.WithSnapshotCleanup); err != nil {
		errs = append(errs, fmt.Errorf("delete container: %w", err))
	}
	return errors.Join(errs...)
}

// logDiagnostics logs the tails of containerd's log and of the newest runsc logs.
func (d *Daemon) logDiagnostics() {
	t := d.t
	t.Logf("containerd %s log (%s), last lines:\n%s", d.Version, d.LogPath, tail(d.Logs(), 80))
	var logs []string
	for _, dir := range []string{d.RunscLogDir, d.State} {
		_ = filepath.WalkDir(dir, func(path string, e os.DirEntry, err error) error {
			if err == nil && !e.IsDir() && (strings.HasSuffix(path, ".txt") || strings.HasSuffix(path, ".log") || filepath.Base(path) == "log.json") {
				logs = append(logs, path)
			}
			return nil
		})
	}
	sort.Slice(logs, func(i, j int) bool { return modTime(logs[i]).After(modTime(logs[j])) })
	for _, p := range logs[:min(len(logs), 6)] {
		b, err := os.ReadFile(p)
		if err == nil {
			t.Logf("%s, last lines:\n%s", p, tail(string(b), 25))
		}
	}
}

func modTime(path string) time.Time {
	fi, err := os.Stat(path)
	if err != nil {
		return time.Time{}
	}
	return fi.ModTime()
}

func joinProcesses(ps []Process) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = "  " + p.String()
	}
	return strings.Join(s, "\n")
}

// RunscStates lists runsc's container state files under a namespace's runsc
// directory nsRoot: the shim gives every sandbox a directory of its own
// (nsRoot/<sandbox id>), in which runsc keeps one <id>_sandbox:<id>.state
// file per container.
func RunscStates(nsRoot string) ([]string, error) {
	var out []string
	for _, pattern := range []string{"*.state", "*/*.state"} {
		m, err := filepath.Glob(filepath.Join(nsRoot, pattern))
		if err != nil {
			return nil, err
		}
		out = append(out, m...)
	}
	return out, nil
}

// RunscLeftovers lists what runsc or the shim left under nsRoot once no
// container exists: state files and sandbox directories (the shim removes a
// sandbox's directory with its last container). runsc's null-netns pin and
// its lock files stay for the life of the directory and are not listed.
func RunscLeftovers(nsRoot string) ([]string, error) {
	out, err := RunscStates(nsRoot)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(nsRoot)
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, "sandbox directory "+filepath.Join(nsRoot, e.Name()))
		}
	}
	return out, nil
}
