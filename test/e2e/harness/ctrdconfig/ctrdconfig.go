// Package ctrdconfig renders the configuration of the project's private containerd
// daemons: containerd's config.toml and the shim's runsc-cuda.toml. It is the one place
// that writes them: the e2e harness (test/e2e/harness) uses it directly, and the demo
// (hack/lib/containerd.sh, hack/demo.sh), the GPU scenario (test/e2e/gpu/run.sh) and the
// benchmark (bench/) call the rcuda-config command (test/e2e/cmd/rcuda-config), which
// the GPU bundle carries for hosts without Go.
//
// Every daemon has its own root, state and sockets, and NRI (whose socket is
// host-global) disabled; without CRI the CRI plugins are disabled too.
package ctrdconfig

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"github.com/BurntSushi/toml"
)

// Plugins the configurations name.
const (
	NRIPlugin          = "io.containerd.nri.v1.nri"
	CRIGRPCPlugin      = "io.containerd.grpc.v1.cri"
	CRIImagesPlugin    = "io.containerd.cri.v1.images"
	CRIRuntimePlugin   = "io.containerd.cri.v1.runtime"
	PodSandboxPlugin   = "io.containerd.podsandbox.controller.v1.podsandbox"
	configVersion      = 3 // containerd 2.4 migrates it to 4; 2.3 reads it natively
	localStreamAddress = "127.0.0.1"
)

// Containerd describes containerd's config.toml.
type Containerd struct {
	Root, State  string
	Address      string   // the gRPC socket
	TTRPCAddress string   // the ttrpc socket
	Imports      []string // written as imports when not nil (the e2e daemons write an empty list)
	DebugLevel   string   // [debug] level; "" leaves containerd's default
	CRI          *CRI     // nil: the CRI plugins are disabled
	// DisabledPlugins are disabled besides NRI and, without CRI, the CRI plugins.
	DisabledPlugins []string
	Extra           string // TOML merged in last (its values win; tables merge key by key)
}

// InDir is a Containerd whose root, state and sockets are in dir (dir/root, dir/state,
// dir/c.sock, dir/c.sock.ttrpc), with the CRI disabled.
func InDir(dir string) Containerd {
	return Containerd{
		Root:         filepath.Join(dir, "root"),
		State:        filepath.Join(dir, "state"),
		Address:      filepath.Join(dir, "c.sock"),
		TTRPCAddress: filepath.Join(dir, "c.sock.ttrpc"),
	}
}

// CRI configures the CRI plugins of a daemon.
type CRI struct {
	Snapshotter    string // the snapshotter of the CRI's images
	SandboxImage   string // pinned as the sandbox (pause) image
	DefaultRuntime string // the handler of pods that name none
	Runtimes       map[string]Runtime
	CNIBinDir      string
	CNIConfDir     string
	// NetNSUnderState puts the pods' network namespaces under the CRI's state directory
	// instead of the host-global /var/run/netns (netns_mounts_under_state_dir).
	NetNSUnderState bool
}

// Runtime is one CRI runtime handler: its runtime type and options table.
type Runtime struct {
	Type    string
	Options map[string]any
	// PodAnnotations are the handler's pod_annotations: glob patterns of the pod
	// annotations the CRI passes into the OCI specs of the pod's sandbox and
	// containers; written when not empty.
	PodAnnotations []string
}

// Shim describes the shim's runsc-cuda.toml (docs/configuration.md).
type Shim struct {
	Runsc      string            // binary_name
	Root       string            // runsc --root
	LogLevel   string            // log_level; "" leaves the shim's default
	RunscFlags map[string]string // [runsc_config]: runsc global flags
	// [cuda]: the CUDA toggle tool and the driver's library directory; the table is
	// written when either is set.
	ToggleTool   string
	DriverLibDir string
	Extra        string // TOML merged in last, as Containerd.Extra
}

type table = map[string]any

// Render returns containerd's config.toml.
func (c Containerd) Render() ([]byte, error) { return render(c.table(), c.Extra) }

