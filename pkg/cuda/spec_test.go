package cuda

import (
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestSpecDetection(t *testing.T) {
	dev := func(paths ...string) *specs.Linux {
		l := &specs.Linux{}
		for _, p := range paths {
			l.Devices = append(l.Devices, specs.LinuxDevice{Path: p, Type: "c", Major: 195})
		}
		return l
	}
	tests := []struct {
		name    string
		spec    *specs.Spec
		gpu     bool
		devices []string
		indexes []int
	}{
		{name: "nil spec", spec: nil},
		{name: "plain container", spec: &specs.Spec{Linux: dev("/dev/null", "/dev/fuse")}},
		{
			name:    "nvproxy devices",
			spec:    &specs.Spec{Linux: dev("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia0")},
			gpu:     true,
			devices: []string{"/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia0"},
			indexes: []int{0},
		},
		{
			name:    "CDI injected two GPUs, out of order, duplicated",
			spec:    &specs.Spec{Linux: dev("/dev/nvidia3", "/dev/nvidiactl", "/dev/nvidia1", "/dev/nvidia3", "/dev/nvidia-caps/nvidia-cap1")},
			gpu:     true,
			devices: []string{"/dev/nvidia3", "/dev/nvidiactl", "/dev/nvidia1", "/dev/nvidia-caps/nvidia-cap1"},
			indexes: []int{1, 3},
		},
		{
			name: "bind-mounted device nodes",
			spec: &specs.Spec{Mounts: []specs.Mount{
				{Destination: "/proc"},
				{Destination: "/dev/nvidia2/", Type: "bind", Source: "/dev/nvidia2"},
				{Destination: "/dev/nvidiactl", Type: "bind", Source: "/dev/nvidiactl"},
			}},
			gpu:     true,
			devices: []string{"/dev/nvidia2", "/dev/nvidiactl"},
			indexes: []int{2},
		},
		{
			name: "nvproxy annotation only",
			spec: &specs.Spec{Annotations: map[string]string{NvproxyAnnotation: "true"}},
			gpu:  true,
		},
		{
			name: "nvproxy annotation false",
			spec: &specs.Spec{Annotations: map[string]string{NvproxyAnnotation: "false"}},
		},
		{
			name: "look-alikes are not GPUs",
			spec: &specs.Spec{Linux: dev("/dev/nvme0n1", "/devices/nvidia0"), Mounts: []specs.Mount{{Destination: "/opt/nvidia"}}},
		},
		{
			name:    "library mounts do not count as devices, devices do",
			spec:    &specs.Spec{Linux: dev("/dev/nvidia10"), Mounts: []specs.Mount{{Destination: "/usr/lib/x86_64-linux-gnu/libcuda.so.1"}}},
			gpu:     true,
			devices: []string{"/dev/nvidia10"},
			indexes: []int{10},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsGPUSpec(tt.spec); got != tt.gpu {
				t.Errorf("IsGPUSpec = %v, want %v", got, tt.gpu)
			}
			if got := GPUDevices(tt.spec); !slices.Equal(got, tt.devices) {
				t.Errorf("GPUDevices = %q, want %q", got, tt.devices)
			}
			if got := VisibleDeviceIndexes(tt.spec); !slices.Equal(got, tt.indexes) {
				t.Errorf("VisibleDeviceIndexes = %v, want %v", got, tt.indexes)
			}
		})
	}
}
