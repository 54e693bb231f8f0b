#!/usr/bin/env bash
# The Python package's tests on the GPU machine (PyTorch and a CUDA device; no network there).
#
#   bash python/gpu_test.sh [GROUP ...]   (carry .deps/pylib and .deps/cutlass.tgz: `make pydeps`
#                                          makes them here)
#
# GROUP: host, torch, gpu (default all three, in that order); QFUSE_PY_K="pattern ..." runs only
# the tests whose names match (unittest -k). A second call reuses the build in build-py/.
# QFUSE_PY_BENCH=1 then runs python/bench_dropins.py (the drop-ins through qfuse.torch against
# PyTorch eager and torch.compile on the issue 2/3 bar shapes, one run; QFUSE_PY_BENCH_BUDGET_S
# seconds, default 240); "bash python/gpu_test.sh none" with it runs the benchmark alone.
# QFUSE_PY_OVERHEAD=1 runs python/bench_overhead.py (issue 17's per-call overhead: the torch ops
# through the C++ op library and through Python, the nanobind call, the C++ API call alone, CUDA-
# graph replay; one table). QFUSE_TORCH_OPS=0 runs everything on the Python path instead.
#
# Builds the extension for the device's python3 (PYTHON=... to choose) with the project's CMake
# (QFUSE_PYTHON_ONLY: qfuse::kernels and the extension, nothing else) against the nanobind
# sources in .deps/pylib/nanobind (or the device's own nanobind, if it has one), and the PyTorch
# op library qfuse/_torch_ops.so against the device's PyTorch (python/src/torch_ops.cpp), then
# runs the three groups of python/tests: host, torch (schemas, fake implementations, fusion-pass
# rewrites, the C++ ops' errors against the Python path's) and
# gpu (every op against the C++ host reference or an fp64 PyTorch reference, the drop-ins, ties,
# torch.library.opcheck of every op, CUDA-graph capture, torch.compile with the fusion pass
# against eager, the per-call overhead). Logs go to $OUT (or /tmp/qfuse-py); the summary is last.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/qfuse-py}
mkdir -p "$out"
export PATH=/usr/local/cuda/bin:$PATH
py=$(command -v "${PYTHON:-python3}")
build=${QFUSE_PY_BUILD:-build-py}

nb=""
# The CUTLASS / CuTe headers the kernels build with (`make pydeps` packs them; no pip here).
[ -f .deps/cutlass/cutlass_library/source/include/cute/arch/mma_sm90_gmma.hpp ] ||
  [ ! -f .deps/cutlass.tgz ] || { mkdir -p .deps/cutlass && tar xzf .deps/cutlass.tgz -C .deps/cutlass; }
if [ -f .deps/pylib/nanobind/cmake/nanobind-config.cmake ]; then
  nb=$PWD/.deps/pylib/nanobind/cmake
else
  nb=$("$py" -m nanobind --cmake_dir 2>/dev/null || true)
fi
if [ -z "$nb" ]; then
  echo "gpu_test: no nanobind: run 'make pydeps' on the build machine and carry .deps/pylib" >&2
  exit 1
fi
"$py" -c "import sys, torch; c = torch.cuda.is_available()
print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda,
      torch.cuda.get_device_name() if c else 'no device')"

echo "== building the extension ($build, nanobind from $nb)"
start=$(date +%s)
if ! cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DQFUSE_PYTHON_ONLY=ON \
  -Dnanobind_DIR="$nb" -DPython_EXECUTABLE="$py" >"$out/configure.log" 2>&1; then
  tail -30 "$out/configure.log"
  exit 1
fi
if ! cmake --build "$build" -j "$(nproc)" --target _qfuse qfuse_python_files \
  >"$out/build.log" 2>&1; then
  grep -E "error|Error" "$out/build.log" | head -30
  exit 1
