package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	cgroupsv2 "github.com/containerd/cgroups/v3/cgroup2"
	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types"
	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/api/types/task"
	runcplatform "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/runc"
	"github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oom"
	oomv1 "github.com/containerd/containerd/v2/pkg/oom/v1"
	oomv2 "github.com/containerd/containerd/v2/pkg/oom/v2"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	ptypes "github.com/containerd/containerd/v2/pkg/protobuf/types"
	cdshim "github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/containerd/v2/pkg/stdio"
	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/process"
)

type typesMount = types.Mount

var empty = &ptypes.Empty{}

// execExitTimeout bounds how long the init exit waits for exec'd processes
// to report their exits first (containerd expects init's exit last).
const execExitTimeout = 3 * time.Second

// Service is the task service (task API v3) of the shim.
type Service struct {
	ctx       context.Context
	namespace string
	publisher cdshim.Publisher
	shutdown  shutdown.Service
	platform  stdio.Platform
	exits     *process.ExitHub
	oom       oom.Watcher
	// oomMuter filters the OOM watcher's events (see oommute.go).
	oomMuter *oomMuter
	events   chan any

	mu         sync.Mutex
	containers map[string]*container
	// shutdownRequested is set when containerd asked the shim to shut down
	// while it still served containers (a pod's sandbox container deleted
	// before another); the shim shuts down once the last one is deleted.
	shutdownRequested bool
}

var _ taskAPI.TTRPCTaskService = (*Service)(nil)

// NewService returns the task service; the shim's plugin registration calls it.
func NewService(ctx context.Context, publisher cdshim.Publisher, sd shutdown.Service) (*Service, error) {
	ns, _ := namespaces.Namespace(ctx)
	var (
		w   oom.Watcher
		err error
	)
	muter := newOOMMuter(publisher)
	if cgroups.Mode() == cgroups.Unified {
		w, err = oomv2.New(muter)
	} else {
		w, err = oomv1.New(muter)
	}
	if err != nil {
		return nil, fmt.Errorf("starting OOM watcher: %w", err)
	}
	go w.Run(ctx)
	platform, err := runcplatform.NewPlatform()
	if err != nil {
		return nil, fmt.Errorf("initializing console platform: %w", err)
	}
	s := &Service{
		ctx:        ctx,
		namespace:  ns,
		publisher:  publisher,
		shutdown:   sd,
		platform:   platform,
		exits:      process.NewExitHub(),
		oom:        w,
		oomMuter:   muter,
		events:     make(chan any, 128),
		containers: make(map[string]*container),
	}
	go s.exits.Run(reaper.Default.Subscribe())
	// The shim library exits as soon as the shutdown callbacks return, so
	// one of them delivers the events still queued (containerd calls
	// Shutdown right after the Delete that queued TaskDelete).
	flush, flushed := make(chan struct{}), make(chan struct{})
	go s.forward(ctx, flush, flushed)
	sd.RegisterCallback(func(cctx context.Context) error {
		close(flush)
		select {
		case <-flushed:
		case <-cctx.Done():
		}
		return nil
	})
	sd.RegisterCallback(func(context.Context) error { return platform.Close() })
	if address, err := cdshim.ReadAddress("address"); err == nil {
		sd.RegisterCallback(func(context.Context) error { return cdshim.RemoveSocket(address) })
	}
	return s, nil
}

// RegisterTTRPC registers the task service.
func (s *Service) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTTRPCTaskService(server, s)
	return nil
}

func (s *Service) get(id string) (*container, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.containers[id]
	if !ok {
		return nil, errgrpc.ToGRPCf(errdefs.ErrNotFound, "container %s not created in this shim", id)
	}
	return c, nil
}

func (s *Service) send(evt any) {
	select {
	case s.events <- evt:
	case <-s.shutdown.Done():
	}
}

func (s *Service) forward(ctx context.Context, flush <-chan struct{}, flushed chan<- struct{}) {
	ctx = context.WithoutCancel(ctx)
	defer close(flushed)
	defer s.publisher.Close()
	publish := func(e any) {
		if err := s.publisher.Publish(ctx, runtime.GetTopic(e), e); err != nil {
			log.G(ctx).WithError(err).Error("publishing event")
		}
	}
	for {
		select {
		case e := <-s.events:
			publish(e)
		case <-flush:
			for {
				select {
				case e := <-s.events:
					publish(e)
				default:
					return
				}
			}
		}
	}
}

