package shim

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/checkpoint"
)

// TestSandboxAlive: a running process is alive; a zombie and a process that is
// gone are not.
func TestSandboxAlive(t *testing.T) {
	if !sandboxAlive(os.Getpid()) {
		t.Fatal("this process is not alive")
	}
	cmd := exec.Command("/bin/sh", "-c", "exit 0")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	// Not yet waited for: once it exits it is a zombie.
	for i := 0; i < 200 && sandboxAlive(pid); i++ {
		exec.Command("/bin/true").Run()
	}
	if sandboxAlive(pid) {
		t.Errorf("exited child %d (a zombie) reported alive", pid)
	}
	cmd.Wait()
	if sandboxAlive(pid) {
		t.Errorf("reaped child %d reported alive", pid)
	}
}

// TestRemoveInterruptedCheckpoint: `shim delete` after a shim that died during a
// checkpoint removes runsc's partial files from the directory the bundle's marker
// names, keeps a directory whose checkpoint completed, and removes the marker.
func TestRemoveInterruptedCheckpoint(t *testing.T) {
	ctx := context.Background()
	for _, complete := range []bool{false, true} {
		bundle, dir := t.TempDir(), t.TempDir()
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
		if err := markCheckpoint(bundle, dir); err != nil {
			t.Fatal(err)
		}
		removeInterruptedCheckpoint(ctx, bundle)
		entries, _ := os.ReadDir(dir)
		if complete && len(entries) != 3 {
			t.Errorf("a completed checkpoint was touched: %v", entries)
		}
		if !complete && len(entries) != 0 {
			t.Errorf("partial files left: %v", entries)
		}
		if _, err := os.Stat(filepath.Join(bundle, checkpointMarkerFile)); !os.IsNotExist(err) {
			t.Errorf("marker left: %v", err)
		}
	}
	// No marker: nothing happens.
	removeInterruptedCheckpoint(ctx, t.TempDir())
}
