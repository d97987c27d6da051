package shim

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/checkpoint"
)

type tarEntry struct {
	name, body string
	typ        byte
	link       string
}

func writeTar(t *testing.T, path string, gz bool, entries ...tarEntry) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		h := &tar.Header{Name: e.name, Typeflag: typ, Mode: 0o644, Size: int64(len(e.body)), Linkname: e.link}
		if typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	data := buf.Bytes()
	if gz {
		var z bytes.Buffer
		zw := gzip.NewWriter(&z)
		zw.Write(data)
		zw.Close()
		data = z.Bytes()
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// sourceEnv is an allowed root, an outside directory and an unpack directory.
type sourceEnv struct {
	root, outside string
	cfg           *Config
}

func newSourceEnv(t *testing.T) sourceEnv {
	dir := t.TempDir()
	e := sourceEnv{root: filepath.Join(dir, "checkpoints"), outside: filepath.Join(dir, "elsewhere")}
	for _, d := range []string{e.root, e.outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e.cfg = &Config{Checkpoint: CheckpointConfig{RestoreRoots: []string{e.root}, UnpackDir: filepath.Join(dir, "unpack")}}
	return e
}

func (e sourceEnv) resolve(t *testing.T, path string) (*restoreSource, error) {
	spec := &specs.Spec{Annotations: map[string]string{AnnotationRestoreFrom: path}}
	return annotatedSource(context.Background(), e.cfg, spec, "k8s.io", "c1")
}

// A CRI checkpoint archive (what the kubelet and crictl checkpoint --export
// write) is unpacked: the image under checkpoint/, flat; the CRI's own files,
// links and entries that would leave the directory are not taken. gzip too.
func TestArchiveSource(t *testing.T) {
	for _, gz := range []bool{false, true} {
		e := newSourceEnv(t)
		archive := filepath.Join(e.root, "checkpoint-app.tar")
		writeTar(t, archive, gz,
			tarEntry{name: "config.dump", body: "{}"},
			tarEntry{name: "spec.dump", body: "{}"},
			tarEntry{name: "checkpoint/", typ: tar.TypeDir},
			tarEntry{name: "checkpoint/checkpoint.img", body: "state"},
			tarEntry{name: "checkpoint/pages.img", body: "pages"},
			tarEntry{name: "checkpoint/" + checkpoint.MetadataFile, body: "{}"},
			tarEntry{name: "checkpoint/../../escape", body: "x"},
			tarEntry{name: "checkpoint/link", typ: tar.TypeSymlink, link: "/etc/shadow"},
			tarEntry{name: "rootfs-diff.tar", body: "diff"},
		)
		src, err := e.resolve(t, archive)
		if err != nil {
			t.Fatal(err)
		}
		if !src.unpacked || src.name != archive {
			t.Fatalf("source %+v", src)
		}
		var names []string
		entries, _ := os.ReadDir(src.dir)
		for _, en := range entries {
			names = append(names, en.Name())
		}
		if got := strings.Join(names, " "); got != "checkpoint.img pages.img runsc-cuda.json" {
			t.Fatalf("gzip %t: unpacked %q", gz, got)
		}
	}
}

// A checkpoint directory is restored in place.
func TestDirectorySource(t *testing.T) {
	e := newSourceEnv(t)
	dir := filepath.Join(e.root, "app")
	os.Mkdir(dir, 0o700)
	src, err := e.resolve(t, dir)
	if err != nil || src.dir != dir || src.unpacked {
		t.Fatalf("source %+v, %v", src, err)
	}
}

// Bad input: each a FailedPrecondition that says what to do, nothing read
// outside the allowed roots, nothing left behind.
func TestBadSources(t *testing.T) {
	e := newSourceEnv(t)
	secret := filepath.Join(e.outside, "secret.tar")
	writeTar(t, secret, false, tarEntry{name: "checkpoint/" + checkpoint.MetadataFile, body: "{}"})
	if err := os.Symlink(secret, filepath.Join(e.root, "link.tar")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(e.outside, filepath.Join(e.root, "linkdir")); err != nil {
		t.Fatal(err)
	}
	notOurs := filepath.Join(e.root, "runc.tar")
	writeTar(t, notOurs, false, tarEntry{name: "checkpoint/pages-1.img", body: "criu"}, tarEntry{name: "config.dump", body: "{}"})
	garbage := filepath.Join(e.root, "garbage.tar")
	os.WriteFile(garbage, []byte("this is not a tar archive at all, not even close to one........"), 0o600)
	for _, tc := range []struct {
		name, path, want string
	}{
		{"missing", filepath.Join(e.root, "absent.tar"), "no such checkpoint"},
		{"relative", "checkpoints/app.tar", "absolute path"},
		{"dot-dot", e.root + "/../elsewhere/secret.tar", "without \"..\""},
		{"outside the roots", secret, "restored only from under " + e.root},
		{"symlink to a file outside", filepath.Join(e.root, "link.tar"), "symbolic link"},
		{"through a symlinked directory", filepath.Join(e.root, "linkdir", "secret.tar"), "symbolic link"},
		{"not a runsc-cuda checkpoint", notOurs, "not a checkpoint of " + RuntimeName},
		{"not an archive", garbage, "not a readable checkpoint archive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.resolve(t, tc.path)
			if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), AnnotationRestoreFrom) {
				t.Fatalf("err = %v, want FailedPrecondition naming the annotation and saying %q", err, tc.want)
			}
			if entries, _ := os.ReadDir(e.cfg.Checkpoint.UnpackDir + "/k8s.io"); len(entries) != 0 {
				t.Fatalf("left behind: %v", entries)
			}
		})
	}
}

// A pod restores once, into the container of the checkpointed name; the
// restored container started again starts fresh; other containers are
// refused.
func TestRestoreOnce(t *testing.T) {
	sb := &sandbox{id: "pod"}
	web, side := podSpec("pod", "web"), podSpec("pod", "sidecar")
	src := &restoreSource{name: "/var/lib/kubelet/checkpoints/a.tar"}
	if ok, err := sb.restoreOnce(web, src); !ok || err != nil {
		t.Fatalf("first: %t, %v", ok, err)
	}
	sb.restoredFrom, sb.restoredName = src.name, "web"
	if ok, err := sb.restoreOnce(web, src); ok || err != nil {
		t.Fatalf("restart of the restored container: %t, %v (want a fresh start)", ok, err)
	}
	if _, err := sb.restoreOnce(side, src); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "cannot also run sidecar") {
		t.Fatalf("another container: %v", err)
	}
	if ok, err := (&sandbox{restoredFrom: "x"}).restoreOnce(&specs.Spec{}, src); !ok || err != nil {
		t.Fatalf("standalone: %t, %v", ok, err)
	}
	meta := &checkpoint.Metadata{Pod: &checkpoint.Pod{Containers: []checkpoint.PodContainer{{ID: "pod", Sandbox: true}, {ID: "a", Name: "web"}}}}
	if err := checkSourceName(meta, web, src); err != nil {
		t.Fatal(err)
	}
	if err := checkSourceName(meta, side, src); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "holds application container web") {
		t.Fatalf("name mismatch: %v", err)
	}
}
