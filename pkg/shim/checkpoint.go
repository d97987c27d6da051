package shim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	ptypes "github.com/containerd/containerd/v2/pkg/protobuf/types"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/typeurl/v2"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/checkpoint"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/runsc"
)

// RuntimeName is the containerd runtime type of this shim.
const RuntimeName = "io.containerd.runsc-cuda.v1"

// Version is the shim's version, set at build time.
var Version = "dev"

// checkpointRequest is a Checkpoint call's options, resolved.
type checkpointRequest struct {
	// Exit stops the container after the checkpoint.
	Exit bool
	// Dir is where the image goes.
	Dir string
	// Pod is the pod the image holds when the container is a pod's (see
	// pod.go); nil otherwise.
	Pod *checkpoint.Pod
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

// hasDotDot reports whether path has a ".." element.
func hasDotDot(path string) bool {
	for _, e := range strings.Split(path, "/") {
		if e == ".." {
			return true
		}
	}
	return false
}

// Checkpoint saves the container's sandbox into the given directory.
// containerd pauses the task first; the container is left as it was
// (running, or paused until containerd resumes it) unless Exit is set. On
// failure the container keeps running and the directory holds nothing that
// looks like a checkpoint.
func (s *Service) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*ptypes.Empty, error) {
	c, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	req, err := parseCheckpointOptions(r.Options, r.Path, c.config)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if req.Pod, err = s.preparePodCheckpoint(ctx, c, req); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	err = c.init.Checkpoint(ctx, func(ctx context.Context, paused bool) error {
		return s.checkpoint(ctx, c, req, paused)
	})
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	s.send(&eventstypes.TaskCheckpointed{ContainerID: c.id, Checkpoint: req.Dir})
	return empty, nil
}

