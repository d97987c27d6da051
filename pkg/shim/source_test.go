package shim

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
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
	src, err := annotatedSource(e.cfg, spec)
	if err != nil {
		return nil, err
	}
	defer src.close()
	if err := src.unpack(context.Background(), filepath.Join(e.cfg.Checkpoint.unpackDir(), "k8s.io", "c1")); err != nil {
		return nil, err
	}
	return src, nil
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

// podMeta is the metadata of a pod checkpoint whose application container
// is web, the pod having run init to completion.
func podMeta(t *testing.T) string {
	m := checkpoint.Metadata{FormatVersion: checkpoint.FormatVersion, RunscVersion: "runsc test", Files: []checkpoint.File{{Name: "checkpoint.img", Size: 5}},
		Pod: &checkpoint.Pod{SandboxID: "pod", Containers: []checkpoint.PodContainer{{ID: "pod", Sandbox: true}, {ID: "a", Name: "web"}}, Completed: []string{"init"}}}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A pod restores once, into the container of the checkpointed name, after
// the containers that had run to completion in the checkpointed pod (init
// containers) ran again, fresh; the restored container started again
// starts fresh; other containers are refused. The archive's metadata is
// read without unpacking it (plain and gzipped).
func TestRestoresFrom(t *testing.T) {
	for _, gz := range []bool{false, true} {
		e := newSourceEnv(t)
		archive := filepath.Join(e.root, "checkpoint-web.tar")
		writeTar(t, archive, gz,
			tarEntry{name: "config.dump", body: "{}"},
			tarEntry{name: "checkpoint/checkpoint.img", body: "state"},
			tarEntry{name: "checkpoint/" + checkpoint.MetadataFile, body: podMeta(t)},
		)
		ctx := context.Background()
		sb := &sandbox{id: "pod2"}
		web, init, side := podSpec("pod2", "web"), podSpec("pod2", "init"), podSpec("pod2", "sidecar")
		open := func(spec *specs.Spec) *restoreSource {
			spec.Annotations[AnnotationRestoreFrom] = archive
			src, err := annotatedSource(e.cfg, spec)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(src.close)
			return src
		}
		if ok, err := sb.restoresFrom(ctx, init, open(init)); ok || err != nil {
			t.Fatalf("gzip %t: init container: %t, %v (want a fresh start)", gz, ok, err)
		}
		if ok, err := sb.restoresFrom(ctx, side, open(side)); ok || !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "holds application container web") {
			t.Fatalf("gzip %t: another container before the restore: %t, %v", gz, ok, err)
		}
		src := open(web)
		if ok, err := sb.restoresFrom(ctx, web, src); !ok || err != nil {
			t.Fatalf("gzip %t: first: %t, %v", gz, ok, err)
		}
		if entries, _ := os.ReadDir(e.cfg.Checkpoint.UnpackDir); len(entries) != 0 {
			t.Fatalf("gzip %t: the decision unpacked %v", gz, entries)
		}
		if err := src.unpack(ctx, filepath.Join(e.cfg.Checkpoint.unpackDir(), "k8s.io", "web")); err != nil {
			t.Fatalf("gzip %t: unpack after reading the metadata: %v", gz, err)
		}
		sb.restoredFrom, sb.restoredName = archive, "web"
		if ok, err := sb.restoresFrom(ctx, web, open(web)); ok || err != nil {
			t.Fatalf("gzip %t: restart of the restored container: %t, %v (want a fresh start)", gz, ok, err)
		}
		if _, err := sb.restoresFrom(ctx, side, open(side)); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "cannot also run sidecar") {
			t.Fatalf("gzip %t: another container after the restore: %v", gz, err)
		}
		if ok, err := (&sandbox{restoredFrom: "x"}).restoresFrom(ctx, &specs.Spec{}, open(&specs.Spec{Annotations: map[string]string{}})); !ok || err != nil {
			t.Fatalf("gzip %t: standalone: %t, %v", gz, ok, err)
		}
	}
}

// A pod restores by annotation only a checkpoint of a pod of its own
// Kubernetes namespace, unless checkpoint.cross_namespace_restore allows it;
// checkpoints that name no namespace (made before the shim recorded it)
// restore anywhere.
func TestRestoreAcrossNamespaces(t *testing.T) {
	e := newSourceEnv(t)
	dir := filepath.Join(e.root, "web")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	write := func(ns string) {
		m := checkpoint.Metadata{FormatVersion: checkpoint.FormatVersion, RunscVersion: "runsc test", Files: []checkpoint.File{{Name: "checkpoint.img"}},
			Pod: &checkpoint.Pod{SandboxID: "pod", Namespace: ns, Containers: []checkpoint.PodContainer{{ID: "pod", Sandbox: true}, {ID: "a", Name: "web"}}}}
		if err := checkpoint.Write(dir, &m); err != nil {
			t.Fatal(err)
		}
	}
	web := podSpec("pod2", "web")
	web.Annotations[annotationSandboxNamespace] = "team-b"
	web.Annotations[AnnotationRestoreFrom] = dir
	for _, tc := range []struct {
		ns    string
		cross bool
		ok    bool
	}{{"team-b", false, true}, {"team-a", false, false}, {"team-a", true, true}, {"", false, true}} {
		write(tc.ns)
		e.cfg.Checkpoint.CrossNamespaceRestore = tc.cross
		src, err := annotatedSource(e.cfg, web)
		if err != nil {
			t.Fatal(err)
		}
		ok, err := (&sandbox{id: "pod2"}).restoresFrom(context.Background(), web, src)
		if tc.ok && (!ok || err != nil) {
			t.Errorf("checkpoint of %q into team-b, cross %t: %t, %v; want a restore", tc.ns, tc.cross, ok, err)
		}
		if !tc.ok && (!errdefs.IsPermissionDenied(err) || !strings.Contains(err.Error(), `is of a pod in namespace "team-a", and this pod is in "team-b"`)) {
			t.Errorf("checkpoint of %q into team-b: %v; want PermissionDenied", tc.ns, err)
		}
	}
}
