package shim

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// The examples under deploy/ are what docs/kubernetes.md tells users to install:
// they must parse, and name this runtime and the default config path.
func TestDeployExamples(t *testing.T) {
	dir := filepath.Join("..", "..", "deploy")
	data, err := os.ReadFile(filepath.Join(dir, "runsc-cuda.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeConfig(string(data), "deploy/runsc-cuda.toml"); err != nil {
		t.Fatalf("deploy/runsc-cuda.toml: %v", err)
	}
	// Its commented overlay2 option is valid too.
	uncommented := strings.Replace(string(data), "# overlay2 = ", "overlay2 = ", 1)
	if uncommented == string(data) {
		t.Fatal("deploy/runsc-cuda.toml no longer shows the overlay2 option")
	}
	if _, err := decodeConfig(uncommented, "deploy/runsc-cuda.toml with overlay2"); err != nil {
		t.Fatalf("deploy/runsc-cuda.toml with overlay2: %v", err)
	}

	var cfg struct {
		Plugins map[string]struct {
			Containerd struct {
				Runtimes map[string]struct {
					RuntimeType string            `toml:"runtime_type"`
					Options     map[string]string `toml:"options"`
				} `toml:"runtimes"`
			} `toml:"containerd"`
		} `toml:"plugins"`
	}
	if _, err := toml.DecodeFile(filepath.Join(dir, "containerd-config.toml"), &cfg); err != nil {
		t.Fatalf("deploy/containerd-config.toml: %v", err)
	}
	rt, ok := cfg.Plugins["io.containerd.cri.v1.runtime"].Containerd.Runtimes["runsc-cuda"]
	if !ok {
		t.Fatal("deploy/containerd-config.toml has no runsc-cuda runtime handler")
	}
	if rt.RuntimeType != RuntimeName || rt.Options["ConfigPath"] != DefaultConfigPath {
		t.Fatalf("runsc-cuda handler: runtime_type %q, ConfigPath %q; want %q and %q", rt.RuntimeType, rt.Options["ConfigPath"], RuntimeName, DefaultConfigPath)
	}

	rc, err := os.ReadFile(filepath.Join(dir, "runtimeclass.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(rc), "kind: RuntimeClass") || !strings.Contains(string(rc), "\nhandler: runsc-cuda\n") {
		t.Fatal("deploy/runtimeclass.yaml does not declare RuntimeClass handler runsc-cuda")
	}
}
