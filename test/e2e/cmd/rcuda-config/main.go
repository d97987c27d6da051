// Command rcuda-config writes the configuration of a private containerd for the
// project's shim, for the shell and Python tools (hack/lib/containerd.sh, bench/) that
// cannot import test/e2e/harness/ctrdconfig, which renders it here as for the e2e
// harness. The GPU bundle carries it for hosts without Go.
//
//	rcuda-config containerd --dir DIR [--cri --sandbox-image REF --shim-config FILE
//	                        --cni-bin-dir DIR --cni-conf-dir DIR] [--out FILE]
//	rcuda-config shim --runsc PATH --root DIR [--runsc-flag KEY=VALUE]... [--toggle-tool PATH]
//	                  [--driver-lib-dir DIR] [--extra TOML] [--out FILE]
//
// containerd: containerd's config.toml for a daemon whose root, state and sockets are
// in DIR (DIR/root, DIR/state, DIR/c.sock, DIR/c.sock.ttrpc), with the CRI and NRI
// disabled, or with --cri the CRI with the shim as the default runtime handler
// (runsc-cuda, passing the shim's annotations through). shim: the shim's runsc-cuda.toml; --runsc-flag adds a runsc global flag
// ([runsc_config]) and may repeat; --extra is TOML merged in last. Without --out the
// file goes to stdout.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/test/e2e/harness/ctrdconfig"
)

const usage = "usage: rcuda-config containerd --dir DIR [--out FILE] | shim --runsc PATH --root DIR [--runsc-flag K=V]... [--toggle-tool PATH] [--driver-lib-dir DIR] [--extra TOML] [--out FILE]"

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "rcuda-config:", err)
		os.Exit(2)
	}
}

type renderer interface{ Render() ([]byte, error) }

// criHandler is the CRI runtime handler of the shim (RuntimeClass runsc-cuda).
const criHandler = "runsc-cuda"

func run(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	fs := flag.NewFlagSet("rcuda-config "+args[0], flag.ContinueOnError)
	out := fs.String("out", "", "write to this file instead of stdout")
	// build checks the parsed flags and returns what to render.
	var build func() (renderer, error)
	switch args[0] {
	case "containerd":
		dir := fs.String("dir", "", "the daemon's directory (root, state and sockets go in it)")
		cri := fs.Bool("cri", false, "enable the CRI, with the shim as runtime handler "+criHandler+" (the default)")
		sandboxImage := fs.String("sandbox-image", "", "with --cri: the pinned sandbox (pause) image")
		shimConfig := fs.String("shim-config", "", "with --cri: the shim's config file (the handler's ConfigPath)")
		cniBin := fs.String("cni-bin-dir", "", "with --cri: the CNI plugins' directory")
		cniConf := fs.String("cni-conf-dir", "", "with --cri: the CNI configuration directory")
		build = func() (renderer, error) {
			c := ctrdconfig.InDir(*dir)
			if !*cri {
				return c, required("--dir", *dir)
			}
			c.CRI = &ctrdconfig.CRI{
				Snapshotter:    "overlayfs",
				SandboxImage:   *sandboxImage,
				DefaultRuntime: criHandler,
				Runtimes: map[string]ctrdconfig.Runtime{criHandler: {
					Type:           "io.containerd.runsc-cuda.v1",
					Options:        map[string]any{"ConfigPath": *shimConfig},
					PodAnnotations: []string{"io.containerd.runsc-cuda.v1.*"},
				}},
				CNIBinDir:  *cniBin,
				CNIConfDir: *cniConf,
			}
			return c, errors.Join(required("--dir", *dir), required("--sandbox-image", *sandboxImage), required("--shim-config", *shimConfig),
				required("--cni-bin-dir", *cniBin), required("--cni-conf-dir", *cniConf))
		}
	case "shim":
		var s ctrdconfig.Shim
		fs.StringVar(&s.Runsc, "runsc", "", "the runsc binary (binary_name)")
		fs.StringVar(&s.Root, "root", "", "runsc's --root")
		fs.StringVar(&s.ToggleTool, "toggle-tool", "", "the CUDA toggle tool ([cuda] toggle_tool)")
		fs.StringVar(&s.DriverLibDir, "driver-lib-dir", "", "the NVIDIA driver's library directory ([cuda] driver_lib_dir)")
		fs.StringVar(&s.Extra, "extra", "", "TOML merged in last")
		fs.Func("runsc-flag", "a runsc global flag KEY=VALUE ([runsc_config]); repeatable", func(kv string) error {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return fmt.Errorf("%q: want KEY=VALUE", kv)
			}
			if s.RunscFlags == nil {
				s.RunscFlags = map[string]string{}
			}
			s.RunscFlags[k] = v
			return nil
		})
		build = func() (renderer, error) {
			return s, errors.Join(required("--runsc", s.Runsc), required("--root", s.Root))
		}
	default:
		return errors.New(usage)
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q; %s", fs.Args(), usage)
	}
	r, err := build()
	if err != nil {
		return err
	}
	b, err := r.Render()
	if err != nil {
		return err
	}
	if *out == "" {
		_, err = stdout.Write(b)
		return err
	}
	return os.WriteFile(*out, b, 0o644)
}

func required(name, v string) error {
	if v == "" {
		return fmt.Errorf("%s is required", name)
	}
	return nil
}
