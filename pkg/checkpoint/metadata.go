// Package checkpoint describes the checkpoint images the shim writes: runsc's
// own files plus one metadata file, all flat in one directory so containerd
// (and the CRI) can pack them file by file and move them between hosts.
package checkpoint

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// MetadataFile is the metadata's name inside a checkpoint directory. It is
// written last: a directory without it is not a complete checkpoint.
const MetadataFile = "runsc-cuda.json"

// FormatVersion is the metadata format this shim writes. It also reads
// version 1 (the first release's, whose GPU facts had camel-case keys).
const FormatVersion = 2

// maxMetadataSize bounds what Read accepts.
const maxMetadataSize = 1 << 20

// Metadata describes one checkpoint.
type Metadata struct {
	FormatVersion int `json:"format_version"`
	// Runtime is the containerd runtime type that wrote the checkpoint.
	Runtime     string    `json:"runtime"`
	ShimVersion string    `json:"shim_version"`
	ContainerID string    `json:"container_id"`
	CreatedAt   time.Time `json:"created_at"`
	// RunscVersion must match the restoring runsc exactly (runsc refuses
	// other builds).
	RunscVersion string `json:"runsc_version"`
	// Compression and Direct are how the image was written.
	Compression string `json:"compression"`
	Direct      bool   `json:"direct,omitempty"`
	// LeaveRunning is false when the container stopped after the checkpoint.
	LeaveRunning bool `json:"leave_running"`
	// Files lists runsc's files and their sizes, to detect truncation.
	Files []File `json:"files"`
	// Spec summarizes the container spec the image needs at restore.
	Spec SpecSummary `json:"spec"`
	// GPU holds the GPU facts of a GPU container, nil otherwise.
	GPU *GPU `json:"gpu,omitempty"`
	// Pod describes the pod sandbox the checkpoint saved when the container
	// was one of a pod's (gVisor saves the whole sandbox); nil otherwise.
	Pod *Pod `json:"pod,omitempty"`
	// Timings of the checkpoint, in milliseconds.
	Timings Timings `json:"timings_ms"`
}

// Pod is the pod sandbox a checkpoint of a pod's container saved: gVisor
// checkpoints a sandbox as a whole, with every container in it, and restores
// it only as a whole.
type Pod struct {
	// SandboxID is the pod's sandbox (pause) container.
	SandboxID string `json:"sandbox_id"`
	// Namespace is the pod's Kubernetes namespace: a restore annotation
	// restores the checkpoint only into a pod of the same namespace unless
	// the shim's checkpoint.cross_namespace_restore allows it.
	Namespace string `json:"namespace,omitempty"`
	// Containers are the containers in the sandbox, the sandbox container
	// first.
	Containers []PodContainer `json:"containers"`
	// Completed names the pod's containers (by the name gVisor knows them
	// by) that had run to completion when the pod was saved: its init
	// containers. They are not in the image; a pod restoring from it runs
	// them again, fresh, before its application container restores.
	Completed []string `json:"completed,omitempty"`
}

// App returns the name of the pod's application container.
func (p *Pod) App() string {
	for _, c := range p.Containers {
		if !c.Sandbox {
			return c.Name
		}
	}
	return ""
}

// PodContainer is one container of a checkpointed pod.
type PodContainer struct {
	ID string `json:"id"`
	// Name is the CRI container name (gVisor matches restored containers to
	// the checkpointed ones by it); empty for the sandbox container.
	Name string `json:"name,omitempty"`
	// Sandbox is set for the pod's sandbox (pause) container.
	Sandbox bool `json:"sandbox,omitempty"`
}

// File is one image file.
type File struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
	// CRC32C is the file's CRC-32C (Castagnoli), hex, when the checkpoint
	// was made with checksums (the shim's checkpoint.verify).
	CRC32C string `json:"crc32c,omitempty"`
}

// SpecSummary is what runsc compares at restore, kept so a mismatch can be
// reported before anything is created.
type SpecSummary struct {
	Args   []string `json:"args,omitempty"`
	Mounts []string `json:"mounts,omitempty"`
}

