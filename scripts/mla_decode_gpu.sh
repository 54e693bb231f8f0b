#!/usr/bin/env bash
# One GPU call for the MLA decode family (issue 13): the family's tests, the bench suite
# mla_decode, compute-sanitizer memcheck / racecheck on small cases, optionally ncu on the bar
# shapes. Run from a folder holding the prebuilt binaries test_mla_decode and qfuse (stripped):
#   bash mla_decode_gpu.sh [tests|bench|sanitize|ncu ...]   (default: tests bench sanitize)
# Logs go to $OUT (or /tmp/mla); a short summary is printed last.
set -uo pipefail
cd "$(dirname "$0")"
out=${OUT:-/tmp/mla}
mkdir -p "$out"
export PATH=/usr/local/cuda/bin:$PATH
steps=${*:-tests bench sanitize}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu \
  --format=csv,noheader | tee "$out/gpu.txt"
for step in $steps; do
  case $step in
    tests)
      echo "== tests"
      timeout 200 ./test_mla_decode --gtest_brief=1 --gtest_output="xml:$out/test_mla_decode.xml" \
        >"$out/tests.log" 2>&1
      echo "tests rc=$?"
      grep -E "^\[ mla|FAILED|Failure|Expected|Which is|error|rel_l2|lse mism|unwritten|written past|\[  PASSED|\[  SKIPPED|tests ran" \
        "$out/tests.log" | head -150
      ;;
    bench)
      echo "== bench"
      timeout 200 ./qfuse bench --suite mla_decode --json "$out/bench.json" >"$out/bench.txt" 2>&1
      echo "bench rc=$?"
      grep -v '^\[' "$out/bench.txt"
      ;;
    sanitize)
      echo "== compute-sanitizer"
      for tool in memcheck racecheck; do
        timeout 60 compute-sanitizer --tool $tool --print-limit 20 ./test_mla_decode \
          --gtest_filter='MlaDecodeGpu.BadSeqLen*:MlaDecodeGpu.QuantizedOutput*:Cases/MlaMatrix.AgainstReference/N32_sq4*' \
          >"$out/$tool.log" 2>&1
        echo "$tool rc=$?"
        grep -E "ERROR SUMMARY|RACECHECK SUMMARY|Invalid|Race|hazard" "$out/$tool.log" | head -12
      done
      ;;
    ncu)
      # One launch each of the 16-row bf16 and fp8 split kernels (the memory-bound shapes) and the
      # 32-row bf16 one (compute-bound), from the suite's warm-up.
      for k in ILi16ELNS0_9CacheKindE0ELNS0_12EpilogueKindE0 ILi16ELNS0_9CacheKindE1ELNS0_12EpilogueKindE0 \
        ILi32ELNS0_9CacheKindE0ELNS0_12EpilogueKindE0; do
        echo "== ncu $k"
        timeout 150 ncu --clock-control none --kernel-name-base mangled -k regex:$k -s 2 -c 1 \
          --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \
          --section ComputeWorkloadAnalysis --section SchedulerStats \
          ./qfuse bench --suite mla_decode >"$out/ncu_$k.txt" 2>&1
        echo "ncu rc=$?"
        grep -vE '^\[|^==PROF==' "$out/ncu_$k.txt" | sed -n '/mla_tc_kernel/,$p' |
          grep -E "Duration|Throughput|Pipe|Busy|Warp Cycles|Stall|Issued|Eligible|Active Warps|L2 Hit|Bank|Executed Ipc|Mem Busy|Max Bandwidth|DRAM" | head -40
      done
      ;;
    ncu_wide)
      # One launch of the wide bf16 split kernel at the compute-bound bar shape (S 4096, the
      # suite's first wide case).
      echo "== ncu wide"
      timeout 200 ncu --clock-control none -k regex:mla_wide -s 2 -c 1 \
        --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \
        --section ComputeWorkloadAnalysis --section SchedulerStats \
        ./qfuse bench --suite mla_decode >"$out/ncu_wide.txt" 2>&1
      echo "ncu rc=$?"
      grep -vE '^\[|^==PROF==' "$out/ncu_wide.txt" | sed -n '/mla_wide/,$p' |
        grep -E "Duration|Throughput|Pipe|Busy|Warp Cycles|Stall|Issued|Eligible|Active Warps|L2 Hit|Bank|Executed Ipc|Mem Busy|Max Bandwidth|DRAM|smsp__pcsamp|Tensor" | head -60
      ;;
  esac
done
