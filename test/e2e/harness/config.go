package harness

import (
	"path/filepath"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness/ctrdconfig"
	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/testimage"
)

// shimConfig is the shim's runsc-cuda.toml: runsc and its root, debug logs of the
// shim and of runsc (one directory per container), Options.ShimConfig merged in.
func (d *Daemon) shimConfig() ctrdconfig.Shim {
	return ctrdconfig.Shim{
		Runsc:    d.Tools.Runsc,
		Root:     d.RunscRoot,
		LogLevel: "debug",
		RunscFlags: map[string]string{
			"debug-log": d.RunscLogDir + "/",
			"debug":     "true",
		},
		Extra: d.opts.ShimConfig,
	}
}

// containerdConfig is containerd's config.toml: the daemon's own root, state and
// sockets, debug logging, the CRI when Options.CRI (else its plugins and the pod
// sandbox controller disabled), Options.ExtraConfig merged in.
func (d *Daemon) containerdConfig() ctrdconfig.Containerd {
	cfg := ctrdconfig.Containerd{
		Root:         d.Root,
		State:        d.State,
		Address:      d.Address,
		TTRPCAddress: d.TTRPCAddress,
		Imports:      []string{},
		DebugLevel:   "debug",
		Extra:        d.opts.ExtraConfig,
	}
	if d.opts.CRI {
		cfg.CRI = d.criConfig()
	} else {
		cfg.DisabledPlugins = []string{ctrdconfig.PodSandboxPlugin}
	}
	return cfg
}

// criConfig is the CRI of Options.CRI: our shim as the default runtime handler
// (CRIRuntimeHandler, passing the pod annotations RuntimePodAnnotations), containerd's runc shim with runsc as CRIRuncRunscHandler, the
// test image as the pinned sandbox image, and the daemon's CNI configuration.
func (d *Daemon) criConfig() *ctrdconfig.CRI {
	return &ctrdconfig.CRI{
		Snapshotter:    d.Snapshotter,
		SandboxImage:   testimage.Ref,
		DefaultRuntime: CRIRuntimeHandler,
		Runtimes: map[string]ctrdconfig.Runtime{
			CRIRuntimeHandler: {
				Type:    RuntimeName,
				Options: map[string]any{"ConfigPath": d.ShimConfigPath},
				// As deploy/containerd-config.toml: the shim's pod annotations
				// (the restore annotation) reach its specs.
				PodAnnotations: []string{RuntimePodAnnotations},
			},
			CRIRuncRunscHandler: {
				Type:    RuncRuntimeName,
				Options: map[string]any{"BinaryName": d.Tools.Runsc, "Root": d.RuncRunscRoot},
			},
		},
		CNIBinDir:  d.Tools.CNIBinDir,
		CNIConfDir: filepath.Join(d.Dir, "cni"),
		// The bridge's pods: their network namespaces in the daemon's directory, so the
		// cleanup finds them.
		NetNSUnderState: d.opts.CNI == CNIBridge,
	}
}

func (d *Daemon) writeShimConfig() error { return d.shimConfig().Write(d.ShimConfigPath) }

func (d *Daemon) writeConfig() error {
	if d.opts.CRI {
		if err := d.writeCNIConfig(); err != nil {
			return err
		}
	}
	return d.containerdConfig().Write(d.ConfigPath)
}
