package shim

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/types/known/anypb"
)

// checkConfigPaths fails unless every path of an accepted config is absolute and
// free of "..", and binary_name is such a path or a bare name.
func checkConfigPaths(t *testing.T, c *Config) {
	t.Helper()
	for key, p := range map[string]string{"root": c.Root, "cuda.toggle_tool": c.CUDA.ToggleTool, "cuda.driver_lib_dir": c.CUDA.DriverLibDir} {
		if p != "" && (!filepath.IsAbs(p) || hasDotDot(p)) {
			t.Fatalf("accepted %s %q: relative or escaping", key, p)
		}
	}
	if b := c.BinaryName; strings.Contains(b, "/") && (!filepath.IsAbs(b) || hasDotDot(b)) {
		t.Fatalf("accepted binary_name %q: relative or escaping", b)
	}
}

// FuzzParseOptions feeds arbitrary TOML to the shim's config parser, as the
// inline ConfigBody of containerd's runtime options (the file behind
// ConfigPath is parsed the same way). It must never panic; anything it accepts
// must validate, keep its paths absolute and free of "..", give runsc only
// well-formed global flags, and survive the JSON round trip through the bundle
// that `shim delete` relies on. Seeds are in testdata/fuzz/FuzzParseOptions.
func FuzzParseOptions(f *testing.F) {
	f.Add("binary_name = \"/usr/local/bin/runsc\"\nroot = \"/run/x\"\n[runsc_config]\nplatform = \"systrap\"\n[checkpoint]\ncompression = \"none\"\n")
	f.Fuzz(func(t *testing.T, body string) {
		a, err := typeurl.MarshalAnyToProto(&runtimeoptions.Options{ConfigBody: []byte(body)})
		if err != nil {
			t.Skip()
		}
		c, err := ParseOptions(a)
		if err != nil {
			if c != nil {
				t.Fatalf("config returned with error %v", err)
			}
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("error %v is not InvalidArgument", err)
			}
			return
		}
		if body == "" {
			return // the default config file of this host, if any
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted config does not validate: %v", err)
		}
		checkConfigPaths(t, c)
		rt := newRunsc(c, "default", c.RunscRoot("default", "sb"), bundle("/run/bundle"), false, "")
		for _, arg := range rt.GlobalArgs() {
			name, _, ok := strings.Cut(arg, "=")
			if !ok || !strings.HasPrefix(name, "--") || strings.HasPrefix(name, "---") || len(name) < 3 {
				t.Fatalf("runsc global argument %q is not --flag=value", arg)
			}
		}
		data, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		var back Config
		if err := json.Unmarshal(data, &back); err != nil {
			t.Fatalf("bundle config does not read back: %v\n%s", err, data)
		}
		if again, _ := json.Marshal(&back); string(again) != string(data) {
			t.Fatalf("bundle config changed in the round trip:\n%s\n%s", data, again)
		}
	})
}

// FuzzParseOptionsAny feeds arbitrary type URLs and bytes to ParseOptions as
// the runtime options containerd forwards: it must never panic and must refuse
// what it cannot read with InvalidArgument. Option types that name a file
// (runtimeoptions ConfigPath) read it, so the fuzzer keeps to type URLs whose
// values it can only get wrong.
func FuzzParseOptionsAny(f *testing.F) {
	f.Add("types.containerd.io/containerd.runc.v1.Options", []byte{0x0a, 0x03, 'a', '/', 'b'})
	f.Fuzz(func(t *testing.T, typeURL string, value []byte) {
		if strings.Contains(typeURL, "runtimeoptions") {
			t.Skip()
		}
		c, err := ParseOptions(&anypb.Any{TypeUrl: typeURL, Value: value})
		if err != nil {
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("error %v is not InvalidArgument", err)
			}
			return
		}
		checkConfigPaths(t, c)
	})
}

