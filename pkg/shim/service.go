package shim

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/containerd/cgroups/v3"
	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/api/types/task"
	runcplatform "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/runc"
	"github.com/containerd/containerd/v2/pkg/namespaces"
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

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/process"
)

var empty = &ptypes.Empty{}

// Service is the task service (task API v3) of the shim. Each method finds
// the container, calls it, and publishes the event the call causes.
type Service struct {
	ctx      context.Context
	shutdown shutdown.Service
	shared   *shared

	mu         sync.Mutex
	containers map[string]*container
	// shutdownRequested is set when containerd asked the shim to shut down
	// while it still served containers (a pod's sandbox container deleted
	// before another); the shim shuts down once the last one is deleted.
	shutdownRequested bool
}

var _ taskAPI.TTRPCTaskService = (*Service)(nil)

// NewService returns the task service; the shim's plugin registration calls
// it.
func NewService(ctx context.Context, publisher cdshim.Publisher, sd shutdown.Service) (*Service, error) {
	ns, _ := namespaces.Namespace(ctx)
	platform, err := runcplatform.NewPlatform()
	if err != nil {
		return nil, fmt.Errorf("initializing console platform: %w", err)
	}
	ev := newEvents(ctx, publisher, sd)
	s := &Service{
		ctx:        ctx,
		shutdown:   sd,
		containers: make(map[string]*container),
	}
	s.shared = &shared{
		namespace: ns,
		platform:  platform,
		hub:       process.NewExitHub(),
		exited:    make(chan process.Exited, 32),
		events:    ev,
		oom:       newOOMWatcher(func(id string) { ev.send(&eventstypes.TaskOOM{ContainerID: id}) }),
		sandboxes: &sandboxes{},
	}
	go s.shared.hub.Run(reaper.Default.Subscribe())
	go s.handleExits()
	sd.RegisterCallback(func(context.Context) error { return platform.Close() })
	if address, err := cdshim.ReadAddress(addressFile); err == nil {
		sd.RegisterCallback(func(context.Context) error { return cdshim.RemoveSocket(address) })
	}
	return s, nil
}

// RegisterTTRPC registers the task service.
func (s *Service) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTTRPCTaskService(server, s)
	return nil
}

// handleExits hands the exits processes report to their containers.
func (s *Service) handleExits() {
	for e := range s.shared.exited {
		if c, err := s.get(e.Container); err == nil {
			c.exited(s.ctx, s.shared.events, e)
		}
	}
}

