#!/usr/bin/env bash
# Nsight Compute on the MLA decode kernels (GPU machine), one launch each at issue 13's bar shapes:
# speed of light, memory, pipes (the tensor pipe among them), scheduler and every warp stall
# reason per issued instruction. What limits each form is the question (bench/NOTES.md M13-M15).
#   bash scripts/profile_mla.sh [bin-dir]      writes $OUT/ncu_mla_*.txt (or /tmp/qfuse-gpu)
# QFUSE_PROFILE_MLA: the cases to run (default: all below).
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${1:-.devbin}
out=${OUT:-/tmp/qfuse-gpu}
mkdir -p "$out"
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
[ -n "$ncu" ] || { echo "ncu not found"; exit 1; }
sections="--section SpeedOfLight --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats"
metrics="--metrics regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,regex:sm__pipe_.*_cycles_active\.avg\.pct_of_peak_sustained_active,regex:sm__inst_executed_pipe_.*\.avg\.pct_of_peak_sustained_active"
memory=(--dim B=128 --dim N=16 --dim SQ=1 --dim S=16384)
compute=(--dim B=64 --dim N=128 --dim SQ=2 --dim S=4096)
run() {  # name kernel-regex env routine dims...
  local name=$1 kernel=$2 env=$3 routine=$4
  shift 4
  env $env timeout -k 5 300 "$ncu" --clock-control none -k "regex:$kernel" -c 1 $sections $metrics \
    "$bin/qfuse" bench --op "$routine" "$@" --reps 1 --calls 1 --budget-s 0 >"$out/ncu_mla_$name.txt" 2>&1
  echo "== $name: $kernel, $routine $*${env:+ ($env)}"
  grep -E "Duration|DRAM Throughput|Memory Throughput|L2 Hit Rate|Compute \(SM\) Throughput|Issue Slots Busy|Executed Ipc A|Registers Per|Achieved Occupancy|Eligible Warps|No Eligible|Warp Cycles Per Issued" \
    "$out/ncu_mla_$name.txt" | sed 's/^ */  /'
  # The stall reasons above 0.2 cycles per issued instruction and the busiest pipes, largest first.
  grep -E "smsp__average_warps_issue_stalled_.*ratio|sm__pipe_.*pct_of_peak|sm__inst_executed_pipe_.*pct_of_peak" \
    "$out/ncu_mla_$name.txt" | awk '{v=$NF; gsub(",", "", v); if (v + 0 >= 0.2) print "  " $1, v}' |
    sed -E 's/smsp__average_warps_issue_stalled_(.*)_per_issue_active\.ratio/stall \1/' |
    sort -k3 -g -r | head -24
}
for c in ${QFUSE_PROFILE_MLA:-fp8_alt_mem fp8_one_mem bf16_mem fp8_wide_compute fp8_r32_compute bf16_wide_compute}; do
  case $c in
    fp8_alt_mem) run $c mla_tc_fp8alt_kernel "" mla_decode/fp8 "${memory[@]}" ;;
    fp8_one_mem) run $c mla_tc_kernel QFUSE_MLA_FP8_FORM=1 mla_decode/fp8 "${memory[@]}" ;;
    bf16_mem) run $c mla_tc_kernel "" mla_decode/bf16 "${memory[@]}" ;;
    fp8_wide_compute) run $c mla_wide_kernel QFUSE_MLA_FP8_WIDE=1 mla_decode/fp8 "${compute[@]}" ;;
    fp8_r32_compute) run $c mla_tc_kernel "" mla_decode/fp8 "${compute[@]}" ;;
    bf16_wide_compute) run $c mla_wide_kernel "" mla_decode/bf16 "${compute[@]}" ;;
  esac
done
