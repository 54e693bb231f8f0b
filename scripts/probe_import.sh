#!/usr/bin/env bash
# What makes `import torch` crash after qfuse's extension was loaded (bench/NOTES.md P1)? One
# device call (carry .deps/pylib and .deps/cutlass.tgz; about 90 s after the start):
#   bash scripts/probe_import.sh
# Builds the Python package (python/gpu_test.sh, which also runs test_gpu.FreshImport: the import
# orders in fresh interpreters) and two tiny CUDA libraries (scripts/probe/cuda_static_probe.cu
# with the static and with the shared CUDA runtime), then imports torch in a fresh interpreter
# after loading each of: qfuse's extension without its package (ctypes, so the package's
# torch-first import does not run), the static-runtime library, the shared-runtime library.
# A crash after the static one alone points at two CUDA runtimes, not at qfuse's code. Logs and a
# short table in $OUT/probe_import.tgz.
set -u
cd "$(dirname "$0")/.."
export PATH=/usr/local/cuda/bin:$PATH
out=${OUT:-/tmp/qfuse-probe}
w=$(mktemp -d)
mkdir -p "$out"
t0=$(date +%s)
src=scripts/probe/cuda_static_probe.cu
nvcc -shared -Xcompiler -fPIC -cudart static -arch=sm_90a -o "$w/k_static.so" $src &
nvcc -shared -Xcompiler -fPIC -cudart shared -arch=sm_90a -o "$w/k_shared.so" $src &
OUT=$w/py QFUSE_PY_K=FreshImport timeout 200 bash python/gpu_test.sh gpu >"$w/py.txt" 2>&1
wait
grep -E "\.\.\. |^(OK|FAILED)" "$w/py/python_gpu.log" | head
ext=$(ls "$PWD"/build-py/python/qfuse/_qfuse*.so)
export PYTHONPATH=$PWD/build-py/python
try() {
  timeout 60 python3 -X faulthandler -c "$1" >"$w/try.txt" 2>&1
  echo "rc=$? : $1"
  grep -E "^  File" "$w/try.txt" | head -2
}
try "import torch"
try "import ctypes, os; ctypes.CDLL('$ext', mode=os.RTLD_LOCAL); import torch"
try "import ctypes, os; ctypes.CDLL('$w/k_static.so'); import torch"
try "import ctypes, os; ctypes.CDLL('$w/k_shared.so'); import torch"
try "import ctypes, os; ctypes.CDLL('$ext', mode=os.RTLD_LOCAL); import torch._C; print('_C')"
try "import qfuse; import torch"
python3 -c "import torch, sys; print(torch.__version__, torch.__file__, sys.version)"
echo "the extension's dynamic section and dependencies (here it NEEDs libstdc++.so.6; the loader's"
echo "init list on the device did not show libstdc++: bench/NOTES.md P1):"
readelf -d "$ext" | grep -E "NEEDED|RPATH|RUNPATH" | sed 's/^/  /'
ldd "$ext" | sed 's/^/  /'
echo "  GNU_UNIQUE symbols: $(readelf -sW --dyn-syms "$ext" | awk '$5 == "UNIQUE"' | wc -l)," \
  "std:: symbols defined: $(nm -DC --defined-only "$ext" 2>/dev/null | grep -c ' std::')"
python3 -c "import sys; print('  interpreter:', sys.executable, sys.version.split()[0])"
echo "  compiler and linker flags from the environment and build-py's cache (a -static-libstdc++"
echo "  there would put a second libstdc++ into the extension):"
env | grep -E "^(LDFLAGS|CXXFLAGS|CFLAGS|CPPFLAGS|LD_PRELOAD|LD_LIBRARY_PATH)=" | sed 's/^/    /'
grep -E "^CMAKE_(MODULE|SHARED)_LINKER_FLAGS|^CMAKE_CXX_FLAGS:|^CMAKE_CXX_COMPILER:" \
  build-py/CMakeCache.txt 2>/dev/null | sed 's/^/    /'
echo "    $(c++ --version | head -1); static libstdc++ default: $(c++ -v 2>&1 | grep -o 'enable-static-libstdcxx' || echo no)"
echo "libraries initialised by loading the extension:"
LD_DEBUG=libs python3 -c "import ctypes, os; ctypes.CDLL('$ext', mode=os.RTLD_LOCAL)" 2>&1 |
  grep "calling init" | awk '{print "  " $NF}'
tar czf "$out/probe_import.tgz" -C "$w" --exclude='*.so' .
echo "done in $(($(date +%s) - t0)) s"
