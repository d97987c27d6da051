package cuda

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
)

const (
	uuid0 = "GPU-1b7c6d2e-9a9f-7a2e-3c55-8f1d2a6b4e01"
	uuid1 = "GPU-5e0d4c3b-2a19-0817-f6e5-d4c3b2a19080"
)

// Captured from nvidia-smi 580.159.04 (UUIDs changed).
var (
	smiGPUsOneH200 = "0, " + uuid0 + ", NVIDIA H200, 143771, 580.159.04\n"
	smiGPUsTwo     = "1, " + uuid1 + ", NVIDIA H100 80GB HBM3, 81559, 580.159.04\n" +
		"0, " + uuid0 + ", NVIDIA H100 80GB HBM3, 81559, 580.159.04\n"
	smiAppsSandbox = "812345, 8836, " + uuid0 + "\n"
	smiAppsMixed   = "\n900, [N/A], " + uuid1 + "\n" + "812345, 8836, " + uuid0 + "\n" + "812345, 100, " + uuid1 + "\n"
)

func TestParseSMIGPUs(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		want    HostGPUs
		wantErr string
	}{
		{
			name: "one H200",
			out:  smiGPUsOneH200,
			want: HostGPUs{Source: "nvidia-smi", DriverVersion: "580.159.04", Devices: []Device{
				{Index: 0, Minor: 0, UUID: uuid0, Name: "NVIDIA H200", MemoryTotal: 143771 * mib},
			}},
		},
		{
			name: "two GPUs sorted by index",
			out:  smiGPUsTwo,
			want: HostGPUs{Source: "nvidia-smi", DriverVersion: "580.159.04", Devices: []Device{
				{Index: 0, Minor: 0, UUID: uuid0, Name: "NVIDIA H100 80GB HBM3", MemoryTotal: 81559 * mib},
				{Index: 1, Minor: 1, UUID: uuid1, Name: "NVIDIA H100 80GB HBM3", MemoryTotal: 81559 * mib},
			}},
		},
		{
			name: "comma in name, unknown memory",
			out:  "0, " + uuid0 + ", Weird, Name, [N/A], 580.159.04\n",
			want: HostGPUs{Source: "nvidia-smi", DriverVersion: "580.159.04", Devices: []Device{
				{Index: 0, Minor: 0, UUID: uuid0, Name: "Weird, Name"},
			}},
		},
		{name: "no GPUs", out: "\n", wantErr: "lists no GPUs"},
		{name: "garbage", out: "No devices were found\n", wantErr: "unexpected nvidia-smi GPU line"},
		{name: "bad index", out: "x, " + uuid0 + ", NVIDIA H200, 1, 580.1\n", wantErr: "bad index"},
		{
			name:    "two driver versions",
			out:     "0, " + uuid0 + ", A, 1, 580.1\n1, " + uuid1 + ", A, 1, 575.2\n",
			wantErr: "two driver versions",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseSMIGPUs([]byte(tt.out))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseSMIApps(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		want    []GPUProcess
		wantErr string
	}{
		{name: "none", out: ""},
		{name: "none, message", out: "No running processes found\n"},
		{name: "sandbox", out: smiAppsSandbox, want: []GPUProcess{{PID: 812345, UsedMemory: 8836 * mib, GPUUUID: uuid0}}},
		{
			name: "mixed, unknown memory, sorted by pid",
			out:  smiAppsMixed,
			want: []GPUProcess{
				{PID: 900, UsedMemory: 0, GPUUUID: uuid1},
				{PID: 812345, UsedMemory: 8836 * mib, GPUUUID: uuid0},
				{PID: 812345, UsedMemory: 100 * mib, GPUUUID: uuid1},
			},
		},
		{name: "bad pid", out: "abc, 1, " + uuid0, wantErr: "bad pid"},
		{name: "short line", out: "1, 2", wantErr: "want pid, used_memory, gpu_uuid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseSMIApps([]byte(tt.out))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// fakeSMI answers the two queries of the fallback with canned output.
type fakeSMI struct {
	gpus, apps string
	err        error
	calls      []string
}

func (f *fakeSMI) run(_ context.Context, name string, args ...string) ([]byte, error) {
	f.calls = append(f.calls, name+" "+strings.Join(args, " "))
	if f.err != nil {
		return nil, f.err
	}
	switch {
	case strings.HasPrefix(args[0], "--query-gpu="):
		return []byte(f.gpus), nil
	case strings.HasPrefix(args[0], "--query-compute-apps="):
		return []byte(f.apps), nil
	}
	return nil, errors.New("unexpected query")
}

func TestHostDiscovererNvidiaSMI(t *testing.T) {
	f := &fakeSMI{gpus: smiGPUsOneH200, apps: smiAppsSandbox}
	d := &HostDiscoverer{DisableNVML: true, NvidiaSMI: "/usr/bin/nvidia-smi", Run: f.run}
	snap, err := d.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := HostGPUs{
		Source: "nvidia-smi", DriverVersion: "580.159.04",
		Devices:   []Device{{Index: 0, Minor: 0, UUID: uuid0, Name: "NVIDIA H200", MemoryTotal: 143771 * mib}},
		Processes: []GPUProcess{{PID: 812345, UsedMemory: 8836 * mib, GPUUUID: uuid0}},
	}
	if !reflect.DeepEqual(snap, want) {
		t.Errorf("got %+v\nwant %+v", snap, want)
	}
	wantCalls := []string{
		"/usr/bin/nvidia-smi --query-gpu=index,uuid,name,memory.total,driver_version --format=csv,noheader,nounits",
		"/usr/bin/nvidia-smi --query-compute-apps=pid,used_memory,gpu_uuid --format=csv,noheader,nounits",
	}
	if !reflect.DeepEqual(f.calls, wantCalls) {
		t.Errorf("calls = %q\nwant %q", f.calls, wantCalls)
	}
}

func TestHostDiscovererFallsBackWhenNVMLMissing(t *testing.T) {
	f := &fakeSMI{gpus: smiGPUsTwo, apps: smiAppsMixed}
	d := &HostDiscoverer{NVMLLibrary: "/nonexistent/libnvidia-ml.so.1", Run: f.run}
	snap, err := d.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if snap.Source != "nvidia-smi" || len(snap.Devices) != 2 || len(snap.Processes) != 3 {
		t.Errorf("unexpected snapshot %+v", snap)
	}
}

func TestHostDiscovererNoGPU(t *testing.T) {
	d := &HostDiscoverer{NVMLLibrary: "/nonexistent/libnvidia-ml.so.1", NvidiaSMI: "/nonexistent/nvidia-smi"}
	_, err := d.Snapshot(context.Background())
	if !errors.Is(err, ErrNoGPU) {
		t.Fatalf("Snapshot = %v, want ErrNoGPU", err)
	}
}

func TestHostDiscovererSMIFailure(t *testing.T) {
	f := &fakeSMI{err: errors.New("exit status 9: NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver")}
	d := &HostDiscoverer{DisableNVML: true, Run: f.run}
	_, err := d.Snapshot(context.Background())
	if err == nil || !strings.Contains(err.Error(), "couldn't communicate") {
		t.Fatalf("Snapshot = %v, want the nvidia-smi failure", err)
	}
}

func TestHostDiscovererCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := NewDiscoverer().Snapshot(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Snapshot = %v, want context.Canceled", err)
	}
}
