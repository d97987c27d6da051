package shim

import (
	"context"
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

// TestStopRemovesRunscStateInEitherLayout runs the shim's `delete` (Manager.Stop,
// which containerd calls after a shim died) with a fake runsc that records its
// arguments. The container's state is looked for in its sandbox's directory first;
// when runsc has none there (a container created by a shim from before the
// per-sandbox layout), in the namespace's directory, as that shim kept it. The
// sandbox's directory goes either way.
func TestStopRemovesRunscStateInEitherLayout(t *testing.T) {
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
		name     string
		legacy   bool
		wantRoot []string // the --root of each delete, relative to the base
	}{
		{"per-sandbox", false, []string{"ns1/c1"}},
		{"legacy", true, []string{"ns1/c1", "ns1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			base := filepath.Join(dir, "runsc-root")
			argsFile := filepath.Join(dir, "args")
			// runsc answers "does not exist" for the sandbox's directory in the
			// legacy case, and deletes otherwise.
			body := "exit 0"
			if tc.legacy {
				body = `case "$*" in *--root=` + base + `/ns1/c1*) echo 'loading container: file does not exist' >&2; exit 128;; esac; exit 0`
			}
			fake := filepath.Join(dir, "runsc")
			if err := os.WriteFile(fake, []byte("#!/bin/sh\necho \"$@\" >> "+argsFile+"\n"+body+"\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			bundle := filepath.Join(dir, "bundle")
			if err := os.MkdirAll(filepath.Join(bundle, "rootfs"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := writeBundleConfig(bundle, &Config{BinaryName: fake, Root: base}); err != nil {
				t.Fatal(err)
			}
			if err := writeSpec(bundle, &specs.Spec{Version: specs.Version}); err != nil {
				t.Fatal(err)
			}
			sandboxDir := filepath.Join(base, "ns1", "c1")
			if err := os.MkdirAll(sandboxDir, 0o711); err != nil {
				t.Fatal(err)
			}
			ctx := namespaces.WithNamespace(context.Background(), "ns1")
			ctx = context.WithValue(ctx, shim.OptsKey{}, shim.Opts{BundlePath: bundle})
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
