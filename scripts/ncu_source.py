#!/usr/bin/env python3
"""Reads an Nsight Compute source page (scripts/profile.sh with QFUSE_PROFILE_SOURCE=1 writes
$OUT/src_<case>.csv.gz: one row per SASS instruction with its warp-stall samples by reason) and
prints where a kernel's warps spend their time:

  - the samples by stall reason, over the whole kernel;
  - the samples by execution count (instructions executed the same number of times form a
    region: the steady-state loop, once per piece, once per block, a retry loop), which tells
    per-step costs from per-piece ones;
  - the instructions with the most samples, with their top reasons.

  python3 scripts/ncu_source.py src_mla_bf16_pair_compute.csv.gz [--top N]
  python3 scripts/ncu_source.py FILE --around 0x1b040 [--lines N]   (the SASS around an offset)
  python3 scripts/ncu_source.py FILE --split 0x5600,0x5810,0x61a0,0x7500,0x9840 [--per 131072]
      (segments between offsets, e.g. a tile loop's wait / QK / softmax / PV: instructions,
      executions per iteration (--per: the loop's execution count), samples, reasons, opcodes)

Offsets are from the kernel's first instruction. A TRYWAIT + branch loop's samples are an
mbarrier wait (long scoreboard: its TMA data had not landed); BAR.SYNC's are named-barrier
waits (reported on the next instruction); no_inst on straight-line code run once is instruction
fetch (bench/NOTES.md M19).
"""
import argparse
import collections
import csv
import gzip


def load(path):
    opener = gzip.open if path.endswith(".gz") else open
    rows = list(csv.reader(opener(path, "rt")))
    start = next(i for i, r in enumerate(rows) if r and r[0] == "Address")
    hdr = rows[start]
    data = [r for r in rows[start + 1:] if len(r) >= len(hdr)]
    ix = {h: i for i, h in enumerate(hdr)}
    reasons = [h for h in hdr if h.startswith("stall_") and "(Not Issued)" not in h]
    base = int(data[0][ix["Address"]], 16)

    def num(x):
        try:
            return int(x)
        except ValueError:
            return 0

    out = []
    for r in data:
        out.append({
            "off": int(r[ix["Address"]], 16) - base,
            "sass": r[ix["Source"]].strip(),
            "samples": num(r[ix["Warp Stall Sampling (All Samples)"]]),
            "executed": num(r[ix["Instructions Executed"]]),
            "reasons": collections.Counter({h[6:]: num(r[ix[h]]) for h in reasons}),
        })
    return out


def fmt(c, n=3):
    return " ".join(f"{k}={v}" for k, v in c.most_common(n) if v)


def opcode(sass):
    words = sass.split()
    return words[1] if words and words[0].startswith("@") and len(words) > 1 else words[0]


def split(ins, bounds, per):
    """Per segment [bounds[i], bounds[i + 1]): instructions executed, executions per iteration
    (sum of executions / per), share of all samples, top reasons and opcodes."""
    total = sum(x["samples"] for x in ins) or 1
    for lo, hi in zip(bounds, bounds[1:]):
        xs = [x for x in ins if lo <= x["off"] < hi and x["executed"] > 0]
        rs, ops = collections.Counter(), collections.Counter()
        for x in xs:
            rs.update(x["reasons"])
            ops[opcode(x["sass"])] += 1
        n_per = f" per-iteration {sum(x['executed'] for x in xs) / per:6.0f}" if per else ""
        print(f"{lo:6x}-{hi:6x} instructions {len(xs):5d}{n_per} "
              f"samples {100 * sum(x['samples'] for x in xs) / total:5.1f} %  {fmt(rs, 4)}")
        print("    " + ", ".join(f"{k}:{v}" for k, v in ops.most_common(8)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--around", type=lambda s: int(s, 16))
    ap.add_argument("--lines", type=int, default=12)
    ap.add_argument("--split", type=lambda s: [int(v, 16) for v in s.split(",")])
    ap.add_argument("--per", type=int, default=0)
    a = ap.parse_args()
    ins = load(a.file)
    if a.split:
        split(ins, a.split, a.per)
        return
    if a.around is not None:
        k = min(range(len(ins)), key=lambda i: abs(ins[i]["off"] - a.around))
        for x in ins[max(0, k - a.lines):k + 4]:
            print(f"{x['off']:6x} s={x['samples']:5d} ex={x['executed']:8d} {x['sass'][:80]}")
        return
    total = sum(x["samples"] for x in ins) or 1
    by_reason = collections.Counter()
    for x in ins:
        by_reason.update(x["reasons"])
    print(f"{len(ins)} instructions, {total} samples")
    for k, v in by_reason.most_common(10):
        print(f"  {k:18s} {v:7d} {100 * v / total:5.1f} %")
    print("by execution count (a region each):")
    groups = collections.defaultdict(lambda: [0, 0, None, collections.Counter()])
    for x in ins:
        g = groups[x["executed"]]
        g[0] += 1
        g[1] += x["samples"]
        g[2] = x["off"] if g[2] is None else g[2]
        g[3].update(x["reasons"])
    for ex, (n, s, first, rs) in sorted(groups.items(), key=lambda kv: -kv[1][1])[:12]:
        print(f"  executed {ex:9d}: {n:6d} instructions from {first:6x}, "
              f"{100 * s / total:5.1f} %  {fmt(rs, 4)}")
    print("instructions with the most samples:")
    for x in sorted(ins, key=lambda x: -x["samples"])[:a.top]:
        print(f"  {x['off']:6x} {100 * x['samples'] / total:5.2f} % ex={x['executed']:8d} "
              f"{x['sass'][:58]:58s} {fmt(x['reasons'])}")


if __name__ == "__main__":
    main()
