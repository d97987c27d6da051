// Command containerd-shim-runsc-cuda-v1 is a containerd shim v2 that runs
// containers in gVisor and checkpoints and restores them, GPU state included.
package main

import (
	"context"

	cdshim "github.com/containerd/containerd/v2/pkg/shim"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/shim"
)

func main() {
	shim.RegisterPlugins()
	cdshim.RunShim(context.Background(), shim.NewManager(shim.RuntimeName))
}
