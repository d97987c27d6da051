package shim

import (
	"fmt"
	"slices"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/checkpoint"
)

// summarizeSpec keeps the parts of a spec that runsc requires to be equal at
// restore and that users change by mistake (a different command, a volume
// added or dropped), so a mismatch is reported before anything is created.
// runsc validates the rest itself.
func summarizeSpec(s *specs.Spec) checkpoint.SpecSummary {
	var sum checkpoint.SpecSummary
	if s.Process != nil {
		sum.Args = slices.Clone(s.Process.Args)
	}
	for _, m := range s.Mounts {
		if !slices.Contains(sum.Mounts, m.Destination) {
			sum.Mounts = append(sum.Mounts, m.Destination)
		}
	}
	slices.Sort(sum.Mounts)
	return sum
}

func compareSpec(saved, now checkpoint.SpecSummary) error {
	if len(saved.Args) > 0 && !slices.Equal(saved.Args, now.Args) {
		return fmt.Errorf("the checkpointed container ran %q but this container's spec runs %q; use the same image and command", saved.Args, now.Args)
	}
	if saved.Mounts != nil && !slices.Equal(saved.Mounts, now.Mounts) {
		return fmt.Errorf("the checkpointed container had mounts %q but this container's spec has %q; runsc needs the same mount points", saved.Mounts, now.Mounts)
	}
	return nil
}

// checkTerminal refuses a terminal IO request that disagrees with the spec's
// process.terminal, as runc does. runsc does not: with a console socket but
// no terminal in the spec its sandbox keeps `runsc create`'s output pipes
// open, so create never returns; with a terminal in the spec but no console
// socket the process's output is lost.
func checkTerminal(ioTerminal bool, p *specs.Process) error {
	specTerminal := p != nil && p.Terminal
	if ioTerminal == specTerminal {
		return nil
	}
	return fmt.Errorf("%w: the task's IO has terminal=%t but the OCI spec's process.terminal is %t; set both or neither (ctr -t, or cio.WithTerminal with oci.WithTTY)", errdefs.ErrInvalidArgument, ioTerminal, specTerminal)
}

// CRI annotations that place a container in a pod sandbox (the same ones
// runsc reads).
const (
	annotationContainerType = "io.kubernetes.cri.container-type"
	annotationSandboxID     = "io.kubernetes.cri.sandbox-id"
	// annotationSandboxNamespace is the pod's Kubernetes namespace.
	annotationSandboxNamespace = "io.kubernetes.cri.sandbox-namespace"
	containerTypeContainer     = "container"
	containerTypeSandbox       = "sandbox"
)

// subcontainer reports whether the container joins an existing pod sandbox.
func subcontainer(spec *specs.Spec) bool {
	return spec.Annotations[annotationContainerType] == containerTypeContainer
}

// sandboxID returns the id of the sandbox a container runs in: its pod's
// (the CRI's sandbox id) for a container joining a pod, its own otherwise.
func sandboxID(id string, spec *specs.Spec) string {
	if spec != nil && subcontainer(spec) {
		if sb := spec.Annotations[annotationSandboxID]; sb != "" {
			return sb
		}
	}
	return id
}
