package shim

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/checkpoint"
)

// TestRemoveInterruptedCheckpoint: `shim delete` after a shim that died during a
// checkpoint removes runsc's partial files from the directory the bundle's marker
// names, keeps a directory whose checkpoint completed, and removes the marker.
func TestRemoveInterruptedCheckpoint(t *testing.T) {
	ctx := context.Background()
	for _, complete := range []bool{false, true} {
		b, dir := t.TempDir(), t.TempDir()
		for _, name := range []string{"checkpoint.img", "pages.img"} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte("partial"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if complete {
			if err := os.WriteFile(filepath.Join(dir, checkpoint.MetadataFile), []byte("{}"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if err := bundle(b).markCheckpoint(dir); err != nil {
			t.Fatal(err)
		}
		removeInterruptedCheckpoint(ctx, bundle(b))
		entries, _ := os.ReadDir(dir)
		if complete && len(entries) != 3 {
			t.Errorf("a completed checkpoint was touched: %v", entries)
		}
		if !complete && len(entries) != 0 {
			t.Errorf("partial files left: %v", entries)
		}
		if _, err := os.Stat(filepath.Join(b, checkpointMarkerFile)); !os.IsNotExist(err) {
			t.Errorf("marker left: %v", err)
		}
	}
	// No marker: nothing happens.
	removeInterruptedCheckpoint(ctx, bundle(t.TempDir()))
}
