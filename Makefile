# containerd-shim-runsc-cuda-v1
#
#   make demo    start a private containerd and checkpoint/restore a container
#                through the shim (the GPU path when an NVIDIA GPU is present)
#   make test    unit tests, the end-to-end suite (real containerd, runsc, shim)
#                and the benchmark's smoke run
#   make bench   the CPU checkpoint/restore benchmark (docs/benchmarks/)
#   make soak    200 checkpoint/restore cycles of one workload (docs/reliability.md)
#   make fuzz    every fuzz target for FUZZTIME (30s) each
#
# Everything it needs is built from the Go module proxy at pinned versions
# (hack/tools.sh) and cached under $(RCUDA_TOOLS).

SHELL       := /bin/bash
.SHELLFLAGS := -o pipefail -ec
GO          ?= go
PREFIX      ?= /usr/local
BIN         := bin
VERSION     ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
MODULE      := github.com/runsc-cuda/containerd-shim-runsc-cuda
LDFLAGS     := -s -w -X $(MODULE)/pkg/shim.Version=$(VERSION)
GOBUILD     := CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags '$(LDFLAGS)'
E2E_TIMEOUT ?= 80m
# The e2e suite runs against the first version fully and the others on the
# compatibility subset (tests named *Compat*).
CONTAINERD_COMPAT ?= 2.3.7
RCUDA_TOOLS ?= /var/lib/rcuda-tools
export RCUDA_TOOLS

.PHONY: all build install tools unit e2e e2e-compat test demo bench bench-smoke soak fuzz lint clean bundle gpu-bundle gpu-dry bench-gpu-dry

all: build

build:
	$(GOBUILD) -o $(BIN)/containerd-shim-runsc-cuda-v1 ./cmd/containerd-shim-runsc-cuda-v1
	$(GOBUILD) -o $(BIN)/cuda-checkpoint ./cmd/cuda-checkpoint

# install puts the shim and the CUDA toggle tool side by side (the shim
# mounts the tool found next to itself into GPU containers).
install: build
	install -D -m 0755 $(BIN)/containerd-shim-runsc-cuda-v1 $(DESTDIR)$(PREFIX)/bin/containerd-shim-runsc-cuda-v1
	install -D -m 0755 $(BIN)/cuda-checkpoint $(DESTDIR)$(PREFIX)/bin/cuda-checkpoint

tools:
	hack/tools.sh

# unit runs every package's tests with the race detector.
unit:
	$(GO) test -race -count=1 ./...

e2e: tools
	$(GO) test -count=1 -tags e2e -timeout $(E2E_TIMEOUT) -v ./test/e2e/... 2>&1 | tee e2e.log | hack/test-summary.sh

e2e-compat: tools
	RCUDA_E2E_CONTAINERD=$(CONTAINERD_COMPAT) $(GO) test -count=1 -tags e2e -timeout $(E2E_TIMEOUT) -run 'Compat' -v ./test/e2e/... 2>&1 | tee e2e-compat.log | hack/test-summary.sh

test: lint unit e2e e2e-compat bench-smoke gpu-dry

# bundle collects, stripped, the prebuilt binaries test/e2e/gpu/run.sh and
# bench/bench.py need on a host that has no Go and no network; gpu-bundle
# packs them as $(GPU_BUNDLE).tar.xz to carry to a GPU host.
GPU_BUNDLE ?= .carry/gpu
bundle: tools build
	rm -rf $(GPU_BUNDLE) && mkdir -p $(GPU_BUNDLE)
	eval "$$(hack/tools.sh env)"; \
	for b in "$$RCUDA_CONTAINERD_2_4" "$$RCUDA_CTR_2_4" "$$RCUDA_RUNSC"; do strip --strip-all -o $(GPU_BUNDLE)/$$(basename $$b) $$b; done; \
	cp "$$RCUDA_BUSYBOX" $(GPU_BUNDLE)/busybox; \
	strip --strip-all -o $(GPU_BUNDLE)/crictl "$$RCUDA_CRICTL"; \
	mkdir -p $(GPU_BUNDLE)/cni $(GPU_BUNDLE)/criu-lib; \
	for p in loopback bridge host-local; do strip --strip-all -o $(GPU_BUNDLE)/cni/$$p "$$RCUDA_CNI_BIN_DIR/$$p"; done; \
	cp "$$RCUDA_CRIU" $(GPU_BUNDLE)/criu-lib/criu; \
	for l in $$(ldd "$$RCUDA_CRIU" | awk '/=>/ {print $$3}' | grep -v '/libc\.so'); do cp -L $$l $(GPU_BUNDLE)/criu-lib/; done; \
	printf '#!/bin/sh\n# criu with its libraries from the bundle: containerd'"'"'s CRI checks that criu runs before a\n# checkpoint (it never runs it for runsc).\nd=$$(dirname "$$(readlink -f "$$0")")/criu-lib\nLD_LIBRARY_PATH=$$d exec $$d/criu "$$@"\n' > $(GPU_BUNDLE)/criu; \
	chmod +x $(GPU_BUNDLE)/criu
	cp $(BIN)/containerd-shim-runsc-cuda-v1 $(BIN)/cuda-checkpoint $(GPU_BUNDLE)/
	$(GOBUILD) -o $(GPU_BUNDLE)/workload ./test/e2e/gpu/workload
	$(GOBUILD) -o $(GPU_BUNDLE)/workload-cpu ./test/e2e/workload
	$(GOBUILD) -o $(GPU_BUNDLE)/mkimage ./test/e2e/gpu/mkimage
	$(GOBUILD) -o $(GPU_BUNDLE)/ckptctl ./test/e2e/cmd/ckptctl
	$(GOBUILD) -o $(GPU_BUNDLE)/rcuda-config ./test/e2e/cmd/rcuda-config

