package cuda

import (
	"path"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// NvproxyAnnotation is the OCI annotation with which gVisor marks a container
// whose GPU access goes through nvproxy ("true").
const NvproxyAnnotation = "dev.gvisor.internal.nvproxy"

// nvidiaDevPrefix starts the path of every NVIDIA device node:
// /dev/nvidiactl, /dev/nvidia-uvm, /dev/nvidia-uvm-tools, /dev/nvidia-modeset,
// /dev/nvidia0..N and /dev/nvidia-caps/*.
const nvidiaDevPrefix = "/dev/nvidia"

// IsGPUSpec reports whether the container of s uses NVIDIA GPUs: it lists
// /dev/nvidia* devices (linux.devices, which is also where containerd puts
// CDI-injected devices), mounts /dev/nvidia* paths, or carries gVisor's
// nvproxy annotation.
func IsGPUSpec(s *specs.Spec) bool {
	if s == nil {
		return false
	}
	if v, ok := s.Annotations[NvproxyAnnotation]; ok && strings.EqualFold(strings.TrimSpace(v), "true") {
		return true
	}
	return len(GPUDevices(s)) > 0
}

// GPUDevices returns the /dev/nvidia* paths the spec gives the container,
// from linux.devices and from mounts, in order of first appearance and
// without duplicates.
func GPUDevices(s *specs.Spec) []string {
	if s == nil {
		return nil
	}
	var out []string
	add := func(p string) {
		if p == "" {
			return
		}
		p = path.Clean(p)
		if isNvidiaDevPath(p) && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	if s.Linux != nil {
		for _, d := range s.Linux.Devices {
			add(d.Path)
		}
	}
	for _, m := range s.Mounts {
		add(m.Destination)
	}
	return out
}

// VisibleDeviceIndexes returns the N of the /dev/nvidiaN GPU device nodes
// the spec gives the container, sorted and without duplicates. N is the
// device's minor number, which NVML reports as the minor number and which
// nvidia-smi's index usually (not necessarily) equals.
func VisibleDeviceIndexes(s *specs.Spec) []int {
	var out []int
	for _, p := range GPUDevices(s) {
		if n, ok := gpuDeviceIndex(p); ok && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

func isNvidiaDevPath(p string) bool {
	return strings.HasPrefix(p, nvidiaDevPrefix)
}

// gpuDeviceIndex returns N for "/dev/nvidiaN".
func gpuDeviceIndex(p string) (int, bool) {
	rest, ok := strings.CutPrefix(p, nvidiaDevPrefix)
	if !ok || rest == "" {
		return 0, false
	}
	for _, c := range rest {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(rest)
	if err != nil {
		return 0, false
	}
	return n, true
}
