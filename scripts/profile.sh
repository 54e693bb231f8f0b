#!/usr/bin/env bash
# Nsight Compute summary of the main kernels (GPU machine): speed of light, memory, warp stalls.
#   bash scripts/profile.sh [bin-dir]      writes $OUT/ncu_*.txt (or /tmp/qfuse-gpu)
# QFUSE_PROFILE_TAR=1 packs them (and the source pages) into $OUT/profile.tgz instead: a device
# call returns only a few files.
# QFUSE_PROFILE_CASES picks the cases (names below); "mla" stands for every MLA decode case: each
# kernel form at issue 13's bar shapes, with every warp stall reason per issued instruction and
# the pipes' utilisation (the tensor pipe among them), largest first (bench/NOTES.md M13-M15);
# "vit_wave" / "vit_4k" the ViT FP8 kernel the same way (V17); "mla_up_mem" / "mla_up_compute" /
# "mla_up_token" the up-projection fused into the MLA combine (U1).
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
# The global stores' L2 sectors beside their instructions (32 a store: every lane its own
# sector; bench/NOTES.md M51).
mla_metrics="--section ComputeWorkloadAnalysis --metrics regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,regex:sm__pipe_.*_cycles_active\.avg\.pct_of_peak_sustained_active,regex:sm__inst_executed_pipe_.*\.avg\.pct_of_peak_sustained_active,l1tex__t_sectors_pipe_lsu_mem_global_op_st.sum,smsp__sass_inst_executed_op_global_st.sum"
mla_memory="--dim B=128 --dim N=16 --dim SQ=1 --dim S=16384"
mla_compute="--dim B=64 --dim N=128 --dim SQ=2 --dim S=4096"
# QFUSE_PROFILE_SOURCE=1: the MLA cases also sample warp stalls per SASS instruction (section
# SourceCounters) and write the source page as $OUT/src_<case>.csv.gz (one row per instruction:
# address, SASS, samples by stall reason), to be read on the build machine.
run_mla() {  # name kernel-regex env routine dims
  local name=$1 kernel=$2 env=$3 routine=$4 dims=$5
  local src=() rep=/tmp/qfuse-ncu-$name
  [ "${QFUSE_PROFILE_SOURCE:-0}" = 1 ] && src=(--section SourceCounters -f -o "$rep")
  env $env timeout -k 5 300 "$ncu" --clock-control none -k "regex:$kernel" -c 1 $sections $mla_metrics \
    "${src[@]}" "$bin/qfuse" bench --op "$routine" $dims --reps 1 --calls 1 --budget-s 0 \
    >"$out/ncu_$name.txt" 2>&1
  if [ ${#src[@]} -gt 0 ] && [ -f "$rep.ncu-rep" ]; then
    "$ncu" -i "$rep.ncu-rep" --page details >>"$out/ncu_$name.txt" 2>&1
    "$ncu" -i "$rep.ncu-rep" --page source --csv --print-source sass 2>&1 | gzip >"$out/src_$name.csv.gz"
  fi
  echo "== $name: $kernel, $routine $dims${env:+ ($env)}"
  grep -E "Duration|DRAM Throughput|Memory Throughput|L2 Hit Rate|Compute \(SM\) Throughput|Issue Slots Busy|Achieved Occupancy|Registers Per|Eligible Warps|No Eligible|Warp Cycles Per Issued|global_op_st|op_global_st" \
    "$out/ncu_$name.txt" | sed 's/^ */  /'
  grep -E "smsp__average_warps_issue_stalled_.*ratio|sm__pipe_.*pct_of_peak|sm__inst_executed_pipe_.*pct_of_peak" \
    "$out/ncu_$name.txt" | awk '{v=$NF; gsub(",", "", v); if (v + 0 >= 0.2) print "  " $1, v}' |
    sed -E 's/smsp__average_warps_issue_stalled_(.*)_per_issue_active\.ratio/stall_\1/' |
    sort -k2 -g -r | head -24
}
cases=
for c in ${QFUSE_PROFILE_CASES:-silu_g128 silu_nvfp4 quant_tensor quant_token}; do
  [ "$c" = mla ] && c="mla_fp8_alt_mem mla_fp8_one_mem mla_bf16_mem mla_fp8_wide_compute mla_fp8_r32_compute mla_bf16_wide_compute mla_bf16_pair_compute"
  # The default forms only: form 3 (the alt kernel with kQ8) and the bf16 16-row kernel at the
  # memory-bound shape, the wide forms at the compute-bound one.
  [ "$c" = mla_defaults ] && c="mla_fp8_alt_mem mla_bf16_mem mla_bf16_wide_compute mla_fp8_wide_compute"
  cases="$cases $c"
done
for c in $cases; do
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
    mla_fp8_alt_mem) run_mla $c mla_tc_fp8alt_kernel "" mla_decode/fp8 "$mla_memory" ;;
    mla_fp8_one_mem) run_mla $c mla_tc_kernel QFUSE_MLA_FP8_FORM=1 mla_decode/fp8 "$mla_memory" ;;
    mla_bf16_mem) run_mla $c mla_tc_kernel "" mla_decode/bf16 "$mla_memory" ;;
    mla_fp8_wide_compute) run_mla $c mla_wide_kernel "" mla_decode/fp8 "$mla_compute" ;;
    mla_fp8_r32_compute) run_mla $c mla_tc_kernel QFUSE_MLA_FP8_WIDE=0 mla_decode/fp8 "$mla_compute" ;;
    mla_bf16_wide_compute) run_mla $c mla_wide_kernel "" mla_decode/bf16 "$mla_compute" ;;
    mla_bf16_pair_compute) run_mla $c mla_pair_kernel QFUSE_MLA_WIDE_FORM=2 mla_decode/bf16 "$mla_compute" ;;
    # The up-projection fused into the combine (issue 14, bench/NOTES.md U1): FP8 out at the
    # memory-bound and compute-bound shapes, and per-token's two passes.
    mla_up_mem) run_mla $c up_proj_kernel "" mla_decode_up/fp8:fp8 "$mla_memory" ;;
    mla_up_compute) run_mla $c up_proj_kernel "" mla_decode_up/fp8:fp8 "$mla_compute" ;;
    mla_up_token) run_mla $c up_proj_kernel "" mla_decode_up/fp8:fp8_token "$mla_compute" ;;
    # The ViT FP8 kernel at one wave (S 1536: 128 blocks of 12 key tiles) and at S 4096 (2.67
    # waves): where the cost per wave goes (bench/NOTES.md V17).
    vit_wave) run_mla $c vit_tc_kernel "" vit_attention/fp8:tc "--dim S=1536" ;;
    vit_4k) run_mla $c vit_tc_kernel "" vit_attention/fp8:tc "--dim S=4096" ;;
    # The ViT Q / K / V quantizer at S 16384 (issue 15's 90 % of copy), V row-major and
    # transposed.
    vit_quant_16k) run_mla $c quant_kernel "" vit_quant/static "--dim S=16384" ;;
    vit_quant_vt_16k) run_mla $c quant_kernel "" vit_quant/static:vt "--dim S=16384" ;;
    # The ViT BF16 kernel at S 4096 (issue 15's bf16 bar against cuDNN).
    vit_bf16_4k) run_mla $c vit_tc_bf16_kernel "" vit_attention/bf16:tc "--dim S=4096" ;;
    # The same without clusters (bench/NOTES.md V35: the pairs' multicast should halve its L2
    # reads; a build without them ignores the setting).
    vit_bf16_4k_single)
      run_mla $c vit_tc_bf16_kernel QFUSE_VIT_BF16_CLUSTER=0 vit_attention/bf16:tc "--dim S=4096" ;;
  esac
done
if [ "${QFUSE_PROFILE_TAR:-0}" = 1 ]; then
  (cd "$out" && tar czf profile.tgz ncu_*.txt $(ls src_*.csv.gz 2>/dev/null) && rm -f ncu_*.txt src_*.csv.gz)
fi