func (s *Service) checkpoint(ctx context.Context, c *container, req checkpointRequest, paused bool) (retErr error) {
	start := time.Now()
	dir := req.Dir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating checkpoint directory: %w", err)
	}
	// Everything in the directory afterwards is this checkpoint's, so a
	// failure can remove it all: any entry (a file, a subdirectory, a link)
	// makes the directory unusable.
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("reading checkpoint directory: %w", err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("%w: checkpoint directory %s is not empty; choose an empty directory so no existing checkpoint is overwritten", errdefs.ErrFailedPrecondition, dir)
	}
	// A shim that dies during the checkpoint cannot remove what runsc wrote;
	// the marker lets `shim delete` do it (removeInterruptedCheckpoint).
	if err := markCheckpoint(c.bundle, dir); err != nil {
		return err
	}
	defer unmarkCheckpoint(ctx, c.bundle)
	// stopped is set once an exit checkpoint has stopped the container; a
	// failure before that leaves it running as it was, and the error says so
	// (or, when the sandbox died meanwhile, that it did).
	stopped := false
	defer func() {
		if retErr != nil {
			removePartialImage(ctx, dir)
			if !stopped {
				retErr = fmt.Errorf("%w; %s", retErr, s.recoverAfterFailedCheckpoint(ctx, c, paused))
			}
		}
	}()

	rt := c.init.Runtime()
	cfg := c.config.Checkpoint
	// runsc is always asked to leave the sandbox running: without
	// --leave-running it kills the sandbox whether or not the save succeeded
	// (gVisor's state.SaveOpts.Save), so a full disk would cost the container.
	// An exit checkpoint freezes the sandbox first, so nothing runs between the
	// save and the kill that follows it (stopAfterExitCheckpoint).
	opts := runsc.CheckpointOpts{
		ImagePath:                 dir,
		LeaveRunning:              true,
		Compression:               compressionOrDefault(cfg.Compression),
		Direct:                    cfg.Direct,
		ExcludeCommittedZeroPages: cfg.ExcludeCommittedZeroPages,
	}
	if req.Exit && !paused {
		if err := rt.Pause(ctx, c.id); err != nil {
			return fmt.Errorf("freezing %s for the exit checkpoint failed: %w", c.id, err)
		}
	}
	var (
		gpuBefore *gpuUsage
		gpuDur    time.Duration
	)
	if c.gpu != nil {
		opts.CudaCheckpointPath = c.gpu.toolInContainer
		opts.CudaCheckpointSequential = c.config.CUDA.Sequential
		tg := time.Now()
		gpuBefore = c.gpu.usage(ctx, c.init.Pid())
		gpuDur = time.Since(tg)
	}
	log.G(ctx).WithField("id", c.id).WithField("args", opts.Args(c.id)).Info("checkpointing")
	t0 := time.Now()
	if err := rt.Checkpoint(ctx, c.id, opts); err != nil {
		return fmt.Errorf("checkpoint of %s failed: %w%s", c.id, err, untoggledCUDAHint(c.gpu, err))
	}
	runscDur := time.Since(t0)

	version, err := rt.Version(ctx)
	if err != nil {
		return err
	}
	files, err := checkpoint.ListFiles(dir)
	if err != nil {
		return err
	}
	// runsc creates the image files 0644; they hold all of the container's
	// memory, so only their owner reads them, whatever the directory's mode.
	for _, f := range files {
		if err := os.Chmod(filepath.Join(dir, f.Name), 0o600); err != nil {
			return fmt.Errorf("restricting checkpoint file %s to its owner: %w", f.Name, err)
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
		Pod:           req.Pod,
	}
	if c.gpu != nil {
		meta.GPU = c.gpu.facts(ctx, gpuBefore)
	}
	if c.config.Checkpoint.Verify {
		if err := meta.AddChecksums(dir); err != nil {
			return fmt.Errorf("checksumming the checkpoint image: %w", err)
		}
	}
	meta.Timings = checkpoint.Timings{Runsc: runscDur.Milliseconds(), GPUDiscovery: gpuDur.Milliseconds(), Total: time.Since(start).Milliseconds()}
	if err := checkpoint.Write(dir, meta); err != nil {
		return fmt.Errorf("writing checkpoint metadata: %w", err)
	}
	if req.Exit {
		stopped = true
		stopAfterExitCheckpoint(ctx, c)
		if c.gpu != nil {
			// The container is gone and the image complete: a GPU that is
			// not yet free is reported, not a reason to discard the image.
			if err := c.gpu.verifyReleased(ctx, c, meta.GPU, gpuBefore); err != nil {
				log.G(ctx).WithError(err).Error("GPU memory not released")
			}
			if err := checkpoint.Write(dir, meta); err != nil {
				return fmt.Errorf("writing checkpoint metadata: %w", err)
			}
		}
	}
	if !req.Exit && c.gpu != nil {
		c.gpu.watchReacquired(ctx, c, gpuBefore)
	}
	log.G(ctx).WithField("id", c.id).WithField("bytes", meta.Size()).WithField("runsc_ms", meta.Timings.Runsc).
		WithField("total_ms", meta.Timings.Total).WithField("exit", req.Exit).Info("checkpoint written")
	return nil
}

// exitCheckpointWait bounds how long an exit checkpoint waits for the
// container's exit to be recorded before it returns.
const exitCheckpointWait = 10 * time.Second

// stopAfterExitCheckpoint stops the container an exit checkpoint saved, as
// runsc's own exit does: the frozen sandbox is killed from the host (the
// status is 137, as after runc's CRIU dump), so no application code runs
// after the save and no GPU state is toggled back. It returns once the exit
// is recorded, so a Delete right after the checkpoint finds a stopped task.
func stopAfterExitCheckpoint(ctx context.Context, c *container) {
	ctx = context.WithoutCancel(ctx)
	if pid := c.init.Pid(); pid > 0 {
		if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			log.G(ctx).WithError(err).WithField("id", c.id).Error("stopping the sandbox after the exit checkpoint")
		}
	}
	wctx, cancel := context.WithTimeout(ctx, exitCheckpointWait)
	defer cancel()
	if err := c.init.Wait(wctx); err != nil {
		log.G(ctx).WithError(err).WithField("id", c.id).Warn("the container's exit after the exit checkpoint was not recorded in time")
	}
}

