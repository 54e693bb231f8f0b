#!/usr/bin/env python3
"""Checks of the peer stage that need no GPU (PyTorch on the CPU is enough):

- the byte counts of peers.py equal `qfuse bench --plan`'s for every case of the given plans
  (QFUSE_PLANS="a.json b.json", or made with ./build/qfuse when it exists);
- the PyTorch peers compute what qfuse computes (SPEC §0-§2): E2M1 rounding at every grid point
  and tie, the 128x4 scale swizzle (SPEC's worked example), NVFP4 / per-group / per-token /
  per-tensor dequantization within one step, UE8M0 packed column-major bytes, and the merge
  against a float64 reference with empty partials (-inf, +inf); the ViT peer (SDPA per image)
  against float64 attention, with qfuse's image lengths;
- a --tiny --device cpu run of peers.py, eager and compiled, on a few cases, and eager only on
  the ViT cases.

  python3 bench/peers/test_peers.py      (or pytest bench/peers/test_peers.py)
Skips (exit 0, says so) when PyTorch is not installed.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import peers  # noqa: E402

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None

ops = peers.build_ops(torch) if torch is not None else None


def plans() -> list[str]:
    if os.environ.get("QFUSE_PLANS"):
        return os.environ["QFUSE_PLANS"].split()
    exe = os.path.join(ROOT, "build", "qfuse")
    if not os.path.exists(exe):
        return []
    out = []
    for suite in ("issue2", "issue3", "specs", "quick", "small", "issue15", "issue15_tc"):
        path = os.path.join(tempfile.gettempdir(), f"qfuse_plan_{suite}.json")
        subprocess.run([exe, "bench", "--suite", suite, "--plan", "--json", path], check=True)
        out.append(path)
    return out


def test_bytes_match_qfuse():
    paths = plans()
    if not paths:
        print("  (no plans: build ./build/qfuse or set QFUSE_PLANS; skipped)")
        return
    cases, _ = peers.load_cases(paths)
    assert cases
    for c in cases:
        ours, peer = peers.case_bytes(c, c.shape)
        assert ours == c.ours_bytes, (c.routine, c.shape, ours, c.ours_bytes)
        if c.op == "vit":
            s = c.shape
            assert peer == 4 * s["S"] * s["H"] * s["D"] * 2, (c.routine, s, peer)
            continue
        assert peer - ours == (c.shape["H"] * c.shape["T"] * 4 if c.op == "merge" else 0)
    print(f"  {len(cases)} cases: byte counts equal qfuse's")


def test_e2m1_codes():
    grid = [0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2, 2.5, 3, 3.5, 4, 5, 6, 7, 1e9]
    want = [0, 0, 1, 2, 2, 2, 3, 4, 4, 4, 5, 6, 6, 6, 7, 7, 7]  # ties to the even code
    v = torch.tensor(grid)
    assert ops.e2m1_codes(v).tolist() == want
    assert ops.e2m1_codes(-v[1:]).tolist() == [8 | c for c in want[1:]]


def test_swizzle_worked_example():
    # SPEC §0.3: 5 rows, n = 512 -> 32 scales a row, buffer 128 x 32 = 4096 bytes; scale
    # (m=3, k=9) at byte 1073; padding zero.
    T, K = 5, 32
    sfb = (torch.arange(T * K, dtype=torch.int32).view(T, K) % 250 + 1).to(torch.uint8)
    sw = ops.swizzle_128x4(sfb).reshape(-1)
    assert sw.numel() == 4096
    assert int(sw[1073]) == int(sfb[3, 9])
    for m in range(T):
        for k in range(K):
            off = ((m // 128) * (K // 4) * 512 + (k // 4) * 512 + (m % 32) * 16
                   + ((m % 128) // 32) * 4 + k % 4)
            assert int(sw[off]) == int(sfb[m, k])
    assert int((sw != 0).sum()) == T * K


def e2m1_value(code):
    mag = torch.tensor([0, 0.5, 1, 1.5, 2, 3, 4, 6])[(code & 7).long()]
    return torch.where((code & 8) != 0, -mag, mag)


def test_nvfp4_dequantizes_within_a_step():
    torch.manual_seed(0)
    T, H = 37, 256
    y = (torch.randn(T, H) * 2).clamp(-8, 8)  # |y| <= 8: the given global scale's range
    gs = torch.tensor([peers.NVFP4_GLOBAL_SCALE])
    q, sf = ops.quantize(y, peers.parse_spec("nvfp4:linear"), gs)
    assert q.shape == (T, H // 2) and q.dtype == torch.uint8 and sf.shape == (T, H // 16)
    codes = torch.stack([q & 15, q >> 4], dim=-1).view(T, H)
    block = sf.view(torch.float8_e4m3fn).float() / gs  # dequant scale per block
    deq = e2m1_value(codes).view(T, H // 16, 16) * block.unsqueeze(-1)
    err = (deq - y.view(T, H // 16, 16)).abs()
    assert bool((err <= 1.5 * block.unsqueeze(-1) + 1e-6).all()), float(err.max())
    q2, sw = ops.quantize(y, peers.parse_spec("nvfp4:swizzled"), gs)
    assert torch.equal(q, q2) and sw.shape == (128, 16)
    assert torch.equal(sw.reshape(-1), ops.swizzle_128x4(sf).reshape(-1))


def test_per_group_and_layouts():
    torch.manual_seed(1)
    T, H = 6, 384  # T not a multiple of 4: col_tma pads
    y = torch.randn(T, H) * 2
    y[2, 128:256] = 0  # an all-zero group: min_scale, zero codes
    q, s = ops.quantize(y, peers.parse_spec("fp8_group128:row:f32"), None)
    assert s.shape == (T, 3) and q.dtype == torch.float8_e4m3fn
    assert float(s[2, 1]) == float(torch.tensor(peers.MIN_SCALE, dtype=torch.float32))
    deq = q.float().view(T, 3, 128) * s.unsqueeze(-1)
    err = (deq - y.view(T, 3, 128)).abs()
    assert bool((err <= y.view(T, 3, 128).abs() / 16 + s.unsqueeze(-1) / 512).all())
    _, sc = ops.quantize(y, peers.parse_spec("fp8_group128:col:f32"), None)
    assert torch.equal(sc, s.t())
    _, st = ops.quantize(y, peers.parse_spec("fp8_group128:col_tma:f32"), None)
    assert st.shape == (3, 8) and torch.equal(st[:, :T], s.t()) and bool((st[:, T:] == 0).all())
    q2, s2 = ops.quantize(y, peers.parse_spec("fp8_group128:row:ue8m0"), None)
    assert bool((torch.log2(s2) == torch.ceil(torch.log2(s2))).all()) and bool((s2 >= s).all())
    q3, b = ops.quantize(y, peers.parse_spec("fp8_group128:col_tma:ue8m0_packed"), None)
    assert torch.equal(q2.view(torch.uint8), q3.view(torch.uint8))
    assert b.shape == (1, 8, 4) and b.dtype == torch.uint8  # [G4/4, round_up(T, 4), 4]
    for t in range(T):
        for j in range(3):
            assert 2.0 ** (int(b[j // 4, t, j % 4]) - 127) == float(s2[t, j])
    assert int(b[0, :, 3].abs().sum()) == 0 and int(b[0, T:, :].sum()) == 0  # padding
    _, br = ops.quantize(y, peers.parse_spec("fp8_group128:row:ue8m0_packed"), None)
    assert br.shape == (T, 4) and torch.equal(br[:, :3], b[0, :T, :3])


def test_outputs_are_dense_in_their_layout():
    """Every output buffer contiguous, of the shape qfuse writes (scale_shape()), also where a
    pad is by 0 (T a multiple of 4)."""
    torch.manual_seed(4)
    T, H = 8, 256
    y = torch.randn(T, H)
    for text, shapes in [
        ("fp8_group128:row:f32", [(T, H), (T, 2)]),
        ("fp8_group128:col:f32", [(T, H), (2, T)]),
        ("fp8_group128:col_tma:f32", [(T, H), (2, T)]),
        ("fp8_group128:col:ue8m0_packed", [(T, H), (1, T, 4)]),
        ("fp8_group128:row:ue8m0_packed", [(T, H), (T, 4)]),
        ("fp8_per_token", [(T, H), (T,)]),
        ("nvfp4:swizzled", [(T, H // 2), (128, 16)]),
        ("nvfp4:linear", [(T, H // 2), (T, 16)]),
    ]:
        scale = torch.tensor([peers.NVFP4_GLOBAL_SCALE if "nvfp4" in text else 0.05])
        outs = ops.quantize(y, peers.parse_spec(text), scale)
        assert [tuple(o.shape) for o in outs] == shapes, (text, [o.shape for o in outs])
        assert all(o.is_contiguous() for o in outs), text
    _, s_row = ops.quantize(y, peers.parse_spec("fp8_group128:row:f32"), None)
    _, s_col = ops.quantize(y, peers.parse_spec("fp8_group128:col:f32"), None)
    assert torch.equal(s_col.reshape(-1), s_row.t().reshape(-1))  # element (t, j) at j*T + t


def test_per_token_and_per_tensor():
    torch.manual_seed(2)
    y = torch.randn(5, 64) * 4
    q, s = ops.quantize(y, peers.parse_spec("fp8_per_token"), None)
    assert s.shape == (5,)
    assert torch.allclose(s, y.abs().amax(-1) / 448)
    scale = torch.tensor([peers.PER_TENSOR_SCALE])
    (qt,) = ops.quantize(y, peers.parse_spec("fp8_per_tensor"), scale)
    want = (y * (1.0 / scale)).clamp(-448, 448).to(torch.float8_e4m3fn)
    assert torch.equal(qt.view(torch.uint8), want.view(torch.uint8))


def merge_reference(o, lse):
    """SPEC §2 in float64, one (t, h) at a time."""
    N, T, H, D = o.shape
    out = torch.zeros(T, H, D, dtype=torch.float64)
    out_lse = torch.zeros(H, T, dtype=torch.float64)
    for t in range(T):
        for h in range(H):
            ls = [float(lse[i, h, t]) for i in range(N)]
            ls = [-math.inf if math.isinf(v) else v for v in ls]
            m = max(ls)
            if m == -math.inf:
                out_lse[h, t] = -math.inf
                continue
            w = [math.exp(v - m) for v in ls]
            s = sum(w)
            out_lse[h, t] = math.log(s) + m
            for i in range(N):
                out[t, h] += (w[i] / s) * o[i, t, h].double()
    return out.reshape(T, H * D), out_lse


def test_merge_matches_float64_reference():
    torch.manual_seed(3)
    N, T, H, D = 3, 7, 2, 16
    o = torch.randn(N, T, H, D).to(torch.bfloat16)
    lse = torch.rand(N, H, T) * 8 - 4
    lse[:, 1, 2] = -math.inf  # every partial empty
    lse[0, 0, 3] = math.inf  # the +inf convention for an empty partial
    lse[1, 0, 4] = -math.inf
    out, out_lse = ops.merge(o, lse)
    ref, ref_lse = merge_reference(o, lse)
    assert not bool(torch.isnan(out).any()) and not bool(torch.isnan(out_lse).any())
    assert torch.allclose(out.double(), ref, atol=1e-5, rtol=1e-5)
    assert float(out_lse[1, 2]) == -math.inf and bool((out.view(T, H, D)[2, 1] == 0).all())
    finite = torch.isfinite(ref_lse)
    assert torch.allclose(out_lse.double()[finite], ref_lse[finite], atol=1e-5)


def test_vit_image_lengths_match_qfuse():
    # vit_image_lengths() of bench/vit_attention/routines.cu (tests/bench/test_timing.cpp).
    assert peers.image_lengths(8192, 4) == [819, 1638, 2457, 3278]
    assert peers.image_lengths(4096, 1) == [4096]
    for S, n in [(3, 3), (10, 4), (100, 7), (16384, 16)]:
        lens = peers.image_lengths(S, n)
        assert len(lens) == n and sum(lens) == S and min(lens) >= 1, (S, n, lens)
    assert peers.vit_flops({"S": 8192, "H": 16, "D": 72, "NIMG": 4}) == \
        4 * (819**2 + 1638**2 + 2457**2 + 3278**2) * 16 * 72


def test_vit_sdpa_matches_float64():
    torch.manual_seed(5)
    H, D = 2, 72
    lens = [1, 5, 12]
    t = [torch.randn(1, H, n, D).to(torch.bfloat16) for n in lens for _ in range(3)]
    outs = ops.sdpa("default")(*t, torch.tensor([1.0]))
    assert len(outs) == len(lens)
    for i, n in enumerate(lens):
        q, k, v = (x.double()[0] for x in t[3 * i: 3 * i + 3])  # [H, n, D]
        p = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D), dim=-1)
        ref = p @ v
        assert outs[i].shape == (1, H, n, D) and outs[i].dtype == torch.bfloat16
        assert torch.allclose(outs[i].double()[0], ref, atol=2e-2, rtol=2e-2), i


def test_cpu_run_of_the_script():
    paths = plans()
    if not paths:
        print("  (no plans; skipped)")
        return
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "peers.json")
        cmd = [sys.executable, os.path.join(HERE, "peers.py"), "--device", "cpu", "--tiny",
               "--replays", "2", "--min-calls", "1", "--budget-s", "300", "--out", out,
               "--only", "merge_states/nvfp4"]
        for p in paths[:2]:
            cmd += ["--plan", p]
        subprocess.run(cmd, check=True)
        doc = json.load(open(out))
        rows = doc["results"]
        assert rows and all("timing" in r for r in rows), [r.get("error") for r in rows]
        assert {r["peer"] for r in rows} == {"eager", "compile"}
        for r in rows:
            if r["peer"] == "compile":
                values, scales, lse = r["check_vs_eager"]
                assert values["equal"] > 0.99 and scales["equal"] > 0.99, r["check_vs_eager"]
                assert lse["same_nonfinite"] and lse["max_abs_diff"] < 1e-4, lse
        if not any("issue15" in p for p in paths):
            return
        cmd = [sys.executable, os.path.join(HERE, "peers.py"), "--device", "cpu", "--tiny",
               "--replays", "2", "--min-calls", "1", "--budget-s", "300", "--out", out,
               "--only", "vit_", "--plan", [p for p in paths if "issue15" in p][0]]
        subprocess.run(cmd, check=True)
        rows = json.load(open(out))["results"]
        assert rows and all("timing" in r for r in rows), [r.get("error") for r in rows]
        assert {r["peer"] for r in rows} == {"eager"}  # eager only
        assert all(r["sdpa_backend"].startswith("default") and r["tflops"] > 0 for r in rows)
        assert not any(r["routine"].startswith("vit_quant") for r in rows)  # no peer


def run_in_process(extra: list[str], compile_fn) -> list[dict]:
    """peers.main() on two quantize cases with torch.compile replaced by `compile_fn`."""
    paths = plans()
    real = torch.compile
    torch.compile = compile_fn
    try:
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "p.json")
            argv = ["--device", "cpu", "--tiny", "--replays", "1", "--min-calls", "1", "--out",
                    out, "--only", "quantize/fp8_per_to", "--modes", "compile"] + extra
            for p in paths[:1]:
                argv += ["--plan", p]
            assert peers.main(argv) == 0
            return json.load(open(out))["results"]
    finally:
        torch.compile = real


def test_a_failed_or_slow_compile_is_recorded_and_the_run_goes_on():
    if not plans():
        print("  (no plans; skipped)")
        return
    calls = []

    def failing_once(fn, **kw):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected compile failure")
        return fn

    rows = run_in_process([], failing_once)
    assert len(rows) == 2 and "injected" in rows[0]["error"] and "timing" in rows[1], rows

    def slow(fn, **kw):
        def wrapped(*a):
            time.sleep(3)
            return fn(*a)

        return wrapped

    rows = run_in_process(["--compile-timeout-s", "1"], slow)
    assert all("CompileTimeout" in r.get("error", "") for r in rows), rows
    rows = run_in_process(["--budget-s", "5"], lambda fn, **kw: fn)
    assert all(r.get("skipped", "").startswith("time budget") for r in rows), rows


def main() -> int:
    if torch is None:
        print("test_peers: PyTorch is not installed; skipped")
        return 0
    tests = [v for k, v in sorted(globals().items()) if k.startswith("test_") and callable(v)]
    failed = 0
    for t in tests:
        try:
            t()
            print(f"PASS {t.__name__}")
        except Exception as e:  # noqa: BLE001
            failed += 1
            print(f"FAIL {t.__name__}: {type(e).__name__}: {e}")
    print(f"{len(tests) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
