#!/usr/bin/env python3
"""Reads the FP8 ViT kernel's timeline (src/vit_attention/trace.h; a QFUSE_VIT_TRACE build) and
prints where the blocks' time goes: per block, the setup, each segment's fill (loop top to the
first softmax), its steps (first softmax to the last P V), its merge and its store, and the
gaps; then the sums over the grid and the slowest blocks.

    python3 scripts/vit_trace.py trace.bin [blocks]

Clock64 values are turned into µs with each block's own rate (its clock64 span over its
globaltimer span): SM clocks are not comparable between SMs, globaltimer is.
"""
import statistics
import struct
import sys

BLOCKS = 4096
HEAD = 8
SEG_WORDS = 9
MAX_SEGS = 32
STRIDE = HEAD + MAX_SEGS * SEG_WORDS
(GT_START, GT_END, CLK_START, CLK_SETUP, CLK_END, SEG_COUNT, SMID) = range(7)
(INFO, BEGIN, QREADY, FIRST, LOOP_END, MERGE_END, STORE_END, PROD_Q, PROD_KV) = range(9)


def main():
    data = open(sys.argv[1], "rb").read()
    words = struct.unpack("<%dQ" % (len(data) // 8), data)
    limit = int(sys.argv[2]) if len(sys.argv) > 2 else BLOCKS
    blocks = []
    for b in range(min(limit, BLOCKS)):
        w = words[b * STRIDE:(b + 1) * STRIDE]
        if w[GT_END] == 0 or w[CLK_END] <= w[CLK_START]:
            continue
        blocks.append((b, w))
    if not blocks:
        print("no traced blocks")
        return
    t0 = min(w[GT_START] for _, w in blocks)
    t1 = max(w[GT_END] for _, w in blocks)
    print("blocks traced: %d, kernel span (globaltimer) %.2f µs" % (len(blocks), (t1 - t0) / 1e3))
    starts = sorted((w[GT_START] - t0) / 1e3 for _, w in blocks)
    ends = sorted((w[GT_END] - t0) / 1e3 for _, w in blocks)
    print("block starts: first %.2f median %.2f last %.2f µs; ends: first %.2f median %.2f "
          "last %.2f µs" % (starts[0], statistics.median(starts), starts[-1], ends[0],
                            statistics.median(ends), ends[-1]))
    keys = ["setup", "qwait", "fill", "steps", "merge", "store", "gap"]
    tot = {k: [] for k in keys}
    step_us, nsegs, nsplit, rows = [], [], [], []
    for b, w in blocks:
        ghz = (w[CLK_END] - w[CLK_START]) / max(1, w[GT_END] - w[GT_START])  # cycles per ns
        us = lambda c: c / ghz / 1e3
        n = min(w[SEG_COUNT], MAX_SEGS)
        acc = {k: 0.0 for k in keys}
        acc["setup"] = us(w[CLK_SETUP] - w[CLK_START])
        prev = w[CLK_SETUP]
        tiles_total = 0
        splits = 0
        for i in range(n):
            s = w[HEAD + i * SEG_WORDS:HEAD + (i + 1) * SEG_WORDS]
            tiles = s[INFO] & 0xFFFF
            if tiles == 0:
                continue
            splits += (s[INFO] >> 16) & 1
            tiles_total += tiles
            store_end = s[STORE_END] if s[STORE_END] else s[MERGE_END]
            acc["gap"] += us(s[BEGIN] - prev)
            acc["qwait"] += us(s[QREADY] - s[BEGIN])
            acc["fill"] += us(s[FIRST] - s[QREADY])
            acc["steps"] += us(s[LOOP_END] - s[FIRST])
            acc["merge"] += us(s[MERGE_END] - s[LOOP_END])
            acc["store"] += us(store_end - s[MERGE_END])
            if tiles > 1:
                step_us.append(us(s[LOOP_END] - s[FIRST]) / (tiles - 1))
            prev = store_end
        acc["gap"] += us(w[CLK_END] - prev)
        for k in keys:
            tot[k].append(acc[k])
        nsegs.append(n)
        nsplit.append(splits)
        rows.append((us(w[CLK_END] - w[CLK_START]), b, w[SMID], n, splits, tiles_total, acc,
                     (w[GT_START] - t0) / 1e3))
    print("segments a block: mean %.2f (split %.2f); µs per step after the first: median %.3f" %
          (statistics.mean(nsegs), statistics.mean(nsplit),
           statistics.median(step_us) if step_us else float("nan")))
    print("mean µs a block: " + ", ".join("%s %.2f" % (k, statistics.mean(tot[k])) for k in keys))
    busy = statistics.mean(r[0] for r in rows)
    print("mean block span %.2f µs (clock64), of which steps %.1f %%" %
          (busy, 100 * statistics.mean(tot["steps"]) / busy))
    rows.sort(key=lambda r: -r[0])
    print("slowest blocks (span µs, block, SM, segments, split, tiles, start µs | parts):")
    for r in rows[:8]:
        print("  %.2f b%d sm%d segs %d split %d tiles %d start %.2f | %s" %
              (r[0], r[1], r[2], r[3], r[4], r[5], r[7],
               " ".join("%s %.2f" % (k, r[6][k]) for k in keys)))


if __name__ == "__main__":
    main()
