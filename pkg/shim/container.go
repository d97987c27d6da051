package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/checkpoint"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/process"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/runsc"
)

// CRI annotations that place a container in a pod sandbox (the same ones
// runsc reads).
const (
	annotationContainerType = "io.kubernetes.cri.container-type"
	annotationSandboxID     = "io.kubernetes.cri.sandbox-id"
	containerTypeContainer  = "container"
)

// container is one containerd container: its init process and exec'd
// processes, and what the shim decided about it at create.
type container struct {
	id     string
	bundle string
	spec   *specs.Spec
	config *Config
	init   *process.Init
	// gpu is set for containers that use NVIDIA GPUs through nvproxy.
	gpu *gpuSetup
	// restored is the metadata of the checkpoint Start restores, if any.
	restored *checkpoint.Metadata
	// createdPid is the sandbox pid containerd was told at create (the CRI
	// points a pod's containers' namespaces at it); a pod restore replaces
	// the sandbox (pod.go).
	createdPid int

	mu    sync.Mutex
	execs map[string]*process.Exec
	// reserved holds exec ids between Exec and their registration.
	reserved map[string]struct{}
	// initExited is set once the init process exited: no new execs.
	initExited bool
}

// subcontainer reports whether the container joins an existing pod sandbox.
func subcontainer(spec *specs.Spec) bool {
	return spec.Annotations[annotationContainerType] == containerTypeContainer
}

func readSpec(bundle string) (*specs.Spec, error) {
	data, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("reading OCI spec: %w", err)
	}
	var s specs.Spec
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("%w: parsing OCI spec %s/config.json: %v", errdefs.ErrInvalidArgument, bundle, err)
	}
	return &s, nil
}

func writeSpec(bundle string, s *specs.Spec) error {
	data, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o600)
}

// mountRootfs mounts the rootfs layers containerd prepared at bundle/rootfs
// and returns that path ("" when there is nothing to mount), with a cleanup
// that unmounts them.
func mountRootfs(ctx context.Context, bundle string, rootfs []*typesMount) (string, func(), error) {
	if len(rootfs) == 0 {
		return "", func() {}, nil
	}
	target := filepath.Join(bundle, "rootfs")
	if err := os.Mkdir(target, 0o711); err != nil && !os.IsExist(err) {
		return "", nil, err
	}
	mounts := make([]mount.Mount, 0, len(rootfs))
	for _, m := range rootfs {
		mounts = append(mounts, mount.Mount{Type: m.Type, Source: m.Source, Target: m.Target, Options: m.Options})
	}
	if err := mount.All(mounts, target); err != nil {
		return "", nil, fmt.Errorf("mounting rootfs: %w", err)
	}
	removeStaleFilestores(ctx, target)
	return target, func() {
		if err := mount.UnmountMounts(mounts, target, 0); err != nil {
			log.G(ctx).WithError(err).Warn("unmounting rootfs after a failed create")
		}
	}, nil
}

// filestorePrefix names the file in which runsc's rootfs overlay keeps its
// data (runsc --overlay2=root:self, the default).
const filestorePrefix = ".gvisor.filestore."

// removeStaleFilestores removes filestore files a previous sandbox left in
// the rootfs. They come back with a restored rw layer (containerd's
// checkpoint --rw captures them) and make runsc refuse to create the
// container; their content belongs to a dead sandbox and, for a restore, is
// in the checkpoint image.
func removeStaleFilestores(ctx context.Context, rootfs string) {
	matches, _ := filepath.Glob(filepath.Join(rootfs, filestorePrefix+"*"))
	for _, m := range matches {
		if err := os.Remove(m); err != nil {
			log.G(ctx).WithError(err).WithField("file", m).Warn("removing a stale runsc filestore")
		}
	}
}