// Create creates the container in runsc: the sandbox (or a subcontainer of
// a pod sandbox) exists afterwards, nothing runs yet. With r.Checkpoint set,
// the checkpoint is validated against this host first and Start restores it.
func (s *Service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (_ *taskAPI.CreateTaskResponse, retErr error) {
	c, err := s.create(ctx, r)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	s.mu.Lock()
	s.containers[r.ID] = c
	s.mu.Unlock()

	s.send(&eventstypes.TaskCreate{
		ContainerID: r.ID,
		Bundle:      r.Bundle,
		Rootfs:      r.Rootfs,
		IO:          &eventstypes.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
		Checkpoint:  r.Checkpoint,
		Pid:         uint32(c.init.Pid()),
	})
	s.watchOOM(ctx, c)
	return &taskAPI.CreateTaskResponse{Pid: uint32(c.init.Pid())}, nil
}

func (s *Service) create(ctx context.Context, r *taskAPI.CreateTaskRequest) (_ *container, retErr error) {
	s.mu.Lock()
	_, exists := s.containers[r.ID]
	s.mu.Unlock()
	if exists {
		return nil, fmt.Errorf("container %s: %w", r.ID, errdefs.ErrAlreadyExists)
	}
	cfg, err := ParseOptions(r.Options)
	if err != nil {
		return nil, err
	}
	restoreOpts, err := restorePathFromOptions(r)
	if err != nil {
		return nil, err
	}
	spec, err := readSpec(r.Bundle)
	if err != nil {
		return nil, err
	}
	if err := checkTerminal(r.Terminal, spec.Process); err != nil {
		return nil, err
	}
	if err := s.repointPodNamespaces(r.Bundle, spec); err != nil {
		return nil, err
	}
	c := &container{
		id:       r.ID,
		bundle:   r.Bundle,
		spec:     spec,
		config:   cfg,
		execs:    make(map[string]*process.Exec),
		reserved: make(map[string]struct{}),
	}
	// GPU containers get nvproxy and the toggle tool mount; the spec is
	// rewritten before runsc sees it, identically at restore.
	if c.gpu, err = prepareGPU(ctx, cfg, spec); err != nil {
		return nil, err
	}
	if c.gpu != nil {
		c.gpu.publish = s.publishJSON
		if err := writeSpec(r.Bundle, spec); err != nil {
			return nil, err
		}
	}
	rt := newRunsc(cfg, s.namespace, sandboxID(r.ID, spec), r.Bundle, c.gpu != nil, reaper.Default)
	if o := defaultOverlay2(cfg, spec, r.Rootfs); o != "" {
		rt.Flags["overlay2"] = o
	}
	if err := checkRunsc(ctx, rt); err != nil {
		return nil, err
	}
	var restore *process.RestoreConfig
	if restoreOpts != "" {
		// Validate before anything is created: a mismatch leaves no trace.
		meta, err := checkRestore(ctx, rt, restoreOpts, c)
		if err != nil {
			return nil, err
		}
		c.restored = meta
		restore = &process.RestoreConfig{
			ImagePath:  restoreOpts,
			Direct:     cfg.Checkpoint.RestoreDirect,
			Background: cfg.Checkpoint.BackgroundRestoreEnabled() && meta.Compression == "none",
		}
	}
	if err := writeBundleConfig(r.Bundle, cfg); err != nil {
		return nil, err
	}
	rootfs, unmount, err := mountRootfs(ctx, r.Bundle, r.Rootfs)
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			unmount()
		}
	}()
	c.init = process.NewInit(process.InitConfig{
		ID:           r.ID,
		Bundle:       r.Bundle,
		Rootfs:       rootfs,
		Stdio:        stdio.Stdio{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
		IoUID:        cfg.IoUID,
		IoGID:        cfg.IoGID,
		Runtime:      rt,
		Platform:     s.platform,
		Exits:        s.exits,
		Subcontainer: subcontainer(spec),
		Restore:      restore,
		OnExit:       func(p *process.Init, status int) { s.initExited(c, p, status) },
	})
	if err := c.init.Create(ctx); err != nil {
		removeSandboxRoot(ctx, rt)
		return nil, fmt.Errorf("creating container %s: %w", r.ID, err)
	}
	c.createdPid = c.init.Pid()
	return c, nil
}

// restorePathFromOptions returns the checkpoint to restore: the request's
// Checkpoint, or runc options' CriuImagePath (containerd passes the latter
// through for a restore from a path).
func restorePathFromOptions(r *taskAPI.CreateTaskRequest) (string, error) {
	path := r.Checkpoint
	if path == "" && r.Options != nil {
		if v, err := typeurl.UnmarshalAny(r.Options); err == nil {
			if o, ok := v.(*runcoptions.Options); ok {
				path = o.CriuImagePath
			}
		}
	}
	if path == "" {
		return "", nil
	}
	if !filepath.IsAbs(path) || hasDotDot(path) {
		return "", fmt.Errorf("%w: checkpoint path %q must be absolute, without \"..\"", errdefs.ErrInvalidArgument, path)
	}
	return filepath.Clean(path), nil
}

