package shim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/checkpoint"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/cuda"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/cuda/driver"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/runsc"
)

const (
	// ToggleToolPath is where GPU containers find the CUDA checkpoint tool.
	// It is mounted at create so the spec is the same at restore (runsc
	// compares the mounts).
	ToggleToolPath = "/.runsc-cuda/cuda-checkpoint"
	// DriverLibPath is where cuda.driver_lib_dir is mounted (the GKE
	// convention), and added to LD_LIBRARY_PATH.
	DriverLibPath = "/usr/local/nvidia/lib64"
	// toggleToolName is the tool's file name next to the shim binary.
	toggleToolName = "cuda-checkpoint"
	// gpuSettleTimeout bounds how long the host-side checks wait for the
	// sandbox's GPU memory to be released or re-acquired.
	gpuSettleTimeout = 15 * time.Second
)

// gpuHook is the GPU side of a container: what the shim does for a GPU
// container at checkpoint and restore. Containers without GPUs have noGPU,
// which does nothing.
type gpuHook interface {
	// checkpointing prepares a checkpoint of the sandbox of pid: runsc's
	// CUDA toggle options, and a look at the sandbox's GPU memory. It
	// refuses a checkpoint the driver cannot restore, before anything is
	// touched.
	checkpointing(ctx context.Context, pid int, spec *specs.Spec, o *runsc.CheckpointOpts) (gpuCheckpoint, error)
	// checkRestore checks a checkpoint's GPU facts against this host and
	// gives the restoring container's spec the device map.
	checkRestore(ctx context.Context, saved *checkpoint.GPU, spec *specs.Spec) error
	// restored reports, in the background, the restored sandbox's GPU
	// memory.
	restored(ctx context.Context, id string, pid int, saved *checkpoint.GPU)
	// explain says what a runsc failure means for the container's CUDA
	// state ("" when it means nothing particular).
	explain(err error) string
	// enabled reports whether the container uses GPUs.
	enabled() bool
}

// gpuCheckpoint is one checkpoint's GPU side.
type gpuCheckpoint interface {
	// facts are the checkpoint's GPU metadata (nil without GPUs).
	facts() *checkpoint.GPU
	discovery() time.Duration
	// released checks, after an exit checkpoint stopped the sandbox, that
	// its device memory is free again, and records it in facts.
	released(ctx context.Context, id string, facts *checkpoint.GPU)
	// resumed reports, in the background, the device memory the sandbox
	// holds again after a leave-running checkpoint.
	resumed(ctx context.Context, id string)
}

// noGPU is the gpuHook (and gpuCheckpoint) of a container without GPUs.
type noGPU struct{}

func (noGPU) checkpointing(context.Context, int, *specs.Spec, *runsc.CheckpointOpts) (gpuCheckpoint, error) {
	return noGPU{}, nil
}
func (noGPU) checkRestore(_ context.Context, saved *checkpoint.GPU, _ *specs.Spec) error {
	if saved != nil {
		return fmt.Errorf("%w: the checkpoint holds GPU state but the container spec has no NVIDIA GPU devices; give the container its GPUs (devices or CDI) as at checkpoint", errdefs.ErrFailedPrecondition)
	}
	return nil
}
func (noGPU) restored(context.Context, string, int, *checkpoint.GPU) {}
func (noGPU) explain(err error) string {
	if strings.Contains(err.Error(), "nvproxy.frontendFDMemmapFile") {
		return "; a process holds NVIDIA device memory but the container was not detected as a GPU container, so no CUDA checkpoint ran: give it its GPUs as devices (or CDI) so the shim enables the toggle"
	}
	return ""
}
func (noGPU) enabled() bool                                     { return false }
func (noGPU) facts() *checkpoint.GPU                            { return nil }
func (noGPU) discovery() time.Duration                          { return 0 }
func (noGPU) released(context.Context, string, *checkpoint.GPU) {}
func (noGPU) resumed(context.Context, string)                   {}

