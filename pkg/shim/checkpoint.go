package shim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/checkpoint"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/process"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/runsc"
)

// checkpointRequest is a Checkpoint call's options, resolved.
type checkpointRequest struct {
	// Exit stops the container after the checkpoint.
	Exit bool
	// Dir is where the image goes.
	Dir string
}

// parseCheckpointOptions reads runc's CheckpointOptions (what ctr and the
// containerd client send) or nil (what nerdctl and the CRI send for non-runc
// runtimes: leave the container running).
//
// gVisor saves the whole sandbox kernel, so some runc options hold by
// construction: file locks and terminals are sentry state and are always
// saved; TCP connections of the sandbox's own network stack are saved too.
// CRIU-only knobs (cgroups mode, work path) have nothing to act on and are
// ignored. What gVisor cannot do is refused: connections to host Unix
// sockets, and leaving namespaces out.
func parseCheckpointOptions(a *anypb.Any, path string, cfg *Config) (checkpointRequest, error) {
	req := checkpointRequest{Dir: path}
	if a != nil && (a.GetTypeUrl() != "" || len(a.GetValue()) > 0) {
		v, err := typeurl.UnmarshalAny(a)
		if err != nil {
			return req, fmt.Errorf("%w: reading checkpoint options of type %q: %v", errdefs.ErrInvalidArgument, a.GetTypeUrl(), err)
		}
		o, ok := v.(*runcoptions.CheckpointOptions)
		if !ok {
			return req, fmt.Errorf("%w: checkpoint options of type %T are not supported; send runc's CheckpointOptions or none", errdefs.ErrInvalidArgument, v)
		}
		if o.ExternalUnixSockets {
			return req, fmt.Errorf("%w: gVisor cannot checkpoint connections to host Unix sockets (ExternalUnixSockets); close them or checkpoint without that option", errdefs.ErrInvalidArgument)
		}
		if len(o.EmptyNamespaces) > 0 {
			return req, fmt.Errorf("%w: gVisor always saves every namespace of the sandbox; EmptyNamespaces %v cannot be honoured", errdefs.ErrInvalidArgument, o.EmptyNamespaces)
		}
		if o.OpenTcp && cfg.RunscConfig["network"] == "host" {
			return req, fmt.Errorf("%w: open TCP connections cannot be checkpointed with runsc network=host (the host kernel owns them)", errdefs.ErrInvalidArgument)
		}
		req.Exit = o.Exit
		if o.ImagePath != "" {
			req.Dir = o.ImagePath
		}
	}
	if req.Dir == "" {
		return req, fmt.Errorf("%w: no checkpoint path given", errdefs.ErrInvalidArgument)
	}
	if !filepath.IsAbs(req.Dir) || filepath.Clean(req.Dir) != req.Dir {
		return req, fmt.Errorf("%w: checkpoint path %q must be absolute and clean (no \"..\", no trailing slash)", errdefs.ErrInvalidArgument, req.Dir)
	}
	return req, nil
}

// checkpoint saves the container's sandbox into req.Dir; pod is what the
// image holds of a pod (nil outside one). On failure the directory holds
// nothing that looks like a checkpoint and the error ends with what became
// of the container.
//
// runsc writes the image; the shim then records the metadata that makes it
// a complete checkpoint (written last, atomically) and only then lets the
// checkpoint end: an exit checkpoint stops the container, and a GPU
// container is resumed first, so that a CUDA state that cannot come back is
// known now (containerd drops the errors of its own resume after a
// checkpoint).
func (c *container) checkpoint(ctx context.Context, req checkpointRequest, pod *checkpoint.Pod) (retErr error) {
	start := time.Now()
	dir := req.Dir
	if err := emptyImageDir(dir); err != nil {
		return err
	}
	if err := c.bundle.markCheckpoint(dir); err != nil {
		return err
	}
	defer c.bundle.unmarkCheckpoint(ctx)
	defer func() {
		if retErr != nil {
			removePartialImage(ctx, dir)
		}
	}()

	cfg := c.config.Checkpoint
	opts := runsc.CheckpointOpts{
		ImagePath:                 dir,
		Compression:               cfg.compression(),
		Direct:                    cfg.Direct,
		ExcludeCommittedZeroPages: cfg.ExcludeCommittedZeroPages,
	}
	gpu, err := c.gpu.checkpointing(ctx, c.init.Pid(), c.spec, &opts)
	if err != nil {
		return err
	}
	log.G(ctx).WithField("id", c.id).WithField("args", opts.Args(c.id)).Info("checkpointing")
	t0 := time.Now()
	// A GPU container's CUDA state comes back onto the GPUs only when its
	// sandbox resumes; a leave-running checkpoint resumes it, so that it
	// reports success only for a workload that came back. An exit
	// checkpoint stops the sandbox right after the save, so that the image
	// is the workload's last state; cuda.verify_exit_checkpoint resumes it
	// first (the workload runs on for the CUDA restore).
	verify := c.gpu.enabled() && (!req.Exit || c.config.CUDA.VerifyExitCheckpoint)
	if c.gpu.enabled() && !verify {
		log.G(ctx).WithField("id", c.id).Info("exit checkpoint of a GPU container: stopped right after the save, its CUDA restore unverified (cuda.verify_exit_checkpoint)")
	}
	saved, err := c.init.Checkpoint(ctx, process.CheckpointConfig{Runsc: opts, Exit: req.Exit, Resume: verify})
	if err != nil {
		return fmt.Errorf("%w%s", err, c.gpu.explain(err))
	}
	runscTime := time.Since(t0)
	meta, err := c.metadata(ctx, req, opts, pod, gpu)
	if err == nil {
		meta.Timings = checkpoint.Timings{Runsc: runscTime.Milliseconds(), GPUDiscovery: gpu.discovery().Milliseconds(), Total: time.Since(start).Milliseconds()}
		err = checkpoint.Write(dir, meta)
	}
	if err != nil {
		return saved.Abort(ctx, fmt.Errorf("completing the checkpoint image: %w", err))
	}
	if err := saved.Commit(ctx); err != nil {
		return fmt.Errorf("checkpoint of %s failed: %w%s", c.id, err, c.gpu.explain(err))
	}
	if c.gpu.enabled() {
		meta.GPU.RestoreVerified = verify
		if req.Exit {
			gpu.released(ctx, c.id, meta.GPU)
		} else {
			gpu.resumed(ctx, c.id)
		}
		if err := checkpoint.Write(dir, meta); err != nil {
			// The image is complete as written first; only the
			// verification is not recorded.
			log.G(ctx).WithError(err).WithField("id", c.id).Warn("recording the GPU verification in the checkpoint metadata")
		}
	}
	log.G(ctx).WithField("id", c.id).WithField("bytes", meta.Size()).WithField("runsc_ms", meta.Timings.Runsc).
		WithField("total_ms", time.Since(start).Milliseconds()).WithField("exit", req.Exit).Info("checkpoint written")
	return nil
}

