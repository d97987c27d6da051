package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	cgroupsv2 "github.com/containerd/cgroups/v3/cgroup2"
	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"github.com/containerd/containerd/api/types"
	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/defaults"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	cdshim "github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/process"
)

// groupLabels group containers into one shim: our own label first, then the
// CRI's sandbox id so that all containers of a pod share one shim (and, in
// runsc, one sandbox).
var groupLabels = []string{
	RuntimeName + ".group",
	annotationSandboxID,
}

// Manager starts, stops and describes shim processes (containerd's
// bootstrap protocol, containerd 2.3 and later).
type Manager struct {
	name string
}

// NewManager returns the shim manager.
func NewManager(name string) *Manager { return &Manager{name: name} }

var _ cdshim.Shim = (*Manager)(nil)

// Name returns the runtime name.
func (m *Manager) Name() string { return m.name }

// Start starts the shim server process for a container, or returns the
// address of the shim already serving its group (the pod).
func (m *Manager) Start(ctx context.Context, params *bootapi.BootstrapParams) (_ *bootapi.BootstrapResult, retErr error) {
	result := &bootapi.BootstrapResult{Version: 3, Protocol: "ttrpc"}
	id := params.GetInstanceID()
	debug := params.GetLogLevel() <= bootapi.LogLevel_LOG_LEVEL_DEBUG

	spec, err := bundle(".").readSpec()
	if err != nil {
		return nil, err
	}
	group := id
	for _, l := range groupLabels {
		if g, ok := spec.Annotations[l]; ok && g != "" {
			group = g
			break
		}
	}
	socketDir := params.GetSocketDir()
	if socketDir == "" {
		socketDir = filepath.Join(defaults.DefaultStateDir, "s")
	}
	grpcAddress := params.GetContainerdGrpcAddress()
	address, err := cdshim.CreateSocketAddress(ctx, socketDir, grpcAddress, group, false)
	if err != nil {
		return nil, err
	}
	socket, err := cdshim.NewSocket(address)
	if err != nil {
		if !cdshim.SocketEaddrinuse(err) {
			return nil, fmt.Errorf("creating shim socket: %w", err)
		}
		if cdshim.CanConnect(address) {
			// Another container of the group already has a shim.
			if err := writeAddress(address); err != nil {
				return nil, err
			}
			result.Address = address
			return result, nil
		}
		if err := cdshim.RemoveSocket(address); err != nil {
			return nil, fmt.Errorf("removing stale shim socket: %w", err)
		}
		if socket, err = cdshim.NewSocket(address); err != nil {
			return nil, fmt.Errorf("creating shim socket: %w", err)
		}
	}
	defer func() {
		if retErr != nil {
			socket.Close()
			_ = cdshim.RemoveSocket(address)
		}
	}()
	f, err := socket.File()
	if err != nil {
		return nil, err
	}
	defer f.Close()

	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cwd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	args := []string{"-namespace", ns, "-id", id, "-address", grpcAddress}
	if debug {
		args = append(args, "-debug")
	}
	cmd := exec.Command(self, args...)
	cmd.Dir = cwd
	cmd.Env = append(os.Environ(), "GOMAXPROCS=2")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.ExtraFiles = append(cmd.ExtraFiles, f)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			cmd.Process.Kill()
		}
	}()
	go cmd.Wait()

	var ro runcoptions.Options
	if found, err := params.FindExtension(&ro); err == nil && found && ro.ShimCgroup != "" {
		if err := joinCgroup(ro.ShimCgroup, cmd.Process.Pid); err != nil {
			return nil, err
		}
	}
	if err := cdshim.AdjustOOMScore(cmd.Process.Pid); err != nil {
		log.G(ctx).WithError(err).Warn("could not adjust the shim's OOM score")
	}
	if err := writeAddress(address); err != nil {
		return nil, err
	}
	result.Address = address
	return result, nil
}