func (s *Service) watchOOM(ctx context.Context, c *container) {
	pid := c.init.Pid()
	if pid <= 0 {
		return
	}
	var (
		cg  any
		err error
	)
	if cgroups.Mode() == cgroups.Unified {
		var path string
		if path, err = cgroupsv2.PidGroupPath(pid); err == nil {
			cg, err = cgroupsv2.Load(path)
		}
	} else {
		cg, err = cgroup1.Load(cgroup1.PidPath(pid))
	}
	if err == nil {
		err = s.oom.Add(c.id, cg)
	}
	if err != nil {
		log.G(ctx).WithError(err).WithField("id", c.id).Warn("OOM events will not be reported for this container")
	}
}

// Start starts (or restores) the container, or starts an exec'd process.
func (s *Service) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	c, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	if r.ExecID == "" {
		if c.init.Restoring() {
			if err := s.restore(ctx, c); err != nil {
				return nil, errgrpc.ToGRPC(err)
			}
		} else if err := c.init.Start(ctx); err != nil {
			return nil, errgrpc.ToGRPC(err)
		}
		s.send(&eventstypes.TaskStart{ContainerID: c.id, Pid: uint32(c.init.Pid())})
		return &taskAPI.StartResponse{Pid: uint32(c.init.Pid())}, nil
	}
	p, err := c.process(r.ExecID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	c.mu.Lock()
	exited := c.initExited
	c.mu.Unlock()
	if exited {
		return nil, errgrpc.ToGRPCf(errdefs.ErrFailedPrecondition, "container %s is not running", c.id)
	}
	if err := p.Start(ctx); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	s.send(&eventstypes.TaskExecStarted{ContainerID: c.id, ExecID: r.ExecID, Pid: uint32(p.Pid())})
	return &taskAPI.StartResponse{Pid: uint32(p.Pid())}, nil
}

// initExited handles the exit of a container's init process: exec'd
// processes report their exits first, then init's exit is recorded and
// published.
func (s *Service) initExited(c *container, p *process.Init, status int) {
	c.mu.Lock()
	c.initExited = true
	c.mu.Unlock()
	deadline := time.Now().Add(execExitTimeout)
	for _, e := range c.execList() {
		st, _ := e.Status(s.ctx)
		if st != process.StatusRunning {
			continue
		}
		ctx, cancel := context.WithDeadline(s.ctx, deadline)
		if err := e.Wait(ctx); err != nil {
			// The sandbox is gone; so is the process. Report it.
			e.SetExited(128 + 9)
			s.publishExit(c, e.ID(), e.Pid(), e.ExitStatus(), e.ExitedAt())
		}
		cancel()
	}
	p.SetExited(status)
	if err := writeExitStatus(c.bundle, p.Pid(), p.ExitStatus(), p.ExitedAt()); err != nil {
		log.G(s.ctx).WithError(err).Warn("recording exit status in the bundle")
	}
	s.publishExit(c, c.id, p.Pid(), p.ExitStatus(), p.ExitedAt())
}

func (s *Service) execExited(c *container, e *process.Exec, status int) {
	if status == runscFailureStatus && !sandboxAlive(c.init.Pid()) {
		// `runsc exec` lost its sandbox (killed by an exit checkpoint, the
		// OOM killer, a crash) and exited with runsc's own failure status:
		// the process died with the sandbox, as if killed.
		status = 128 + 9
	}
	e.SetExited(status)
	s.publishExit(c, e.ID(), e.Pid(), e.ExitStatus(), e.ExitedAt())
}

func (s *Service) publishExit(c *container, id string, pid, status int, at time.Time) {
	s.send(&eventstypes.TaskExit{
		ContainerID: c.id,
		ID:          id,
		Pid:         uint32(pid),
		ExitStatus:  uint32(status),
		ExitedAt:    protobuf.ToTimestamp(at),
	})
}

