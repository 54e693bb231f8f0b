# The two set-up commands of the README: `make demo` and `make test`. Both install what is
# missing (scripts/install_deps.sh), configure and build first.
BUILD ?= build
JOBS ?= $(shell nproc)
export PATH := /usr/local/cuda/bin:$(PATH)

.PHONY: all deps configure build demo test devbin format clean

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
	@tar czf .devbin.tgz .devbin
	@ls -la .devbin .devbin.tgz

format:
	clang-format -i $$(git ls-files '*.h' '*.cpp' '*.cu' '*.cuh')

clean:
	rm -rf $(BUILD) .devbin
