#!/usr/bin/env bash
# Per-call and per-block fixed costs (bench/NOTES.md M51, V17): one shape key swept over a range
# so that a line through the medians gives the slope (µs a tile) and the intercept (µs a call or a
# wave that does not scale with the work). One process per row, a short budget each.
#   bash scripts/intercepts.sh [qfuse] [mla|vit|all]   (default .devbin/qfuse, all)
# Prints "op S median_us" rows (from each process's --json file), then each MLA op's
# least-squares line over its rows.
set -u
q=${1:-.devbin/qfuse}
what=${2:-all}
dir=$(mktemp -d)
n=0
row() {  # op S: one process, its `qfuse bench --json` file read back by the fit below
  n=$((n + 1))
  "$q" bench --op "$1" --dim "S=$2" --budget-s 0.4 --reps 9 --json "$dir/$n.json" >/dev/null 2>&1 ||
    echo "$1 S=$2: qfuse bench failed"
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
# Rows in order, then each MLA op's least-squares line (the ViT rows step with the waves).
python3 - "$dir" <<'PY'
import glob, json, os, sys
pts = {}
files = sorted(glob.glob(os.path.join(sys.argv[1], "*.json")),
               key=lambda f: int(os.path.basename(f)[:-5]))
for f in files:
    for r in json.load(open(f)).get("results", []):
        if r.get("is_unfused_peer"):
            continue
        op, S, us = r["routine"], r["shape"]["S"], r["timing"]["median_us"]
        print(f"{op} {S} {us:.2f}")
        pts.setdefault(op, []).append((S, us))
print("== least squares, MLA rows: median_us = a + b * S")
for op, xy in pts.items():
    n = len(xy)
    sx = sum(x for x, _ in xy); sy = sum(y for _, y in xy)
    sxx = sum(x * x for x, _ in xy); sxy = sum(x * y for x, y in xy)
    d = n * sxx - sx * sx
    if not op.startswith("mla") or d == 0:
        continue
    b = (n * sxy - sx * sy) / d
    print(f"{op:24s} a {(sy - b * sx) / n:8.2f} us  b {b:8.5f} us/token  ({n} rows)")
PY
rm -rf "$dir"
