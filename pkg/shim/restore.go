package shim

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/checkpoint"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/process"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/runsc"
)

// restorePath returns the checkpoint a Create restores, "" for none: the
// request's Checkpoint, or runc options' CriuImagePath (containerd passes
// the latter through for a restore from a path).
func restorePath(r *taskAPI.CreateTaskRequest, runcOpts *runcoptions.Options) (string, error) {
	path := r.Checkpoint
	if path == "" && runcOpts != nil {
		path = runcOpts.CriuImagePath
	}
	if path == "" {
		return "", nil
	}
	if !filepath.IsAbs(path) || hasDotDot(path) {
		return "", fmt.Errorf("%w: checkpoint path %q must be absolute, without \"..\"", errdefs.ErrInvalidArgument, path)
	}
	return filepath.Clean(path), nil
}

// checkRestore checks the checkpoint in dir against this host and the
// container before anything is created: a mismatch is a FailedPrecondition
// naming both sides, and leaves no trace. It may add the GPU device map to
// spec (the caller writes it).
func checkRestore(ctx context.Context, rt *runsc.Runsc, dir string, cfg *Config, spec *specs.Spec, gpu gpuHook) (*restoreRequest, error) {
	start := time.Now()
	meta, err := checkpoint.Read(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: cannot restore: %v", errdefs.ErrFailedPrecondition, err)
	}
	check := meta.CheckFiles
	if cfg.Checkpoint.Verify {
		if meta.HasChecksums() {
			check = meta.Verify
		} else {
			log.G(ctx).WithField("dir", dir).Warn("checkpoint.verify is set but this checkpoint was made without checksums; checking sizes only")
		}
	}
	if err := check(dir); err != nil {
		return nil, fmt.Errorf("%w: cannot restore from %s: %v", errdefs.ErrFailedPrecondition, dir, err)
	}
	version, err := rt.Version(ctx)
	if err != nil {
		return nil, err
	}
	if version != meta.RunscVersion {
		return nil, fmt.Errorf("%w: checkpoint was made by runsc %q but this host runs runsc %q; restore with the same runsc build", errdefs.ErrFailedPrecondition, meta.RunscVersion, version)
	}
	if err := compareSpec(meta.Spec, summarizeSpec(spec)); err != nil {
		return nil, fmt.Errorf("%w: cannot restore into this container: %v", errdefs.ErrFailedPrecondition, err)
	}
	if err := checkPodRestore(meta, spec); err != nil {
		return nil, fmt.Errorf("%w: cannot restore into this container: %v", errdefs.ErrFailedPrecondition, err)
	}
	tg := time.Now()
	if err := gpu.checkRestore(ctx, meta.GPU, spec); err != nil {
		return nil, err
	}
	log.G(ctx).WithField("dir", dir).WithField("ms", time.Since(start).Milliseconds()).
		WithField("gpu_ms", time.Since(tg).Milliseconds()).Info("restore checked")
	return &restoreRequest{
		dir:  dir,
		meta: meta,
		config: process.RestoreConfig{
			ImagePath:  dir,
			Direct:     cfg.Checkpoint.RestoreDirect,
			Background: cfg.Checkpoint.BackgroundRestoreEnabled() && meta.Compression == "none",
			// Start of a GPU container returns once its CUDA state is back
			// on the GPUs (or fails with runsc's reason): a container whose
			// CUDA state does not come back is no restored container.
			Await: gpu.enabled(),
		},
	}, nil
}

// start starts the init process of c, a container of sb: fresh; restored
// from its checkpoint; or, for a pod checkpoint restored into a pod's
// container, by replacing the pod's sandbox with one restored from it. This
// is the one place that decides.
func (sb *sandbox) start(ctx context.Context, c *container) error {
	r := c.restore
	switch {
	case r == nil:
		if err := sb.starting(ctx, c); err != nil {
			return err
		}
		return c.init.Start(ctx)
	case r.meta.Pod != nil:
		// checkPodRestore saw to it that c is a pod's container.
		if err := sb.replace(ctx, c); err != nil {
			return fmt.Errorf("%w%s", err, damagedImageHint(err, c.config))
		}
	default:
		if err := c.init.Start(ctx); err != nil {
			return fmt.Errorf("%w%s", err, damagedImageHint(err, c.config))
		}
	}
	c.gpu.restored(ctx, c.id, c.init.Pid(), r.meta.GPU)
	return nil
}

// damagedImageHint explains runsc's bare "EOF" (or a decoding error) of a
// restore: its image is damaged or incomplete where the metadata's sizes do
// not tell (they are checked first).
func damagedImageHint(err error, cfg *Config) string {
	m := err.Error()
	if !strings.Contains(m, "EOF") && !strings.Contains(m, "decoding") && !strings.Contains(m, "checksum") {
		return ""
	}
	hint := "; the checkpoint image is damaged (runsc could not read the state it holds): checkpoint the container again"
	if !cfg.Checkpoint.Verify {
		hint += ", and set checkpoint.verify = true to have damaged images refused before a restore starts"
	}
	return hint
}
