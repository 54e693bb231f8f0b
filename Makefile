# The two set-up commands of the README: `make demo` and `make test`. Both install what is
# missing (scripts/install_deps.sh), configure and build first.
BUILD ?= build
JOBS ?= $(shell nproc)
export PATH := /usr/local/cuda/bin:$(PATH)

.PHONY: all deps configure build demo test devbin pydeps format clean

all: build

deps:
	@bash scripts/install_deps.sh

configure: deps
	@cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

demo: build
	./$(BUILD)/qfuse demo
	./$(BUILD)/qfuse fuse examples/graphs/deepseek_v3_mlp.json

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# Binaries for the GPU machine (it has no GoogleTest/CLI11 packages): build here, carry
# .devbin.tgz (stripped and compressed: the device tool carries at most 64 MiB); scripts/gpu.sh
# unpacks it.
devbin: build
	@rm -rf .devbin .devbin.tgz && mkdir -p .devbin
	@cp $(BUILD)/qfuse $$(find $(BUILD)/tests -maxdepth 2 -type f -name "test_*" -perm -u+x) .devbin/
	@strip .devbin/*
	@echo "$$(git rev-parse --short HEAD) $$(git rev-parse --abbrev-ref HEAD)$$(git diff --quiet || echo ' (dirty)')" >.devbin/MANIFEST
	@tar czf .devbin.tgz .devbin
	@ls -la .devbin .devbin.tgz

# What a build from source needs on the GPU machine (no network there; python/gpu_test.sh,
# scripts/gpu.sh without .devbin): nanobind's sources in .deps/pylib (about 1.5 MB) and the
# CUTLASS / CuTe headers packed as .deps/cutlass.tgz (about 2.4 MB; unpacked there into
# .deps/cutlass): carry .deps/pylib and .deps/cutlass.tgz (.deps is ignored).
pydeps: deps
	@test -f .deps/pylib/nanobind/cmake/nanobind-config.cmake && du -sh .deps/pylib
	@tar czf .deps/cutlass.tgz -C .deps/cutlass cutlass_library/source/include/cute \
	  cutlass_library/source/include/cutlass && ls -la .deps/cutlass.tgz

format:
	clang-format -i $$(git ls-files '*.h' '*.cpp' '*.cu' '*.cuh')

clean:
	rm -rf $(BUILD) .devbin $(SAN_BUILD)

# ---- hardening (issue 12; docs/hardening.md) -----------------------------------------------
# `make sanitize`: a second build (clang++ for the host C++, nvcc with g++ for CUDA) with
# AddressSanitizer + UBSan and libFuzzer coverage; runs every test there (GPU tests skip without
# a device) and each fuzz target over its committed corpus. `make fuzz`: each fuzz target for
# FUZZ_SECONDS more (scripts/fuzz.sh; new inputs go to a scratch folder, not the repo).
SAN_BUILD ?= build-sanitize
FUZZ_SECONDS ?= 45
# NOTE: protect_shadow_gap=0 lets the CUDA driver map its memory on a GPU machine.
SAN_ENV = ASAN_OPTIONS=protect_shadow_gap=0:detect_leaks=1:abort_on_error=1:check_initialization_order=1 \
          UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

# ---- diagnostics ----------------------------------------------------------------------------
# `make trace-build`: the qfuse command with the FP8 ViT kernel's timeline (QFUSE_VIT_TRACE;
# src/vit_attention/trace.h) in build-trace/, packed as .devbin_trace.tgz (.devtrace/qfuse) for
# the GPU machine; scripts/vit_trace.sh runs it there.
TRACE_BUILD ?= build-trace
.PHONY: trace-build
trace-build: deps
	@cmake -S . -B $(TRACE_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release -DQFUSE_VIT_TRACE=ON \
	  -DQFUSE_BUILD_TESTS=OFF >/dev/null
	@cmake --build $(TRACE_BUILD) -j $(JOBS) --target qfuse
	@rm -rf .devtrace && mkdir -p .devtrace && cp $(TRACE_BUILD)/qfuse .devtrace/ && strip .devtrace/qfuse
	@tar czf .devbin_trace.tgz .devtrace && ls -la .devbin_trace.tgz

.PHONY: sanitize-build sanitize fuzz
sanitize-build: deps
	@cmake -S . -B $(SAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_CUDA_HOST_COMPILER=g++ -DQFUSE_FUZZ=ON >/dev/null
	@cmake --build $(SAN_BUILD) -j $(JOBS)

sanitize: sanitize-build
	cd $(SAN_BUILD) && $(SAN_ENV) ctest --output-on-failure -j $(JOBS)

fuzz: sanitize-build
	@$(SAN_ENV) bash scripts/fuzz.sh $(SAN_BUILD) $(FUZZ_SECONDS)
