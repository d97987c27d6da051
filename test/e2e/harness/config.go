package harness

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"github.com/BurntSushi/toml"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/testimage"
)

// writeTOML writes base merged with the TOML document extra (extra wins; tables merge
// key by key) to path.
func writeTOML(path string, base map[string]any, extra string) error {
	if extra != "" {
		var over map[string]any
		if _, err := toml.Decode(extra, &over); err != nil {
			return fmt.Errorf("parse extra TOML for %s: %w\n%s", path, err, extra)
		}
		mergeTOML(base, over)
	}
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(base); err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// mergeTOML merges over into dst: tables are merged recursively, other values replaced.
func mergeTOML(dst, over map[string]any) {
	for k, v := range over {
		if vm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				mergeTOML(dm, vm)
				continue
			}
		}
		dst[k] = v
	}
}

// table is shorthand for a TOML table literal.
type table = map[string]any

func (d *Daemon) writeShimConfig() error {
	return writeTOML(d.ShimConfigPath, table{
		"binary_name": d.Tools.Runsc,
		"root":        d.RunscRoot,
		"log_level":   "debug",
		"runsc_config": table{
			"debug-log": d.RunscLogDir + "/",
			"debug":     "true",
		},
	}, d.opts.ShimConfig)
}

func (d *Daemon) writeConfig() error {
	cfg := table{
		"version":          3, // containerd 2.4 migrates it to 4; 2.3 reads it natively
		"root":             d.Root,
		"state":            d.State,
		"imports":          []string{},
		"disabled_plugins": []string{"io.containerd.nri.v1.nri"}, // its socket is host-global
		"grpc":             table{"address": d.Address},
		"ttrpc":            table{"address": d.TTRPCAddress},
		"debug":            table{"level": "debug"},
		"plugins":          table{},
	}
	if d.opts.CRI {
		cfg["plugins"] = d.criConfig()
		if err := d.writeCNIConfig(); err != nil {
			return err
		}
	} else {
		cfg["disabled_plugins"] = append(cfg["disabled_plugins"].([]string),
			"io.containerd.grpc.v1.cri",
			"io.containerd.cri.v1.images",
			"io.containerd.cri.v1.runtime",
			"io.containerd.podsandbox.controller.v1.podsandbox",
		)
	}
	return writeTOML(d.ConfigPath, cfg, d.opts.ExtraConfig)
}

func (d *Daemon) criConfig() table {
	return table{
		"io.containerd.cri.v1.images": table{
			"snapshotter":   d.Snapshotter,
			"pinned_images": table{"sandbox": testimage.Ref},
		},
		"io.containerd.cri.v1.runtime": table{
			// runsc cannot lower oom_score_adj without CAP_SYS_RESOURCE.
			"restrict_oom_score_adj": true,
			"containerd": table{
				"default_runtime_name": CRIRuntimeHandler,
				"runtimes": table{
					CRIRuntimeHandler: table{
						"runtime_type": RuntimeName,
						"options":      table{"ConfigPath": d.ShimConfigPath},
					},
					CRIRuncRunscHandler: table{
						"runtime_type": RuncRuntimeName,
						"options":      table{"BinaryName": d.Tools.Runsc, "Root": d.RuncRunscRoot},
					},
				},
			},
			"cni": table{
				"bin_dirs": []string{d.Tools.CNIBinDir},
				"conf_dir": filepath.Join(d.Dir, "cni"),
			},
		},
		"io.containerd.grpc.v1.cri": table{
			"stream_server_address": "127.0.0.1",
			"stream_server_port":    "0",
		},
	}
}
