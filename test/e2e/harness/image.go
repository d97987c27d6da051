package harness

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/testimage"
)

// ImportTestImage builds (cached) and imports the test image into the daemon's
// namespace, and into the CRI namespace when CRI is enabled, and returns its reference.
func (d *Daemon) ImportTestImage(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	base, err := BaseDir()
	if err != nil {
		t.Fatal(err)
	}
	tarPath, ref, err := testimage.BuildWithBusybox(ctx, filepath.Join(base, "image-cache"), d.Tools.Busybox)
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range d.namespaces() {
		if _, err := testimage.Import(namespaces.WithNamespace(ctx, ns), d.client, tarPath); err != nil {
			t.Fatalf("import test image into namespace %s: %v", ns, err)
		}
	}
	return ref
}
