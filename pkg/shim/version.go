package shim

// RuntimeName is the containerd runtime type of this shim.
const RuntimeName = "io.containerd.runsc-cuda.v1"

// Version is the shim's version, set at build time (-X .../pkg/shim.Version).
var Version = "dev"
