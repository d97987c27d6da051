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

// gpuSetup is what the shim decided for a GPU container at create, and its
// host-side view of the container's GPUs.
type gpuSetup struct {
	toolInContainer string
	// visible are the /dev/nvidiaN numbers in the spec.
	visible  []int
	discover cuda.Discoverer
	// publish reports GPU facts as events.
	publish func(ctx context.Context, topic string, v any)
}

// gpuUsage is the sandbox's GPU usage seen from the host before a checkpoint.
type gpuUsage struct {
	host  cuda.HostGPUs
	usage cuda.Usage
	err   error
}

// prepareGPU detects GPU containers (NVIDIA devices in the spec, devices CDI
// injected, or gVisor's nvproxy annotation) and prepares their spec: the
// CUDA toggle tool mounted read-only at ToggleToolPath, the driver's
// libraries mounted when configured and not provided otherwise, and the
// toggle's lock timeout in the environment (runsc runs the tool with the
// container's environment). It is deterministic, so a restored container's
// spec matches the checkpointed one.
func prepareGPU(ctx context.Context, cfg *Config, spec *specs.Spec) (*gpuSetup, error) {
	if !cuda.IsGPUSpec(spec) {
		return nil, nil
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
	return &gpuSetup{
		toolInContainer: ToggleToolPath,
		visible:         cuda.VisibleDeviceIndexes(spec),
		discover:        cuda.NewDiscoverer(),
	}, nil
}

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

// sandboxUsage is the GPU memory the sandbox of sandboxPid holds, seen from
// the host: GPU processes (NVML or nvidia-smi) intersected with the
// sandbox's cgroup.
func (g *gpuSetup) sandboxUsage(ctx context.Context, sandboxPid int) gpuUsage {
	host, err := g.discover.Snapshot(ctx)
	if err != nil {
		return gpuUsage{err: err}
	}
	pids, err := cuda.PidsInSameCgroup(sandboxPid)
	if err != nil || len(pids) == 0 {
		// Without the cgroup, the sandbox process itself is what NVIDIA sees.
		pids = []int{sandboxPid}
	}
	return gpuUsage{host: host, usage: cuda.SandboxGPUUsage(host, pids)}
}

// usage records the sandbox's GPU usage before a checkpoint.
func (g *gpuSetup) usage(ctx context.Context, sandboxPid int) *gpuUsage {
	u := g.sandboxUsage(ctx, sandboxPid)
	if u.err != nil {
		log.G(ctx).WithError(u.err).Warn("host-side GPU discovery unavailable; the checkpoint records no GPU memory")
	}
	return &u
}

// facts builds the checkpoint's GPU metadata.
func (g *gpuSetup) facts(ctx context.Context, before *gpuUsage) *checkpoint.GPU {
	f := &checkpoint.GPU{ToggleTool: g.toolInContainer}
	if before != nil && before.err == nil {
		f.GPUFacts = cuda.NewGPUFacts(before.host, g.visible, before.usage)
	}
	return f
}

// verifyReleased checks, after an exit checkpoint stopped the sandbox, that
// the sandbox's device memory is free again. Memory still held after
// gpuSettleTimeout is an error: the image is complete, but the GPU is not
// free for the next user.
func (g *gpuSetup) verifyReleased(ctx context.Context, c *container, facts *checkpoint.GPU, before *gpuUsage) error {
	if before == nil || before.err != nil || !before.usage.HoldsGPU() {
		return nil
	}
	deadline := time.Now().Add(gpuSettleTimeout)
	for {
		host, err := g.discover.Snapshot(ctx)
		if err != nil {
			log.G(ctx).WithError(err).Warn("GPU discovery failed after the exit checkpoint")
			return nil
		}
		now := cuda.SandboxGPUUsage(host, before.usage.PIDs)
		if !now.HoldsGPU() {
			facts.ReleasedAfterExit = true
			log.G(ctx).WithField("id", c.id).WithField("released_bytes", before.usage.UsedMemoryBytes).Info("GPU memory released by the exit checkpoint")
			g.report(ctx, c.id, "checkpoint-exit", before.usage, now)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("exit checkpoint of %s written, but the sandbox still holds %d bytes of GPU memory after %s", c.id, now.UsedMemoryBytes, gpuSettleTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// watchReacquired follows, in the background, a container that a
// leave-running checkpoint left in place: its CUDA processes are toggled back
// when the sandbox resumes (containerd resumes it after the checkpoint; the
// toggle runs then), and the sandbox must then hold its device memory again.
// The result is logged and published; it does not hold up the checkpoint.
func (g *gpuSetup) watchReacquired(ctx context.Context, c *container, before *gpuUsage) {
	if before == nil || before.err != nil || !before.usage.HoldsGPU() {
		return
	}
	ctx = context.WithoutCancel(ctx)
	go func() {
		deadline := time.Now().Add(2 * time.Minute)
		for {
			host, err := g.discover.Snapshot(ctx)
			if err == nil {
				now := cuda.SandboxGPUUsage(host, before.usage.PIDs)
				if now.UsedMemoryBytes >= before.usage.UsedMemoryBytes {
					log.G(ctx).WithField("id", c.id).WithField("bytes", now.UsedMemoryBytes).Info("GPU memory held again after the leave-running checkpoint")
					g.report(ctx, c.id, "checkpoint-leave-running", before.usage, now)
					return
				}
			}
			if time.Now().After(deadline) {
				log.G(ctx).WithField("id", c.id).WithField("before", before.usage.UsedMemoryBytes).
					Error("after the leave-running checkpoint the sandbox has not re-acquired its GPU memory; is it still paused?")
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
}

// checkRestore compares a checkpoint's GPU facts with this host and returns
// the device map (checkpoint GPU UUID = this host's GPU UUID, paired by
// /dev/nvidiaN) the CUDA toggle needs at restore; runsc remaps the device
// nodes itself. The map is returned even when it is the identity, so every
// restore takes the same path.
func (g *gpuSetup) checkRestore(ctx context.Context, saved *checkpoint.GPU) (string, error) {
	if saved == nil || saved.DriverVersion == "" {
		// No facts were recorded (discovery was unavailable): runsc still
		// checks the driver version itself.
		return "", nil
	}
	host, err := g.discover.Snapshot(ctx)
	if errors.Is(err, cuda.ErrNoGPU) {
		return "", fmt.Errorf("the checkpoint needs %d NVIDIA GPU(s) with driver %s, but this host shows none: %v", len(saved.Devices), saved.DriverVersion, err)
	}
	if err != nil {
		return "", fmt.Errorf("discovering this host's GPUs: %w", err)
	}
	if err := cuda.CheckCompatible(saved.GPUFacts, host); err != nil {
		return "", err
	}
	return cuda.DeviceMap(saved.GPUFacts, host)
}

// setDeviceMap passes a restore's device map to the CUDA toggle tool through
// the container's environment: runsc runs the tool with the environment of
// the spec the container is restored with (runsc does not compare the
// environment at restore).
func setDeviceMap(spec *specs.Spec, deviceMap string) {
	if deviceMap != "" {
		setEnv(spec, driver.EnvDeviceMap, deviceMap)
	}
}

// verifyAfterRestore checks, in the background, that the restored sandbox
// holds GPU memory again, and reports it.
func (g *gpuSetup) verifyAfterRestore(ctx context.Context, c *container, saved *checkpoint.GPU) {
	if saved == nil || saved.UsedMemoryBytes == 0 {
		return
	}
	pid := c.init.Pid()
	ctx = context.WithoutCancel(ctx)
	go func() {
		deadline := time.Now().Add(gpuSettleTimeout)
		for {
			u := g.sandboxUsage(ctx, pid)
			if u.err == nil && u.usage.HoldsGPU() {
				log.G(ctx).WithField("id", c.id).WithField("bytes", u.usage.UsedMemoryBytes).Info("restored sandbox holds GPU memory again")
				g.report(ctx, c.id, "restore", saved.UsedMemoryBytes, u.usage)
				return
			}
			if time.Now().After(deadline) {
				log.G(ctx).WithField("id", c.id).Warn("restored sandbox holds no GPU memory yet (its CUDA processes may still be restoring)")
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
}

// report publishes a GPU fact as an event on topic /runsc-cuda/gpu.
func (g *gpuSetup) report(ctx context.Context, id, phase string, before any, after cuda.Usage) {
	if g.publish == nil {
		return
	}
	g.publish(ctx, "/runsc-cuda/gpu", map[string]any{"container_id": id, "phase": phase, "before": before, "after": after})
}
