package main

import (
	"archive/tar"
	"os"
	"path/filepath"
	"testing"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/testimage"
)

// writeRootfs lays the image's files out as a directory runsc can use as a
// container root: modes, symlinks and parents as in the layer.
func TestWriteRootfs(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "rootfs")
	files := []testimage.File{
		{Name: "bin", Mode: 0o755, Typ: tar.TypeDir},
		{Name: "bin/busybox", Mode: 0o755, Typ: tar.TypeReg, Data: []byte("bb")},
		{Name: "bin/sh", Typ: tar.TypeSymlink, Link: "busybox"},
		{Name: "tmp", Mode: 0o1777, Typ: tar.TypeDir},
		{Name: "usr/lib/libx.so.1", Mode: 0o644, Typ: tar.TypeReg, Data: []byte("lib")},
	}
	if err := writeRootfs(dir, files); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(filepath.Join(dir, "bin/sh")); err != nil || string(data) != "bb" {
		t.Fatalf("bin/sh through its symlink: %q, %v", data, err)
	}
	for _, c := range []struct {
		name string
		mode os.FileMode
	}{{"bin/busybox", 0o755}, {"tmp", 0o777 | os.ModeSticky | os.ModeDir}, {"usr/lib/libx.so.1", 0o644}} {
		st, err := os.Lstat(filepath.Join(dir, c.name))
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode() & (os.ModePerm | os.ModeSticky | os.ModeDir); got != c.mode {
			t.Errorf("%s: mode %v, want %v", c.name, got, c.mode)
		}
	}
}