// GPU holds a GPU container's facts at checkpoint time: the driver, the
// GPUs the container used and the device memory its sandbox held (zero when
// host-side discovery was unavailable).
type GPU struct {
	// DriverVersion is the NVIDIA display driver version, e.g.
	// "580.159.04". runsc restores only under the same driver version.
	DriverVersion string `json:"driver_version"`
	// Devices are the GPUs the container was given.
	Devices []GPUDevice `json:"devices"`
	// UsedMemoryBytes is the device memory the container's sandbox held.
	UsedMemoryBytes uint64 `json:"used_memory_bytes"`
	// PerGPU breaks UsedMemoryBytes down by GPU.
	PerGPU []GPUMemory `json:"per_gpu,omitempty"`
	// Source is where the facts came from: "nvml" or "nvidia-smi".
	Source string `json:"source,omitempty"`
	// ReleasedAfterExit is set when an exit checkpoint verified that the
	// sandbox released its device memory.
	ReleasedAfterExit bool `json:"released_after_exit,omitempty"`
	// ToggleTool is the CUDA toggle tool's path inside the container.
	ToggleTool string `json:"toggle_tool"`
	// RestoreVerified is set when the checkpoint saw the container's CUDA
	// state come back onto the GPUs after the save (it resumed the
	// sandbox): the CUDA state restores. Images without it were not tested
	// so (an exit checkpoint with cuda.verify_exit_checkpoint off, or a
	// checkpoint of the first release).
	RestoreVerified bool `json:"restore_verified,omitempty"`
}

// GPUDevice is one GPU of a checkpointed container.
type GPUDevice struct {
	// Index is the NVML / nvidia-smi index; Minor the N of /dev/nvidiaN,
	// by which a restore pairs the GPUs.
	Index int    `json:"index"`
	Minor int    `json:"minor"`
	UUID  string `json:"uuid"`
	// Name is the product name, e.g. "NVIDIA H200".
	Name             string `json:"name"`
	MemoryTotalBytes uint64 `json:"memory_total_bytes"`
}

// GPUMemory is the device memory held on one GPU.
type GPUMemory struct {
	UUID            string `json:"uuid"`
	Index           int    `json:"index"`
	Name            string `json:"name,omitempty"`
	UsedMemoryBytes uint64 `json:"used_memory_bytes"`
}

// Timings of one checkpoint.
type Timings struct {
	// Runsc is `runsc checkpoint`; GPUDiscovery the host-side look at the
	// sandbox's GPU memory before it (GPU containers); Total the whole
	// checkpoint as the shim sees it.
	Runsc        int64 `json:"runsc"`
	GPUDiscovery int64 `json:"gpu_discovery,omitempty"`
	Total        int64 `json:"total"`
}

// Size returns the image's total size in bytes.
func (m *Metadata) Size() int64 {
	var n int64
	for _, f := range m.Files {
		n += f.Size
	}
	return n
}

// Validate checks a decoded metadata for internal consistency.
func (m *Metadata) Validate() error {
	if m.FormatVersion != FormatVersion && m.FormatVersion != formatVersion1 {
		return fmt.Errorf("metadata format version %d is not supported (this shim reads versions %d and %d)", m.FormatVersion, formatVersion1, FormatVersion)
	}
	if m.RunscVersion == "" {
		return errors.New("metadata does not name the runsc version")
	}
	if len(m.Files) == 0 {
		return errors.New("metadata lists no image files")
	}
	for _, f := range m.Files {
		// A plain name of a file in the checkpoint directory: not "/" (which
		// filepath.Base keeps), no NUL, not the metadata itself.
		if f.Name == "" || f.Name != filepath.Base(f.Name) || strings.ContainsAny(f.Name, "/\x00") ||
			f.Name == "." || f.Name == ".." || f.Name == MetadataFile {
			return fmt.Errorf("metadata lists an invalid file name %q", f.Name)
		}
		if f.Size < 0 {
			return fmt.Errorf("metadata lists a negative size for %s", f.Name)
		}
	}
	if m.GPU != nil {
		// Each GPU once: the restore pairs them by /dev/nvidiaN and the CUDA
		// toggle refuses a device map that names a GPU twice.
		minors, uuids := map[int]bool{}, map[string]bool{}
		for _, d := range m.GPU.Devices {
			if minors[d.Minor] || (d.UUID != "" && uuids[d.UUID]) {
				return fmt.Errorf("metadata lists GPU /dev/nvidia%d (%s) twice", d.Minor, d.UUID)
			}
			minors[d.Minor], uuids[d.UUID] = true, true
		}
	}
	return nil
}

