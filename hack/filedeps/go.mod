module github.com/runsc-cuda/containerd-shim-runsc-cuda/hack/filedeps

go 1.26.8

require golang.org/x/tools v0.39.0

require (
	golang.org/x/mod v0.30.0 // indirect
	golang.org/x/sync v0.18.0 // indirect
)