// gpuContainer is the gpuHook of a container that uses NVIDIA GPUs through
// nvproxy.
type gpuContainer struct {
	cfg CUDAConfig
	// visible are the /dev/nvidiaN numbers in the spec.
	visible  []int
	discover cuda.Discoverer
	events   *eventSink
}

// newGPU detects GPU containers (NVIDIA devices in the spec, devices CDI
// injected, or gVisor's nvproxy annotation) and prepares their spec: the
// CUDA toggle tool mounted read-only at ToggleToolPath, the driver's
// libraries mounted when configured and not provided otherwise, and the
// toggle's lock timeout in the environment (runsc runs the tool with the
// container's environment). It is deterministic, so a restored container's
// spec matches the checkpointed one.
func newGPU(ctx context.Context, cfg *Config, spec *specs.Spec, ev *eventSink) (gpuHook, error) {
	if !cuda.IsGPUSpec(spec) {
		return noGPU{}, nil
	}
	tool, err := toggleTool(cfg)
	if err != nil {
		return nil, err
	}
	setMount(spec, specs.Mount{Destination: ToggleToolPath, Type: "bind", Source: tool, Options: []string{"bind", "ro", "nosuid", "nodev"}})
	if dir := cfg.CUDA.DriverLibDir; dir != "" && !providesDriverLibs(spec) {
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("%w: cuda.driver_lib_dir %s is not a directory: point it at the host's NVIDIA driver libraries (the directory holding libcuda.so.1)", errdefs.ErrFailedPrecondition, dir)
		}
		setMount(spec, specs.Mount{Destination: DriverLibPath, Type: "bind", Source: dir, Options: []string{"rbind", "ro", "nosuid", "nodev"}})
		prependEnvPath(spec, "LD_LIBRARY_PATH", DriverLibPath)
	}
	if d, _ := cfg.CUDA.LockTimeoutDuration(); d > 0 {
		setEnv(spec, driver.EnvLockTimeout, strconv.FormatInt(d.Milliseconds(), 10))
	}
	log.G(ctx).WithField("devices", cuda.GPUDevices(spec)).WithField("tool", tool).Info("GPU container: nvproxy enabled, CUDA toggle tool mounted")
	return &gpuContainer{cfg: cfg.CUDA, visible: cuda.VisibleDeviceIndexes(spec), discover: cuda.NewDiscoverer(), events: ev}, nil
}

func (g *gpuContainer) enabled() bool { return true }

// toggleTool returns the host path of the CUDA toggle tool.
func toggleTool(cfg *Config) (string, error) {
	tool := cfg.CUDA.ToggleTool
	if tool == "" {
		self, err := os.Executable()
		if err != nil {
			return "", err
		}
		tool = filepath.Join(filepath.Dir(self), toggleToolName)
	}
	st, err := os.Stat(tool)
	if err != nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("%w: the CUDA checkpoint tool %s is missing or not executable: install cuda-checkpoint next to the shim or set cuda.toggle_tool", errdefs.ErrFailedPrecondition, tool)
	}
	return tool, nil
}

// providesDriverLibs reports whether the spec already mounts the NVIDIA
// user-space driver (CDI or the NVIDIA container toolkit mount libcuda).
func providesDriverLibs(spec *specs.Spec) bool {
	for _, m := range spec.Mounts {
		if strings.Contains(m.Source, "libcuda.so") || strings.Contains(m.Destination, "libcuda.so") || m.Destination == DriverLibPath {
			return true
		}
	}
	return false
}

func setMount(spec *specs.Spec, m specs.Mount) {
	for i := range spec.Mounts {
		if spec.Mounts[i].Destination == m.Destination {
			spec.Mounts[i] = m
			return
		}
	}
	spec.Mounts = append(spec.Mounts, m)
}

func setEnv(spec *specs.Spec, key, value string) {
	if spec.Process == nil {
		spec.Process = &specs.Process{}
	}
	kv := key + "=" + value
	for i, e := range spec.Process.Env {
		if strings.HasPrefix(e, key+"=") {
			spec.Process.Env[i] = kv
			return
		}
	}
	spec.Process.Env = append(spec.Process.Env, kv)
}

