package shim

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	shim "github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestStopRemovesRunscState runs the shim's `delete` (Manager.Stop, which
// containerd calls after a shim died) with a fake runsc that records its
// arguments: the container is deleted from its sandbox's runsc directory, and
// the directory goes. The bundle's config may have the first release's name.
func TestStopRemovesRunscState(t *testing.T) {
	// The commands run through containerd's reaper, which learns of exits from
	// Reap; the shim calls it on SIGCHLD.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				_ = reaper.Reap()
			}
		}
	}()

	for _, tc := range []struct {
		name       string
		configFile string
		wantRoot   []string // the --root of each delete, relative to the base
	}{
		{"config", shimConfigFile, []string{"ns1/c1"}},
		{"first release's config", legacyShimConfigFile, []string{"ns1/c1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			base := filepath.Join(dir, "runsc-root")
			argsFile := filepath.Join(dir, "args")
			fake := filepath.Join(dir, "runsc")
			if err := os.WriteFile(fake, []byte("#!/bin/sh\necho \"$@\" >> "+argsFile+"\nexit 0\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			bdir := filepath.Join(dir, "bundle")
			if err := os.MkdirAll(filepath.Join(bdir, "rootfs"), 0o755); err != nil {
				t.Fatal(err)
			}
			cfg, _ := json.Marshal(&Config{BinaryName: fake, Root: base})
			if err := os.WriteFile(filepath.Join(bdir, tc.configFile), cfg, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := bundle(bdir).writeSpec(&specs.Spec{Version: specs.Version}); err != nil {
				t.Fatal(err)
			}
			sandboxDir := filepath.Join(base, "ns1", "c1")
			if err := os.MkdirAll(sandboxDir, 0o711); err != nil {
				t.Fatal(err)
			}
			ctx := namespaces.WithNamespace(context.Background(), "ns1")
			ctx = context.WithValue(ctx, shim.OptsKey{}, shim.Opts{BundlePath: bdir})
			st, err := NewManager(RuntimeName).Stop(ctx, "c1")
			if err != nil {
				t.Fatal(err)
			}
			if st.ExitStatus != 137 {
				t.Errorf("exit status %d, want 137 (no recorded exit)", st.ExitStatus)
			}
			data, err := os.ReadFile(argsFile)
			if err != nil {
				t.Fatal(err)
			}
			var roots []string
			for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
				if !strings.Contains(l, "delete") {
					continue
				}
				for _, f := range strings.Fields(l) {
					if r, ok := strings.CutPrefix(f, "--root="); ok {
						roots = append(roots, strings.TrimPrefix(r, base+"/"))
					}
				}
			}
			if strings.Join(roots, " ") != strings.Join(tc.wantRoot, " ") {
				t.Errorf("runsc delete ran with --root %v, want %v; calls:\n%s", roots, tc.wantRoot, data)
			}
			if _, err := os.Stat(sandboxDir); !os.IsNotExist(err) {
				t.Errorf("the sandbox's runsc directory is still there (%v)", err)
			}
		})
	}
}