// defaultOverlay2 is the runsc overlay2 flag the shim sets when the config
// leaves it to runsc, or "" to keep runsc's default (root:self).
//
// runsc's default keeps the rootfs overlay's data in a filestore file inside
// the rootfs, that is in containerd's rw layer: 1 GiB of apparent size as
// soon as anything is written. containerd diffs and gzips the rw layer on
// every checkpoint (ctr, nerdctl, the client and the CRI all do), holes
// included, with the container paused: about 6 s per GiB on a 2-core host
// (docs/benchmarks/README.md). With "root:dir=D" runsc keeps an unlinked
// filestore in D instead, and the rw diff is only what containerd sees. D is
// the snapshot directory that holds the rw layer (the parent of the overlay's
// upperdir): on the same disk, removed with the snapshot.
//
// CRI containers keep runsc's default: the kubelet's ephemeral-storage
// accounting measures the rw layer, which then holds the filestore. Other
// rootfs types (no overlay upperdir) keep it too. Setting overlay2 in
// runsc_config always wins.
func defaultOverlay2(cfg *Config, spec *specs.Spec, rootfs []*typesMount) string {
	for _, k := range []string{"overlay2", "overlay"} {
		if _, ok := cfg.RunscConfig[k]; ok {
			return ""
		}
	}
	if _, ok := spec.Annotations[annotationContainerType]; ok {
		return ""
	}
	if _, ok := spec.Annotations["dev.gvisor.flag.overlay2"]; ok {
		return ""
	}
	dir := snapshotDir(rootfs)
	if dir == "" {
		return ""
	}
	return "root:dir=" + dir
}

// snapshotDir returns the directory holding the upper layer of an overlay
// rootfs (containerd's overlayfs snapshotter: snapshots/N, holding fs and
// work), or "" when the rootfs is not one overlay mount with an upperdir.
func snapshotDir(rootfs []*typesMount) string {
	if len(rootfs) != 1 || rootfs[0].Type != "overlay" {
		return ""
	}
	for _, o := range rootfs[0].Options {
		if upper, ok := strings.CutPrefix(o, "upperdir="); ok && filepath.IsAbs(upper) {
			dir := filepath.Dir(filepath.Clean(upper))
			if st, err := os.Stat(dir); err == nil && st.IsDir() && dir != "/" {
				return dir
			}
		}
	}
	return ""
}

// sandboxID returns the id of the sandbox a container runs in: its pod's
// (the CRI's sandbox id) for a container joining a pod, its own otherwise.
func sandboxID(id string, spec *specs.Spec) string {
	if spec != nil && subcontainer(spec) {
		if sb := spec.Annotations[annotationSandboxID]; sb != "" {
			return sb
		}
	}
	return id
}

// newRunsc returns the runsc wrapper for a container of sandbox sandbox.
func newRunsc(cfg *Config, namespace, sandbox, bundle string, gpu bool, mon runsc.Monitor) *runsc.Runsc {
	flags := make(map[string]string, len(cfg.RunscConfig)+1)
	for k, v := range cfg.RunscConfig {
		flags[k] = v
	}
	if gpu {
		flags["nvproxy"] = "true"
	}
	// What runsc shares across sandboxes (the gofers' pinned empty network
	// namespace) stays in the namespace's directory, not in each sandbox's.
	if _, ok := flags["shared-root"]; !ok {
		flags["shared-root"] = filepath.Join(cfg.RunscBase(), namespace)
	}
	return &runsc.Runsc{
		Binary:  cfg.BinaryName,
		Root:    cfg.RunscRoot(namespace, sandbox),
		Log:     filepath.Join(bundle, "log.json"),
		Flags:   flags,
		Monitor: mon,
		// Beside the namespaces' runsc roots: a restore's shim checks the
		// runsc version without running runsc --version again.
		VersionCacheDir: cfg.RunscBase(),
	}
}

// removeSandboxRoot removes a sandbox's runsc state directory once runsc
// holds nothing in it (the last container of the sandbox is gone).
func removeSandboxRoot(ctx context.Context, rt *runsc.Runsc) {
	if err := os.Remove(rt.Root); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.EEXIST) {
		log.G(ctx).WithError(err).WithField("root", rt.Root).Warn("removing the sandbox's runsc state directory")
	}
}

func (c *container) process(execID string) (process.Process, error) {
	if execID == "" {
		return c.init, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.execs[execID]
	if !ok {
		return nil, fmt.Errorf("exec %s of container %s: %w", execID, c.id, errdefs.ErrNotFound)
	}
	return p, nil
}

// reserveExec claims an exec id; the returned func releases it again.
func (c *container) reserveExec(id string) (bool, func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.execs[id]; ok {
		return false, nil
	}
	if _, ok := c.reserved[id]; ok {
		return false, nil
	}
	c.reserved[id] = struct{}{}
	return true, func() {
		c.mu.Lock()
		delete(c.reserved, id)
		c.mu.Unlock()
	}
}

func (c *container) execList() []*process.Exec {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*process.Exec, 0, len(c.execs))
	for _, e := range c.execs {
		out = append(out, e)
	}
	return out
}

// createRequest is the part of CreateTaskRequest the container needs.
type createRequest = taskAPI.CreateTaskRequest