// Delete deletes the container, or an exec'd process.
func (s *Service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	c, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	p, err := c.process(r.ExecID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if err := p.Delete(ctx); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if r.ExecID == "" {
		removeSandboxRoot(ctx, c.init.Runtime())
	}
	if r.ExecID != "" {
		c.mu.Lock()
		delete(c.execs, r.ExecID)
		c.mu.Unlock()
	} else {
		s.mu.Lock()
		delete(s.containers, r.ID)
		last := len(s.containers) == 0 && s.shutdownRequested
		s.mu.Unlock()
		if last {
			s.shutdownWhenIdle()
		}
		s.send(&eventstypes.TaskDelete{
			ContainerID: c.id,
			Pid:         uint32(p.Pid()),
			ExitStatus:  uint32(p.ExitStatus()),
			ExitedAt:    protobuf.ToTimestamp(p.ExitedAt()),
		})
	}
	return &taskAPI.DeleteResponse{
		Pid:        uint32(p.Pid()),
		ExitStatus: uint32(p.ExitStatus()),
		ExitedAt:   protobuf.ToTimestamp(p.ExitedAt()),
	}, nil
}

// Exec creates an exec'd process (Start runs it).
func (s *Service) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*ptypes.Empty, error) {
	c, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	ok, release := c.reserveExec(r.ExecID)
	if !ok {
		return nil, errgrpc.ToGRPCf(errdefs.ErrAlreadyExists, "exec %s already exists in container %s", r.ExecID, r.ID)
	}
	defer release()
	var spec specs.Process
	if r.Spec == nil {
		return nil, errgrpc.ToGRPCf(errdefs.ErrInvalidArgument, "exec %s has no process spec", r.ExecID)
	}
	if err := typeurl.UnmarshalTo(r.Spec, &spec); err != nil {
		// Older clients send the spec as JSON in an Any without a proto type.
		if jerr := jsonUnmarshal(r.Spec.GetValue(), &spec); jerr != nil {
			return nil, errgrpc.ToGRPCf(errdefs.ErrInvalidArgument, "exec %s: reading process spec: %v", r.ExecID, err)
		}
	}
	e, err := c.init.Exec(ctx, c.bundle, process.ExecConfig{
		ID:     r.ExecID,
		Stdio:  stdio.Stdio{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
		Spec:   spec,
		OnExit: func(e *process.Exec, status int) { s.execExited(c, e, status) },
	})
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	c.mu.Lock()
	c.execs[r.ExecID] = e
	c.mu.Unlock()
	s.send(&eventstypes.TaskExecAdded{ContainerID: c.id, ExecID: r.ExecID})
	return empty, nil
}

// ResizePty resizes a process's console.
func (s *Service) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*ptypes.Empty, error) {
	c, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	p, err := c.process(r.ExecID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if err := p.Resize(consoleSize(r.Width, r.Height)); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return empty, nil
}

// State reports a process's state.
func (s *Service) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	c, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	p, err := c.process(r.ExecID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	st, err := p.Status(ctx)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	status := task.Status_UNKNOWN
	switch st {
	case process.StatusCreated:
		status = task.Status_CREATED
	case process.StatusRunning:
		status = task.Status_RUNNING
	case process.StatusPaused:
		status = task.Status_PAUSED
	case process.StatusStopped:
		status = task.Status_STOPPED
	}
	sio := p.Stdio()
	return &taskAPI.StateResponse{
		ID:         p.ID(),
		Bundle:     c.bundle,
		Pid:        uint32(p.Pid()),
		Status:     status,
		Stdin:      sio.Stdin,
		Stdout:     sio.Stdout,
		Stderr:     sio.Stderr,
		Terminal:   sio.Terminal,
		ExitStatus: uint32(p.ExitStatus()),
		ExitedAt:   protobuf.ToTimestamp(p.ExitedAt()),
	}, nil
}

// Pause freezes the container.
func (s *Service) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*ptypes.Empty, error) {
	c, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	if err := c.init.Pause(ctx); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	s.send(&eventstypes.TaskPaused{ContainerID: c.id})
	return empty, nil
}

// Resume thaws the container.
func (s *Service) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*ptypes.Empty, error) {
	c, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	if err := c.init.Resume(ctx); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	s.send(&eventstypes.TaskResumed{ContainerID: c.id})
	return empty, nil
}

// Kill signals a process, or with All every process of the container.
func (s *Service) Kill(ctx context.Context, r *taskAPI.KillRequest) (*ptypes.Empty, error) {
	c, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	p, err := c.process(r.ExecID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if err := p.Kill(ctx, r.Signal, r.All); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return empty, nil
}

// Pids lists the container's processes (pids inside the sandbox).
func (s *Service) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	c, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	pids, err := c.init.Runtime().Ps(ctx, c.id)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	execs := c.execList()
	var out []*task.ProcessInfo
	for _, pid := range pids {
		info := &task.ProcessInfo{Pid: uint32(pid)}
		for _, e := range execs {
			if e.InternalPid() == pid {
				a, err := typeurl.MarshalAnyToProto(&runcoptions.ProcessDetails{ExecID: e.ID()})
				if err != nil {
					return nil, err
				}
				info.Info = a
				break
			}
		}
		out = append(out, info)
	}
	return &taskAPI.PidsResponse{Processes: out}, nil
}