// untoggledCUDAHint explains runsc's error for a process whose CUDA state
// was not toggled off before the save: runsc skips, with only a warning in
// its log, every process for which the toggle tool cannot run or answer
// --get-state, and the save then meets the process's device mappings.
func untoggledCUDAHint(g *gpuSetup, err error) string {
	if !strings.Contains(err.Error(), "nvproxy.frontendFDMemmapFile") {
		return ""
	}
	if g == nil {
		return "; a process holds NVIDIA device memory but the container was not detected as a GPU container, so no CUDA checkpoint ran: give it its GPUs as devices (or CDI) so the shim enables the toggle"
	}
	return fmt.Sprintf("; a CUDA process was not toggled before the save: runsc skips processes for which the toggle tool (%s in the container) fails to run or to report --get-state (runsc's debug log says why); check that `%s --get-state --pid <pid>` runs inside the container (`ctr task exec`)", g.toolInContainer, g.toolInContainer)
}

func compressionOrDefault(c string) string {
	if c == "" {
		return "none"
	}
	return c
}

// recoverAfterFailedCheckpoint leaves the container as it was before a
// failed checkpoint and says, for the error, how it is: runsc resumes the
// sandbox itself on most failures, but a sandbox it left frozen is thawed
// unless containerd had paused it. A sandbox that died during the checkpoint
// (killed, out of memory) is reported as such; its exit reaches containerd
// through the exit watcher as any other.
func (s *Service) recoverAfterFailedCheckpoint(ctx context.Context, c *container, paused bool) string {
	ctx = context.WithoutCancel(ctx)
	if pid := c.init.Pid(); pid > 0 && !sandboxStaysAlive(pid) {
		log.G(ctx).WithField("id", c.id).WithField("pid", pid).Error("the sandbox died during the checkpoint")
		return fmt.Sprintf("the container is no longer running: its sandbox (pid %d) exited during the checkpoint", pid)
	}
	st, err := c.init.Runtime().State(ctx, c.id)
	if err != nil {
		log.G(ctx).WithError(err).WithField("id", c.id).Warn("container state unknown after a failed checkpoint")
		return fmt.Sprintf("the container's state is unknown: %v", err)
	}
	switch st.Status {
	case "running":
		return "the container keeps running"
	case "paused":
		if paused {
			return "the container keeps running, paused as it was when the checkpoint began"
		}
		if err := c.init.Runtime().Resume(ctx, c.id); err != nil {
			log.G(ctx).WithError(err).WithField("id", c.id).Error("could not resume the container after a failed checkpoint")
			return fmt.Sprintf("the container is left frozen: resuming it failed: %v", err)
		}
		return "the container keeps running"
	default:
		return fmt.Sprintf("the container is no longer running (runsc reports it %s)", st.Status)
	}
}

// runscFailureStatus is the exit status of a runsc command that failed
// (gVisor's util.Fatalf, subcommands.ExitFailure), for example a `runsc exec`
// whose sandbox is gone.
const runscFailureStatus = 128