// Write writes containerd's config.toml to path.
func (c Containerd) Write(path string) error { return write(path, c.Render) }

func (c Containerd) table() table {
	disabled := []string{NRIPlugin}
	plugins := table{}
	if c.CRI == nil {
		disabled = append(disabled, CRIGRPCPlugin, CRIImagesPlugin, CRIRuntimePlugin)
	} else {
		plugins = c.CRI.plugins()
	}
	cfg := table{
		"version":          configVersion,
		"root":             c.Root,
		"state":            c.State,
		"disabled_plugins": append(disabled, c.DisabledPlugins...),
		"grpc":             table{"address": c.Address},
		"ttrpc":            table{"address": c.TTRPCAddress},
		"plugins":          plugins,
	}
	if c.Imports != nil {
		cfg["imports"] = c.Imports
	}
	if c.DebugLevel != "" {
		cfg["debug"] = table{"level": c.DebugLevel}
	}
	return cfg
}

func (c *CRI) plugins() table {
	runtimes := table{}
	for name, r := range c.Runtimes {
		rt := table{"runtime_type": r.Type, "options": r.Options}
		if len(r.PodAnnotations) > 0 {
			rt["pod_annotations"] = r.PodAnnotations
		}
		runtimes[name] = rt
	}
	rt := table{
		// runsc cannot lower oom_score_adj without CAP_SYS_RESOURCE.
		"restrict_oom_score_adj": true,
		"containerd": table{
			"default_runtime_name": c.DefaultRuntime,
			"runtimes":             runtimes,
		},
		"cni": table{
			"bin_dirs": []string{c.CNIBinDir},
			"conf_dir": c.CNIConfDir,
		},
	}
	if c.NetNSUnderState {
		rt["netns_mounts_under_state_dir"] = true
	}
	return table{
		CRIImagesPlugin: table{
			"snapshotter":   c.Snapshotter,
			"pinned_images": table{"sandbox": c.SandboxImage},
		},
		CRIRuntimePlugin: rt,
		// The streaming server (exec, attach, port-forward) on loopback, on a free port.
		CRIGRPCPlugin: table{
			"stream_server_address": localStreamAddress,
			"stream_server_port":    "0",
		},
	}
}

// Render returns the shim's runsc-cuda.toml.
func (s Shim) Render() ([]byte, error) { return render(s.table(), s.Extra) }

// Write writes the shim's runsc-cuda.toml to path.
func (s Shim) Write(path string) error { return write(path, s.Render) }

func (s Shim) table() table {
	cfg := table{
		"binary_name": s.Runsc,
		"root":        s.Root,
	}
	if s.LogLevel != "" {
		cfg["log_level"] = s.LogLevel
	}
	if len(s.RunscFlags) > 0 {
		flags := table{}
		for k, v := range s.RunscFlags {
			flags[k] = v
		}
		cfg["runsc_config"] = flags
	}
	cuda := table{}
	if s.ToggleTool != "" {
		cuda["toggle_tool"] = s.ToggleTool
	}
	if s.DriverLibDir != "" {
		cuda["driver_lib_dir"] = s.DriverLibDir
	}
	if len(cuda) > 0 {
		cfg["cuda"] = cuda
	}
	return cfg
}

// render encodes base merged with the TOML document extra (extra wins; tables merge
// key by key).
func render(base table, extra string) ([]byte, error) {
	if extra != "" {
		var over table
		if _, err := toml.Decode(extra, &over); err != nil {
			return nil, fmt.Errorf("parse extra TOML: %w\n%s", err, extra)
		}
		merge(base, over)
	}
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(base); err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	return buf.Bytes(), nil
}

// merge merges over into dst: tables are merged recursively, other values replaced.
func merge(dst, over table) {
	for k, v := range over {
		if vm, ok := v.(table); ok {
			if dm, ok := dst[k].(table); ok {
				merge(dm, vm)
				continue
			}
		}
		dst[k] = v
	}
}

func write(path string, render func() ([]byte, error)) error {
	b, err := render()
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return os.WriteFile(path, b, 0o644)
}
