// Package driver binds the CUDA driver API's process checkpoint functions
// (cuCheckpointProcess*, libcuda.so.1 r570+) without cgo, for the
// cuda-checkpoint tool, and defines the Driver interface the tool is written
// against so that tests can use a fake.
//
// It is kept apart from package cuda, and free of heavy dependencies,
// because the tool runs inside the gVisor sandbox once per CUDA process at
// every checkpoint and restore: it should start fast and stay small.
//
// The functions work from a separate process and need no cuInit. Which
// process calls them matters: the CUDA state lives in the libcuda of the
// target process, so for a gVisor container the caller must run inside the
// same sandbox (see package cuda).
package driver
