package cuda

import (
	"reflect"
	"testing"
)

func TestSandboxGPUUsage(t *testing.T) {
	snap := HostGPUs{
		Devices: []Device{
			{Index: 0, UUID: uuid0, Name: "NVIDIA H200"},
			{Index: 1, UUID: uuid1, Name: "NVIDIA H200"},
		},
		Processes: []GPUProcess{
			{PID: 10, UsedMemory: 8 << 30, GPUUUID: uuid0}, // the sandbox
			{PID: 10, UsedMemory: 1 << 30, GPUUUID: uuid1}, // the sandbox, second GPU
			{PID: 11, UsedMemory: 2 << 30, GPUUUID: uuid1}, // another sandbox
			{PID: 12, UsedMemory: 0, GPUUUID: "GPU-unknown"},
		},
	}
	tests := []struct {
		name string
		pids []int
		want Usage
	}{
		{name: "no processes", pids: nil, want: Usage{}},
		{name: "cgroup without GPU processes", pids: []int{1, 2, 3}, want: Usage{}},
		{
			name: "sandbox on two GPUs",
			pids: []int{9, 10, 13},
			want: Usage{
				UsedMemoryBytes: 9 << 30,
				PIDs:            []int{10},
				PerGPU: []DeviceUsage{
					{UUID: uuid0, Index: 0, Name: "NVIDIA H200", UsedMemoryBytes: 8 << 30, PIDs: []int{10}},
					{UUID: uuid1, Index: 1, Name: "NVIDIA H200", UsedMemoryBytes: 1 << 30, PIDs: []int{10}},
				},
			},
		},
		{
			name: "two processes, one GPU unknown to the snapshot",
			pids: []int{12, 11},
			want: Usage{
				UsedMemoryBytes: 2 << 30,
				PIDs:            []int{11, 12},
				PerGPU: []DeviceUsage{
					{UUID: "GPU-unknown", Index: -1, UsedMemoryBytes: 0, PIDs: []int{12}},
					{UUID: uuid1, Index: 1, Name: "NVIDIA H200", UsedMemoryBytes: 2 << 30, PIDs: []int{11}},
				},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := SandboxGPUUsage(snap, tt.pids)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
			if got.HoldsGPU() != (len(tt.want.PIDs) > 0) {
				t.Errorf("HoldsGPU = %v", got.HoldsGPU())
			}
		})
	}
}
