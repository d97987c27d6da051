// Command mkimage builds a container image (an OCI layout tar for
// `ctr images import`) from files of the host it runs on, with no registry.
//
// The GPU scenario uses it on the GPU host: CUDA programs (and the CUDA
// toggle tool, which is dynamically linked) need the glibc libraries that
// libcuda.so.1 and libnvidia-ml.so.1 link against inside the container, and
// --ldd copies everything `ldd` lists for a binary or library, at the same
// paths. The NVIDIA driver libraries themselves are not put
// in the image: the shim mounts them (cuda.driver_lib_dir, or CDI).
//
//	mkimage --out img.tar --ref localhost/gpu:latest --busybox /bin/busybox \
//	  --file /workload=./workload --ldd ./workload \
//	  --ldd /usr/local/nvidia/lib64/libcuda.so.1 --no-copy /usr/local/nvidia/lib64 \
//	  --cmd /workload
//
// --rootfs DIR also writes the image's files into DIR (created if missing),
// as a plain directory that runsc can use as a container root: the
// benchmarks run raw runsc on the very files containerd unpacks.
package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/testimage"
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("mkimage", flag.ContinueOnError)
	out := fs.String("out", "", "output tar")
	rootfs := fs.String("rootfs", "", "also write the image's files into this directory")
	ref := fs.String("ref", "localhost/rcuda-gpu:latest", "image reference")
	busybox := fs.String("busybox", "", "static busybox to include (optional)")
	cmd := fs.String("cmd", "", "default command, space separated")
	var files, ldds, noCopy multi
	fs.Var(&files, "file", "containerPath=hostPath to include (repeatable)")
	fs.Var(&ldds, "ldd", "host binary or library whose ldd dependencies to include (repeatable; add the file itself with --file)")
	fs.Var(&noCopy, "no-copy", "host directory whose libraries are mounted at run time, not copied (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" && *rootfs == "" {
		return errors.New("--out or --rootfs is required")
	}
	var bb []byte
	if *busybox != "" {
		var err error
		if bb, err = os.ReadFile(*busybox); err != nil {
			return err
		}
	}
	img := newImage(bb)
	for _, f := range files {
		dst, src, ok := strings.Cut(f, "=")
		if !ok {
			return fmt.Errorf("--file %q: want containerPath=hostPath", f)
		}
		if err := img.addHostFile(dst, src); err != nil {
			return err
		}
	}
	for _, l := range ldds {
		deps, err := lddDeps(l)
		if err != nil {
			return err
		}
		for _, d := range deps {
			if skip(d, noCopy) {
				continue
			}
			if err := img.addHostFile(d, d); err != nil {
				return err
			}
		}
	}
	if *rootfs != "" {
		if err := writeRootfs(*rootfs, img.sorted()); err != nil {
			return err
		}
		fmt.Printf("%s: %d files\n", *rootfs, len(img.files))
	}
	if *out == "" {
		return nil
	}
	layout, err := testimage.Layout(*ref, img.sorted(), strings.Fields(*cmd), nil)
	if err != nil {
		return err
	}
	if err := os.WriteFile(*out, layout, 0o644); err != nil {
		return err
	}
	fmt.Printf("%s: %s, %d files, %d bytes\n", *out, *ref, len(img.files), len(layout))
	return nil
}

// writeRootfs writes files (sorted, so directories come before their
// entries) under dir.
func writeRootfs(dir string, files []testimage.File) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, f := range files {
		p := filepath.Join(dir, f.Name)
		switch f.Typ {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
			if err := os.Chmod(p, os.FileMode(f.Mode&0o777)|modeExtra(f.Mode)); err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			if err := os.Symlink(f.Link, p); err != nil && !os.IsExist(err) {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(p, f.Data, 0o600); err != nil {
				return err
			}
			if err := os.Chmod(p, os.FileMode(f.Mode&0o777)); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: unsupported file type %q", f.Name, f.Typ)
		}
	}
	return nil
}

// modeExtra maps the sticky bit of a tar mode to Go's.
func modeExtra(mode int64) os.FileMode {
	if mode&0o1000 != 0 {
		return os.ModeSticky
	}
	return 0
}

func skip(path string, dirs []string) bool {
	for _, d := range dirs {
		if strings.HasPrefix(path, strings.TrimSuffix(d, "/")+"/") {
			return true
		}
	}
	return false
}

// lddDeps returns the absolute paths ldd resolves for path, the dynamic
// loader included.
func lddDeps(path string) ([]string, error) {
	out, err := exec.Command("ldd", path).CombinedOutput()
	if err != nil {
		if bytes.Contains(out, []byte("not a dynamic executable")) {
			return nil, nil
		}
		return nil, fmt.Errorf("ldd %s: %v: %s", path, err, out)
	}
	var deps []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.Contains(line, "not found") {
			return nil, fmt.Errorf("ldd %s: %s", path, line)
		}
		for _, f := range strings.Fields(line) {
			if strings.HasPrefix(f, "/") {
				deps = append(deps, f)
			}
		}
	}
	return deps, nil
}

type image struct {
	files map[string]testimage.File
}

func newImage(busybox []byte) *image {
	img := &image{files: map[string]testimage.File{}}
	if busybox != nil {
		for _, f := range testimage.BaseFiles(busybox) {
			img.files[f.Name] = f
		}
	} else {
		for _, d := range []string{"dev", "etc", "proc", "sys", "tmp"} {
			mode := int64(0o755)
			if d == "tmp" {
				mode = 0o1777
			}
			img.files[d] = testimage.File{Name: d, Mode: mode, Typ: tar.TypeDir}
		}
	}
	return img
}

// addHostFile adds the host file src at dst (symlinks followed), with its
// parent directories.
func (img *image) addHostFile(dst, src string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	name := strings.TrimPrefix(filepath.Clean(dst), "/")
	for dir := filepath.Dir(name); dir != "."; dir = filepath.Dir(dir) {
		if _, ok := img.files[dir]; !ok {
			img.files[dir] = testimage.File{Name: dir, Mode: 0o755, Typ: tar.TypeDir}
		}
	}
	img.files[name] = testimage.File{Name: name, Mode: int64(st.Mode().Perm()), Typ: tar.TypeReg, Data: data}
	return nil
}

func (img *image) sorted() []testimage.File {
	out := make([]testimage.File, 0, len(img.files))
	for _, f := range img.files {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
