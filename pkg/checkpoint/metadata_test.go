package checkpoint

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestWriteReadCheck(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "checkpoint.img"), []byte("state"), 0o600)
	os.WriteFile(filepath.Join(dir, "pages.img"), []byte("pagespages"), 0o600)
	files, err := ListFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 2 || files[0].Name != "checkpoint.img" || files[1].Size != 10 {
		t.Fatalf("files = %+v", files)
	}
	m := &Metadata{FormatVersion: FormatVersion, RunscVersion: "v1", Files: files, Compression: "none"}
	if err := Write(dir, m); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, MetadataFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("metadata file: %v %v", st, err)
	}
	got, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.Size() != 15 || got.RunscVersion != "v1" {
		t.Fatalf("got %+v", got)
	}
	if err := got.CheckFiles(dir); err != nil {
		t.Fatal(err)
	}
	// ListFiles ignores the metadata itself.
	if again, _ := ListFiles(dir); len(again) != 2 {
		t.Fatalf("ListFiles = %+v", again)
	}
	// Truncation and loss are detected.
	os.WriteFile(filepath.Join(dir, "pages.img"), []byte("page"), 0o600)
	if err := got.CheckFiles(dir); err == nil || !strings.Contains(err.Error(), "pages.img is 4 bytes, the checkpoint recorded 10") {
		t.Fatalf("truncated: %v", err)
	}
	os.Remove(filepath.Join(dir, "pages.img"))
	if err := got.CheckFiles(dir); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing: %v", err)
	}
}

func TestReadRejects(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
	}{
		{"not json", "{", "not valid JSON"},
		{"future format", `{"format_version": 3, "runsc_version": "x", "files": [{"name": "a", "size": 1}]}`, "format version 3"},
		{"no runsc", `{"format_version": 1, "files": [{"name": "a", "size": 1}]}`, "runsc version"},
		{"no files", `{"format_version": 1, "runsc_version": "x"}`, "no image files"},
		{"escaping name", `{"format_version": 1, "runsc_version": "x", "files": [{"name": "../etc/passwd", "size": 1}]}`, "invalid file name"},
		{"negative size", `{"format_version": 1, "runsc_version": "x", "files": [{"name": "a", "size": -1}]}`, "negative size"},
		{"root name", `{"format_version": 1, "runsc_version": "x", "files": [{"name": "/", "size": 1}]}`, "invalid file name"},
		{"nul in name", `{"format_version": 1, "runsc_version": "x", "files": [{"name": "a\u0000b", "size": 1}]}`, "invalid file name"},
		{"gpu twice", `{"format_version": 1, "runsc_version": "x", "files": [{"name": "a", "size": 1}],
			"gpu": {"driverVersion": "580", "devices": [{"minor": 0, "uuid": "GPU-a"}, {"minor": 0, "uuid": "GPU-a"}]}}`, "twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(strings.NewReader(tc.body))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := Read(t.TempDir()); err == nil || !strings.Contains(err.Error(), "not a complete runsc-cuda checkpoint") {
		t.Fatalf("missing metadata: %v", err)
	}
}

func TestChecksums(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "pages.img"), []byte("0123456789"), 0o600)
	files, _ := ListFiles(dir)
	m := &Metadata{FormatVersion: FormatVersion, RunscVersion: "v", Files: files}
	if m.HasChecksums() {
		t.Fatal("no checksums yet")
	}
	if err := m.AddChecksums(dir); err != nil || !m.HasChecksums() {
		t.Fatalf("AddChecksums: %v %+v", err, m.Files)
	}
	if err := m.Verify(dir); err != nil {
		t.Fatal(err)
	}
	// Same size, different content: sizes pass, the checksum does not.
	os.WriteFile(filepath.Join(dir, "pages.img"), []byte("0123456780"), 0o600)
	if err := m.CheckFiles(dir); err != nil {
		t.Fatalf("sizes only: %v", err)
	}
	if err := m.Verify(dir); err == nil || !strings.Contains(err.Error(), "has CRC-32C") {
		t.Fatalf("corruption not caught: %v", err)
	}
}

// The first release wrote format 1, whose GPU facts had camel-case keys;
// they read as format 2's.
func TestReadFormat1GPU(t *testing.T) {
	v1 := `{"format_version": 1, "runsc_version": "x", "files": [{"name": "a", "size": 1}],
	  "gpu": {"driverVersion": "580.159.04", "devices": [{"index": 0, "minor": 0, "uuid": "GPU-1", "name": "NVIDIA H200", "memoryTotalBytes": 7}],
	    "usedMemoryBytes": 5, "perGpu": [{"uuid": "GPU-1", "index": 0, "usedMemoryBytes": 5, "pids": [9]}], "source": "nvml",
	    "releasedAfterExit": true, "toggleTool": "/.runsc-cuda/cuda-checkpoint"}}`
	m, err := Decode(strings.NewReader(v1))
	if err != nil {
		t.Fatal(err)
	}
	want := &GPU{DriverVersion: "580.159.04", Devices: []GPUDevice{{Index: 0, Minor: 0, UUID: "GPU-1", Name: "NVIDIA H200", MemoryTotalBytes: 7}},
		UsedMemoryBytes: 5, PerGPU: []GPUMemory{{UUID: "GPU-1", Index: 0, UsedMemoryBytes: 5}}, Source: "nvml", ReleasedAfterExit: true, ToggleTool: "/.runsc-cuda/cuda-checkpoint"}
	if m.FormatVersion != FormatVersion || !reflect.DeepEqual(m.GPU, want) {
		t.Fatalf("format 1 read as %d, %+v\nwant %+v", m.FormatVersion, m.GPU, want)
	}
}
