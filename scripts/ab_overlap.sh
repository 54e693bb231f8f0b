#!/usr/bin/env bash
# The ViT FP8 stream-K segments' hand-over (QFUSE_VIT_TC_OVERLAP, bench/NOTES.md V24) in one
# device call over one build (.devbin.tgz): test_vit_attention with mode 2 for every test,
# racecheck over the stream-K and fused-Q tests in mode 2, then scripts/ab_env.sh: 0 against 2
# (kernel S 4096 / 16384 / four images, static layer S 4096), and 0 against 1 (S 4096).
#   bash scripts/ab_overlap.sh [rounds]   (default 2)
set -u
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/qfuse-ab-overlap}
mkdir -p "$out"
export PATH=/usr/local/cuda/bin:$PATH
[ -x .devbin/qfuse ] || tar xzf .devbin.tgz
cat .devbin/MANIFEST
rounds=${1:-2}
QFUSE_VIT_TC_OVERLAP=2 timeout 150 .devbin/test_vit_attention --gtest_brief=1 >"$out/t2.log" 2>&1
echo "test_vit_attention, overlap 2: exit $?"
grep -E '^\[  (PASSED|FAILED) ' "$out/t2.log" | head -12
QFUSE_VIT_TC_OVERLAP=2 timeout 120 compute-sanitizer --tool racecheck --error-exitcode 86 \
  --print-limit 10 .devbin/test_vit_attention --gtest_brief=1 \
  --gtest_filter='VitLayer.FusedQ*:Grids/VitAttentionStreamK.*/1:Grids/VitAttentionStreamK.*/6' \
  >"$out/racecheck2.log" 2>&1
echo "racecheck, overlap 2: exit $? ($(grep -m1 'ERROR SUMMARY' "$out/racecheck2.log"))"
k="vit_attention/fp8:tc"
l="vit_layer/fp8_static:tc"
OUT=$out/ab02 AB_VAR=QFUSE_VIT_TC_OVERLAP AB_VALUES="0 2" AB_TESTS=0 \
  AB_ROWS="$k S=4096 NIMG=1;$k S=16384 NIMG=1;$k S=8192 NIMG=4;$l S=4096 NIMG=1" \
  bash scripts/ab_env.sh "$rounds"
OUT=$out/ab01 AB_VAR=QFUSE_VIT_TC_OVERLAP AB_VALUES="0 1" AB_TESTS=0 \
  AB_ROWS="$k S=4096 NIMG=1;$l S=4096 NIMG=1" bash scripts/ab_env.sh "$rounds"
(cd "$out" && tar czf ab.tgz ab02 ab01 && rm -rf ab02 ab01)
