package shim

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/checkpoint"
)

// Restore sources. Besides containerd's own ways of asking for a restore
// (CreateTaskRequest.Checkpoint, runc options' CriuImagePath), a container
// whose spec carries AnnotationRestoreFrom is restored from the checkpoint it
// names: `ctr run --annotation`, `nerdctl run --annotation`, or in
// Kubernetes a pod annotation the CRI passes through (pod_annotations),
// which works on every containerd, 2.4 included, where the CRI has no
// restore of its own (docs/kubernetes.md).
//
// The annotation names, by absolute path, a checkpoint directory (the flat
// image the shim writes: runsc's files and runsc-cuda.json, as `ctr task
// checkpoint --image-path` leaves it) or a checkpoint archive (the tar the
// kubelet and `crictl checkpoint --export` write, holding the image under
// checkpoint/), under one of the allowed roots (checkpoint.restore_roots).
// Paths are resolved beneath their root without following symbolic links,
// so nothing outside the roots is read. An archive is unpacked into
// checkpoint.unpack_dir for the restore and removed with the container.

// AnnotationRestoreFrom names the checkpoint a container is restored from.
const AnnotationRestoreFrom = RuntimeName + ".restore-from"

// restoreSource is the checkpoint an annotation names.
type restoreSource struct {
	// name is what the annotation said.
	name string
	// dir is the checkpoint directory runsc restores from: the named
	// directory, or an archive once unpacked.
	dir string
	// archive is the named archive, open until unpacked or closed.
	archive *os.File
	// unpacked is set when dir is an unpacked archive, which goes with
	// the container.
	unpacked bool
	// crossNamespace lets a pod restore a checkpoint of a pod of another
	// Kubernetes namespace (checkpoint.cross_namespace_restore).
	crossNamespace bool
}

// annotatedSource resolves the restore annotation of spec, nil when there
// is none. It fails, with what to do, for a path outside the allowed roots,
// through a symbolic link, missing, or neither a directory nor a file. The
// caller closes the source.
func annotatedSource(cfg *Config, spec *specs.Spec) (*restoreSource, error) {
	name, ok := spec.Annotations[AnnotationRestoreFrom]
	if !ok {
		return nil, nil
	}
	if !filepath.IsAbs(name) || hasDotDot(name) {
		return nil, badSource(name, "the checkpoint must be named by an absolute path without \"..\"")
	}
	f, err := openBeneath(cfg.Checkpoint.restoreRoots(), filepath.Clean(name))
	if err != nil {
		return nil, badSource(name, "%v", err)
	}
	st, err := f.Stat()
	switch {
	case err != nil:
		f.Close()
		return nil, badSource(name, "%v", err)
	case st.IsDir():
		// Checked as any checkpoint directory by checkRestore.
		f.Close()
		return &restoreSource{name: name, dir: filepath.Clean(name), crossNamespace: cfg.Checkpoint.CrossNamespaceRestore}, nil
	case !st.Mode().IsRegular():
		f.Close()
		return nil, badSource(name, "not a checkpoint directory or archive")
	}
	return &restoreSource{name: name, archive: f, crossNamespace: cfg.Checkpoint.CrossNamespaceRestore}, nil
}

func badSource(name, format string, a ...any) error {
	return fmt.Errorf("%w: annotation %s=%q: %s", errdefs.ErrFailedPrecondition, AnnotationRestoreFrom, name, fmt.Sprintf(format, a...))
}

// metadata reads the checkpoint's metadata: from the directory, or from the
// archive without unpacking it (a plain tar is read by seeking past the
// image's pages files to the metadata).
func (s *restoreSource) metadata() (*checkpoint.Metadata, error) {
	if s.archive == nil {
		return checkpoint.Read(s.dir)
	}
	defer s.archive.Seek(0, io.SeekStart)
	var r io.Reader = s.archive
	if compressed, err := isGzip(s.archive); err != nil {
		return nil, badSource(s.name, "not a checkpoint archive: %v", err)
	} else if compressed {
		if r, err = archiveReader(s.archive); err != nil {
			return nil, badSource(s.name, "%v", err)
		}
	}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil, badSource(s.name, "%s", notOurArchive)
		}
		if err != nil {
			return nil, badSource(s.name, "not a readable checkpoint archive: %v", err)
		}
		if name, ok := imageEntry(h.Name); ok && name == checkpoint.MetadataFile && h.Typeflag == tar.TypeReg {
			m, err := checkpoint.Decode(tr)
			if err != nil {
				return nil, badSource(s.name, "%s: %v", h.Name, err)
			}
			return m, nil
		}
	}
}

