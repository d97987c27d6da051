package cuda

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// nvidia-smi queries of the fallback discovery. With "nounits", memory is
// in MiB.
var (
	smiGPUArgs  = []string{"--query-gpu=index,uuid,name,memory.total,driver_version", "--format=csv,noheader,nounits"}
	smiAppsArgs = []string{"--query-compute-apps=pid,used_memory,gpu_uuid", "--format=csv,noheader,nounits"}
)

const mib = 1 << 20

// smiSnapshot builds a HostGPUs from two nvidia-smi queries.
func smiSnapshot(ctx context.Context, run CommandRunner, bin string) (HostGPUs, error) {
	gpuOut, err := run(ctx, bin, smiGPUArgs...)
	if err != nil {
		return HostGPUs{}, fmt.Errorf("nvidia-smi GPU query: %w", err)
	}
	snap, err := parseSMIGPUs(gpuOut)
	if err != nil {
		return HostGPUs{}, err
	}
	appsOut, err := run(ctx, bin, smiAppsArgs...)
	if err != nil {
		return HostGPUs{}, fmt.Errorf("nvidia-smi compute-apps query: %w", err)
	}
	if snap.Processes, err = parseSMIApps(appsOut); err != nil {
		return HostGPUs{}, err
	}
	return snap, nil
}

// parseSMIGPUs parses the output of
// nvidia-smi --query-gpu=index,uuid,name,memory.total,driver_version --format=csv,noheader,nounits
// e.g. "0, GPU-6f1e..., NVIDIA H200, 143771, 580.159.04".
func parseSMIGPUs(out []byte) (HostGPUs, error) {
	snap := HostGPUs{Source: "nvidia-smi"}
	for _, line := range csvLines(out) {
		f := splitCSV(line)
		if len(f) > 5 {
			// A comma in the product name: keep it in the name.
			f = []string{f[0], f[1], strings.Join(f[2:len(f)-2], ", "), f[len(f)-2], f[len(f)-1]}
		}
		if len(f) != 5 {
			return HostGPUs{}, fmt.Errorf("unexpected nvidia-smi GPU line %q: want index, uuid, name, memory.total, driver_version", line)
		}
		idx, err := strconv.Atoi(f[0])
		if err != nil {
			return HostGPUs{}, fmt.Errorf("unexpected nvidia-smi GPU line %q: bad index: %v", line, err)
		}
		d := Device{Index: idx, Minor: idx, UUID: f[1], Name: f[2]}
		if memMiB, ok := smiNumber(f[3]); ok {
			d.MemoryTotal = memMiB * mib
		}
		if snap.DriverVersion == "" {
			snap.DriverVersion = f[4]
		} else if snap.DriverVersion != f[4] {
			return HostGPUs{}, fmt.Errorf("nvidia-smi reports two driver versions, %s and %s", snap.DriverVersion, f[4])
		}
		snap.Devices = append(snap.Devices, d)
	}
	if len(snap.Devices) == 0 {
		return HostGPUs{}, fmt.Errorf("%w: nvidia-smi lists no GPUs", ErrNoGPU)
	}
	sort.Slice(snap.Devices, func(a, b int) bool { return snap.Devices[a].Index < snap.Devices[b].Index })
	return snap, nil
}

// parseSMIApps parses the output of
// nvidia-smi --query-compute-apps=pid,used_memory,gpu_uuid --format=csv,noheader,nounits
// e.g. "12345, 8254, GPU-6f1e...". used_memory may be "[N/A]" (unknown).
func parseSMIApps(out []byte) ([]GPUProcess, error) {
	var procs []GPUProcess
	for _, line := range csvLines(out) {
		if strings.HasPrefix(strings.ToLower(line), "no running") {
			continue
		}
		f := splitCSV(line)
		if len(f) != 3 {
			return nil, fmt.Errorf("unexpected nvidia-smi compute-apps line %q: want pid, used_memory, gpu_uuid", line)
		}
		pid, err := strconv.Atoi(f[0])
		if err != nil {
			return nil, fmt.Errorf("unexpected nvidia-smi compute-apps line %q: bad pid: %v", line, err)
		}
		p := GPUProcess{PID: pid, GPUUUID: f[2]}
		if usedMiB, ok := smiNumber(f[1]); ok {
			p.UsedMemory = usedMiB * mib
		}
		procs = append(procs, p)
	}
	sort.SliceStable(procs, func(a, b int) bool { return procs[a].PID < procs[b].PID })
	return procs, nil
}

// csvLines returns the non-empty lines of out.
func csvLines(out []byte) []string {
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

func splitCSV(line string) []string {
	f := strings.Split(line, ",")
	for i := range f {
		f[i] = strings.TrimSpace(f[i])
	}
	return f
}

// smiNumber parses a numeric nvidia-smi field; "[N/A]", "[Not Supported]"
// and the like are reported as unknown.
func smiNumber(s string) (uint64, bool) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	return n, err == nil
}
