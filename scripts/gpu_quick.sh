#!/usr/bin/env bash
# A short device call for a session with little device time left: the candidate build's
# (.devbin.tgz) MLA test binary, the wgmma rates, the mla_decode suite of candidate (default forms,
# then FP8 form 2) and baseline (.devbin_main.tgz), the small suite of both, then the row-wise
# family's test binaries, in that order of priority, each under its own timeout and the whole
# under GPU_QUICK_S (default 360) seconds; a table of medians, candidate / baseline, last.
set -u
cd "$(dirname "$0")/.." || exit 1
out=${OUT:-/tmp/qfuse-gpu-quick}
work=$(mktemp -d)
mkdir -p "$work/base" "$out" "$work/o"
tar xzf .devbin.tgz || exit 1
tar xzf .devbin_main.tgz -C "$work/base" || exit 1
cand=.devbin base="$work/base/.devbin" o="$work/o"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$o/gpu.txt"
steps() {
  timeout -k 5 150 $cand/test_mla_decode --gtest_brief=1 >"$o/test_mla_decode.log" 2>&1
  echo "test_mla_decode: exit $? ($(grep -cE '^\[  FAILED  \] [A-Za-z]' "$o/test_mla_decode.log") failed)"
  timeout 30 $cand/qfuse bench --suite wgmma_rate --json "$o/rates.json" >"$o/rates.txt" 2>&1
  for r in 1 2; do
    timeout 60 $cand/qfuse bench --suite mla_decode --no-unfused --json "$o/mla_cand_$r.json" >/dev/null 2>&1
    timeout 60 $base/qfuse bench --suite mla_decode --no-unfused --json "$o/mla_base_$r.json" >/dev/null 2>&1
    [ "$r" = 1 ] && QFUSE_MLA_FP8_FORM=2 timeout 60 $cand/qfuse bench --suite mla_decode \
      --no-unfused --json "$o/mla_form2_1.json" >/dev/null 2>&1
  done
  for v in cand base; do
    b=$cand
    [ $v = base ] && b=$base
    timeout 30 $b/qfuse bench --suite small --no-unfused --json "$o/small_${v}_1.json" >/dev/null 2>&1
    engine_rows $b/qfuse "$o" "${v}_1"
  done
  for t in test_act_quant test_merge_states test_quantize; do
    timeout -k 5 60 $cand/$t --gtest_brief=1 >"$o/$t.log" 2>&1
    echo "$t: exit $? ($(grep -cE '^\[  FAILED  \] [A-Za-z]' "$o/$t.log") failed)"
  done
}
source scripts/ab_lib.sh
export -f steps engine_rows
export cand base o
timeout -k 5 "${GPU_QUICK_S:-360}" bash -c steps
echo "steps: exit $?"
grep -hE '^\[  FAILED  \] [A-Za-z]' "$o"/test_*.log | head -20
tar czf "$out/q.tgz" -C "$o" .
python3 scripts/ab_medians.py "$o" base cand form2 base
