package testimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// readTar returns the headers and contents of a tar, in order.
func readTar(t *testing.T, r io.Reader) ([]*tar.Header, map[string][]byte) {
	t.Helper()
	var hdrs []*tar.Header
	files := map[string][]byte{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return hdrs, files
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		hdrs = append(hdrs, h)
		files[h.Name] = b
	}
}

func unmarshal(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%v in %s", err, b)
	}
}

// blobOf returns the verified content of desc from the layout's files.
func blobOf(t *testing.T, files map[string][]byte, desc ocispec.Descriptor) []byte {
	t.Helper()
	b, ok := files["blobs/sha256/"+desc.Digest.Encoded()]
	if !ok {
		t.Fatalf("blob %s missing", desc.Digest)
	}
	if digest.FromBytes(b) != desc.Digest || int64(len(b)) != desc.Size {
		t.Fatalf("blob %s: content does not match its descriptor", desc.Digest)
	}
	return b
}

func TestBuild(t *testing.T) {
	if _, err := os.Stat(BusyboxPath); err != nil {
		t.Skipf("%s missing: run `make tools` (Debian busybox-static)", BusyboxPath)
	}
	ctx := context.Background()
	out := t.TempDir()
	tarPath, ref, err := Build(ctx, out)
	if err != nil {
		t.Fatal(err)
	}
	if ref != Ref {
		t.Errorf("ref = %q, want %q", ref, Ref)
	}
	raw, err := os.ReadFile(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	hdrs, files := readTar(t, bytes.NewReader(raw))
	for _, h := range hdrs {
		if !h.ModTime.Equal(epoch) {
			t.Errorf("%s: mtime %v, want %v", h.Name, h.ModTime, epoch)
		}
	}

	var layout ocispec.ImageLayout
	unmarshal(t, files[ocispec.ImageLayoutFile], &layout)
	if layout.Version != ocispec.ImageLayoutVersion {
		t.Errorf("oci-layout version %q", layout.Version)
	}
	var index ocispec.Index
	unmarshal(t, files["index.json"], &index)
	if len(index.Manifests) != 1 {
		t.Fatalf("index has %d manifests, want 1", len(index.Manifests))
	}
	mdesc := index.Manifests[0]
	if got := mdesc.Annotations["io.containerd.image.name"]; got != Ref {
		t.Errorf("io.containerd.image.name = %q, want %q", got, Ref)
	}
	if got := mdesc.Annotations[ocispec.AnnotationRefName]; got != Tag {
		t.Errorf("%s = %q, want %q", ocispec.AnnotationRefName, got, Tag)
	}
	var manifest ocispec.Manifest
	unmarshal(t, blobOf(t, files, mdesc), &manifest)
	var config ocispec.Image
	unmarshal(t, blobOf(t, files, manifest.Config), &config)
	if config.OS != "linux" || config.Architecture != "amd64" {
		t.Errorf("platform %s/%s, want linux/amd64", config.OS, config.Architecture)
	}
	if len(config.Config.Cmd) != 2 || config.Config.Cmd[0] != WorkloadPath || config.Config.Cmd[1] != "sleep" {
		t.Errorf("Cmd = %q", config.Config.Cmd)
	}
	if len(manifest.Layers) != 1 || manifest.Layers[0].MediaType != ocispec.MediaTypeImageLayerGzip {
		t.Fatalf("layers = %+v, want one gzip layer", manifest.Layers)
	}

	zr, err := gzip.NewReader(bytes.NewReader(blobOf(t, files, manifest.Layers[0])))
	if err != nil {
		t.Fatal(err)
	}
	layerTar, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if got := digest.FromBytes(layerTar); len(config.RootFS.DiffIDs) != 1 || config.RootFS.DiffIDs[0] != got {
		t.Errorf("diff IDs %v, want [%s]", config.RootFS.DiffIDs, got)
	}
	lhdrs, lfiles := readTar(t, bytes.NewReader(layerTar))
	byName := map[string]*tar.Header{}
	for _, h := range lhdrs {
		byName[h.Name] = h
	}
	busybox, err := os.ReadFile(BusyboxPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(lfiles["bin/busybox"], busybox) {
		t.Error("bin/busybox differs from the host's busybox")
	}
	for _, a := range Applets() {
		if h := byName["bin/"+a]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "busybox" {
			t.Errorf("bin/%s: want a symlink to busybox, got %+v", a, h)
		}
	}
	if h := byName["workload"]; h == nil || h.Mode != 0o755 || len(lfiles["workload"]) == 0 {
		t.Errorf("workload: want a non-empty 0755 file, got %+v", h)
	}
	if h := byName["tmp/"]; h == nil || h.Typeflag != tar.TypeDir || h.Mode != 0o1777 {
		t.Errorf("tmp: want a 1777 directory, got %+v", h)
	}
	for _, name := range []string{"etc/passwd", "etc/group"} {
		if !bytes.HasPrefix(lfiles[name], []byte("root:x:0:")) {
			t.Errorf("%s = %q", name, lfiles[name])
		}
	}

	// Same content, same bytes: a rebuild elsewhere gives the same tar.
	tarPath2, _, err := Build(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	raw2, err := os.ReadFile(tarPath2)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(raw, raw2) {
		t.Error("two builds of the same content differ")
	}
	// And the cache returns the existing tar.
	if again, _, err := Build(ctx, out); err != nil || again != tarPath {
		t.Errorf("cached build = %q, %v; want %q", again, err, tarPath)
	}
}
