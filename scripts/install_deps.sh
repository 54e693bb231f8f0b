#!/usr/bin/env bash
# Installs what qfuse needs to build and test, from Debian's packages and PyPI (nanobind, the
# nvidia-cutlass headers); idempotent (a second run installs nothing). The CUDA toolkit (nvcc 13,
# CCCL, cudart) comes with the machine image.
set -euo pipefail

packages=(cmake ninja-build g++ make libgtest-dev libgmock-dev nlohmann-json3-dev libcli11-dev)
# make sanitize / make fuzz (issue 12): clang++ and its runtimes (ASan, UBSan, libFuzzer).
packages+=(clang libclang-rt-dev)
# The Python package (python/, docs/python.md): Python's development headers; nanobind from PyPI
# below, into .deps/pylib.
packages+=(python3-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "install_deps: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# nanobind (the binding layer of the Python package: headers and sources, built into the
# extension) from PyPI into .deps/pylib (ignored), which python/CMakeLists.txt looks in first:
# no Python environment is changed (Debian's own python3 is externally managed) and any python3
# with development headers builds against it. Without pip the extension and its tests are left
# out of the build.
root=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -f "$root/.deps/pylib/nanobind/cmake/nanobind-config.cmake" ]; then
  echo "install_deps: installing nanobind into .deps/pylib"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps \
    --target "$root/.deps/pylib" \
    "nanobind==3.1.0" ||
    echo "install_deps: pip could not install nanobind: the Python package will not be built" >&2
fi

# The CUTLASS / CuTe 4.x headers (the tensor-core kernels' wgmma atoms) from PyPI's nvidia-cutlass
# wheel (it ships them under cutlass_library/source/include) into .deps/cutlass (ignored), where
# CMakeLists.txt looks first. Required: the kernels do not build without them.
if [ ! -f "$root/.deps/cutlass/cutlass_library/source/include/cute/arch/mma_sm90_gmma.hpp" ]; then
  echo "install_deps: installing nvidia-cutlass (the CUTLASS / CuTe headers) into .deps/cutlass"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps \
    --target "$root/.deps/cutlass" "nvidia-cutlass==4.2.0.0" || {
    echo "install_deps: pip could not install nvidia-cutlass (PyPI), which the kernels need" >&2
    exit 1
  }
fi

nvcc_path=$(command -v nvcc || true)
[ -n "$nvcc_path" ] || { [ -x /usr/local/cuda/bin/nvcc ] && nvcc_path=/usr/local/cuda/bin/nvcc; }
if [ -z "$nvcc_path" ]; then
  echo "install_deps: nvcc (CUDA 12.4+ / 13) not found on PATH or in /usr/local/cuda/bin" >&2
  exit 1
fi
