package cuda

import (
	"testing"
	"unsafe"
)

// TestNVMLLayout pins the Go mirrors of the nvml.h structs to the C layout.
func TestNVMLLayout(t *testing.T) {
	var p nvmlProcessInfo
	var m nvmlMemory
	checks := []struct {
		what      string
		got, want uintptr
	}{
		{"sizeof(nvmlProcessInfo_t)", unsafe.Sizeof(p), 24},
		{"offsetof(nvmlProcessInfo_t.pid)", unsafe.Offsetof(p.pid), 0},
		{"offsetof(nvmlProcessInfo_t.usedGpuMemory)", unsafe.Offsetof(p.usedGpuMemory), 8},
		{"offsetof(nvmlProcessInfo_t.gpuInstanceId)", unsafe.Offsetof(p.gpuInstanceID), 16},
		{"offsetof(nvmlProcessInfo_t.computeInstanceId)", unsafe.Offsetof(p.computeInstanceID), 20},
		{"sizeof(nvmlMemory_t)", unsafe.Sizeof(m), 24},
		{"offsetof(nvmlMemory_t.total)", unsafe.Offsetof(m.total), 0},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.what, c.got, c.want)
		}
	}
}

func TestCString(t *testing.T) {
	if got := cString([]byte("580.159.04\x00garbage")); got != "580.159.04" {
		t.Errorf("cString = %q", got)
	}
	if got := cString([]byte("no terminator")); got != "no terminator" {
		t.Errorf("cString = %q", got)
	}
}
