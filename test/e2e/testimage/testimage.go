// Package testimage builds and imports the e2e suite's container image without any
// registry: an OCI image layout, packed as a tar, of one gzip layer that holds a static
// busybox (Debian's busybox-static), symlinks for common applets, and the test workload
// (test/e2e/workload) at /workload.
//
// The tar is deterministic: the same busybox and workload binaries give the same bytes,
// so the image digest only changes when its content does. Builds are cached by content
// in the output directory.
//
// Import loads the tar with the containerd client; the command-line equivalent is
//
//	ctr -n <namespace> images import --platform linux/amd64 <tar>
//
// which also unpacks the image for the default snapshotter (add --snapshotter to choose
// another).
package testimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const (
	// Ref is the name the image is imported under.
	Ref = "localhost/rcuda-test:latest"
	// Tag is Ref's tag, the OCI ref.name annotation of the manifest.
	Tag = "latest"
	// WorkloadPath is where the workload binary lives in the image.
	WorkloadPath = "/workload"
	// BusyboxPath is the default host file copied to /bin/busybox (Debian's
	// busybox-static).
	BusyboxPath = "/bin/busybox"
	// WorkloadPackage is the Go package built into /workload.
	WorkloadPackage = "github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/workload"

	// formatVersion changes whenever this file changes the image layout, so cached
	// tars from an older builder are not reused.
	formatVersion = "rcuda-testimage/2"
)

// Applets returns the busybox applets linked in /bin.
func Applets() []string {
	return []string{
		"sh", "ls", "cat", "echo", "sleep", "mkdir", "rm", "touch", "sync", "head", "tail",
		"grep", "wc", "dd", "sha256sum", "ps", "kill", "true", "false", "env", "mount", "df",
		"printf", "seq", "date", "stat", "find", "nc",
	}
}

// epoch is the modification time of every file and the image's creation time.
var epoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// Build builds the workload, assembles the image with the busybox at BusyboxPath and
// writes it as an OCI layout tar under outDir (created if missing). It returns the
// tar's path and the image reference it imports as. An existing tar with the same
// content is reused.
//
// Build runs `go build` from the current directory, which must be inside this module
// (go test runs tests in their package directory, so tests qualify).
func Build(ctx context.Context, outDir string) (tarPath, ref string, err error) {
	return BuildWithBusybox(ctx, outDir, BusyboxPath)
}

// BuildWithBusybox is Build with the static busybox binary at busyboxPath (the harness
// passes the one hack/tools.sh reports).
func BuildWithBusybox(ctx context.Context, outDir, busyboxPath string) (tarPath, ref string, err error) {
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", "", err
	}
	busybox, err := readStaticBinary(busyboxPath)
	if err != nil {
		return "", "", err
	}
	workload, err := buildWorkload(ctx, outDir)
	if err != nil {
		return "", "", err
	}

	key := sha256.New()
	for _, part := range [][]byte{[]byte(formatVersion), busybox, workload} {
		s := sha256.Sum256(part)
		key.Write(s[:])
	}
	tarPath = filepath.Join(outDir, "rcuda-test-"+hex.EncodeToString(key.Sum(nil))[:16]+".tar")
	if _, err := os.Stat(tarPath); err == nil {
		return tarPath, Ref, nil
	}

	layout, err := buildLayout(busybox, workload)
	if err != nil {
		return "", "", err
	}
	if err := writeFileAtomic(tarPath, layout); err != nil {
		return "", "", err
	}
	return tarPath, Ref, nil
}

// Import imports the image tar into the client's namespace for linux/amd64 and unpacks
// it for the client's default snapshotter (the namespace's
// containerd.io/defaults/snapshotter label, else overlayfs).
func Import(ctx context.Context, client *containerd.Client, tarPath string) (containerd.Image, error) {
	f, err := os.Open(tarPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	platform := platforms.Only(ocispec.Platform{OS: "linux", Architecture: "amd64"})
	imgs, err := client.Import(ctx, f, containerd.WithImportPlatform(platform))
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", tarPath, err)
	}
	for _, img := range imgs {
		if img.Name != Ref {
			continue
		}
		image := containerd.NewImageWithPlatform(client, img, platform)
		if err := image.Unpack(ctx, ""); err != nil {
			return nil, fmt.Errorf("unpack %s: %w", img.Name, err)
		}
		return image, nil
	}
	return nil, fmt.Errorf("import %s: image %s not found among %d imported images", tarPath, Ref, len(imgs))
}

// readStaticBinary reads a statically linked ELF executable.
func readStaticBinary(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s not found: install Debian's busybox-static (run `make tools`)", path)
	}
	if err != nil {
		return nil, err
	}
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%s: not an ELF executable: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return nil, fmt.Errorf("%s is dynamically linked: install Debian's busybox-static instead of busybox (run `make tools`)", path)
		}
	}
	return b, nil
}

// buildWorkload builds the static workload binary and returns its bytes.
func buildWorkload(ctx context.Context, outDir string) ([]byte, error) {
	dir, err := os.MkdirTemp(outDir, "workload-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "workload")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false",
		"-ldflags=-s -w -buildid=", "-o", bin, WorkloadPackage)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build %s (run from inside the module): %w\n%s", WorkloadPackage, err, out)
	}
	return os.ReadFile(bin)
}

// File is one entry of a tar: of an image's layer or of the layout.
type File struct {
	Name string // without a leading slash
	Mode int64  // permission bits, with sticky
	Typ  byte   // tar.TypeReg, tar.TypeDir or tar.TypeSymlink
	Link string
	Data []byte
}

