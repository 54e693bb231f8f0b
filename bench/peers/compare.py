#!/usr/bin/env python3
"""Prints ours against the PyTorch peers, row by row (matched by routine and shape).

  python3 bench/peers/compare.py --peers peers.json bench_issue2.json bench_issue3.json

eager/ours and compile/ours are time ratios, the peer's median over ours (> 1: ours is faster),
as "unfused/fused" in `qfuse bench`. Needs no PyTorch.
"""

from __future__ import annotations

import argparse
import json
import sys


def key(routine: str, shape: dict):
    return routine, tuple(sorted((k, int(v)) for k, v in shape.items()))


def shape_str(shape: dict) -> str:
    order = ["N", "T", "S", "H", "D", "NIMG"]
    return " ".join(f"{k}={shape[k]}" for k in sorted(shape, key=lambda k: order.index(k)
                                                      if k in order else 9))


def cell(row, ours_us):
    """(µs text, ratio text) of one peer row."""
    if row is None:
        return "—", ""
    if "timing" in row:
        us = row["timing"]["median_us"]
        ratio = f"{us / ours_us:.2f}×" if ours_us else ""
        return f"{us:.2f}", ratio
    if "skipped" in row:
        return "skipped", ""
    return "FAILED", ""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peers", required=True, help="peers.py's JSON")
    ap.add_argument("ours", nargs="*", help="`qfuse bench --json` reports")
    args = ap.parse_args(argv)
    try:
        with open(args.peers) as f:
            peers = json.load(f)
    except (OSError, ValueError) as e:
        print(f"peers: no peer results ({e})")
        return 1
    by_key = {}
    for r in peers.get("results", []):
        if "shape" in r and "peer" in r:
            by_key[(key(r["routine"], r["shape"]), r["peer"])] = r
    comp = peers.get("compile", {})
    print(f"peers: PyTorch {peers.get('torch')} (Triton {peers.get('triton')}) on "
          f"{peers.get('device', {}).get('name')}: eager, and torch.compile (Inductor, mode "
          f"{comp.get('mode')}, dynamic={comp.get('dynamic')}) on the same cases in the same "
          "device call" + (" [--tiny: shapes differ, no rows match]" if peers.get("tiny") else ""))
    print("  eager/ours, compile/ours: the peer's median time over ours (> 1: ours faster); "
          "the merge peers also write the merged lse")
    vit = [r for r in peers.get("results", []) if r.get("sdpa_backend")]
    if vit:
        backends = sorted({r["sdpa_backend"].split(" (")[0] for r in vit})
        print("  vit_attention / vit_layer rows: PyTorch scaled_dot_product_attention in bf16 per "
              f"image (backend: {', '.join(backends)}), eager only; issue 15's bar: "
              "vit_layer/fp8_* eager/ours >= 1.5")
        for r in vit:
            if r["sdpa_backend"] != "cudnn":
                print(f"  SDPA {r['routine']} {shape_str(r['shape'])}: {r['sdpa_backend'][:240]}")
                break

    rows = []
    for path in args.ours:
        try:
            with open(path) as f:
                doc = json.load(f)
        except (OSError, ValueError) as e:
            print(f"  {path}: unreadable ({e})")
            continue
        for r in doc.get("results", []):
            if r.get("is_unfused_peer"):
                continue
            k = key(r["routine"], r["shape"])
            e, c = by_key.get((k, "eager")), by_key.get((k, "compile"))
            if e is None and c is None:
                continue
            ours = (r.get("timing") or {}).get("median_us")
            rows.append((r["routine"], shape_str(r["shape"]), ours, e, c))
    if not rows:
        print("  no row of ours has a peer row")
        return 0
    name_w = max(len("routine"), max(len(r[0]) for r in rows))
    shape_w = max(len("shape"), max(len(r[1]) for r in rows))
    cols = [("ours µs", 9), ("eager µs", 10), ("compile µs", 10), ("eager/ours", 10),
            ("compile/ours", 12)]
    print(f"{'routine':<{name_w}}  {'shape':<{shape_w}}" +
          "".join(f"  {h:>{w}}" for h, w in cols))
    for routine, shape, ours, e, c in rows:
        eu, er = cell(e, ours)
        cu, cr = cell(c, ours)
        vals = [f"{ours:.2f}" if ours else "FAILED", eu, cu, er, cr]
        print(f"{routine:<{name_w}}  {shape:<{shape_w}}" +
              "".join(f"  {v:>{w}}" for v, (_, w) in zip(vals, cols)))

    res = peers.get("results", [])
    n = {m: sum(1 for r in res if r.get("peer") == m and "timing" in r)
         for m in ("eager", "compile")}
    failed = [r for r in res if "error" in r]
    skipped = [r for r in res if "skipped" in r]
    print(f"peers: {n['eager']} eager and {n['compile']} compiled rows timed, "
          f"{len(failed)} failed, {len(skipped)} skipped; {peers.get('elapsed_s', '?')} s of a "
          f"{peers.get('budget_s')} s budget"
          + ("" if "elapsed_s" in peers else " (the run did not finish)"))
    reasons = {}
    for r in skipped:
        reasons.setdefault(r["skipped"].split(":")[0], []).append(r)
    for why, rs in reasons.items():
        print(f"  skipped ({why}): {len(rs)} rows")
    for r in failed[:12]:
        msg = " | ".join(ln.strip() for ln in r["error"].splitlines() if ln.strip())[:240]
        print(f"  FAILED {r.get('peer')} {r['routine']} {shape_str(r.get('shape', {}))}: {msg}")
    mismatches = [r for r in res if "bytes_mismatch" in r]
    for r in mismatches[:5]:
        print(f"  BYTES {r['routine']} {shape_str(r['shape'])}: {r['bytes_mismatch']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