// FuzzParseCheckpointOptions feeds arbitrary paths and runc CheckpointOptions
// to the checkpoint option parser. It must never panic; an accepted request
// writes into an absolute, clean directory without "..", taken from image_path
// when set, and only when that path was already absolute and clean (nothing is
// silently rewritten); options gVisor cannot honour are refused.
func FuzzParseCheckpointOptions(f *testing.F) {
	f.Add("/var/lib/containerd/ckpt", "", true, false, false, "", false, "")
	f.Fuzz(func(t *testing.T, path, imagePath string, exit, openTCP, external bool, emptyNS string, nilOpts bool, network string) {
		var a *anypb.Any
		if !nilOpts {
			o := &runcoptions.CheckpointOptions{Exit: exit, OpenTcp: openTCP, ExternalUnixSockets: external, ImagePath: imagePath}
			if emptyNS != "" {
				o.EmptyNamespaces = strings.Split(emptyNS, ",")
			}
			var err error
			if a, err = typeurl.MarshalAnyToProto(o); err != nil {
				t.Skip()
			}
		}
		cfg := &Config{RunscConfig: map[string]string{"network": network}}
		req, err := parseCheckpointOptions(a, path, cfg)
		if err != nil {
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("error %v is not InvalidArgument", err)
			}
			return
		}
		want := path
		if !nilOpts && imagePath != "" {
			want = imagePath
		}
		if req.Dir != want {
			t.Fatalf("checkpoint directory %q, want %q as given", req.Dir, want)
		}
		if !filepath.IsAbs(req.Dir) || filepath.Clean(req.Dir) != req.Dir || hasDotDot(req.Dir) {
			t.Fatalf("accepted checkpoint directory %q: relative, unclean or escaping", req.Dir)
		}
		if !nilOpts {
			if external || emptyNS != "" || (openTCP && network == "host") {
				t.Fatalf("accepted options gVisor cannot honour: external=%t emptyNS=%q openTCP=%t network=%q", external, emptyNS, openTCP, network)
			}
			if req.Exit != exit {
				t.Fatalf("exit %t, want %t", req.Exit, exit)
			}
		} else if req.Exit {
			t.Fatal("nil options must leave the container running")
		}
	})
}

// FuzzParseCheckpointOptionsAny feeds arbitrary type URLs and bytes as the
// checkpoint options: never a panic, and only absolute clean directories.
func FuzzParseCheckpointOptionsAny(f *testing.F) {
	f.Add("types.containerd.io/containerd.runc.v1.CheckpointOptions", []byte{0x08, 0x01}, "/c")
	f.Fuzz(func(t *testing.T, typeURL string, value []byte, path string) {
		req, err := parseCheckpointOptions(&anypb.Any{TypeUrl: typeURL, Value: value}, path, &Config{})
		if err != nil {
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("error %v is not InvalidArgument", err)
			}
			return
		}
		if !filepath.IsAbs(req.Dir) || filepath.Clean(req.Dir) != req.Dir || hasDotDot(req.Dir) {
			t.Fatalf("accepted checkpoint directory %q: relative, unclean or escaping", req.Dir)
		}
	})
}

// FuzzRestorePath feeds arbitrary checkpoint paths of a restore (the
// CreateTaskRequest's Checkpoint, or runc options' CriuImagePath): never a
// panic, and a restore only ever reads an absolute path without "..".
func FuzzRestorePath(f *testing.F) {
	f.Add("/var/lib/ckpt/a", false)
	f.Fuzz(func(t *testing.T, path string, criu bool) {
		r := &taskAPI.CreateTaskRequest{Checkpoint: path}
		var runcOpts *runcoptions.Options
		if criu {
			r, runcOpts = &taskAPI.CreateTaskRequest{}, &runcoptions.Options{CriuImagePath: path}
		}
		got, err := restorePath(r, runcOpts)
		if err != nil {
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("error %v is not InvalidArgument", err)
			}
			return
		}
		if got == "" {
			if path != "" {
				t.Fatalf("restore path %q ignored", path)
			}
			return
		}
		if !filepath.IsAbs(got) || hasDotDot(got) || filepath.Clean(got) != got {
			t.Fatalf("accepted restore path %q (from %q): relative or escaping", got, path)
		}
	})
}