// BaseFiles are the directories, /etc files and busybox (with applet
// symlinks) every test image has.
func BaseFiles(busybox []byte) []File {
	files := []File{
		{Name: "bin", Mode: 0o755, Typ: tar.TypeDir},
		{Name: "bin/busybox", Mode: 0o755, Typ: tar.TypeReg, Data: busybox},
		{Name: "dev", Mode: 0o755, Typ: tar.TypeDir},
		{Name: "etc", Mode: 0o755, Typ: tar.TypeDir},
		{Name: "etc/group", Mode: 0o644, Typ: tar.TypeReg, Data: []byte("root:x:0:\nnogroup:x:65534:\n")},
		{Name: "etc/passwd", Mode: 0o644, Typ: tar.TypeReg,
			Data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")},
		{Name: "proc", Mode: 0o555, Typ: tar.TypeDir},
		{Name: "root", Mode: 0o700, Typ: tar.TypeDir},
		{Name: "sys", Mode: 0o555, Typ: tar.TypeDir},
		{Name: "tmp", Mode: 0o1777, Typ: tar.TypeDir},
	}
	for _, a := range Applets() {
		files = append(files, File{Name: "bin/" + a, Mode: 0o777, Typ: tar.TypeSymlink, Link: "busybox"})
	}
	return files
}

func layerFiles(busybox, workload []byte) []File {
	files := append(BaseFiles(busybox), File{Name: strings.TrimPrefix(WorkloadPath, "/"), Mode: 0o755, Typ: tar.TypeReg, Data: workload})
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	return files
}

// writeTar returns an uncompressed tar of files, in order, owned by root, with fixed
// modification times.
func writeTar(files []File) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{
			Typeflag: f.Typ,
			Name:     f.Name,
			Linkname: f.Link,
			Mode:     f.Mode,
			Size:     int64(len(f.Data)),
			ModTime:  epoch,
			Uname:    "root",
			Gname:    "root",
			Format:   tar.FormatPAX,
		}
		if f.Typ == tar.TypeDir {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.Data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func gzipBytes(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if err != nil {
		return nil, err
	}
	// The gzip header stays zero (no name, no mtime) so the output is deterministic.
	if _, err := zw.Write(b); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// blob is a content-addressed file of the layout.
type blob struct {
	desc ocispec.Descriptor
	data []byte
}

func newBlob(mediaType string, data []byte) blob {
	return blob{desc: ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}, data: data}
}

func jsonBlob(mediaType string, v any) (blob, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return blob{}, err
	}
	return newBlob(mediaType, b), nil
}

// buildLayout returns the OCI image layout tar of the test image.
func buildLayout(busybox, workload []byte) ([]byte, error) {
	return Layout(Ref, layerFiles(busybox, workload), []string{WorkloadPath, "sleep"}, nil)
}

// Layout returns an OCI image layout tar, importable as ref, of one gzip
// layer holding files (sorted by the caller), with cmd as the default
// command and env added to PATH.
func Layout(ref string, files []File, cmd, env []string) ([]byte, error) {
	layerTar, err := writeTar(files)
	if err != nil {
		return nil, err
	}
	layerGz, err := gzipBytes(layerTar)
	if err != nil {
		return nil, err
	}
	layer := newBlob(ocispec.MediaTypeImageLayerGzip, layerGz)
	platform := ocispec.Platform{OS: "linux", Architecture: "amd64"}
	created := epoch
	config, err := jsonBlob(ocispec.MediaTypeImageConfig, ocispec.Image{
		Created:  &created,
		Platform: platform,
		Config: ocispec.ImageConfig{
			Env:        append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, env...),
			Cmd:        cmd,
			WorkingDir: "/",
		},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{digest.FromBytes(layerTar)}},
		History: []ocispec.History{{
			Created:   &created,
			CreatedBy: "containerd-shim-runsc-cuda test/e2e/testimage",
		}},
	})
	if err != nil {
		return nil, err
	}
	manifest, err := jsonBlob(ocispec.MediaTypeImageManifest, ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    config.desc,
		Layers:    []ocispec.Descriptor{layer.desc},
	})
	if err != nil {
		return nil, err
	}
	mdesc := manifest.desc
	mdesc.Platform = &platform
	mdesc.Annotations = map[string]string{
		"io.containerd.image.name": ref,
		ocispec.AnnotationRefName:  tagOf(ref),
	}
	index, err := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{mdesc},
	})
	if err != nil {
		return nil, err
	}
	ociLayout, err := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err != nil {
		return nil, err
	}

	entries := []File{
		{Name: ocispec.ImageLayoutFile, Typ: tar.TypeReg, Data: ociLayout},
		{Name: "index.json", Typ: tar.TypeReg, Data: index},
		{Name: "blobs", Typ: tar.TypeDir},
		{Name: "blobs/sha256", Typ: tar.TypeDir},
	}
	for _, b := range []blob{layer, config, manifest} {
		entries = append(entries, File{Name: "blobs/sha256/" + b.desc.Digest.Encoded(), Typ: tar.TypeReg, Data: b.data})
	}
	for i := range entries {
		entries[i].Mode = 0o644
		if entries[i].Typ == tar.TypeDir {
			entries[i].Mode = 0o755
		}
	}
	return writeTar(entries)
}

// tagOf returns the tag of an image reference ("latest" when it has none).
func tagOf(ref string) string {
	name := ref[strings.LastIndex(ref, "/")+1:]
	if i := strings.LastIndex(name, ":"); i >= 0 {
		return name[i+1:]
	}
	return "latest"
}

// writeFileAtomic writes data to path through a temporary file in the same directory,
// so concurrent builders and readers never see a partial tar.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := io.Copy(f, bytes.NewReader(data)); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