// Decode parses and validates metadata.
func Decode(r io.Reader) (*Metadata, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxMetadataSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxMetadataSize {
		return nil, fmt.Errorf("metadata is larger than %d bytes", maxMetadataSize)
	}
	m, err := unmarshal(data)
	if err != nil {
		return nil, fmt.Errorf("metadata is not valid JSON: %w", err)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

// Read reads the metadata of the checkpoint in dir.
func Read(dir string) (*Metadata, error) {
	f, err := os.Open(filepath.Join(dir, MetadataFile))
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("%s has no %s: it is not a complete runsc-cuda checkpoint", dir, MetadataFile)
		}
		return nil, err
	}
	defer f.Close()
	m, err := Decode(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, MetadataFile), err)
	}
	return m, nil
}

// Write writes m into dir atomically (a temporary file renamed into place).
func Write(dir string, m *Metadata) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".metadata-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, MetadataFile))
}

// ListFiles returns the regular files in dir except the metadata, with
// their sizes, sorted by name.
func ListFiles(dir string) ([]File, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []File
	for _, e := range entries {
		if e.Name() == MetadataFile || !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			return nil, err
		}
		out = append(out, File{Name: e.Name(), Size: info.Size()})
	}
	slices.SortFunc(out, func(a, b File) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out, nil
}

// CheckFiles verifies that every file the metadata lists is in dir with its
// recorded size.
func (m *Metadata) CheckFiles(dir string) error {
	return m.checkFiles(dir, false)
}

// HasChecksums reports whether every file carries a checksum.
func (m *Metadata) HasChecksums() bool {
	for _, f := range m.Files {
		if f.CRC32C == "" {
			return false
		}
	}
	return len(m.Files) > 0
}

// Verify is CheckFiles plus the checksums: it reads the whole image, and
// catches corruption that keeps sizes (runsc keeps no checksum of the
// memory in uncompressed images).
func (m *Metadata) Verify(dir string) error {
	return m.checkFiles(dir, true)
}

// AddChecksums computes and records the checksum of every file.
func (m *Metadata) AddChecksums(dir string) error {
	for i, f := range m.Files {
		sum, err := Checksum(filepath.Join(dir, f.Name))
		if err != nil {
			return err
		}
		m.Files[i].CRC32C = sum
	}
	return nil
}

// Checksum returns the hex CRC-32C of a file.
func Checksum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	if _, err := io.CopyBuffer(h, f, make([]byte, 4<<20)); err != nil {
		return "", err
	}
	return fmt.Sprintf("%08x", h.Sum32()), nil
}

func (m *Metadata) checkFiles(dir string, sums bool) error {
	for _, f := range m.Files {
		st, err := os.Stat(filepath.Join(dir, f.Name))
		if err != nil {
			if os.IsNotExist(err) {
				return fmt.Errorf("checkpoint image is incomplete: %s is missing", f.Name)
			}
			return err
		}
		if st.Size() != f.Size {
			return fmt.Errorf("checkpoint image is damaged: %s is %d bytes, the checkpoint recorded %d", f.Name, st.Size(), f.Size)
		}
		if sums && f.CRC32C != "" {
			sum, err := Checksum(filepath.Join(dir, f.Name))
			if err != nil {
				return err
			}
			if sum != f.CRC32C {
				return fmt.Errorf("checkpoint image is damaged: %s has CRC-32C %s, the checkpoint recorded %s", f.Name, sum, f.CRC32C)
			}
		}
	}
	return nil
}
