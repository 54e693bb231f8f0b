#!/usr/bin/env bash
# A short device probe (bench/NOTES.md M28, M29): the FP8 N 16 S 16384 rows (split, whole,
# :layer) three times each with programmatic dependent launch on and off, and the bf16 N 128
# S 4096 split / :layer pair, from .devbin/qfuse (unpacked by scripts/gpu.sh or gpu_ab.sh):
# is the :layer rows' loss a PDL interplay (gone with QFUSE_PDL=0), and is form 3's spread
# between runs or within one?
set -u
cd "$(dirname "$0")/.." || exit 1
b=${1:-.devbin/qfuse}
one() {  # pdl tag op dims...
  local pdl=$1 tag=$2 op=$3
  shift 3
  QFUSE_PDL=$pdl timeout 20 "$b" bench --op "$op" $(printf -- '--dim %s ' "$@") --no-unfused \
    --budget-s 1 2>&1 | grep -E "^mla" | sed "s#^#pdl$pdl $tag #"
}
for pdl in 1 0; do
  for r in 1 2 3; do
    for op in mla_decode/fp8 mla_decode/fp8:whole mla_decode/fp8:layer; do
      one $pdl r$r $op B=128 S=16384 N=16 SQ=1 BS=64
    done
  done
  for op in mla_decode/bf16 mla_decode/bf16:layer; do
    one $pdl r1 $op B=64 S=4096 N=128 SQ=2 BS=64
  done
done
