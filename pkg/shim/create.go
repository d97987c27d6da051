package shim

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/pkg/stdio"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/process"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/runsc"
)

// shared is what the containers of one shim share.
type shared struct {
	namespace string
	platform  stdio.Platform
	hub       *process.ExitHub
	exited    chan process.Exited
	events    *eventSink
	oom       *oomWatcher
	sandboxes *sandboxes
}

var lookPath = exec.LookPath

// newContainer creates the container in runsc, as containerd asked: the
// sandbox (or a pod's container in its pod's sandbox) exists afterwards,
// nothing runs yet. A restore's checkpoint is checked against this host
// before anything is created. The spec is written once, after every change
// the shim makes to it.
func newContainer(ctx context.Context, sh *shared, r *taskAPI.CreateTaskRequest) (_ *container, _ *sandbox, retErr error) {
	cfg, runcOpts, err := parseOptions(r.Options)
	if err != nil {
		return nil, nil, err
	}
	if cfg.LogLevel != "" {
		if err := log.SetLevel(cfg.LogLevel); err != nil {
			return nil, nil, fmt.Errorf("%w: log_level %q: %v", errdefs.ErrInvalidArgument, cfg.LogLevel, err)
		}
	}
	dir, err := restorePath(r, runcOpts)
	if err != nil {
		return nil, nil, err
	}
	b := bundle(r.Bundle)
	spec, err := b.readSpec()
	if err != nil {
		return nil, nil, err
	}
	if err := checkTerminal(r.Terminal, spec.Process); err != nil {
		return nil, nil, err
	}
	sbID := sandboxID(r.ID, spec)
	sb := sh.sandboxes.get(sbID, cfg.RunscRoot(sh.namespace, sbID), sh.oom)
	defer func() {
		if retErr != nil {
			sh.sandboxes.discard(ctx, sb)
		}
	}()
	changed := sb.repoint(spec)
	if podGPU(spec) {
		changed = true
	}
	gpu, err := newGPU(ctx, cfg, spec, sh.events)
	if err != nil {
		return nil, nil, err
	}
	if gpu.enabled() {
		if err := sb.checkGPU(r.ID); err != nil {
			return nil, nil, err
		}
	}
	changed = changed || gpu.enabled()
	rt := newRunsc(cfg, sh.namespace, sb.root, b, gpu.enabled(), defaultOverlay2(cfg, spec, r.Rootfs))
	if err := checkRunsc(rt); err != nil {
		return nil, nil, err
	}
	var src *restoreSource
	if dir == "" && spec.Annotations[annotationContainerType] != containerTypeSandbox {
		// A pod's sandbox container carries the pod's annotations too; the
		// pod is restored through its application container.
		if src, err = annotatedSource(cfg, spec); err != nil {
			return nil, nil, err
		}
	}
	defer src.close()
	defer func() {
		if retErr != nil && src != nil && src.unpacked {
			_ = os.RemoveAll(src.dir)
		}
	}()
	if src != nil {
		restore, err := sb.restoresFrom(log.WithLogger(ctx, log.G(ctx).WithField("id", r.ID)), spec, src)
		if err != nil {
			return nil, nil, err
		}
		if !restore {
			src = nil
		} else if err := src.unpack(ctx, filepath.Join(cfg.Checkpoint.unpackDir(), sh.namespace, r.ID)); err != nil {
			return nil, nil, err
		} else {
			dir = src.dir
		}
	}
	c := &container{
		id:        r.ID,
		bundle:    b,
		spec:      spec,
		config:    cfg,
		rt:        rt,
		sandboxID: sbID,
		source:    src,
		gpu:       gpu,
		execs:     make(map[string]*process.Exec),
		reserved:  make(map[string]struct{}),
		execGrace: execExitTimeout,
	}
	if dir != "" {
		if c.restore, err = checkRestore(ctx, rt, dir, cfg, spec, gpu); err != nil {
			return nil, nil, err
		}
		if reassignCgroup(spec, c.restore.meta.ContainerID, r.ID) {
			changed = true
			log.G(ctx).WithField("cgroup", spec.Linux.CgroupsPath).Info("restored under a new id: a cgroup of its own")
		}
	}
	if changed {
		if err := b.writeSpec(spec); err != nil {
			return nil, nil, err
		}
	}
	if err := b.writeConfig(cfg); err != nil {
		return nil, nil, err
	}
	rootfs, unmount, err := mountRootfs(ctx, b, r.Rootfs)
	if err != nil {
		return nil, nil, fmt.Errorf("mounting the rootfs of %s: %w", r.ID, err)
	}
	defer func() {
		if retErr != nil {
			unmount()
		}
	}()
	var restore *process.RestoreConfig
	if c.restore != nil {
		restore = &c.restore.config
	}
	c.init = process.NewInit(process.InitConfig{
		ID:           r.ID,
		Bundle:       r.Bundle,
		Rootfs:       rootfs,
		Stdio:        stdio.Stdio{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
		IoUID:        cfg.IoUID,
		IoGID:        cfg.IoGID,
		Runtime:      rt,
		Platform:     sh.platform,
		Exits:        sh.hub,
		Exited:       sh.exited,
		Subcontainer: subcontainer(spec),
		Restore:      restore,
	})
	cgroup := ""
	if spec.Linux != nil && !cgroupExists(spec.Linux.CgroupsPath) {
		cgroup = spec.Linux.CgroupsPath
	}
	if err := c.init.Create(ctx); err != nil {
		if cgroup != "" {
			// runsc makes the cgroup before it fails, and leaves it.
			removeCgroup(ctx, cgroup)
		}
		return nil, nil, fmt.Errorf("creating container %s: %w", r.ID, err)
	}
	if !subcontainer(spec) && cfg.netstack() {
		// runsc gives the sandbox only the interfaces that are up.
		if err := loopbackUp(c.init.Pid()); err != nil {
			log.G(ctx).WithError(err).WithField("id", r.ID).Warn("the container will have no loopback interface")
		}
	}
	sb.add(c)
	return c, sb, nil
}

// checkRunsc fails early, with a clear message, when runsc is missing.
func checkRunsc(rt *runsc.Runsc) error {
	bin := rt.Binary
	if bin == "" {
		bin = runsc.DefaultBinary
	}
	if _, err := lookPath(bin); err != nil {
		return fmt.Errorf("%w: runsc binary %q not found (%v); install gVisor's runsc or set binary_name in the shim config", errdefs.ErrFailedPrecondition, bin, err)
	}
	return nil
}
