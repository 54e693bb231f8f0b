#!/usr/bin/env bash
# The ViT FP8 kernel's stream-K form (bench/NOTES.md V19) against its one-unit grid, in one
# device call over one build (.devbin/ or .devbin.tgz, `make devbin`):
#   bash scripts/ab_streamk.sh [rounds]   (default 2)
# 1. test_vit_attention whole (the stream-K tests force grids of 3 to 13 blocks and the SM count;
#    AB_SK_TESTS=0 skips it: scripts/gpu.sh runs it too);
# 2. `rounds` interleaved rounds of the FP8 tensor-core rows (D 72, 16 heads: the attention alone
#    and the static layer at S 4096 / 16384 and four images), QFUSE_VIT_TC_STREAMK=-1 (a block a
#    query tile) then 1024 (stream-K on, a block an SM, where the call has a workspace: the bench
#    gives one);
# 3. a table of medians (µs): off, on, on / off.
# Logs in $OUT (or /tmp/qfuse-streamk).
set -u
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/qfuse-streamk}
mkdir -p "$out"
export PATH=/usr/local/cuda/bin:$PATH
[ -x .devbin/qfuse ] || tar xzf .devbin.tgz
bin=.devbin
rounds=${1:-2}
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
if [ "${AB_SK_TESTS:-1}" != 0 ]; then
  timeout 200 $bin/test_vit_attention --gtest_brief=1 >"$out/test_vit_attention.log" 2>&1
  echo "test_vit_attention: exit $? ($(grep -cE '^\[  FAILED  \] [A-Za-z]' "$out/test_vit_attention.log") failed)"
  grep -E '^\[  (PASSED|SKIPPED|FAILED) ' "$out/test_vit_attention.log" | head -12
fi
rows=("vit_attention/fp8:tc S=4096 NIMG=1" "vit_attention/fp8:tc S=16384 NIMG=1"
  "vit_attention/fp8:tc S=8192 NIMG=4" "vit_layer/fp8_static:tc S=4096 NIMG=1"
  "vit_layer/fp8_static:tc S=16384 NIMG=1" "vit_layer/fp8_static:tc S=8192 NIMG=4")
for r in $(seq 1 "$rounds"); do
  for mode in -1 1024; do
    i=0
    for row in "${rows[@]}"; do
      set -- $row
      QFUSE_VIT_TC_STREAMK=$mode timeout 60 $bin/qfuse bench --op "$1" --dim "$2" --dim "$3" \
        --budget-s 1 --json "$out/r${r}_m${mode}_$i.json" >"$out/r${r}_m${mode}_$i.txt" 2>&1 ||
        echo "  failed: $row (mode $mode): $(tail -1 "$out/r${r}_m${mode}_$i.txt")"
      i=$((i + 1))
    done
  done
done
python3 - "$out" "$rounds" "${rows[@]}" <<'EOF'
import json, statistics, sys
out, rounds, rows = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def median_us(path):
    try:
        res = json.load(open(path)).get("results", [])
    except Exception:
        return None
    res = [x for x in res if "timing" in x and "read_only" not in x["routine"]]
    return res[0]["timing"]["median_us"] if res else None
print("== stream-K A/B (µs, median of rounds)  off (QFUSE_VIT_TC_STREAMK=-1) | on (1024) | on/off")
for i, row in enumerate(rows):
    got = {}
    for mode in ("-1", "1024"):
        v = [median_us(f"{out}/r{r}_m{mode}_{i}.json") for r in range(1, rounds + 1)]
        v = [x for x in v if x is not None]
        got[mode] = statistics.median(v) if v else None
    off, on = got["-1"], got["1024"]
    ratio = f"{on / off:.3f}" if off and on else "-"
    print(f"{row:42s} {off if off else '-':>10} {on if on else '-':>10} {ratio:>7}")
EOF