// CloseIO closes a process's stdin.
func (s *Service) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*ptypes.Empty, error) {
	c, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	p, err := c.process(r.ExecID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if stdin := p.Stdin(); stdin != nil {
		if err := stdin.Close(); err != nil {
			return nil, errgrpc.ToGRPCf(errdefs.ErrUnknown, "closing stdin: %v", err)
		}
	}
	return empty, nil
}

// Update applies new resource limits to the container.
func (s *Service) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*ptypes.Empty, error) {
	c, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	if r.Resources == nil {
		return nil, errgrpc.ToGRPCf(errdefs.ErrInvalidArgument, "update of %s carries no resources", r.ID)
	}
	var res specs.LinuxResources
	if err := typeurl.UnmarshalTo(r.Resources, &res); err != nil {
		if jerr := jsonUnmarshal(r.Resources.GetValue(), &res); jerr != nil {
			return nil, errgrpc.ToGRPCf(errdefs.ErrInvalidArgument, "reading resources: %v", err)
		}
	}
	if err := c.init.Update(ctx, &res); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return empty, nil
}

// Wait blocks until a process exits.
func (s *Service) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	c, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	p, err := c.process(r.ExecID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if err := p.Wait(ctx); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &taskAPI.WaitResponse{
		ExitStatus: uint32(p.ExitStatus()),
		ExitedAt:   protobuf.ToTimestamp(p.ExitedAt()),
	}, nil
}

// Stats returns the container's resource usage as cgroup metrics of this
// host's cgroup version, measured by the sandbox (`runsc events --stats`).
func (s *Service) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	c, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	st, err := c.init.Runtime().Stats(ctx, c.id)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	any, err := metricsFromStats(st, cgroups.Mode() == cgroups.Unified)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &taskAPI.StatsResponse{Stats: any}, nil
}

// Connect returns the shim's and the container's pid.
func (s *Service) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	var pid int
	if c, err := s.get(r.ID); err == nil {
		pid = c.init.Pid()
	}
	return &taskAPI.ConnectResponse{ShimPid: uint32(os.Getpid()), TaskPid: uint32(pid)}, nil
}

// Shutdown stops the shim once it serves no container.
func (s *Service) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.containers) > 0 {
		s.shutdownRequested = true
		return empty, nil
	}
	s.shutdown.Shutdown()
	return empty, nil
}

// shutdownDelay lets the reply to the Delete that removed the last container
// reach containerd before a requested shutdown ends the shim.
const shutdownDelay = time.Second

// shutdownWhenIdle shuts the shim down shortly, unless it serves a container
// again by then: containerd asked for the shutdown earlier, while containers
// were left (it deletes a pod's containers in no fixed order after a failed
// restore, and asks only after its sandbox container's delete).
func (s *Service) shutdownWhenIdle() {
	go func() {
		time.Sleep(shutdownDelay)
		s.mu.Lock()
		defer s.mu.Unlock()
		if len(s.containers) == 0 {
			log.G(s.ctx).Info("the last container was deleted after containerd asked for a shutdown; shutting down")
			s.shutdown.Shutdown()
		}
	}()
}

// publishJSON publishes v, as JSON, on a topic of the shim's own; `ctr
// events` shows it. Used for host-side GPU facts.
func (s *Service) publishJSON(ctx context.Context, topic string, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		return
	}
	if err := s.publisher.Publish(ctx, topic, wrapperspb.String(string(data))); err != nil {
		log.G(ctx).WithError(err).WithField("topic", topic).Warn("publishing event")
	}
}

// exitFileName records init's exit in the bundle for `shim delete`.
const exitFileName = "exit-status"

func writeExitStatus(bundle string, pid, status int, at time.Time) error {
	data := fmt.Sprintf("%d %d %d", pid, status, at.UnixNano())
	return os.WriteFile(filepath.Join(bundle, exitFileName), []byte(data), 0o600)
}

func readExitStatus(bundle string) (pid, status int, at time.Time, err error) {
	data, err := os.ReadFile(filepath.Join(bundle, exitFileName))
	if err != nil {
		return 0, 0, time.Time{}, err
	}
	var ns int64
	if _, err := fmt.Sscanf(string(data), "%d %d %d", &pid, &status, &ns); err != nil {
		return 0, 0, time.Time{}, fmt.Errorf("parsing %s: %w", exitFileName, err)
	}
	return pid, status, time.Unix(0, ns), nil
}
