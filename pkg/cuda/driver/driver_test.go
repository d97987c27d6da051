package driver

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"unsafe"
)

// TestCheckpointArgLayout pins the Go mirrors of the cuda.h argument structs
// to the C layout (x86-64 and arm64 LP64).
func TestCheckpointArgLayout(t *testing.T) {
	var l lockArgs
	var c checkpointArgs
	var p gpuPair
	var r restoreArgs
	var u unlockArgs
	checks := []struct {
		what      string
		got, want uintptr
	}{
		{"sizeof(CUcheckpointLockArgs)", unsafe.Sizeof(l), 64},
		{"offsetof(CUcheckpointLockArgs.timeoutMs)", unsafe.Offsetof(l.timeoutMs), 0},
		{"offsetof(CUcheckpointLockArgs.reserved0)", unsafe.Offsetof(l.reserved0), 4},
		{"offsetof(CUcheckpointLockArgs.reserved1)", unsafe.Offsetof(l.reserved1), 8},
		{"sizeof(CUcheckpointCheckpointArgs)", unsafe.Sizeof(c), 64},
		{"sizeof(CUcheckpointGpuPair)", unsafe.Sizeof(p), 32},
		{"offsetof(CUcheckpointGpuPair.newUuid)", unsafe.Offsetof(p.newUUID), 16},
		{"sizeof(CUcheckpointRestoreArgs)", unsafe.Sizeof(r), 64},
		{"offsetof(CUcheckpointRestoreArgs.gpuPairs)", unsafe.Offsetof(r.gpuPairs), 0},
		{"offsetof(CUcheckpointRestoreArgs.gpuPairsCount)", unsafe.Offsetof(r.gpuPairsCount), 8},
		{"offsetof(CUcheckpointRestoreArgs.reserved)", unsafe.Offsetof(r.reserved), 12},
		{"offsetof(CUcheckpointRestoreArgs.reserved1)", unsafe.Offsetof(r.reserved1), 56},
		{"sizeof(CUcheckpointUnlockArgs)", unsafe.Sizeof(u), 64},
		{"sizeof(CUuuid)", unsafe.Sizeof(UUID{}), 16},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.what, c.got, c.want)
		}
	}
}

func TestProcessStateString(t *testing.T) {
	for s, want := range map[ProcessState]string{
		StateRunning: "running", StateLocked: "locked", StateCheckpointed: "checkpointed", StateFailed: "failed", 7: "unknown(7)",
	} {
		if got := s.String(); got != want {
			t.Errorf("ProcessState(%d).String() = %q, want %q", int32(s), got, want)
		}
	}
}

func TestParseUUID(t *testing.T) {
	const canonical = "GPU-6f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
	tests := []struct {
		in      string
		want    string
		wantErr string
	}{
		{in: canonical, want: canonical},
		{in: "  gpu-6F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0 ", want: canonical},
		{in: "6f1e2d3c4b5a69788796a5b4c3d2e1f0", want: canonical},
		{in: "GPU-6f1e2d3c-4b5a-6978-8796-a5b4c3d2e1", wantErr: "want GPU-"},
		{in: "GPU-zz1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", wantErr: "invalid GPU UUID"},
		{in: "MIG-6f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", wantErr: "MIG device"},
		{in: "", wantErr: "want GPU-"},
	}
	for _, tt := range tests {
		u, err := ParseUUID(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseUUID(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseUUID(%q): %v", tt.in, err)
			continue
		}
		if got := u.String(); got != tt.want {
			t.Errorf("ParseUUID(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestParseDeviceMap(t *testing.T) {
	a := "GPU-00000000-0000-0000-0000-00000000000a"
	b := "GPU-00000000-0000-0000-0000-00000000000b"
	c := "GPU-00000000-0000-0000-0000-00000000000c"
	tests := []struct {
		in      string
		want    string // FormatDeviceMap of the result
		wantErr string
	}{
		{in: "", want: ""},
		{in: a + "=" + b, want: a + "=" + b},
		{in: a + "=" + b + "," + b + "=" + a + ",", want: a + "=" + b + "," + b + "=" + a},
		{in: " " + a + " = " + c + " ", want: a + "=" + c},
		{in: a, wantErr: "want oldUuid=newUuid"},
		{in: a + "=" + b + "," + a + "=" + c, wantErr: "mapped twice"},
		{in: a + "=" + c + "," + b + "=" + c, wantErr: "two GPUs are mapped onto"},
		{in: a + "=nonsense", wantErr: "invalid GPU UUID"},
		{in: ",,", wantErr: "no oldUuid=newUuid entries"},
	}
	for _, tt := range tests {
		pairs, err := ParseDeviceMap(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseDeviceMap(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseDeviceMap(%q): %v", tt.in, err)
			continue
		}
		if got := FormatDeviceMap(pairs); got != tt.want {
			t.Errorf("ParseDeviceMap(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestError(t *testing.T) {
	err := fmt.Errorf("toggle: %w", NewError("cuCheckpointProcessLock", ErrorNotInitialized))
	want := `toggle: cuCheckpointProcessLock: "initialization error" (CUDA_ERROR_NOT_INITIALIZED, 3)`
	if err.Error() != want {
		t.Errorf("Error() = %q, want %q", err.Error(), want)
	}
	code, ok := ResultOf(err)
	if !ok || code != ErrorNotInitialized {
		t.Errorf("ResultOf = %v, %v; want %v, true", code, ok, ErrorNotInitialized)
	}
	if _, ok := ResultOf(errors.New("other")); ok {
		t.Error("ResultOf(non-CUDA error) reported a CUDA error")
	}
	if got := NewError("f", 12345).Error(); got != "f: CUDA_ERROR_12345 (12345)" {
		t.Errorf("unknown code: %q", got)
	}
}

func TestFormatDriverVersion(t *testing.T) {
	for v, want := range map[int]string{12080: "12.8", 13000: "13.0", 12090: "12.9", 13020: "13.2"} {
		if got := FormatDriverVersion(v); got != want {
			t.Errorf("FormatDriverVersion(%d) = %q, want %q", v, got, want)
		}
	}
}

func TestOpenMissingLibrary(t *testing.T) {
	_, err := Open("/nonexistent/libcuda.so.1")
	if !errors.Is(err, ErrNoDriver) {
		t.Fatalf("Open(missing) = %v, want ErrNoDriver", err)
	}
	if !strings.Contains(err.Error(), "is the driver's library directory mounted in the container") {
		t.Errorf("error does not say what to do next: %v", err)
	}
}