// sandbox returns the sandbox c runs in.
func (s *Service) sandbox(c *container) *sandbox {
	return s.shared.sandboxes.lookup(c.sandboxID)
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

// Create creates the container in runsc (newContainer). With r.Checkpoint
// set, the checkpoint is checked against this host first and Start restores
// it.
func (s *Service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	s.mu.Lock()
	_, exists := s.containers[r.ID]
	s.mu.Unlock()
	if exists {
		return nil, errgrpc.ToGRPCf(errdefs.ErrAlreadyExists, "container %s", r.ID)
	}
	c, sb, err := newContainer(ctx, s.shared, r)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	s.mu.Lock()
	s.containers[r.ID] = c
	s.mu.Unlock()
	checkpoint := r.Checkpoint
	if c.restore != nil {
		checkpoint = c.restore.dir
	}
	s.shared.events.send(&eventstypes.TaskCreate{
		ContainerID: r.ID,
		Bundle:      r.Bundle,
		Rootfs:      r.Rootfs,
		IO:          &eventstypes.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
		Checkpoint:  checkpoint,
		Pid:         uint32(c.init.Pid()),
	})
	sb.watchOOM(ctx, c)
	return &taskAPI.CreateTaskResponse{Pid: uint32(c.init.Pid())}, nil
}

// Start starts (or restores) the container, or starts an exec'd process.
func (s *Service) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	c, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	if r.ExecID == "" {
		t := time.Now()
		if err := s.sandbox(c).start(ctx, c); err != nil {
			return nil, errgrpc.ToGRPC(err)
		}
		s.shared.events.send(&eventstypes.TaskStart{ContainerID: c.id, Pid: uint32(c.init.Pid())})
		if c.restore != nil {
			s.shared.events.publish(ctx, restoreTopic, map[string]any{"container_id": c.id, "checkpoint": c.restoreName(), "restored": true, "ms": time.Since(t).Milliseconds()})
		}
		return &taskAPI.StartResponse{Pid: uint32(c.init.Pid())}, nil
	}
	p, err := c.startExec(ctx, r.ExecID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	s.shared.events.send(&eventstypes.TaskExecStarted{ContainerID: c.id, ExecID: r.ExecID, Pid: uint32(p.Pid())})
	return &taskAPI.StartResponse{Pid: uint32(p.Pid())}, nil
}

// Delete deletes the container, or an exec'd process.
func (s *Service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	c, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	var p process.Process = c.init
	if r.ExecID != "" {
		if p, err = c.deleteExec(ctx, r.ExecID); err != nil {
			return nil, errgrpc.ToGRPC(err)
		}
	} else {
		if err := c.init.Delete(ctx); err != nil {
			return nil, errgrpc.ToGRPC(err)
		}
		s.sandbox(c).leavePod(ctx, c)
		c.removeUnpacked(ctx)
		s.mu.Lock()
		delete(s.containers, r.ID)
		last := len(s.containers) == 0 && s.shutdownRequested
		s.mu.Unlock()
		if last {
			s.shutdownWhenIdle()
		}
		s.shared.events.send(&eventstypes.TaskDelete{
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
	if r.Spec == nil {
		return nil, errgrpc.ToGRPCf(errdefs.ErrInvalidArgument, "exec %s has no process spec", r.ExecID)
	}
	var spec specs.Process
	if err := typeurl.UnmarshalTo(r.Spec, &spec); err != nil {
		// Older clients send the spec as JSON in an Any without a proto type.
		if jerr := jsonUnmarshal(r.Spec.GetValue(), &spec); jerr != nil {
			return nil, errgrpc.ToGRPCf(errdefs.ErrInvalidArgument, "exec %s: reading process spec: %v", r.ExecID, err)
		}
	}
	err = c.exec(ctx, process.ExecConfig{
		ID:    r.ExecID,
		Stdio: stdio.Stdio{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
		Spec:  spec,
	})
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	s.shared.events.send(&eventstypes.TaskExecAdded{ContainerID: c.id, ExecID: r.ExecID})
	return empty, nil
}

// ResizePty resizes a process's console.
func (s *Service) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*ptypes.Empty, error) {
	p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if err := p.Resize(consoleSize(r.Width, r.Height)); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return empty, nil
}

// process finds a process: init for an empty exec id.
func (s *Service) process(id, execID string) (process.Process, error) {
	c, err := s.get(id)
	if err != nil {
		return nil, err
	}
	p, err := c.process(execID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return p, nil
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
	sio := p.Stdio()
	return &taskAPI.StateResponse{
		ID:         p.ID(),
		Bundle:     string(c.bundle),
		Pid:        uint32(p.Pid()),
		Status:     taskStatus(st),
		Stdin:      sio.Stdin,
		Stdout:     sio.Stdout,
		Stderr:     sio.Stderr,
		Terminal:   sio.Terminal,
		ExitStatus: uint32(p.ExitStatus()),
		ExitedAt:   protobuf.ToTimestamp(p.ExitedAt()),
	}, nil
}

func taskStatus(st string) task.Status {
	switch st {
	case process.StatusCreated:
		return task.Status_CREATED
	case process.StatusRunning:
		return task.Status_RUNNING
	case process.StatusPaused:
		return task.Status_PAUSED
	case process.StatusStopped:
		return task.Status_STOPPED
	}
	return task.Status_UNKNOWN
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
	s.shared.events.send(&eventstypes.TaskPaused{ContainerID: c.id})
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
	s.shared.events.send(&eventstypes.TaskResumed{ContainerID: c.id})
	return empty, nil
}

// Kill signals a process, or with All every process of the container.
func (s *Service) Kill(ctx context.Context, r *taskAPI.KillRequest) (*ptypes.Empty, error) {
	p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
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
	pids, err := c.rt.Ps(ctx, c.id)
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
	p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
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
	p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
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
// A container that is gone is NotFound.
func (s *Service) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	c, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	// A stopped container has no stats: NotFound, which containerd skips
	// quietly (its CRI asks for metrics at every exit with status 137, to
	// tell an OOM kill, and its stats collector each second).
	if c.hasExited() {
		return nil, errgrpc.ToGRPC(fmt.Errorf("%w: container %s has stopped: it has no stats", errdefs.ErrNotFound, c.id))
	}
	st, err := c.rt.Stats(ctx, c.id)
	if err != nil {
		// runsc fails for a container that has just exited, before the
		// shim has heard of its exit.
		for deadline := time.Now().Add(statsExitWait); time.Now().Before(deadline) && !c.hasExited(); {
			time.Sleep(20 * time.Millisecond)
		}
		if c.hasExited() {
			err = fmt.Errorf("%w: container %s stopped: it has no stats", errdefs.ErrNotFound, c.id)
		}
		return nil, errgrpc.ToGRPC(err)
	}
	withHostLimits(st, c.init.Pid())
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

// Checkpoint saves the container's sandbox into the given directory, by the
// pod rules (pod.go) for a pod's container. containerd pauses the task
// first; the container is left as it was (running, or paused until
// containerd resumes it) unless Exit is set. On failure the directory holds
// nothing that looks like a checkpoint, and the error says what became of
// the container.
func (s *Service) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*ptypes.Empty, error) {
	c, err := s.get(r.ID)
	if err != nil {
		return nil, err
	}
	req, err := parseCheckpointOptions(r.Options, r.Path, c.config)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	pod, err := s.sandbox(c).checkpointPod(ctx, c, req.Exit)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if err := c.checkpoint(ctx, req, pod); err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	s.shared.events.send(&eventstypes.TaskCheckpointed{ContainerID: c.id, Checkpoint: req.Dir})
	return empty, nil
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

// statsExitWait is how long a Stats that runsc failed waits to hear that
// the container exited (and answer NotFound) before it returns the error.
const statsExitWait = time.Second

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
