#!/usr/bin/env bash
# A process-wide setting's two values against each other in one binary, in one device call over
# one build (.devbin/ or .devbin.tgz, `make devbin`):
#   bash scripts/ab_env.sh [rounds]   (default 2)
# Environment (defaults: ViT stream-K, bench/NOTES.md V19 / V20):
#   AB_VAR     the variable (QFUSE_VIT_TC_STREAMK)
#   AB_VALUES  "off on": the two values, the first the baseline ("-1 1024")
#   AB_ROWS    rows separated by ';', each "routine dim dim ..." (the FP8 tensor-core attention and
#              static layer at D 72, 16 heads: S 4096 / 16384 and four images)
#   AB_TESTS   0 skips test_vit_attention, run first (once, under the default setting)
#   AB_BINS    "dirA dirB ...": builds instead (their qfuse; e.g. .devbin and B/.devbin from
#              .devbin_main.tgz), each under its value of AB_VAR (AB_VAR=QFUSE_AB AB_VALUES="main
#              new" labels them); as many values as builds, two or more
# Then `rounds` interleaved rounds of every row under each value and a table of medians (µs):
# each value, and each one after the first over the first. Logs in $OUT (or
# /tmp/qfuse-ab-env).
set -u
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/qfuse-ab-env}
mkdir -p "$out"
export PATH=/usr/local/cuda/bin:$PATH
[ -x .devbin/qfuse ] || tar xzf .devbin.tgz
bin=.devbin
rounds=${1:-2}
var=${AB_VAR:-QFUSE_VIT_TC_STREAMK}
read -r -a values <<<"${AB_VALUES:--1 1024}"
read -r -a bins <<<"${AB_BINS:-$(for _ in "${values[@]}"; do printf '%s ' "$bin"; done)}"
IFS=';' read -r -a rows <<<"${AB_ROWS:-vit_attention/fp8:tc S=4096 NIMG=1;vit_attention/fp8:tc \
S=16384 NIMG=1;vit_attention/fp8:tc S=8192 NIMG=4;vit_layer/fp8_static:tc S=4096 NIMG=1;\
vit_layer/fp8_static:tc S=16384 NIMG=1;vit_layer/fp8_static:tc S=8192 NIMG=4}"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
if [ "${AB_TESTS:-1}" != 0 ]; then
  timeout 200 $bin/test_vit_attention --gtest_brief=1 >"$out/test_vit_attention.log" 2>&1
  echo "test_vit_attention: exit $? ($(grep -cE '^\[  FAILED  \] [A-Za-z]' "$out/test_vit_attention.log") failed)"
  grep -E '^\[  (PASSED|SKIPPED|FAILED) ' "$out/test_vit_attention.log" | head -12
fi
for r in $(seq 1 "$rounds"); do
  for v in "${!values[@]}"; do
    for i in "${!rows[@]}"; do
      read -r -a row <<<"${rows[$i]}"
      dims=()
      for d in "${row[@]:1}"; do dims+=(--dim "$d"); done
      env "$var=${values[$v]}" timeout 60 "${bins[$v]}/qfuse" bench --op "${row[0]}" "${dims[@]}" \
        --budget-s 1 --json "$out/r${r}_v${v}_$i.json" >"$out/r${r}_v${v}_$i.txt" 2>&1 ||
        echo "  failed: ${rows[$i]} ($var=${values[$v]}): $(tail -1 "$out/r${r}_v${v}_$i.txt")"
    done
  done
done
python3 - "$out" "$rounds" "$var" "${values[*]}" "${rows[@]}" <<'EOF'
import json, statistics, sys
out, rounds, var = sys.argv[1], int(sys.argv[2]), sys.argv[3]
vals, rows = sys.argv[4].split(), sys.argv[5:]
def median_us(path):
    try:
        res = json.load(open(path)).get("results", [])
    except Exception:
        return None
    res = [x for x in res if "timing" in x and "read_only" not in x["routine"]]
    return res[0]["timing"]["median_us"] if res else None
print(f"== {var}: {' / '.join(vals)} (µs, median of rounds) | ratios over {vals[0]}: "
      + " ".join(vals[1:]))
for i, row in enumerate(rows):
    got = []
    for v in range(len(vals)):
        xs = [median_us(f"{out}/r{r}_v{v}_{i}.json") for r in range(1, rounds + 1)]
        xs = [x for x in xs if x is not None]
        got.append(statistics.median(xs) if xs else None)
    ratios = [f"{x / got[0]:.3f}" if x and got[0] else "-" for x in got[1:]]
    cells = [f"{x:10.2f}" if x else f"{'-':>10}" for x in got]
    print(f"{row:44s} {' '.join(cells)} {' '.join(f'{r:>7}' for r in ratios)}")
EOF
