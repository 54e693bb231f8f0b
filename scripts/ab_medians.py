#!/usr/bin/env python3
"""Medians of same-run A/B device benchmarks, for scripts/ab_pending.sh, gpu_quick.sh, gpu_ab.sh.

usage: ab_medians.py DIR BASE VARIANT...
Reads DIR/<group>_<variant>_<round>.json (`qfuse bench --json`), prints the wgmma rates of
DIR/rates.json if present, then one line per (group, row): each variant's median over rounds, us,
and its ratio to BASE's median (BASE may be one of the variants or absent).
"""
import glob
import json
import os
import statistics
import sys


def main():
    out, base, variants = sys.argv[1], sys.argv[2], sys.argv[3:]
    rates = os.path.join(out, "rates.json")
    if os.path.exists(rates):
        print("== wgmma_rate (routine, shape, TFLOPS)")
        for r in json.load(open(rates))["results"]:
            shape = " ".join(f"{a}={b}" for a, b in r["shape"].items())
            print(f'  {r["routine"]:32} {shape[:40]:40} {r["timing"].get("tflops", 0):8.1f}')
    rows = {}
    for path in glob.glob(os.path.join(out, "*.json")):
        parts = os.path.basename(path)[:-5].split("_")
        if len(parts) != 3 or parts[1] not in variants:
            continue
        group, v, _ = parts
        for x in json.load(open(path)).get("results", []):
            if "read_only" in x["routine"] or "timing" not in x:
                continue
            shape = " ".join(f"{a}={b}" for a, b in x["shape"].items())
            rows.setdefault((group, x["routine"] + " " + shape), {}).setdefault(v, []).append(
                x["timing"]["median_us"])
    print(f"== medians over rounds, us (each variant / {base})")
    for group, k in sorted(rows):
        d = rows[(group, k)]
        ref = statistics.median(d[base]) if base in d else None
        line = f"{k[:58]:58}"
        for v in variants:
            if v in d:
                m = statistics.median(d[v])
                line += f" {v} {m:9.2f}" + (f" ({m / ref:.3f})" if ref and v != base else "")
        print(line)


if __name__ == "__main__":
    main()
