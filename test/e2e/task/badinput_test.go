//go:build e2e

package task

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness"
)

// TestCompatBadInput proves that what the shim or runsc cannot run fails at task
// creation with an error naming the cause, and leaves nothing behind: no
// runsc state, no mounts, no shim or runsc processes.
func TestCompatBadInput(t *testing.T) {
	e := newEnv(t, harness.Options{})
	d := e.d

	cases := []struct {
		name string
		// rt selects the runtime and its options; nil is the harness's config.
		rt       func(t *testing.T) containerd.NewContainerOpts
		specOpts []oci.SpecOpts
		io       func() cio.Creator
		// want are substrings of the error, all required.
		want []string
	}{
		{
			name: "spec-runsc-rejects",
			specOpts: []oci.SpecOpts{oci.WithMounts([]specs.Mount{{
				Destination: "/data", Type: "bind", Source: "/nonexistent-rcuda-source", Options: []string{"rbind", "ro"},
			}})},
			want: []string{"runsc create", "/nonexistent-rcuda-source"},
		},
		{
			// runsc's message does not name the capability (its debug log does).
			name:     "spec-unknown-capability",
			specOpts: []oci.SpecOpts{oci.WithCapabilities([]string{"CAP_NO_SUCH_THING"})},
			want:     []string{"runsc create", "getting root credentials"},
		},
		{
			name: "spec-relative-mount-destination",
			specOpts: []oci.SpecOpts{oci.WithMounts([]specs.Mount{{
				Destination: "relative/data", Type: "tmpfs", Source: "tmpfs",
			}})},
			want: []string{"runsc create", "relative/data"},
		},
		{
			name: "spec-missing-netns",
			specOpts: []oci.SpecOpts{oci.WithLinuxNamespace(specs.LinuxNamespace{
				Type: specs.NetworkNamespace, Path: "/nonexistent-rcuda-netns",
			})},
			want: []string{"runsc create", "/nonexistent-rcuda-netns"},
		},
		{
			name: "missing-runsc",
			rt: func(t *testing.T) containerd.NewContainerOpts {
				path := writeShimConfig(t, d, "missing-runsc.toml", "binary_name = \"/nonexistent/bin/runsc\"\n")
				return runtimeWithConfig(d, path)
			},
			want: []string{`runsc binary "/nonexistent/bin/runsc" not found`, "binary_name"},
		},
		{
			name: "wrong-options-type",
			rt: func(t *testing.T) containerd.NewContainerOpts {
				return containerd.WithRuntime(d.RuntimeName, &runcoptions.CheckpointOptions{Exit: true})
			},
			want: []string{"runtime options of type", "CheckpointOptions", "not supported", "runtimeoptions.v1.Options"},
		},
		{
			name: "unknown-options-type",
			rt: func(t *testing.T) containerd.NewContainerOpts {
				return containerd.WithRuntime(d.RuntimeName, &anypb.Any{TypeUrl: "example.com/rcuda.NoSuchOptions", Value: []byte{8, 1}})
			},
			want: []string{`runtime options of type "example.com/rcuda.NoSuchOptions" cannot be read`},
		},
		{
			name: "runc-options-unsupported-setting",
			rt: func(t *testing.T) containerd.NewContainerOpts {
				return containerd.WithRuntime(d.RuntimeName, &runcoptions.Options{BinaryName: d.Tools.Runsc, SystemdCgroup: true})
			},
			want: []string{"SystemdCgroup is not supported"},
		},
		{
			name: "malformed-toml",
			rt: func(t *testing.T) containerd.NewContainerOpts {
				return runtimeWithConfig(d, writeShimConfig(t, d, "malformed.toml", "binary_name = \n[runsc_config\n"))
			},
			want: []string{"parsing shim config", "malformed.toml"},
		},
		{
			name: "unknown-toml-key",
			rt: func(t *testing.T) containerd.NewContainerOpts {
				return runtimeWithConfig(d, writeShimConfig(t, d, "unknown-key.toml", "binary_nmae = \"runsc\"\n"))
			},
			want: []string{"unknown keys", "binary_nmae", "unknown-key.toml"},
		},
		{
			name: "invalid-toml-value",
			rt: func(t *testing.T) containerd.NewContainerOpts {
				return runtimeWithConfig(d, writeShimConfig(t, d, "relative-root.toml", "root = \"relative/dir\"\n"))
			},
			want: []string{`root "relative/dir" must be an absolute path`},
		},
		{
			name: "runsc-flag-as-option",
			rt: func(t *testing.T) containerd.NewContainerOpts {
				return runtimeWithConfig(d, writeShimConfig(t, d, "dash-flag.toml", "[runsc_config]\n\"--platform\" = \"systrap\"\n"))
			},
			want: []string{`runsc_config key "--platform" is not a runsc flag name`},
		},
		{
			name: "missing-config-file",
			rt: func(t *testing.T) containerd.NewContainerOpts {
				return runtimeWithConfig(d, filepath.Join(d.Dir, "no-such-config.toml"))
			},
			want: []string{"reading shim config", "no-such-config.toml"},
		},
		{
			name: "unknown-runsc-flag",
			rt: func(t *testing.T) containerd.NewContainerOpts {
				return runtimeWithConfig(d, writeShimConfig(t, d, "bad-flag.toml", tomlConfig(d, "", map[string]string{"no-such-flag": "1"})))
			},
			want: []string{"no-such-flag"},
		},
		{
			// runsc makes the container's cgroup, then fails: nothing may stay.
			name: "unknown-platform",
			rt: func(t *testing.T) containerd.NewContainerOpts {
				return runtimeWithConfig(d, writeShimConfig(t, d, "bad-platform.toml", tomlConfig(d, "", map[string]string{"platform": "nosuch"})))
			},
			want: []string{"nosuch"},
		},
		{
			name: "terminal-without-spec-terminal",
			io:   func() cio.Creator { return e.d.IO(nil, harness.NewLineBuffer(), nil, cio.WithTerminal) },
			want: []string{"terminal=true", "process.terminal is false"},
		},
		{
			// runsc would run it and lose the process's output.
			name:     "spec-terminal-without-terminal-io",
			specOpts: []oci.SpecOpts{oci.WithTTY},
			want:     []string{"terminal=false", "process.terminal is true"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t, 2*time.Minute)
			var rt containerd.NewContainerOpts
			if tc.rt != nil {
				rt = tc.rt(t)
			}
			id := harness.RandomID("bad")
			c := e.newContainer(ctx, t, id, rt, tc.specOpts, "/workload", "sleep")
			ioc := e.d.IO(nil, nil, nil)
			if tc.io != nil {
				ioc = tc.io()
			}
			task, err := c.NewTask(ctx, ioc)
			if err == nil {
				_, _ = task.Delete(ctx, containerd.WithProcessKill)
				t.Fatal("task created")
			}
			t.Logf("error: %v", err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if _, terr := c.Task(ctx, nil); !errdefs.IsNotFound(terr) {
				t.Errorf("task after a failed create: %v, want not found", terr)
			}
			if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
				t.Fatal(err)
			}
			if cgs := cgroupsOf(d, id); len(cgs) > 0 {
				t.Errorf("cgroups left behind by the failed create: %v", cgs)
			}
			waitNoLeftovers(t, e.d)
		})
	}

	// The same through ctr: the message reaches the user.
	t.Run("ctr-malformed-toml", func(t *testing.T) {
		ctx := testCtx(t, 2*time.Minute)
		path := writeShimConfig(t, d, "ctr-malformed.toml", "root = [\n")
		id := harness.RandomID("ctrbad")
		_, stderr, err := e.d.Ctr(ctx, "run", "--rm", "--runtime", d.RuntimeName, "--runtime-config-path", path, e.ref, id, "/workload", "sleep")
		if err == nil {
			t.Fatal("ctr run succeeded")
		}
		for _, w := range []string{"parsing shim config", "ctr-malformed.toml"} {
			if !strings.Contains(stderr, w) {
				t.Errorf("ctr stderr %q does not contain %q", stderr, w)
			}
		}
		// ctr run --rm has removed the container.
		if _, err := e.d.Client().LoadContainer(ctx, id); !errdefs.IsNotFound(err) {
			t.Errorf("container after a failed ctr run --rm: %v, want not found", err)
		}
		waitNoLeftovers(t, e.d)
	})
}