fi
echo "   built in $(($(date +%s) - start)) s"
if grep -q "qfuse: PyTorch op library for torch" "$out/configure.log"; then
  start=$(date +%s)
  if cmake --build "$build" -j "$(nproc)" --target qfuse_torch_ops >"$out/build_torch_ops.log" 2>&1
  then
    echo "   PyTorch op library built in $(($(date +%s) - start)) s"
  else
    echo "   PyTorch op library FAILED to build ($out/build_torch_ops.log): the ops run in Python"
    grep -E "error" "$out/build_torch_ops.log" | head -20
  fi
else
  grep "PyTorch op library not built" "$out/configure.log" | sed 's/^-- /   /'
fi
status=0
summary=()
# A fresh interpreter, nothing touching CUDA first (an engine's import; NOTES P1).
if ! PYTHONPATH="$PWD/$build/python" "$py" -X faulthandler -c "from qfuse.torch import ops
print('   torch ops:', len(ops.CPP_OPS), 'of', len(ops.OPS), 'in C++:',
      ops.CPP_LIBRARY or ops.CPP_UNUSED)"; then
  summary+=("import qfuse.torch in a fresh interpreter: FAILED"); status=1
fi
groups=("$@")
[ ${#groups[@]} -gt 0 ] || groups=(host torch gpu)
kargs=()
for k in ${QFUSE_PY_K:-}; do kargs+=(-k "$k"); done
for group in "${groups[@]}"; do
  [ "$group" = none ] && continue
  echo "== python.$group"
  t0=$(date +%s)
  PYTHONPATH="$PWD/$build/python" PYTHONDONTWRITEBYTECODE=1 "$py" python/tests/run.py "$group" \
    ${kargs[@]+"${kargs[@]}"} >"$out/python_$group.log" 2>&1
  rc=$?
  echo "   $(($(date +%s) - t0)) s"
  grep -E "^(FAIL|ERROR):|qfuse overhead|CppOps:|SKIPPED|^Ran |^OK|^FAILED" "$out/python_$group.log"
  case $rc in
    0) summary+=("python.$group: passed") ;;
    77) summary+=("python.$group: skipped") ;;
    *) summary+=("python.$group: FAILED (rc $rc; $out/python_$group.log)"); status=1
       tail -60 "$out/python_$group.log" ;;
  esac
done
if [ "${QFUSE_PY_BENCH:-0}" = 1 ]; then
  echo "== bench_dropins (drop-ins vs PyTorch eager and torch.compile)"
  PYTHONPATH="$PWD/$build/python" PYTHONDONTWRITEBYTECODE=1 "$py" python/bench_dropins.py \
    --budget-s "${QFUSE_PY_BENCH_BUDGET_S:-240}" --out "$out/bench_dropins.json" \
    2>"$out/bench_dropins.err" | tee "$out/bench_dropins.txt"
  if [ "${PIPESTATUS[0]}" = 0 ]; then
    summary+=("bench_dropins: done ($out/bench_dropins.txt)")
  else
    summary+=("bench_dropins: rows failed ($out/bench_dropins.txt, .err)")
    tail -20 "$out/bench_dropins.err"
  fi
fi
if [ "${QFUSE_PY_OVERHEAD:-0}" = 1 ]; then
  echo "== bench_overhead (per-call overhead of the torch ops above the C++ launch)"
  PYTHONPATH="$PWD/$build/python" PYTHONDONTWRITEBYTECODE=1 "$py" python/bench_overhead.py \
    --out "$out/bench_overhead.json" 2>"$out/bench_overhead.err" | tee "$out/bench_overhead.txt"
  if [ "${PIPESTATUS[0]}" = 0 ]; then
    summary+=("bench_overhead: done ($out/bench_overhead.txt)")
  else
    summary+=("bench_overhead: rows failed ($out/bench_overhead.txt, .err)")
    tail -20 "$out/bench_overhead.err"
  fi
fi
echo "== summary"
printf '%s\n' "${summary[@]}"
exit $status