func prependEnvPath(spec *specs.Spec, key, dir string) {
	if spec.Process == nil {
		spec.Process = &specs.Process{}
	}
	for i, e := range spec.Process.Env {
		if v, ok := strings.CutPrefix(e, key+"="); ok {
			if slices.Contains(filepath.SplitList(v), dir) {
				return
			}
			spec.Process.Env[i] = key + "=" + dir + string(filepath.ListSeparator) + v
			return
		}
	}
	spec.Process.Env = append(spec.Process.Env, key+"="+dir)
}

// usage is the GPU memory the sandbox of pid holds, seen from the host: the
// GPU processes (NVML or nvidia-smi) of the sandbox's cgroup.
func (g *gpuContainer) usage(ctx context.Context, pid int) (cuda.HostGPUs, cuda.Usage, error) {
	host, err := g.discover.Snapshot(ctx)
	if err != nil {
		return host, cuda.Usage{}, err
	}
	pids, err := cuda.PidsInSameCgroup(pid)
	if err != nil || len(pids) == 0 {
		// Without the cgroup, the sandbox process itself is what NVIDIA sees.
		pids = []int{pid}
	}
	return host, cuda.SandboxGPUUsage(host, pids), nil
}

// waitUsage polls the GPU memory of pids until ok says it is as wanted or
// timeout passes; it returns the last usage and whether ok held.
func (g *gpuContainer) waitUsage(ctx context.Context, pids []int, timeout time.Duration, ok func(cuda.Usage) bool) (cuda.Usage, bool) {
	deadline := time.Now().Add(timeout)
	for {
		host, err := g.discover.Snapshot(ctx)
		var u cuda.Usage
		if err == nil {
			u = cuda.SandboxGPUUsage(host, pids)
			if ok(u) {
				return u, true
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return u, false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (g *gpuContainer) report(ctx context.Context, id, phase string, before any, after cuda.Usage) {
	g.events.gpu(ctx, map[string]any{"container_id": id, "phase": phase, "before": before, "after": after})
}

// AnnotationCUDAIPC declares a container whose processes share GPU memory
// through CUDA IPC ("true"). NVIDIA's driver restores such memory only from
// r610: on older drivers the shim refuses the container's checkpoints before
// anything is toggled, instead of finding out when the CUDA state does not
// come back (which stops the container).
const AnnotationCUDAIPC = RuntimeName + ".cuda-ipc"

// cudaIPCDriver is the first NVIDIA driver branch that checkpoints CUDA IPC.
const cudaIPCDriver = 610

func (g *gpuContainer) checkpointing(ctx context.Context, pid int, spec *specs.Spec, o *runsc.CheckpointOpts) (gpuCheckpoint, error) {
	o.CudaCheckpointPath = ToggleToolPath
	o.CudaCheckpointSequential = g.cfg.Sequential
	t := time.Now()
	host, u, err := g.usage(ctx, pid)
	if err != nil {
		log.G(ctx).WithError(err).Warn("host-side GPU discovery unavailable; the checkpoint records no GPU memory")
	}
	if spec.Annotations[AnnotationCUDAIPC] == "true" && driverBranch(host.DriverVersion) < cudaIPCDriver {
		return nil, fmt.Errorf("%w: the container declares CUDA IPC between its processes (annotation %s=true), and NVIDIA driver %s cannot checkpoint memory shared through CUDA IPC (NVIDIA supports it from driver r%d); the checkpoint is refused and the container keeps running",
			errdefs.ErrFailedPrecondition, AnnotationCUDAIPC, orUnknown(host.DriverVersion), cudaIPCDriver)
	}
	return &gpuSave{g: g, host: host, before: u, err: err, took: time.Since(t)}, nil
}

// driverBranch is the major number of an NVIDIA driver version ("580" of
// "580.159.04"); 0 when unknown.
func driverBranch(v string) int {
	major, _, _ := strings.Cut(v, ".")
	n, _ := strconv.Atoi(major)
	return n
}

func orUnknown(v string) string {
	if v == "" {
		return "(version unknown)"
	}
	return v
}

// gpuSave is one checkpoint of a GPU container.
type gpuSave struct {
	g      *gpuContainer
	host   cuda.HostGPUs
	before cuda.Usage
	err    error
	took   time.Duration
}

func (s *gpuSave) discovery() time.Duration { return s.took }

func (s *gpuSave) facts() *checkpoint.GPU {
	f := &checkpoint.GPU{ToggleTool: ToggleToolPath}
	if s.err != nil {
		return f
	}
	facts := cuda.NewGPUFacts(s.host, s.g.visible, s.before)
	f.DriverVersion, f.Source, f.UsedMemoryBytes = facts.DriverVersion, facts.Source, facts.UsedMemoryBytes
	for _, d := range facts.Devices {
		f.Devices = append(f.Devices, checkpoint.GPUDevice{Index: d.Index, Minor: d.Minor, UUID: d.UUID, Name: d.Name, MemoryTotalBytes: d.MemoryTotal})
	}
	for _, u := range facts.PerGPU {
		f.PerGPU = append(f.PerGPU, checkpoint.GPUMemory{UUID: u.UUID, Index: u.Index, Name: u.Name, UsedMemoryBytes: u.UsedMemoryBytes})
	}
	return f
}

func (s *gpuSave) holds() bool { return s.err == nil && s.before.HoldsGPU() }

func (s *gpuSave) released(ctx context.Context, id string, facts *checkpoint.GPU) {
	if !s.holds() {
		return
	}
	now, ok := s.g.waitUsage(ctx, s.before.PIDs, gpuSettleTimeout, func(u cuda.Usage) bool { return !u.HoldsGPU() })
	if !ok {
		log.G(ctx).WithField("id", id).WithField("bytes", now.UsedMemoryBytes).Errorf("exit checkpoint written, but the sandbox still holds GPU memory after %s", gpuSettleTimeout)
		return
	}
	facts.ReleasedAfterExit = true
	log.G(ctx).WithField("id", id).WithField("released_bytes", s.before.UsedMemoryBytes).Info("GPU memory released by the exit checkpoint")
	s.g.report(ctx, id, "checkpoint-exit", s.before, now)
}

func (s *gpuSave) resumed(ctx context.Context, id string) {
	if !s.holds() {
		return
	}
	ctx = context.WithoutCancel(ctx)
	go func() {
		now, ok := s.g.waitUsage(ctx, s.before.PIDs, gpuSettleTimeout, func(u cuda.Usage) bool { return u.UsedMemoryBytes >= s.before.UsedMemoryBytes })
		if !ok {
			log.G(ctx).WithField("id", id).WithField("before", s.before.UsedMemoryBytes).WithField("now", now.UsedMemoryBytes).
				Warn("after the leave-running checkpoint the sandbox holds less GPU memory than before")
			return
		}
		log.G(ctx).WithField("id", id).WithField("bytes", now.UsedMemoryBytes).Info("GPU memory held again after the leave-running checkpoint")
		s.g.report(ctx, id, "checkpoint-leave-running", s.before, now)
	}()
}

// factsOf is what pkg/cuda compares with this host.
func factsOf(saved *checkpoint.GPU) cuda.GPUFacts {
	f := cuda.GPUFacts{DriverVersion: saved.DriverVersion, UsedMemoryBytes: saved.UsedMemoryBytes, Source: saved.Source}
	for _, d := range saved.Devices {
		f.Devices = append(f.Devices, cuda.Device{Index: d.Index, Minor: d.Minor, UUID: d.UUID, Name: d.Name, MemoryTotal: d.MemoryTotalBytes})
	}
	return f
}

// checkRestore compares a checkpoint's GPU facts with this host and passes
// the device map (checkpoint GPU UUID = this host's GPU UUID, paired by
// /dev/nvidiaN) to the CUDA toggle through the restored container's
// environment: runsc runs the tool with the environment of the spec the
// container is restored with, and does not compare the environment. runsc
// remaps the device nodes itself. The map is given even when it is the
// identity, so every restore takes the same path.
func (g *gpuContainer) checkRestore(ctx context.Context, saved *checkpoint.GPU, spec *specs.Spec) error {
	if saved == nil || saved.DriverVersion == "" {
		// No facts were recorded (discovery was unavailable): runsc still
		// checks the driver version itself.
		return nil
	}
	facts := factsOf(saved)
	host, err := g.discover.Snapshot(ctx)
	if errors.Is(err, cuda.ErrNoGPU) {
		return fmt.Errorf("%w: the checkpoint needs %d NVIDIA GPU(s) with driver %s, but this host shows none: %v", errdefs.ErrFailedPrecondition, len(saved.Devices), saved.DriverVersion, err)
	}
	if err != nil {
		return fmt.Errorf("discovering this host's GPUs: %w", err)
	}
	if err := cuda.CheckCompatible(facts, host); err != nil {
		return fmt.Errorf("%w: %v", errdefs.ErrFailedPrecondition, err)
	}
	deviceMap, err := cuda.DeviceMap(facts, host)
	if err != nil {
		return fmt.Errorf("%w: %v", errdefs.ErrFailedPrecondition, err)
	}
	log.G(ctx).WithField("device_map", deviceMap).Info("GPU restore: device map for the CUDA toggle")
	if deviceMap != "" {
		setEnv(spec, driver.EnvDeviceMap, deviceMap)
	}
	return nil
}

func (g *gpuContainer) restored(ctx context.Context, id string, pid int, saved *checkpoint.GPU) {
	if saved == nil || saved.UsedMemoryBytes == 0 {
		return
	}
	ctx = context.WithoutCancel(ctx)
	go func() {
		pids, err := cuda.PidsInSameCgroup(pid)
		if err != nil || len(pids) == 0 {
			pids = []int{pid}
		}
		now, ok := g.waitUsage(ctx, pids, gpuSettleTimeout, func(u cuda.Usage) bool { return u.HoldsGPU() })
		if !ok {
			log.G(ctx).WithField("id", id).Warn("restored sandbox holds no GPU memory yet (its CUDA processes may still be restoring)")
			return
		}
		log.G(ctx).WithField("id", id).WithField("bytes", now.UsedMemoryBytes).Info("restored sandbox holds GPU memory again")
		g.report(ctx, id, "restore", saved.UsedMemoryBytes, now)
	}()
}

// explain says what runsc's error means for CUDA. The toggle tool's own
// hint (in runsc's message) names the CUDA error's likely cause; this says
// what it means for the container and the image.
func (g *gpuContainer) explain(err error) string {
	msg := err.Error()
	if strings.Contains(msg, "resuming the container after the save failed") {
		return fmt.Sprintf("; the container's CUDA state did not come back onto its GPUs, so the workload could not go on: the container was stopped (exit 137, the reason on the %s event) and the image removed, as it would not restore either. Workloads that share GPU memory between processes through CUDA IPC cannot be checkpointed with NVIDIA drivers before r%d: declare them with the annotation %s=true to have their checkpoints refused while they keep running", exitTopic, cudaIPCDriver, AnnotationCUDAIPC)
	}
	// A process runsc did not toggle: it skips, with only a warning in its
	// log, every process for which the toggle tool cannot run or answer
	// --get-state, and the save then meets the process's device mappings.
	if strings.Contains(msg, "nvproxy.frontendFDMemmapFile") {
		return fmt.Sprintf("; a CUDA process was not toggled before the save: runsc skips processes for which the toggle tool (%s in the container) fails to run or to report --get-state (runsc's debug log says why); check that `%s --get-state --pid <pid>` runs inside the container (`ctr task exec`)", ToggleToolPath, ToggleToolPath)
	}
	return ""
}
