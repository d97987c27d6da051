package shim

import (
	"context"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/checkpoint"
)

// gpuSetup is what the shim decided for a GPU container at create.
type gpuSetup struct {
	// toolInContainer is the CUDA toggle tool's path inside the container.
	toolInContainer string
}

// gpuUsage is the sandbox's GPU usage seen from the host.
type gpuUsage struct{}

// prepareGPU detects GPU containers and prepares their spec.
func prepareGPU(ctx context.Context, cfg *Config, spec *specs.Spec) (*gpuSetup, error) {
	return nil, nil
}

func (g *gpuSetup) usage(ctx context.Context, sandboxPid int) *gpuUsage { return nil }

func (g *gpuSetup) facts(ctx context.Context, before *gpuUsage) *checkpoint.GPU {
	return &checkpoint.GPU{ToggleTool: g.toolInContainer}
}

func (g *gpuSetup) verifyAfterCheckpoint(ctx context.Context, c *container, exit bool, facts *checkpoint.GPU) error {
	return nil
}

func (g *gpuSetup) checkRestore(ctx context.Context, saved *checkpoint.GPU) error { return nil }

func (g *gpuSetup) verifyAfterRestore(ctx context.Context, c *container) {}
