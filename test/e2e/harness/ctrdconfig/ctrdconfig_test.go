package ctrdconfig

import (
	"reflect"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// decode renders r and parses the result.
func decode(t *testing.T, r interface{ Render() ([]byte, error) }) map[string]any {
	t.Helper()
	b, err := r.Render()
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if _, err := toml.Decode(string(b), &got); err != nil {
		t.Fatalf("rendered TOML does not parse: %v\n%s", err, b)
	}
	return got
}

func TestContainerdInDir(t *testing.T) {
	got := decode(t, InDir("/w"))
	want := map[string]any{
		"version":          int64(3),
		"root":             "/w/root",
		"state":            "/w/state",
		"disabled_plugins": []any{NRIPlugin, CRIGRPCPlugin, CRIImagesPlugin, CRIRuntimePlugin},
		"grpc":             map[string]any{"address": "/w/c.sock"},
		"ttrpc":            map[string]any{"address": "/w/c.sock.ttrpc"},
		"plugins":          map[string]any{},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("config %v, want %v", got, want)
	}
}

func TestContainerdCRI(t *testing.T) {
	c := InDir("/w")
	c.Imports = []string{}
	c.DebugLevel = "debug"
	c.CRI = &CRI{
		Snapshotter: "overlayfs", SandboxImage: "localhost/x:1", DefaultRuntime: "a",
		Runtimes: map[string]Runtime{
			"a": {Type: "io.containerd.runsc-cuda.v1", Options: map[string]any{"ConfigPath": "/w/s.toml"}, PodAnnotations: []string{"io.containerd.runsc-cuda.v1.*"}},
			"b": {Type: "io.containerd.runc.v2"},
		},
		CNIBinDir: "/cni/bin", CNIConfDir: "/w/cni", NetNSUnderState: true,
	}
	got := decode(t, c)
	if !reflect.DeepEqual(got["disabled_plugins"], []any{NRIPlugin}) {
		t.Errorf("disabled_plugins %v, want NRI only", got["disabled_plugins"])
	}
	if got["imports"] == nil || got["debug"].(map[string]any)["level"] != "debug" {
		t.Errorf("imports %v, debug %v", got["imports"], got["debug"])
	}
	rt := got["plugins"].(map[string]any)[CRIRuntimePlugin].(map[string]any)
	if rt["netns_mounts_under_state_dir"] != true || rt["restrict_oom_score_adj"] != true {
		t.Errorf("runtime plugin %v", rt)
	}
	runtimes := rt["containerd"].(map[string]any)["runtimes"].(map[string]any)
	a := runtimes["a"].(map[string]any)
	if !reflect.DeepEqual(a["options"], map[string]any{"ConfigPath": "/w/s.toml"}) {
		t.Errorf("runtime options %v", a["options"])
	}
	if !reflect.DeepEqual(a["pod_annotations"], []any{"io.containerd.runsc-cuda.v1.*"}) {
		t.Errorf("pod_annotations %v", a["pod_annotations"])
	}
	if _, ok := runtimes["b"].(map[string]any)["pod_annotations"]; ok {
		t.Errorf("a handler without pod annotations has pod_annotations: %v", runtimes["b"])
	}
}

func TestShim(t *testing.T) {
	got := decode(t, Shim{Runsc: "/b/runsc", Root: "/w/runsc"})
	if want := map[string]any{"binary_name": "/b/runsc", "root": "/w/runsc"}; !reflect.DeepEqual(got, want) {
		t.Errorf("minimal shim config %v, want %v (no empty tables)", got, want)
	}
	got = decode(t, Shim{Runsc: "/b/runsc", Root: "/w/runsc", LogLevel: "debug", RunscFlags: map[string]string{"debug-log": "/l/%ID%/"},
		ToggleTool: "/b/cuda-checkpoint", DriverLibDir: "/lib"})
	want := map[string]any{
		"binary_name": "/b/runsc", "root": "/w/runsc", "log_level": "debug",
		"runsc_config": map[string]any{"debug-log": "/l/%ID%/"},
		"cuda":         map[string]any{"toggle_tool": "/b/cuda-checkpoint", "driver_lib_dir": "/lib"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("shim config %v, want %v", got, want)
	}
}

func TestExtraMerges(t *testing.T) {
	s := Shim{Runsc: "/runsc", RunscFlags: map[string]string{"debug": "true", "debug-log": "/logs/"},
		Extra: "log_level = \"info\"\n[runsc_config]\nnvproxy = \"true\"\ndebug = \"false\"\n"}
	got := decode(t, s)
	want := map[string]any{
		"binary_name":  "/runsc",
		"root":         "",
		"log_level":    "info",
		"runsc_config": map[string]any{"debug": "false", "debug-log": "/logs/", "nvproxy": "true"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("merged config %v, want %v", got, want)
	}
	if _, err := (Shim{Extra: "not toml ="}).Render(); err == nil || !strings.Contains(err.Error(), "extra TOML") {
		t.Errorf("bad extra TOML: err %v", err)
	}
}
