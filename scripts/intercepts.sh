#!/usr/bin/env bash
# Per-call and per-block fixed costs (bench/NOTES.md M51, V17): one shape key swept over a range
# so that a line through the medians gives the slope (µs a tile) and the intercept (µs a call or a
# wave that does not scale with the work). One process per row, a short budget each.
#   bash scripts/intercepts.sh [qfuse] [mla|vit|all]   (default .devbin/qfuse, all)
# Prints "op S median_us" rows, then each op's least-squares line over its rows.
set -u
q=${1:-.devbin/qfuse}
what=${2:-all}
rows=$(mktemp)
row() {  # op S [more --dim]
  local op=$1 S=$2
  shift 2
  local med
  med=$("$q" bench --op "$op" --dim "S=$S" "$@" --budget-s 0.4 --reps 9 2>&1 |
    awk -v op="$op" '$1 == op { i = 2; while ($i ~ /=/) i++; print $i; exit }')
  echo "$op $S ${med:-?}" | tee -a "$rows"
}
if [ "$what" = mla ] || [ "$what" = all ]; then
  # N 16, s_q 1, B 128: one block a request (:whole) and the default split, pages from DRAM and
  # from an L2-resident pool; 64-token tiles.
  for c in fp8 bf16; do
    for o in "mla_decode/$c:whole" "mla_decode_l2/$c"; do
      for S in 64 1024 4096 16384; do row "$o" "$S"; done
    done
  done
fi
if [ "$what" = vit ] || [ "$what" = all ]; then
  # D 72, 16 heads, one image: 192-row query tiles, 128-key tiles. S 1536: 128 blocks (one
  # wave), 3072: 256 (two), 4096: 352 (2.67), 16384: 1376 (10.4).
  for S in 768 1536 3072 4096 16384; do row vit_attention/fp8:tc "$S"; done
fi
echo "== least squares, MLA rows: median_us = a + b * S (the ViT rows step with the waves)"
awk '$3 != "?" && $1 ~ /^mla/ { n[$1]++; sx[$1] += $2; sy[$1] += $3; sxx[$1] += $2 * $2; sxy[$1] += $2 * $3 }
  END { for (o in n) { d = n[o] * sxx[o] - sx[o] * sx[o]; if (d == 0) continue
          b = (n[o] * sxy[o] - sx[o] * sy[o]) / d; a = (sy[o] - b * sx[o]) / n[o]
          printf "%-24s a %8.2f us  b %8.5f us/token  (%d rows)\n", o, a, b, n[o] } }' "$rows"
rm -f "$rows"
