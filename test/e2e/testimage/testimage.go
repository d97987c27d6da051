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
	formatVersion = "rcuda-testimage/1"
)

// Applets returns the busybox applets linked in /bin.
func Applets() []string {
	return []string{
		"sh", "ls", "cat", "echo", "sleep", "mkdir", "rm", "touch", "sync", "head", "tail",
		"grep", "wc", "dd", "sha256sum", "ps", "kill", "true", "false", "env", "mount", "df",
		"printf", "seq", "date", "stat", "find",
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

// layerFile is one entry of a tar: of the image's only layer or of the layout.
type layerFile struct {
	name string // without a leading slash
	mode int64  // permission bits, with sticky
	typ  byte   // tar.TypeReg, tar.TypeDir or tar.TypeSymlink
	link string
	data []byte
}

func layerFiles(busybox, workload []byte) []layerFile {
	files := []layerFile{
		{name: "bin", mode: 0o755, typ: tar.TypeDir},
		{name: "bin/busybox", mode: 0o755, typ: tar.TypeReg, data: busybox},
		{name: "dev", mode: 0o755, typ: tar.TypeDir},
		{name: "etc", mode: 0o755, typ: tar.TypeDir},
		{name: "etc/group", mode: 0o644, typ: tar.TypeReg, data: []byte("root:x:0:\nnogroup:x:65534:\n")},
		{name: "etc/passwd", mode: 0o644, typ: tar.TypeReg,
			data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")},
		{name: "proc", mode: 0o555, typ: tar.TypeDir},
		{name: "root", mode: 0o700, typ: tar.TypeDir},
		{name: "sys", mode: 0o555, typ: tar.TypeDir},
		{name: "tmp", mode: 0o1777, typ: tar.TypeDir},
		{name: strings.TrimPrefix(WorkloadPath, "/"), mode: 0o755, typ: tar.TypeReg, data: workload},
	}
	for _, a := range Applets() {
		files = append(files, layerFile{name: "bin/" + a, mode: 0o777, typ: tar.TypeSymlink, link: "busybox"})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].name < files[j].name })
	return files
}

// writeTar returns an uncompressed tar of files, in order, owned by root, with fixed
// modification times.
func writeTar(files []layerFile) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{
			Typeflag: f.typ,
			Name:     f.name,
			Linkname: f.link,
			Mode:     f.mode,
			Size:     int64(len(f.data)),
			ModTime:  epoch,
			Uname:    "root",
			Gname:    "root",
			Format:   tar.FormatPAX,
		}
		if f.typ == tar.TypeDir {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
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

// buildLayout returns the OCI image layout tar of the image.
func buildLayout(busybox, workload []byte) ([]byte, error) {
	layerTar, err := writeTar(layerFiles(busybox, workload))
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
			Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			Cmd:        []string{WorkloadPath, "sleep"},
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
		"io.containerd.image.name": Ref,
		ocispec.AnnotationRefName:  Tag,
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

	entries := []layerFile{
		{name: ocispec.ImageLayoutFile, typ: tar.TypeReg, data: ociLayout},
		{name: "index.json", typ: tar.TypeReg, data: index},
		{name: "blobs", typ: tar.TypeDir},
		{name: "blobs/sha256", typ: tar.TypeDir},
	}
	for _, b := range []blob{layer, config, manifest} {
		entries = append(entries, layerFile{name: "blobs/sha256/" + b.desc.Digest.Encoded(), typ: tar.TypeReg, data: b.data})
	}
	for i := range entries {
		entries[i].mode = 0o644
		if entries[i].typ == tar.TypeDir {
			entries[i].mode = 0o755
		}
	}
	return writeTar(entries)
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
