//go:build e2e

package task

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	containerd "github.com/containerd/containerd/v2/client"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

// TestCompatConfig proves the shim's configuration through containerd's
// runtime options: the runsc binary, its root (state directory), and runsc
// flags (debug logging, platform), given as a TOML file path (client and ctr
// --runtime-config-path), inline TOML, runc's options (BinaryName, Root), and
// the default file when a client sends no options.
func TestCompatConfig(t *testing.T) {
	e := newEnv(t, harness.Options{})
	d := e.d
	ns := d.Namespace
	// A runsc under another name and directory (not under /tmp: the sandbox
	// covers /tmp, see the design notes).
	binDir := filepath.Join(d.Dir, "custom-bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	customRunsc := filepath.Join(binDir, "my-runsc")
	if err := os.Symlink(d.Tools.Runsc, customRunsc); err != nil {
		t.Fatal(err)
	}

	// check runs a counter with rt, asserts that runsc keeps its state under
	// root and that the processes match, deletes it, and checks for leftovers.
	check := func(ctx context.Context, t *testing.T, rt containerd.NewContainerOpts, root string, procCheck func(t *testing.T, d *harness.Daemon)) {
		t.Helper()
		c, _, _, out := e.runWith(ctx, t, "cfg", rt, "/workload", "counter")
		out.WaitFor(t, `^count=\d+$`, startWait)
		nsRoot := filepath.Join(root, ns)
		state := runscState(t, nsRoot)
		if len(state) != 1 || !strings.Contains(state[0], c.ID()) {
			t.Errorf("runsc state under %s: %v, want the container's", nsRoot, state)
		}
		if nsRoot != filepath.Join(d.RunscRoot, ns) {
			if other := runscState(t, filepath.Join(d.RunscRoot, ns)); len(other) > 0 {
				t.Errorf("runsc state in the default root: %v", other)
			}
		}
		if procCheck != nil {
			procCheck(t, d)
		}
		destroy(ctx, t, c)
		waitNoLeftovers(t, d, nsRoot, filepath.Join(d.RunscRoot, ns))
	}

	t.Run("toml-root-binary-flags", func(t *testing.T) {
		ctx := testCtx(t, 2*time.Minute)
		root := filepath.Join(d.Dir, "root-toml")
		logDir := filepath.Join(d.Dir, "debug-toml") + "/"
		cfg := "binary_name = \"" + customRunsc + "\"\nroot = \"" + root + "\"\n[runsc_config]\ndebug = \"true\"\ndebug-log = \"" + logDir + "\"\nplatform = \"ptrace\"\n"
		rt := runtimeWithConfig(d, writeShimConfig(t, d, "custom.toml", cfg))
		defaultLogs, _ := filepath.Glob(filepath.Join(d.RunscLogDir, "*"))
		check(ctx, t, rt, root, func(t *testing.T, procs *harness.Daemon) {
			assertProcess(t, procs, "runsc run by its configured path", func(p harness.Process) bool {
				return p.Cmdline[0] == customRunsc && slices.Contains(p.Cmdline, "wait")
			})
			assertProcess(t, procs, "sandbox on the ptrace platform with the custom root", func(p harness.Process) bool {
				return p.Cmdline[0] == "runsc-sandbox" && slices.Contains(p.Cmdline, "--platform=ptrace") &&
					slices.ContainsFunc(p.Cmdline, func(a string) bool { return strings.HasPrefix(a, "--root="+filepath.Join(root, ns)+"/") }) &&
					slices.Contains(p.Cmdline, "--shared-root="+filepath.Join(root, ns))
			})
		})
		for _, kind := range []string{"create", "boot", "gofer", "start"} {
			if m, _ := filepath.Glob(logDir + "runsc.log.*." + kind + ".txt"); len(m) == 0 {
				t.Errorf("no runsc %s debug log in %s", kind, logDir)
			}
		}
		if after, _ := filepath.Glob(filepath.Join(d.RunscLogDir, "*")); len(after) != len(defaultLogs) {
			t.Errorf("debug logs also written to the harness's default directory %s: %d files before, %d after", d.RunscLogDir, len(defaultLogs), len(after))
		}
	})

	t.Run("inline-config-body", func(t *testing.T) {
		ctx := testCtx(t, 2*time.Minute)
		root := filepath.Join(d.Dir, "root-inline")
		rt := containerd.WithRuntime(d.RuntimeName, &runtimeoptions.Options{
			ConfigBody: []byte("binary_name = \"" + d.Tools.Runsc + "\"\nroot = \"" + root + "\"\n"),
		})
		check(ctx, t, rt, root, nil)
	})

	t.Run("runc-options", func(t *testing.T) {
		ctx := testCtx(t, 2*time.Minute)
		root := filepath.Join(d.Dir, "root-runc")
		rt := containerd.WithRuntime(d.RuntimeName, &runcoptions.Options{BinaryName: customRunsc, Root: root})
		check(ctx, t, rt, root, func(t *testing.T, procs *harness.Daemon) {
			assertProcess(t, procs, "runsc run by runc's BinaryName", func(p harness.Process) bool {
				return p.Cmdline[0] == customRunsc
			})
		})
	})

	t.Run("ctr-runtime-config-path", func(t *testing.T) {
		ctx := testCtx(t, 2*time.Minute)
		root := filepath.Join(d.Dir, "root-ctr")
		path := writeShimConfig(t, d, "ctr.toml", "binary_name = \""+d.Tools.Runsc+"\"\nroot = \""+root+"\"\n")
		ctrRunChecksRoot(ctx, t, e, []string{"--runtime", d.RuntimeName, "--runtime-config-path", path}, filepath.Join(root, ns))
	})

	// Without runtime options the shim reads its default file, which the
	// harness names with RUNSC_CUDA_CONFIG in containerd's environment.
	t.Run("ctr-default-config", func(t *testing.T) {
		ctx := testCtx(t, 2*time.Minute)
		ctrRunChecksRoot(ctx, t, e, []string{"--runtime", d.RuntimeName}, filepath.Join(d.RunscRoot, ns))
	})
}

// ctrRunChecksRoot runs a detached counter with ctr and the given runtime
// flags, checks that runsc keeps its state under nsRoot, and removes it.
func ctrRunChecksRoot(ctx context.Context, t *testing.T, e *env, runtimeArgs []string, nsRoot string) {
	t.Helper()
	id := harness.RandomID("ctrcfg")
	args := append(append([]string{"run", "-d"}, runtimeArgs...), e.ref, id, "/workload", "counter")
	if _, _, err := e.d.Ctr(ctx, args...); err != nil {
		t.Fatal(err)
	}
	waitTaskStatus(ctx, t, e.d, id, "RUNNING")
	if state := runscState(t, nsRoot); len(state) != 1 || !strings.Contains(state[0], id) {
		t.Errorf("runsc state under %s: %v, want the container's", nsRoot, state)
	}
	if _, _, err := e.d.Ctr(ctx, "task", "rm", "-f", id); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.d.Ctr(ctx, "container", "rm", id); err != nil {
		t.Fatal(err)
	}
	waitNoLeftovers(t, e.d, nsRoot, filepath.Join(e.d.RunscRoot, e.d.Namespace))
}

// assertProcess fails unless one of procs satisfies match.
//
// A process caught between fork and exec still shows its parent's command line
// (the shim's, for a runsc command it starts), so a miss is looked for again for
// a moment before it counts.
func assertProcess(t *testing.T, d *harness.Daemon, what string, match func(harness.Process) bool) {
	t.Helper()
	var procs []harness.Process
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		var err error
		if procs, err = d.Processes(); err != nil {
			t.Fatal(err)
		}
		for _, p := range procs {
			if len(p.Cmdline) > 0 && match(p) {
				return
			}
		}
		if time.Now().After(deadline) {
			break
		}
	}
	var b strings.Builder
	for _, p := range procs {
		b.WriteString("  " + p.String() + "\n")
	}
	t.Errorf("no process: %s; processes:\n%s", what, b.String())
}
