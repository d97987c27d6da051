package shim

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

func mustAny(t *testing.T, v any) *anypb.Any {
	t.Helper()
	a, err := typeurl.MarshalAnyToProto(v)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestParseOptions(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	os.WriteFile(good, []byte(`
binary_name = "/opt/runsc"
root = "/run/x"
[runsc_config]
platform = "systrap"
[checkpoint]
compression = "flate-best-speed"
[cuda]
lock_timeout = "10s"
`), 0o600)
	unknown := filepath.Join(dir, "unknown.toml")
	os.WriteFile(unknown, []byte("binary_name = \"/opt/runsc\"\nplatfrom = \"kvm\"\n"), 0o600)
	badCompression := filepath.Join(dir, "badc.toml")
	os.WriteFile(badCompression, []byte("[checkpoint]\ncompression = \"zstd\"\n"), 0o600)

	for _, tc := range []struct {
		name    string
		opts    *anypb.Any
		wantErr string
		check   func(*testing.T, *Config)
	}{
		{name: "nil without a default file gives defaults", opts: nil, check: func(t *testing.T, c *Config) {
			if c.RunscRoot("default", "sb") != "/run/containerd/runsc-cuda/default/sb" {
				t.Errorf("root = %s", c.RunscRoot("default", "sb"))
			}
		}},
		{name: "config path", opts: mustAny(t, &runtimeoptions.Options{ConfigPath: good}), check: func(t *testing.T, c *Config) {
			if c.BinaryName != "/opt/runsc" || c.RunscConfig["platform"] != "systrap" || c.Checkpoint.Compression != "flate-best-speed" {
				t.Errorf("config = %+v", c)
			}
			if d, _ := c.CUDA.LockTimeoutDuration(); d.Seconds() != 10 {
				t.Errorf("lock timeout = %v", d)
			}
			if c.RunscRoot("k8s.io", "sb") != "/run/x/k8s.io/sb" {
				t.Errorf("root = %s", c.RunscRoot("k8s.io", "sb"))
			}
		}},
		{name: "inline body", opts: mustAny(t, &runtimeoptions.Options{ConfigBody: []byte(`binary_name = "/b/runsc"`)}), check: func(t *testing.T, c *Config) {
			if c.BinaryName != "/b/runsc" {
				t.Errorf("binary = %q", c.BinaryName)
			}
		}},
		{name: "runc options", opts: mustAny(t, &runcoptions.Options{BinaryName: "/usr/bin/runsc", Root: "/run/r"}), check: func(t *testing.T, c *Config) {
			if c.BinaryName != "/usr/bin/runsc" || c.Root != "/run/r" {
				t.Errorf("config = %+v", c)
			}
		}},
		{name: "unknown key", opts: mustAny(t, &runtimeoptions.Options{ConfigPath: unknown}), wantErr: "unknown keys platfrom"},
		{name: "missing file", opts: mustAny(t, &runtimeoptions.Options{ConfigPath: filepath.Join(dir, "nope.toml")}), wantErr: "no such file"},
		{name: "bad compression", opts: mustAny(t, &runtimeoptions.Options{ConfigPath: badCompression}), wantErr: `use "none" or "flate-best-speed"`},
		{name: "systemd cgroup refused", opts: mustAny(t, &runcoptions.Options{SystemdCgroup: true}), wantErr: "SystemdCgroup"},
		{name: "wrong type", opts: mustAny(t, durationpb.New(1)), wantErr: "are not supported"},
		{name: "relative root", opts: mustAny(t, &runcoptions.Options{Root: "relative"}), wantErr: "absolute"},
		{name: "escaping root", opts: mustAny(t, &runtimeoptions.Options{ConfigBody: []byte(`root = "/run/x/../../etc"`)}), wantErr: `without ".."`},
		{name: "relative binary path", opts: mustAny(t, &runcoptions.Options{BinaryName: "rootfs/bin/runsc"}), wantErr: "binary_name"},
		{name: "escaping binary path", opts: mustAny(t, &runtimeoptions.Options{ConfigBody: []byte(`binary_name = "/usr/bin/../../tmp/runsc"`)}), wantErr: "binary_name"},
		{name: "relative toggle tool", opts: mustAny(t, &runtimeoptions.Options{ConfigBody: []byte("[cuda]\ntoggle_tool = \"bin/cuda-checkpoint\"\n")}), wantErr: "cuda.toggle_tool"},
		{name: "escaping driver libs", opts: mustAny(t, &runtimeoptions.Options{ConfigBody: []byte("[cuda]\ndriver_lib_dir = \"/usr/../../lib\"\n")}), wantErr: "cuda.driver_lib_dir"},
		{name: "managed flag", opts: mustAny(t, &runtimeoptions.Options{ConfigBody: []byte("[runsc_config]\nroot = \"/x\"\n")}), wantErr: "managed by the shim"},
		{name: "dashed flag", opts: mustAny(t, &runtimeoptions.Options{ConfigBody: []byte("[runsc_config]\n\"--debug\" = \"true\"\n")}), wantErr: "not a runsc flag name"},
		{name: "bad lock timeout", opts: mustAny(t, &runtimeoptions.Options{ConfigBody: []byte("[cuda]\nlock_timeout = \"soon\"\n")}), wantErr: "lock_timeout"},
		{name: "garbage toml", opts: mustAny(t, &runtimeoptions.Options{ConfigBody: []byte("binary_name = ")}), wantErr: "parsing shim config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseOptions(tc.opts)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tc.wantErr)
				}
				if !errdefs.IsInvalidArgument(err) {
					t.Errorf("err class = %v, want InvalidArgument", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func TestDefaultConfigFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.toml")
	os.WriteFile(path, []byte(`binary_name = "/from/env/runsc"`), 0o600)
	t.Setenv(ConfigEnv, path)
	c, err := ParseOptions(nil)
	if err != nil || c.BinaryName != "/from/env/runsc" {
		t.Fatalf("got %+v, %v", c, err)
	}
	c, err = ParseOptions(mustAny(t, &runtimeoptions.Options{}))
	if err != nil || c.BinaryName != "/from/env/runsc" {
		t.Fatalf("empty runtimeoptions: got %+v, %v", c, err)
	}
	// runc task options (a restore from CriuImagePath) start from the file.
	c, err = ParseOptions(mustAny(t, &runcoptions.Options{CriuImagePath: "/ckpt", Root: "/run/other"}))
	if err != nil || c.BinaryName != "/from/env/runsc" || c.Root != "/run/other" {
		t.Fatalf("runc task options: got %+v, %v", c, err)
	}
	t.Setenv(ConfigEnv, filepath.Join(dir, "missing.toml"))
	if _, err := ParseOptions(nil); err == nil {
		t.Fatal("a named config file that does not exist must be an error")
	}
}

func TestBundleConfigRoundTrip(t *testing.T) {
	dir := bundle(t.TempDir())
	if c, err := dir.readConfig(); err != nil || c.BinaryName != "" {
		t.Fatalf("missing file: %+v, %v", c, err)
	}
	want := &Config{BinaryName: "/x/runsc", Root: "/r", RunscConfig: map[string]string{"debug": "true"}}
	if err := dir.writeConfig(want); err != nil {
		t.Fatal(err)
	}
	got, err := dir.readConfig()
	if err != nil || got.BinaryName != want.BinaryName || got.RunscConfig["debug"] != "true" {
		t.Fatalf("got %+v, %v", got, err)
	}
}

func TestSandboxID(t *testing.T) {
	pod := func(typ, sb string) *specs.Spec {
		return &specs.Spec{Annotations: map[string]string{annotationContainerType: typ, annotationSandboxID: sb}}
	}
	for _, tc := range []struct {
		name string
		spec *specs.Spec
		want string
	}{
		{"standalone", &specs.Spec{}, "c1"},
		{"no spec", nil, "c1"},
		{"pod sandbox", pod("sandbox", "c1"), "c1"},
		{"pod container", pod(containerTypeContainer, "sb1"), "sb1"},
		{"pod container without sandbox id", pod(containerTypeContainer, ""), "c1"},
	} {
		if got := sandboxID("c1", tc.spec); got != tc.want {
			t.Errorf("%s: sandboxID = %q, want %q", tc.name, got, tc.want)
		}
	}
}
