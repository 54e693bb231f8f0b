#!/usr/bin/env python3
"""Issue 17's third bar: the drop-in ops, called from PyTorch through qfuse.torch, against the same
computation written in PyTorch, eager and compiled with torch.compile, side by side in one run on
the shapes of the issue 2/3 bars.

The PyTorch versions, the inputs and the timing method are those of the peer stage
(bench/peers/peers.py: K rotating input sets, a CUDA graph of >= 20 calls, 25 replays between
CUDA events, median per call), so the figures compare with `qfuse bench` and the peers' rows.
Each qfuse row is also checked against the eager PyTorch output of the same inputs (equal bytes,
FP8 codes within one code).

  PYTHONPATH=build-py/python python3 python/bench_dropins.py [--budget-s 240] [--out F.json]
  python3 python/bench_dropins.py --device cpu --tiny   # logic check, no GPU (host_backend)
"""

import argparse
import importlib.util
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# NOTE: this folder holds the package's sources without the built extension: import qfuse from
# PYTHONPATH (build-py/python, build/python) or the installed wheel instead.
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != HERE]


def load_peers():
    path = os.path.join(HERE, "..", "bench", "peers", "peers.py")
    spec = importlib.util.spec_from_file_location("qfuse_peers", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["qfuse_peers"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


# The issue 2 bar (bench/act_quant/routines.cu) and the issue 3 bar (bench/merge_states).
def bar_cases(tiny):
    cases = []
    silu_specs = ["fp8_group128:row:f32", "fp8_group128:col_tma:f32", "nvfp4:swizzled"]
    shapes = [(16, 2048), (16, 7168), (4096, 7168), (16384, 7168), (4096, 14336)]
    if tiny:
        shapes = [(16, 256), (40, 512)]
    for T, H in shapes:
        for s in silu_specs:
            cases.append(("issue2", f"silu_mul_quant/{s}", {"T": T, "H": H}))
    merges = [(2, 1, 16, 128), (2, 256, 16, 128), (2, 4096, 128, 128), (4, 4096, 128, 128),
              (8, 4096, 128, 128), (2, 16384, 16, 512)]
    if tiny:
        merges = [(2, 8, 4, 64), (4, 16, 4, 64)]
    for N, T, H, D in merges:
        cases.append(("issue3", "merge_states/fp8_per_tensor", {"N": N, "T": T, "H": H, "D": D}))
    return cases


def qfuse_fn(torch, qt, routine, N=None):
    """Our op for a case, as (inputs..., given scale) -> outputs in the peer's order and dtypes:
    the drop-in where the reference engine has one, else the core op."""
    fp8 = torch.float8_e4m3fn
    spec = routine.partition("/")[2]
    if routine == "silu_mul_quant/fp8_group128:row:f32":
        return lambda x, scale: qt.silu_and_mul_per_block_quant(x, 128, fp8)
    if routine.startswith("silu_mul_quant/nvfp4"):
        def fp4(x, scale):
            out, bs = qt.silu_mul_quant_alloc(x, spec, scale)
            return out, bs.view(torch.uint8)
        return fp4
    if routine.startswith("silu_mul_quant/"):
        return lambda x, scale: qt.silu_mul_quant_alloc(x, spec)
    if routine == "merge_states/fp8_per_tensor" and N == 2:
        def merge2(o, lse, scale):
            _, T, H, D = o.shape
            out = torch.empty((T, H, D), dtype=fp8, device=o.device)
            out_lse = torch.empty((H, T), dtype=torch.float32, device=o.device)
            qt.merge_attn_states(out, out_lse, o[0], lse[0], o[1], lse[1], scale)
            return out.view(T, H * D), out_lse
        return merge2

    def merge_n(o, lse, scale):
        out, _, out_lse = qt.merge_states_alloc(list(o.unbind(0)), list(lse.unbind(0)), spec,
                                                scale, return_lse=True)
        return out, out_lse
    return merge_n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--tiny", action="store_true", help="small shapes (a logic check)")
    ap.add_argument("--budget-s", type=float, default=240.0)
    ap.add_argument("--out", default="", help="JSON report")
    ap.add_argument("--replays", type=int, default=25)
    args = ap.parse_args(argv)

    import torch

    peers = load_peers()
    if args.device == "cpu":
        sys.path.insert(0, os.path.join(HERE, "tests"))
        import host_backend  # noqa: F401  (the ops on CPU through the host reference)
        from unittest import mock

        for m in host_backend.MODULES:
            mock.patch.object(m, "_q", host_backend.BACKEND).start()
        l2 = 32 << 20
    else:
        l2 = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 50 << 20)
    import qfuse.torch as qt

    make_peer = peers.build_ops(torch).make
    start = time.monotonic()
    rows = []
    print(f"{'case':58s} {'qfuse us':>9s} {'compile':>9s} {'eager':>9s} {'comp/qf':>8s}  check")
    for suite, routine, shape in bar_cases(args.tiny):
        op, spec = peers.classify(routine)
        c = peers.Case(suite, "", routine, shape, op=op, spec=spec)
        row = {"suite": suite, "routine": routine, "shape": shape}
        rows.append(row)
        label = f"{routine} " + " ".join(f"{k}={v}" for k, v in shape.items())
        if time.monotonic() - start > args.budget_s:
            row["skipped"] = "time budget"
            continue
        try:
            _, nbytes = peers.case_bytes(c, shape)
            K = peers.rotating_sets(nbytes, l2)
            sets = [peers.make_inputs(torch, c, shape, args.device, 17 + s) for s in range(K)]
            scale = peers.given_scale(torch, c, args.device)
            calls = -(-max(20, K) // K) * K
            ours = qfuse_fn(torch, qt, routine, shape.get("N"))
            eager = make_peer(c)
            row["check_vs_eager"] = peers.compare_outputs(torch, ours(*sets[0], scale),
                                                          eager(*sets[0], scale))
            for name, fn in (("qfuse", ours), ("eager", eager)):
                row[name] = peers.time_fn(torch, fn, sets, scale, calls, args.replays,
                                          args.device)[0]
            if time.monotonic() - start < args.budget_s:
                torch._dynamo.reset()
                comp = torch.compile(eager, dynamic=False, fullgraph=True)
                comp(*sets[0], scale)
                row["compile"] = peers.time_fn(torch, comp, sets, scale, calls, args.replays,
                                               args.device)[0]
        except Exception as e:  # noqa: BLE001 - a failed row keeps its reason; the run goes on
            row["error"] = f"{type(e).__name__}: {str(e)[:400]}"
        ratio = row["compile"] / row["qfuse"] if row.get("compile") and row.get("qfuse") else 0
        check = row.get("error") or " ".join(
            f"{r.get('equal', 0):.4f}" + (f"/{r['within_one_code']:.4f}"
                                          if "within_one_code" in r else "")
            for r in row.get("check_vs_eager", []))
        print(f"{label:58s} {row.get('qfuse', 0):9.2f} {row.get('compile', 0):9.2f} "
              f"{row.get('eager', 0):9.2f} {ratio:8.2f}  {check}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": args.device, "torch": torch.__version__, "rows": rows}, f,
                      indent=1)
    failed = [r for r in rows if "error" in r]
    print(f"bench_dropins: {len(rows) - len(failed)} rows, {len(failed)} failed, "
          f"{time.monotonic() - start:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
