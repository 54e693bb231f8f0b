#!/usr/bin/env bash
# Nsight Compute summary of the main kernels (GPU machine): speed of light, memory, warp stalls.
#   bash scripts/profile.sh [bin-dir]      writes $OUT/ncu_*.txt (or /tmp/qfuse-gpu)
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${1:-.devbin}
out=${OUT:-/tmp/qfuse-gpu}
mkdir -p "$out"
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
[ -n "$ncu" ] || { echo "ncu not found"; exit 1; }
sections="--section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy --section SchedulerStats --section LaunchStats"
run() {  # name op quant T H [extra bench options]
  local name=$1 op=$2 quant=$3 T=$4 H=$5
  shift 5
  "$ncu" --clock-control none -k regex:'rowwise|per_token' -c 1 $sections \
    "$bin/qfuse" bench --op "$op" --quant "$quant" --dim "T=$T" --dim "H=$H" "$@" --reps 1 --calls 1 \
    --no-unfused >"$out/ncu_$name.txt" 2>&1
  set -- "$name" "$op" "$quant" "$T" "$H"
  echo "== $1 ($2 $3 T=$4 H=$5)"
  grep -E "DRAM Throughput|Memory Throughput|Duration|Compute \(SM\) Throughput|Issue Slots Busy|Achieved Occupancy|Registers Per|Eligible Warps|No Eligible|Warp Cycles Per Issued|L2 Hit Rate|Mem Busy|Max Bandwidth|Stall|Executed Ipc" "$out/ncu_$1.txt" | sed 's/^ */  /'
}
for c in ${QFUSE_PROFILE_CASES:-silu_g128 silu_nvfp4 quant_tensor quant_token}; do
  case $c in
    silu_g128) run $c silu_mul_quant fp8_group128:row:f32 16384 7168 ;;
    silu_nvfp4) run $c silu_mul_quant nvfp4:swizzled 16384 7168 ;;
    quant_tensor) run $c quantize fp8_per_tensor 16384 7168 ;;
    quant_token) run $c quantize fp8_per_token 16384 7168 ;;
    quant_nvfp4) run $c quantize nvfp4:swizzled 16384 7168 ;;
    quant_g128) run $c quantize fp8_group128:row:f32 16384 7168 ;;
    quant_colpack) run $c quantize fp8_group128:col_tma:ue8m0_packed 16384 7168 ;;
    silu_nvfp4_wide) run $c silu_mul_quant nvfp4:swizzled 16384 14336 ;;
    silu_small) run $c silu_mul_quant fp8_group128:row:f32 16 14336 ;;
    merge2) run $c merge_states fp8_per_tensor 4096 128 -N 2 -D 128 ;;
    merge8) run $c merge_states fp8_per_tensor 4096 128 -N 8 -D 128 ;;
    merge_plain) run $c merge_states none 4096 128 -N 2 -D 128 ;;
  esac
done
