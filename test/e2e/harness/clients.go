package harness

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
)

// CrictlConfigPath is crictl's config for this daemon (endpoints, a 60 s timeout: the
// default 2 s is too short for sandbox starts); written when CRI is enabled.
func (d *Daemon) CrictlConfigPath() string { return filepath.Join(d.Dir, "crictl.yaml") }

// Crictl runs crictl against this daemon's CRI and returns its output. Without a
// deadline on ctx it is killed after 2 minutes. It needs Options.CRI.
func (d *Daemon) Crictl(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, d.Tools.Crictl, append([]string{"--config", d.CrictlConfigPath()}, args...)...)
	cmd.Env = d.env
	cmd.WaitDelay = 5 * time.Second
	var outb, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &outb, &errb
	if err := cmd.Run(); err != nil {
		return outb.String(), errb.String(), fmt.Errorf("crictl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return outb.String(), errb.String(), nil
}

// RuntimeOpts selects the project's shim with its TOML options, for NewContainer.
func (d *Daemon) RuntimeOpts() containerd.NewContainerOpts {
	return containerd.WithRuntime(d.RuntimeName, &runtimeoptions.Options{ConfigPath: d.ShimConfigPath})
}

// RuncRunscOpts selects containerd's runc shim with runsc as its binary (a reference
// runtime, not the product), for NewContainer.
func (d *Daemon) RuncRunscOpts() containerd.NewContainerOpts {
	return containerd.WithRuntime(RuncRuntimeName, &runcoptions.Options{BinaryName: d.Tools.Runsc, Root: d.RuncRunscRoot})
}

// CtrRuntimeArgs are the `ctr run`/`ctr create` flags that select the project's shim.
func (d *Daemon) CtrRuntimeArgs() []string {
	return []string{"--runtime", d.RuntimeName, "--runtime-config-path", d.ShimConfigPath}
}

// CtrCmd returns a ctr command for this daemon and namespace, for tests that need
// their own stdin/stdout. ctx should carry a deadline: ctr forwards the signals it
// receives to the task, so it is stopped with SIGKILL when ctx ends.
func (d *Daemon) CtrCmd(ctx context.Context, args ...string) *exec.Cmd {
	full := append([]string{"--address", d.Address, "--namespace", d.Namespace}, args...)
	cmd := exec.CommandContext(ctx, d.Containerd.Ctr, full...)
	cmd.Env = d.env
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Ctr runs ctr against this daemon and namespace and returns its output. Without a
// deadline on ctx it is killed (SIGKILL) after 2 minutes.
func (d *Daemon) Ctr(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
	}
	cmd := d.CtrCmd(ctx, args...)
	var outb, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &outb, &errb
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (killed: %v)", err, ctx.Err())
	}
	if err != nil {
		err = fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return outb.String(), errb.String(), err
}

// IO returns a cio.Creator that streams the task's stdio to the given reader and
// writers (any may be nil), with its FIFOs under the daemon's Dir instead of the
// host-global /run/containerd/fifo.
func (d *Daemon) IO(stdin io.Reader, stdout, stderr io.Writer, opts ...cio.Opt) cio.Creator {
	opts = append([]cio.Opt{cio.WithStreams(stdin, stdout, stderr), cio.WithFIFODir(filepath.Join(d.Dir, "fifo"))}, opts...)
	return cio.NewCreator(opts...)
}
