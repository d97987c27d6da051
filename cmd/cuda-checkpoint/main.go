// Command cuda-checkpoint checkpoints and restores the CUDA state of a
// process. It is a drop-in replacement for NVIDIA's cuda-checkpoint binary
// (same operations, flags, outputs and exit codes where they overlap), built
// on the CUDA driver API (libcuda.so.1 r570+, loaded with dlopen) so that it
// can ship with containerd-shim-runsc-cuda and be bind-mounted into GPU
// containers, where runsc runs it inside the sandbox
// (runsc checkpoint --cuda-checkpoint-path).
//
// See --help for the command line, the environment variables and the exit
// codes.
package main

import (
	"os"

	"github.com/runsc-cuda/containerd-shim-runsc-cuda/pkg/cuda/driver"
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr, openDriver))
}

// openDriver loads the real CUDA driver.
func openDriver() (driver.Driver, error) {
	return driver.Open("")
}