# xz -9: its 64 MiB dictionary finds what the Go binaries share (34 MB against
# 51 MB at -6); it takes a few minutes.
gpu-bundle: bundle
	tar -C $(dir $(GPU_BUNDLE)) -cf - $(notdir $(GPU_BUNDLE)) | xz -T0 -9 > $(GPU_BUNDLE).tar.xz
	@ls -la $(GPU_BUNDLE).tar.xz

# gpu-dry runs the GPU scenario without a GPU (host memory instead of device
# memory, no devices): it tries the scenario's plumbing on any machine.
gpu-dry: bundle
	DRY=1 BIN=$(GPU_BUNDLE) OUT=gpu-dry-results GIBS=0.05 CLONE_GIBS=0.05 test/e2e/gpu/run.sh
	DRY=1 BIN=$(GPU_BUNDLE) OUT=gpu-dry-results/pod GIB=0.05 test/e2e/gpu/pod.sh

# bench runs the CPU benchmark (bench/README.md) and writes
# docs/benchmarks/cpu-latest.{json,md,svg}; bench-smoke is its cheap CI run
# (64 MiB, one iteration, figures printed, no timed assertions). The GPU
# mode runs from the bundle on a GPU host: see bench/README.md.
BENCH_OUT ?= bench/out
bench: bundle
	python3 bench/bench.py run --mode cpu --bin $(GPU_BUNDLE) --out $(BENCH_OUT)/cpu --name cpu-latest --docs docs/benchmarks

bench-smoke: bundle
	python3 bench/bench.py run --mode cpu --bin $(GPU_BUNDLE) --out $(BENCH_OUT)/smoke --sizes 64M --iterations 1 --disk-gib 1

# bench-gpu-dry tries the GPU mode's plumbing without a GPU (host memory).
bench-gpu-dry: bundle
	python3 bench/bench.py run --mode gpu --dry --bin $(GPU_BUNDLE) --out $(BENCH_OUT)/gpu-dry

# soak checkpoints and restores one workload SOAK_CYCLES times and checks its
# state every cycle (test/e2e/fault TestSoak; `make e2e` runs it with 20).
SOAK_CYCLES ?= 200
soak: tools
	RCUDA_SOAK_CYCLES=$(SOAK_CYCLES) $(GO) test -count=1 -tags e2e -timeout 90m -run '^TestSoak$$' -v ./test/e2e/fault/ 2>&1 | tee soak.log | hack/test-summary.sh

# fuzz runs each fuzz target for FUZZTIME; their seed corpora
# (testdata/fuzz/<target>/) run as plain tests in `make unit`. A crasher the
# fuzzer finds is written there too: fix the bug and keep it as a seed.
FUZZTIME ?= 30s
FUZZ_TARGETS := \
	./pkg/checkpoint:FuzzDecodeMetadata \
	./pkg/shim:FuzzParseOptions \
	./pkg/shim:FuzzParseOptionsAny \
	./pkg/shim:FuzzParseCheckpointOptions \
	./pkg/shim:FuzzParseCheckpointOptionsAny \
	./pkg/shim:FuzzRestorePath \
	./cmd/cuda-checkpoint:FuzzParseArgs \
	./cmd/cuda-checkpoint:FuzzRun \
	./pkg/cuda/driver:FuzzParseDeviceMap \
	./pkg/cuda/driver:FuzzParseUUID
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "== $$name ($$pkg) for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

demo: tools build
	hack/demo.sh

# lint also checks that pkg/shim's files depend on each other in layers
# (hack/filedeps: no file uses names of a file that uses its own).
lint:
	@fmt=$$(gofmt -l . | grep -v '^vendor/' || true); if [ -n "$$fmt" ]; then echo "gofmt needed: $$fmt"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./test/e2e/...
	cd hack/filedeps && $(GO) vet ./... && $(GO) build -o ../../$(BIN)/filedeps .
	$(BIN)/filedeps ./pkg/shim >/dev/null

clean:
	rm -rf $(BIN) e2e.log e2e-compat.log soak.log
