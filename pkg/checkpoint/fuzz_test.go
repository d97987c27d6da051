package checkpoint

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/cuda"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/cuda/driver"
)

// fuzzHost is the host a decoded checkpoint's GPU facts are checked against.
var fuzzHost = cuda.HostGPUs{
	DriverVersion: "580.159.04",
	Devices: []cuda.Device{
		{Index: 0, Minor: 0, UUID: "GPU-00000000-0000-0000-0000-00000000000a", Name: "NVIDIA H200"},
		{Index: 1, Minor: 1, UUID: "GPU-00000000-0000-0000-0000-00000000000b", Name: "NVIDIA H200"},
	},
}

// FuzzDecodeMetadata feeds arbitrary bytes to Decode, the parser of the
// runsc-cuda.json a restore reads from a checkpoint image (which may come from
// another host). Decode must never panic; what it accepts must name only files
// inside the checkpoint directory, with sizes CheckFiles can compare, and must
// survive a round trip; and GPU facts it accepts must either be refused by the
// host checks or yield a device map the CUDA toggle tool accepts. Seeds are in
// testdata/fuzz/FuzzDecodeMetadata.
func FuzzDecodeMetadata(f *testing.F) {
	f.Add([]byte(`{"format_version":1,"runsc_version":"v1","files":[{"name":"checkpoint.img","size":5}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Decode(bytes.NewReader(data))
		if err != nil {
			if m != nil {
				t.Fatalf("Decode returned metadata with error %v", err)
			}
			return
		}
		const dir = "/var/lib/ckpt/c1"
		for _, fl := range m.Files {
			p := filepath.Join(dir, fl.Name)
			if filepath.Dir(p) != dir || p == filepath.Join(dir, MetadataFile) || !filepath.IsLocal(fl.Name) || strings.ContainsRune(fl.Name, 0) {
				t.Fatalf("accepted file name %q resolves to %s, outside %s or onto the metadata", fl.Name, p, dir)
			}
			if fl.Size < 0 {
				t.Fatalf("accepted negative size %d", fl.Size)
			}
		}
		again, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("accepted metadata does not encode: %v", err)
		}
		m2, err := Decode(bytes.NewReader(again))
		if err != nil {
			t.Fatalf("accepted metadata does not decode again: %v\n%s", err, again)
		}
		if third, _ := json.Marshal(m2); !bytes.Equal(third, again) {
			t.Fatalf("round trip changed the metadata:\n%s\n%s", again, third)
		}
		if m.GPU == nil {
			return
		}
		// What the shim's restore check does with the facts (pkg/shim gpu.go).
		facts := cuda.GPUFacts{DriverVersion: m.GPU.DriverVersion}
		for _, d := range m.GPU.Devices {
			facts.Devices = append(facts.Devices, cuda.Device{Index: d.Index, Minor: d.Minor, UUID: d.UUID, Name: d.Name})
		}
		if err := cuda.CheckCompatible(facts, fuzzHost); err != nil {
			return
		}
		dm, err := cuda.DeviceMap(facts, fuzzHost)
		if err != nil || dm == "" {
			return
		}
		if _, err := driver.ParseDeviceMap(dm); err != nil {
			t.Fatalf("metadata passed the host checks but its device map %q is refused by the toggle tool: %v", dm, err)
		}
	})
}
