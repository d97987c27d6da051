// Package cuda is the host's side of GPUs for containerd-shim-runsc-cuda:
// it tells GPU containers apart, takes stock of the host's GPUs and of the
// GPU memory a sandbox holds, and checks a checkpoint's GPU facts against
// the host. Its subpackage driver binds the CUDA driver's checkpoint API
// for the cuda-checkpoint tool. The checkpoint metadata's schema is package
// checkpoint's.
//
// # Where CUDA state is toggled
//
// A CUDA process can only be checkpointed once its device memory has been
// moved to host memory and its GPU handles released ("toggled" from running
// to checkpointed); after the restore the reverse toggle copies the memory
// back. NVIDIA's driver exposes this as cuCheckpointProcess{Lock,
// Checkpoint,Restore,Unlock,GetState,GetRestoreThreadId} (libcuda r570+),
// which one process may call on another, without cuInit.
//
// In a gVisor container the CUDA user-space driver (libcuda) runs inside the
// sandbox, and the host only sees the runsc-sandbox process holding the GPU
// (nvproxy). Toggling that PID from the host fails with CUDA error 3
// (CUDA_ERROR_NOT_INITIALIZED, "initialization error"): the state to toggle
// is not in that process's libcuda. The toggle has to run inside the
// sandbox, next to the application. runsc does exactly that when given
// --cuda-checkpoint-path=<path inside the container>: before saving, it runs
// "<tool> --get-state --pid P" for every process with an open nvproxy FD,
// keeps those answering "running", and runs "<tool> --toggle --pid P" on each
// (in parallel unless --cuda-checkpoint-sequential), undoing the toggles if
// one fails; after a restore (or a --leave-running save) it toggles them back.
// The tool gets fixed arguments and the container's environment.
//
// The shim therefore bind-mounts its own tool (cmd/cuda-checkpoint, a
// CLI-compatible replacement for NVIDIA's cuda-checkpoint built on the
// bindings of package driver, pkg/cuda/driver) into GPU containers at create
// time, so that the spec is the same at restore, and passes its path to
// runsc. Settings reach the tool through the container environment (for
// example CUDA_CHECKPOINT_LOCK_TIMEOUT_MS). The tool is linked dynamically
// against glibc (dlopen needs it); the container image must have glibc
// anyway for libcuda.so.1.
//
// # What the host side does
//
// The host-side pieces serve detection, verification and accounting, never
// toggling:
//
//   - IsGPUSpec, GPUDevices and VisibleDeviceIndexes read the OCI spec:
//     /dev/nvidia* devices (CDI-injected ones included) or gVisor's nvproxy
//     annotation mark a GPU container.
//   - A Discoverer (NVML through dlopen, nvidia-smi as fallback) takes a
//     HostGPUs snapshot: driver version, GPUs, and the host PIDs holding GPU
//     memory. PidsInSameCgroup (cgroup v1 and v2) lists the sandbox's processes;
//     SandboxGPUUsage intersects the two, giving the sandbox's GPU memory
//     before a checkpoint and proving after it that the sandbox released its
//     GPUs (or, after a restore, holds them again).
//   - GPUFacts are what the shim records in a checkpoint's metadata;
//     CheckCompatible refuses a restore up front on a host with another
//     driver version or fewer or other GPUs, naming both sides, and
//     DeviceMap pairs the checkpoint's GPUs with the host's.
//
// Nothing is loaded at package initialization: libcuda and NVML are opened
// on first use, and a host without an NVIDIA stack gets ErrNoGPU quickly.
package cuda
