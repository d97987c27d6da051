package driver

import (
	"errors"
	"os"
	"testing"
)

// TestGPUOpen needs the NVIDIA driver and skips without it.
func TestGPUOpen(t *testing.T) {
	d, err := Open("")
	if errors.Is(err, ErrNoDriver) {
		t.Skipf("no driver: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	v, _ := d.Version()
	t.Logf("CUDA driver API %s (%d)", FormatDriverVersion(v), v)
	if v < MinCheckpointDriverVersion {
		t.Errorf("version %d below %d passed Open", v, MinCheckpointDriverVersion)
	}
	// This test process has no CUDA state: the driver must say so, with its
	// own name for the error.
	_, err = d.ProcessState(os.Getpid())
	code, ok := ResultOf(err)
	if !ok || code == Success {
		t.Fatalf("ProcessState(self) = %v, want a CUDA error", err)
	}
	t.Logf("ProcessState(non-CUDA self): %v", err)
	var ce *Error
	if errors.As(err, &ce) && (ce.Name == "" || ce.Description == "") {
		t.Errorf("error lacks the driver's name or description: %+v", ce)
	}
}
