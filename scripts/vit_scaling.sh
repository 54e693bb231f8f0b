#!/usr/bin/env bash
# Where the ViT FP8 tensor-core kernel's time goes as the work grows (bench/NOTES.md V25): the
# kernel (D 72, one image, the default stream-K grid) at several S and H, each row with its
# stream-K schedule as plan_stream_k makes it (waves of whole query tiles, the spread steps a
# block, the segments a block) and a least-squares fit of
#   time = F + t * (key-tile steps a block) + X * (segments a block, the most of any block)
# (F: launch, ramp and tail; t: a step; X: a segment's start and end).
#   bash scripts/vit_scaling.sh [bin-dir]   (default .devbin, unpacked from .devbin.tgz)
set -u
cd "$(dirname "$0")/.."
bin=${1:-.devbin}
[ -x "$bin/qfuse" ] || tar xzf .devbin.tgz
out=${OUT:-/tmp/qfuse-vit-scaling}
mkdir -p "$out"
shapes="2048:16 3072:16 4096:8 4096:16 4096:32 6144:16 8192:16 16384:16"
sms=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
echo "== ViT FP8 kernel scaling on $sms"
for sh in $shapes; do
  S=${sh%:*} H=${sh#*:}
  timeout 60 "$bin/qfuse" bench --op vit_attention/fp8:tc --dim "S=$S" --dim "H=$H" --dim D=72 \
    --dim NIMG=1 --budget-s 1 --json "$out/s${S}_h$H.json" >"$out/s${S}_h$H.txt" 2>&1 ||
    echo "  failed: S=$S H=$H: $(tail -1 "$out/s${S}_h$H.txt")"
done
python3 - "$out" $shapes <<'PY'
import json, sys
out, shapes = sys.argv[1], sys.argv[2:]
blocks, kM, D = 132, 192, 72
rows = []
for sh in shapes:
    S, H = map(int, sh.split(":"))
    try:
        res = [x for x in json.load(open(f"{out}/s{S}_h{H}.json"))["results"] if "timing" in x]
        us = res[0]["timing"]["median_us"]
    except Exception:
        continue
    tiles, nk = -(-S // kM), -(-S // 128)
    units, total = tiles * H, tiles * H * nk
    waves = units // blocks
    base = waves * blocks * nk
    per = -(-(total - base) // blocks) if total > base else 0
    segs = []
    for b in range(blocks):  # segments of block b: whole tiles, then the tiles its steps meet
        s, e = base + b * per, min(base + (b + 1) * per, total)
        segs.append(waves + ((e - 1) // nk - s // nk + 1 if e > s else 0))
    steps = waves * nk + per
    tflops = 4.0 * S * S * H * D / us / 1e6
    rows.append((S, H, us, tflops, waves, per, steps, max(segs), sum(segs) / blocks))
print(f"{'S':>6} {'H':>3} {'µs':>9} {'TFLOPS':>7} {'waves':>5} {'spread':>6} {'steps/blk':>9} "
      f"{'segs max':>8} {'segs avg':>8}")
for r in rows:
    print(f"{r[0]:6d} {r[1]:3d} {r[2]:9.2f} {r[3]:7.1f} {r[4]:5d} {r[5]:6d} {r[6]:9d} {r[7]:8d} "
          f"{r[8]:8.2f}")
if len(rows) >= 4:  # least squares: us = F + t * steps + X * segs_max
    A = [[1.0, r[6], r[7]] for r in rows]
    y = [r[2] for r in rows]
    AtA = [[sum(a[i] * a[j] for a in A) for j in range(3)] for i in range(3)]
    Aty = [sum(a[i] * v for a, v in zip(A, y)) for i in range(3)]
    M = [row[:] + [v] for row, v in zip(AtA, Aty)]
    for c in range(3):
        p = max(range(c, 3), key=lambda r: abs(M[r][c]))
        M[c], M[p] = M[p], M[c]
        for r in range(3):
            if r != c:
                f = M[r][c] / M[c][c]
                M[r] = [x - f * z for x, z in zip(M[r], M[c])]
    F, t, X = (M[i][3] / M[i][i] for i in range(3))
    print(f"fit: F = {F:.2f} µs, t = {t:.4f} µs a step, X = {X:.2f} µs a segment")
    for r in rows:
        fit = F + t * r[6] + X * r[7]
        print(f"  S {r[0]:5d} H {r[1]:2d}: {r[2]:9.2f} fit {fit:9.2f} ({r[2] / fit - 1:+.1%}); "
              f"steps at t alone {t * r[6]:8.2f}")
PY
