package checkpoint

import "encoding/json"

// formatVersion1 is the first release's format: the same as version 2 but
// for the keys of the GPU facts, which were camel case.
const formatVersion1 = 1

// unmarshal decodes metadata of either format; version 1 is converted, so
// the rest of the shim sees version 2's fields.
func unmarshal(data []byte) (*Metadata, error) {
	var m Metadata
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	if m.FormatVersion != formatVersion1 {
		return &m, nil
	}
	var v1 struct {
		GPU *struct {
			DriverVersion string `json:"driverVersion"`
			Devices       []struct {
				Index       int    `json:"index"`
				Minor       int    `json:"minor"`
				UUID        string `json:"uuid"`
				Name        string `json:"name"`
				MemoryTotal uint64 `json:"memoryTotalBytes"`
			} `json:"devices"`
			UsedMemoryBytes uint64 `json:"usedMemoryBytes"`
			PerGPU          []struct {
				UUID            string `json:"uuid"`
				Index           int    `json:"index"`
				Name            string `json:"name"`
				UsedMemoryBytes uint64 `json:"usedMemoryBytes"`
			} `json:"perGpu"`
			Source            string `json:"source"`
			ReleasedAfterExit bool   `json:"releasedAfterExit"`
			ToggleTool        string `json:"toggleTool"`
		} `json:"gpu"`
	}
	if err := json.Unmarshal(data, &v1); err != nil {
		return nil, err
	}
	m.GPU = nil
	if g := v1.GPU; g != nil {
		m.GPU = &GPU{DriverVersion: g.DriverVersion, UsedMemoryBytes: g.UsedMemoryBytes, Source: g.Source, ReleasedAfterExit: g.ReleasedAfterExit, ToggleTool: g.ToggleTool}
		for _, d := range g.Devices {
			m.GPU.Devices = append(m.GPU.Devices, GPUDevice{Index: d.Index, Minor: d.Minor, UUID: d.UUID, Name: d.Name, MemoryTotalBytes: d.MemoryTotal})
		}
		for _, u := range g.PerGPU {
			m.GPU.PerGPU = append(m.GPU.PerGPU, GPUMemory{UUID: u.UUID, Index: u.Index, Name: u.Name, UsedMemoryBytes: u.UsedMemoryBytes})
		}
	}
	m.FormatVersion = FormatVersion
	return &m, nil
}