func joinCgroup(path string, pid int) error {
	if cgroups.Mode() == cgroups.Unified {
		cg, err := cgroupsv2.Load(path)
		if err != nil {
			return fmt.Errorf("loading shim cgroup %s: %w", path, err)
		}
		return cg.AddProc(uint64(pid))
	}
	cg, err := cgroup1.Load(cgroup1.StaticPath(path))
	if err != nil {
		return fmt.Errorf("loading shim cgroup %s: %w", path, err)
	}
	return cg.AddProc(uint64(pid))
}

// Stop cleans up after a shim that can no longer do it itself (containerd
// runs `shim delete` when the shim died): the container is removed from
// runsc, its rootfs unmounted, and its recorded exit status returned.
func (m *Manager) Stop(ctx context.Context, id string) (cdshim.StopStatus, error) {
	cwd, err := os.Getwd()
	if err != nil {
		return cdshim.StopStatus{}, err
	}
	b := bundle(filepath.Join(filepath.Dir(cwd), id))
	if opts, ok := ctx.Value(cdshim.OptsKey{}).(cdshim.Opts); ok && opts.BundlePath != "" {
		b = bundle(opts.BundlePath)
	}
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return cdshim.StopStatus{}, err
	}
	cfg, err := b.readConfig()
	if err != nil {
		log.G(ctx).WithError(err).Warn("reading the shim config from the bundle; using defaults")
		cfg = &Config{}
	}
	spec, err := b.readSpec()
	if err != nil {
		log.G(ctx).WithError(err).Warn("reading the bundle's spec; assuming the container is its own sandbox")
	}
	root := cfg.RunscRoot(ns, sandboxID(id, spec))
	rt := newRunsc(cfg, ns, root, b, false, "")
	rt.Log = ""
	if err := rt.Delete(ctx, id); err != nil && !errdefs.IsNotFound(err) {
		log.G(ctx).WithError(err).Warn("removing the container from runsc")
	}
	removeRunscRoot(ctx, root)
	removeNamespaceRoot(ctx, filepath.Dir(root))
	removeInterruptedCheckpoint(ctx, b)
	// A shim that was killed could not remove its socket; nobody answers on
	// it any more (a pod's shim that still serves others keeps it).
	if address, err := cdshim.ReadAddress(b.path(addressFile)); err == nil && !cdshim.CanConnect(address) {
		_ = cdshim.RemoveSocket(address)
	}
	if err := mount.UnmountRecursive(b.path(rootfsDir), 0); err != nil {
		log.G(ctx).WithError(err).Warn("unmounting rootfs")
	}
	pid, status, at, err := b.readExitStatus()
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			log.G(ctx).WithError(err).Warn("reading the recorded exit status")
		}
		// The container did not exit through the shim (it died): report the
		// sandbox's pid with SIGKILL, as containerd's runc shim does.
		if p, perr := runc.ReadPidFile(b.path(process.InitPidFile)); perr == nil {
			pid = p
		}
		return cdshim.StopStatus{ExitedAt: time.Now(), ExitStatus: 128 + int(unix.SIGKILL), Pid: pid}, nil
	}
	return cdshim.StopStatus{ExitedAt: at, ExitStatus: status, Pid: pid}, nil
}

// Info describes the runtime; containerd calls it for `ctr plugins` and the
// CRI's runtime handler features. Given runtime options, it validates them,
// so a broken config is reported before any container uses it.
func (m *Manager) Info(ctx context.Context, optionsR io.Reader) (*types.RuntimeInfo, error) {
	info := &types.RuntimeInfo{
		Name:    m.name,
		Version: &types.RuntimeVersion{Version: Version},
	}
	data, err := io.ReadAll(optionsR)
	if err != nil {
		return nil, fmt.Errorf("reading runtime options: %w", err)
	}
	if len(data) == 0 {
		return info, nil
	}
	var a anypb.Any
	if err := proto.Unmarshal(data, &a); err != nil {
		return nil, fmt.Errorf("%w: runtime options are not a protobuf Any: %v", errdefs.ErrInvalidArgument, err)
	}
	if _, err := ParseOptions(&a); err != nil {
		return nil, err
	}
	info.Options = &a
	return info, nil
}
