package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	// ShimPackage is the shim's main package, relative to the repository root.
	ShimPackage = "./cmd/containerd-shim-runsc-cuda-v1"
	// CudaCheckpointPackage is the CUDA toggle tool's main package; optional.
	CudaCheckpointPackage = "./cmd/cuda-checkpoint"
	// ShimBinaryName is the binary containerd looks up on PATH for RuntimeName.
	ShimBinaryName = "containerd-shim-runsc-cuda-v1"
	// RuntimeName is the runtime type served by the shim.
	RuntimeName = "io.containerd.runsc-cuda.v1"
	// RuntimePodAnnotations is the CRI handler's pod_annotations pattern for the
	// shim's annotations (io.containerd.runsc-cuda.v1.restore-from, ...).
	RuntimePodAnnotations = RuntimeName + ".*"
)

// ErrShimMissing reports that the shim's main package has no Go source yet.
var ErrShimMissing = errors.New("no Go files in " + ShimPackage + ": the shim is not written yet")

// ShimBinaries are the project's binaries built for one test binary run.
type ShimBinaries struct {
	Dir            string // holds the binaries; put first on containerd's PATH
	Shim           string // containerd-shim-runsc-cuda-v1
	CudaCheckpoint string // cuda-checkpoint; "" when its package does not exist
}

// buildShimOnce builds the shim at most once per test binary.
var buildShimOnce = sync.OnceValues(buildShim)

// BuildShim builds the shim (and cmd/cuda-checkpoint when it exists), once per test
// binary, with CGO_ENABLED=0 into BaseDir()/bin-<pid> (not under /tmp: runsc cannot
// execute files there). It returns ErrShimMissing while the shim has no source. It can
// be called from TestMain.
func BuildShim() (ShimBinaries, error) { return buildShimOnce() }

// RequireShim returns the built shim, skipping the test while the shim has no source
// and failing it when the build fails.
func RequireShim(t testing.TB) ShimBinaries {
	t.Helper()
	bins, err := BuildShim()
	if errors.Is(err, ErrShimMissing) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return bins
}

func buildShim() (ShimBinaries, error) {
	root, err := ModuleRoot()
	if err != nil {
		return ShimBinaries{}, err
	}
	if !hasGoSource(filepath.Join(root, ShimPackage)) {
		return ShimBinaries{}, ErrShimMissing
	}
	base, err := BaseDir()
	if err != nil {
		return ShimBinaries{}, err
	}
	removeStaleBinDirs(base)
	dir := filepath.Join(base, "bin-"+strconv.Itoa(os.Getpid()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return ShimBinaries{}, err
	}
	bins := ShimBinaries{Dir: dir, Shim: filepath.Join(dir, ShimBinaryName)}
	pkgs := []string{ShimPackage}
	if hasGoSource(filepath.Join(root, CudaCheckpointPackage)) {
		pkgs = append(pkgs, CudaCheckpointPackage)
		bins.CudaCheckpoint = filepath.Join(dir, filepath.Base(CudaCheckpointPackage))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	args := append([]string{"build", "-trimpath", "-buildvcs=false", "-o", dir + "/"}, pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return ShimBinaries{}, fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return bins, nil
}

// hasGoSource reports whether dir holds a non-test Go file.
func hasGoSource(dir string) bool {
	files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	for _, f := range files {
		if !strings.HasSuffix(f, "_test.go") {
			return true
		}
	}
	return false
}

// removeStaleBinDirs removes the bin-<pid> directories of test binaries that are gone.
func removeStaleBinDirs(base string) {
	dirs, _ := filepath.Glob(filepath.Join(base, "bin-*"))
	for _, d := range dirs {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(d), "bin-"))
		if err == nil && pid != os.Getpid() && !processAlive(pid) {
			_ = os.RemoveAll(d)
		}
	}
}
