package cuda

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func h200(minor int, uuid string) Device {
	return Device{Index: minor, Minor: minor, UUID: uuid, Name: "NVIDIA H200", MemoryTotal: 143771 * mib}
}

func TestNewGPUFactsJSON(t *testing.T) {
	host := HostGPUs{Source: "nvml", DriverVersion: "580.159.04", Devices: []Device{h200(0, uuid0), h200(1, uuid1)}}
	usage := Usage{UsedMemoryBytes: 8 << 30, PerGPU: []DeviceUsage{{UUID: uuid1, Index: 1, UsedMemoryBytes: 8 << 30, PIDs: []int{10}}}, PIDs: []int{10}}
	f := NewGPUFacts(host, []int{1}, usage)
	if len(f.Devices) != 1 || f.Devices[0].UUID != uuid1 {
		t.Fatalf("facts for /dev/nvidia1 = %+v", f)
	}
	if all := NewGPUFacts(host, nil, usage); len(all.Devices) != 2 {
		t.Errorf("no visible list should record all GPUs, got %+v", all.Devices)
	}
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"driver_version":"580.159.04"`, `"used_memory_bytes":8589934592`, `"memory_total_bytes":`, `"uuid":"` + uuid1 + `"`, `"minor":1`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("JSON %s lacks %s", b, key)
		}
	}
	var back GPUFacts
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, f) {
		t.Errorf("round trip: got %+v, want %+v", back, f)
	}
}

func TestCheckCompatible(t *testing.T) {
	saved := GPUFacts{DriverVersion: "580.159.04", Devices: []Device{h200(0, uuid0)}}
	tests := []struct {
		name  string
		saved GPUFacts
		host  HostGPUs
		want  []string // substrings; nil means compatible
	}{
		{
			name:  "same host",
			saved: saved,
			host:  HostGPUs{DriverVersion: "580.159.04", Devices: []Device{h200(0, uuid0)}},
		},
		{
			name:  "other host, same model, other UUID, more GPUs",
			saved: saved,
			host:  HostGPUs{DriverVersion: "580.159.04", Devices: []Device{h200(0, uuid1), h200(1, uuid0)}},
		},
		{
			name:  "driver mismatch",
			saved: saved,
			host:  HostGPUs{DriverVersion: "575.57.08", Devices: []Device{h200(0, uuid0)}},
			want:  []string{"driver version mismatch", "taken with driver 580.159.04, this host has 575.57.08"},
		},
		{
			name:  "model mismatch",
			saved: saved,
			host:  HostGPUs{DriverVersion: "580.159.04", Devices: []Device{{Minor: 0, UUID: uuid0, Name: "NVIDIA H100 80GB HBM3"}}},
			want:  []string{"GPU model mismatch on /dev/nvidia0: the checkpoint has NVIDIA H200, this host has NVIDIA H100 80GB HBM3"},
		},
		{
			name:  "fewer GPUs",
			saved: GPUFacts{DriverVersion: "580.159.04", Devices: []Device{h200(0, uuid0), h200(1, uuid1)}},
			host:  HostGPUs{DriverVersion: "580.159.04", Devices: []Device{h200(0, uuid0)}},
			want:  []string{"not enough GPUs: the checkpoint needs 2", "this host has 1", "GPU /dev/nvidia1 (NVIDIA H200) of the checkpoint does not exist"},
		},
		{
			name:  "no GPUs and unknown driver",
			saved: saved,
			host:  HostGPUs{},
			want:  []string{"this host has (unknown)", "needs 1 (/dev/nvidia0 NVIDIA H200), this host has 0 (none)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckCompatible(tt.saved, tt.host)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("CheckCompatible = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("CheckCompatible = nil, want an error")
			}
			if !errors.Is(err, ErrIncompatible) {
				t.Errorf("error %v is not ErrIncompatible", err)
			}
			var fp interface{ FailedPrecondition() }
			if !errors.As(err, &fp) {
				t.Errorf("error %v is not a failed precondition for errdefs", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestDeviceMap(t *testing.T) {
	saved := GPUFacts{Devices: []Device{h200(0, uuid0), h200(1, uuid1)}}
	same := HostGPUs{Devices: []Device{h200(0, uuid0), h200(1, uuid1)}}
	if m, err := DeviceMap(saved, same); err != nil || m != uuid0+"="+uuid0+","+uuid1+"="+uuid1 {
		t.Errorf("same GPUs: %q, %v; want the identity map", m, err)
	}
	swapped := HostGPUs{Devices: []Device{h200(0, uuid1), h200(1, uuid0)}}
	got, err := DeviceMap(saved, swapped)
	if err != nil {
		t.Fatal(err)
	}
	if want := uuid0 + "=" + uuid1 + "," + uuid1 + "=" + uuid0; got != want {
		t.Errorf("device map = %q, want %q", got, want)
	}
	if _, err := DeviceMap(saved, HostGPUs{Devices: []Device{h200(0, uuid0)}}); err == nil {
		t.Error("missing GPU: want an error")
	}
}