// metadata describes the image runsc wrote into req.Dir, whose files it
// restricts to their owner (runsc creates them 0644; they hold all of the
// container's memory).
func (c *container) metadata(ctx context.Context, req checkpointRequest, opts runsc.CheckpointOpts, pod *checkpoint.Pod, gpu gpuCheckpoint) (*checkpoint.Metadata, error) {
	version, err := c.rt.Version(ctx)
	if err != nil {
		return nil, err
	}
	files, err := checkpoint.ListFiles(req.Dir)
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		if err := os.Chmod(filepath.Join(req.Dir, f.Name), 0o600); err != nil {
			return nil, fmt.Errorf("restricting checkpoint file %s to its owner: %w", f.Name, err)
		}
	}
	meta := &checkpoint.Metadata{
		FormatVersion: checkpoint.FormatVersion,
		Runtime:       RuntimeName,
		ShimVersion:   Version,
		ContainerID:   c.id,
		CreatedAt:     time.Now().UTC(),
		RunscVersion:  version,
		Compression:   opts.Compression,
		Direct:        opts.Direct,
		LeaveRunning:  !req.Exit,
		Files:         files,
		Spec:          summarizeSpec(c.spec),
		Pod:           pod,
		GPU:           gpu.facts(),
	}
	if c.config.Checkpoint.Verify {
		if err := meta.AddChecksums(req.Dir); err != nil {
			return nil, fmt.Errorf("checksumming the checkpoint image: %w", err)
		}
	}
	return meta, nil
}

// emptyImageDir creates dir or checks that it is empty: everything in it
// afterwards is this checkpoint's, so a failure can remove it all, and an
// existing checkpoint is never overwritten.
func emptyImageDir(dir string) error {
	if fi, err := os.Lstat(dir); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		target, _ := os.Readlink(dir)
		if _, err := os.Stat(dir); err != nil {
			return fmt.Errorf("%w: checkpoint path %s is a symbolic link to %s, which does not exist; give a directory, or create the link's target", errdefs.ErrInvalidArgument, dir, target)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating checkpoint directory: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("reading checkpoint directory: %w", err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("%w: checkpoint directory %s is not empty; choose an empty directory so no existing checkpoint is overwritten", errdefs.ErrFailedPrecondition, dir)
	}
	return nil
}

// removePartialImage removes what a failed checkpoint wrote into dir: all of
// it, as the shim only checkpoints into empty directories.
func removePartialImage(ctx context.Context, dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			log.G(ctx).WithError(err).Warn("removing a partial checkpoint file")
		}
	}
}

// removeInterruptedCheckpoint removes the files of a checkpoint the shim was
// writing when it died; `shim delete` calls it after the sandbox is gone.
// What the directory holds is that checkpoint's, unless it completed (the
// metadata is there).
func removeInterruptedCheckpoint(ctx context.Context, b bundle) {
	dir, ok := b.interruptedCheckpoint()
	if !ok {
		return
	}
	if _, err := os.Stat(filepath.Join(dir, checkpoint.MetadataFile)); errors.Is(err, os.ErrNotExist) {
		log.G(ctx).WithField("dir", dir).Warn("removing the files of a checkpoint interrupted by the shim's death")
		removePartialImage(ctx, dir)
	}
}