// sandboxStaysAlive reports whether pid is alive now and a moment later: a
// checkpoint that failed because its sandbox was killed may return while the
// sandbox is still being torn down.
func sandboxStaysAlive(pid int) bool {
	for range 5 {
		if !sandboxAlive(pid) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// sandboxAlive reports whether pid is a live process: not gone, not a zombie
// waiting to be reaped, and not exiting. A sandbox killed during a checkpoint
// closes runsc's connection while it exits, before it is a zombie; the
// kernel marks it PF_EXITING first.
func sandboxAlive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ppid pgrp session tty_nr tpgid flags ...: the fields
	// after the last ')'.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return false
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 7 {
		return false
	}
	switch f[0] {
	case "Z", "X", "x":
		return false
	}
	const pfExiting = 0x4 // include/linux/sched.h PF_EXITING
	if flags, err := strconv.ParseUint(f[6], 10, 64); err == nil && flags&pfExiting != 0 {
		return false
	}
	return true
}

// checkpointMarkerFile, in the bundle, names the image directory of the
// checkpoint in progress.
const checkpointMarkerFile = "checkpoint-in-progress"

func markCheckpoint(bundle, dir string) error {
	if err := os.WriteFile(filepath.Join(bundle, checkpointMarkerFile), []byte(dir), 0o600); err != nil {
		return fmt.Errorf("recording the checkpoint in progress: %w", err)
	}
	return nil
}

func unmarkCheckpoint(ctx context.Context, bundle string) {
	if err := os.Remove(filepath.Join(bundle, checkpointMarkerFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.G(ctx).WithError(err).Warn("removing the checkpoint marker")
	}
}

// removeInterruptedCheckpoint removes the files of a checkpoint the shim was
// writing when it died; `shim delete` calls it after the sandbox is gone. The
// shim only checkpoints into empty directories, so what the directory holds
// is that checkpoint's, unless it completed (runsc-cuda.json is there).
func removeInterruptedCheckpoint(ctx context.Context, bundle string) {
	marker := filepath.Join(bundle, checkpointMarkerFile)
	data, err := os.ReadFile(marker)
	if err != nil {
		return
	}
	dir := string(data)
	if filepath.IsAbs(dir) && !hasDotDot(dir) {
		if _, err := os.Stat(filepath.Join(dir, checkpoint.MetadataFile)); errors.Is(err, os.ErrNotExist) {
			log.G(ctx).WithField("dir", dir).Warn("removing the files of a checkpoint interrupted by the shim's death")
			removePartialImage(ctx, dir)
		}
	}
	_ = os.Remove(marker)
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

// checkRunsc fails early, with a clear message, when runsc is missing.
func checkRunsc(ctx context.Context, rt *runsc.Runsc) error {
	bin := rt.Binary
	if bin == "" {
		bin = runsc.DefaultBinary
	}
	if _, err := lookPath(bin); err != nil {
		return fmt.Errorf("%w: runsc binary %q not found (%v); install gVisor's runsc or set binary_name in the shim config", errdefs.ErrFailedPrecondition, bin, err)
	}
	return nil
}

// checkRestore validates a checkpoint against this host before anything is
// created. Mismatches are FailedPrecondition errors naming both sides.
func checkRestore(ctx context.Context, rt *runsc.Runsc, dir string, c *container) (*checkpoint.Metadata, error) {
	start := time.Now()
	meta, err := checkpoint.Read(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: cannot restore: %v", errdefs.ErrFailedPrecondition, err)
	}
	check := meta.CheckFiles
	if c.config.Checkpoint.Verify {
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
	if err := compareSpec(meta.Spec, summarizeSpec(c.spec)); err != nil {
		return nil, fmt.Errorf("%w: cannot restore into this container: %v", errdefs.ErrFailedPrecondition, err)
	}
	if err := checkPodRestore(meta, c.spec); err != nil {
		return nil, fmt.Errorf("%w: cannot restore into this container: %v", errdefs.ErrFailedPrecondition, err)
	}
	if meta.GPU != nil && c.gpu == nil {
		return nil, fmt.Errorf("%w: checkpoint holds GPU state but the container spec has no NVIDIA GPU devices", errdefs.ErrFailedPrecondition)
	}
	var gpuDur time.Duration
	if c.gpu != nil {
		tg := time.Now()
		deviceMap, err := c.gpu.checkRestore(ctx, meta.GPU)
		gpuDur = time.Since(tg)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errdefs.ErrFailedPrecondition, err)
		}
		log.G(ctx).WithField("id", c.id).WithField("device_map", deviceMap).Info("GPU restore: device map for the CUDA toggle")
		setDeviceMap(c.spec, deviceMap)
		if err := writeSpec(c.bundle, c.spec); err != nil {
			return nil, err
		}
	}
	log.G(ctx).WithField("id", c.id).WithField("ms", time.Since(start).Milliseconds()).
		WithField("gpu_ms", gpuDur.Milliseconds()).Info("restore checked")
	return meta, nil
}

// restore restores a created container from its checkpoint.
func (s *Service) restore(ctx context.Context, c *container) error {
	t0 := time.Now()
	start := c.init.Start
	if subcontainer(c.spec) {
		// A pod's container: the image holds the whole pod (pod.go).
		start = func(ctx context.Context) error { return s.restoreIntoPod(ctx, c) }
	}
	if err := start(ctx); err != nil {
		return err
	}
	log.G(ctx).WithField("id", c.id).WithField("ms", time.Since(t0).Milliseconds()).Info("restored")
	if c.gpu != nil {
		c.gpu.verifyAfterRestore(ctx, c, c.restored.GPU)
	}
	return nil
}
