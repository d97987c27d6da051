package shim

import (
	"context"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// mountRootfs mounts the rootfs layers containerd prepared at bundle/rootfs
// and returns that path ("" when there is nothing to mount), with a cleanup
// that unmounts them.
func mountRootfs(ctx context.Context, b bundle, rootfs []*types.Mount) (string, func(), error) {
	if len(rootfs) == 0 {
		return "", func() {}, nil
	}
	target := b.path(rootfsDir)
	if err := os.Mkdir(target, 0o711); err != nil && !os.IsExist(err) {
		return "", nil, err
	}
	mounts := make([]mount.Mount, 0, len(rootfs))
	for _, m := range rootfs {
		mounts = append(mounts, mount.Mount{Type: m.Type, Source: m.Source, Target: m.Target, Options: m.Options})
	}
	if err := mount.All(mounts, target); err != nil {
		return "", nil, err
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
func defaultOverlay2(cfg *Config, spec *specs.Spec, rootfs []*types.Mount) string {
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
func snapshotDir(rootfs []*types.Mount) string {
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