// unpack unpacks an archive into dir, a new directory, for the restore; a
// directory is restored from where it is.
func (s *restoreSource) unpack(ctx context.Context, dir string) error {
	if s.archive == nil {
		return nil
	}
	if _, err := s.archive.Seek(0, io.SeekStart); err != nil {
		return badSource(s.name, "%v", err)
	}
	err := unpackArchive(s.archive, dir)
	s.close()
	if err != nil {
		_ = os.RemoveAll(dir)
		return badSource(s.name, "%v", err)
	}
	s.dir, s.unpacked = dir, true
	log.G(ctx).WithField("archive", s.name).WithField("dir", dir).Info("checkpoint archive unpacked for the restore")
	return nil
}

// close closes an archive not unpacked.
func (s *restoreSource) close() {
	if s != nil && s.archive != nil {
		s.archive.Close()
		s.archive = nil
	}
}

// openBeneath opens path, which must lie beneath one of roots, resolving it
// from the root without following any symbolic link or leaving the root.
func openBeneath(roots []string, path string) (*os.File, error) {
	for _, root := range roots {
		rel, err := filepath.Rel(root, path)
		if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
			continue
		}
		rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("the allowed root %s cannot be opened: %v", root, err)
		}
		defer unix.Close(rfd)
		fd, err := unix.Openat2(rfd, rel, &unix.OpenHow{
			Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOCTTY,
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
		})
		switch {
		case errors.Is(err, unix.ENOENT):
			return nil, fmt.Errorf("no such checkpoint (in %s)", root)
		case errors.Is(err, unix.ELOOP), errors.Is(err, unix.EXDEV):
			return nil, fmt.Errorf("the path goes through a symbolic link; name the checkpoint by its real path under %s", root)
		case err != nil:
			return nil, err
		}
		return os.NewFile(uintptr(fd), path), nil
	}
	return nil, fmt.Errorf("checkpoints are restored only from under %s (the shim's checkpoint.restore_roots); move the checkpoint there or add its directory to restore_roots", strings.Join(roots, ", "))
}

// archivePrefix is where a CRI checkpoint archive holds the runtime's image.
const archivePrefix = "checkpoint/"

var notOurArchive = fmt.Sprintf("the archive holds no %s: it is not a checkpoint of %s (a CRI archive of a container in another runtime, or not a checkpoint archive)", archivePrefix+checkpoint.MetadataFile, RuntimeName)

// unpackArchive unpacks the checkpoint image a CRI checkpoint archive holds
// (or, for a tar of a flat checkpoint directory, its top level) into dir,
// a new directory. Only regular files are taken, each by its base name; an
// archive without the shim's metadata is not a checkpoint of this runtime.
func unpackArchive(f *os.File, dir string) error {
	r, err := archiveReader(f)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("unpacking: %w", err)
	}
	tr := tar.NewReader(r)
	found := false
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("not a readable checkpoint archive: %v", err)
		}
		name, ok := imageEntry(h.Name)
		if !ok || h.Typeflag != tar.TypeReg {
			continue
		}
		out, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
		if err != nil {
			return fmt.Errorf("unpacking %s: %w", h.Name, err)
		}
		_, err = io.Copy(out, tr)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("unpacking %s: %w", h.Name, err)
		}
		found = found || name == checkpoint.MetadataFile
	}
	if !found {
		return errors.New(notOurArchive)
	}
	return nil
}

// imageEntry returns the file name an archive entry has in the checkpoint
// image: the files directly under checkpoint/, or at the top level of a
// tar without that directory.
func imageEntry(name string) (string, bool) {
	name = strings.TrimPrefix(name, "./")
	if rest, ok := strings.CutPrefix(name, archivePrefix); ok {
		name = rest
	} else if strings.Contains(name, "/") {
		return "", false
	}
	if name == "" || strings.Contains(name, "/") || name == "." || name == ".." {
		return "", false
	}
	switch name {
	// The CRI's own files at the archive's top level.
	case "config.dump", "spec.dump", "status.dump", "status", "rootfs-diff.tar", "container.log", "dump.log", "stats-dump":
		return "", false
	}
	return name, true
}

// isGzip tells whether f starts as a gzip stream does.
func isGzip(f *os.File) (bool, error) {
	var magic [2]byte
	if _, err := f.ReadAt(magic[:], 0); err != nil {
		return false, err
	}
	return magic[0] == 0x1f && magic[1] == 0x8b, nil
}

// archiveReader reads a tar, or a gzipped one.
func archiveReader(f *os.File) (io.Reader, error) {
	br := bufio.NewReaderSize(f, 1<<20)
	magic, err := br.Peek(2)
	if err != nil {
		return nil, fmt.Errorf("not a checkpoint archive: %v", err)
	}
	if magic[0] == 0x1f && magic[1] == 0x8b {
		return gzip.NewReader(br)
	}
	return br, nil
}
