#!/usr/bin/env python3
"""The peer stage of the benchmarks: PyTorch eager and torch.compile versions of qfuse's ops.

PyTorch is a peer in the benchmark, never a dependency of the library. This script times, on the
same cases as `qfuse bench` (read from `qfuse bench --suite S --plan --json F` or from the JSON of
a `qfuse bench` run), the same computation written in plain PyTorch:

  silu_mul_quant/<spec>   y = silu(x[:, :H]) * x[:, H:] in fp32, then quantized as <spec>
  silu_and_mul            the same, bf16 out
  quantize/<spec>         x [T, H] bf16 quantized as <spec>
  merge_states/<spec>     N partials o [N, T, H, D] bf16 + lse [N, H, T] -> merged [T, H*D] as
                          <spec>, and the merged lse [H, T] fp32 written too (as the torch.compile
                          peer of shared/PEERS.md does)
  merge_states            the same, bf16 out
  vit_attention/<in>[:k]  PyTorch's scaled_dot_product_attention in bf16 on the same shapes: per
  vit_layer/<path>        image q, k, v [1, H, len, D] (the batch's NIMG image lengths as qfuse
                          makes them), non-causal, scale 1/sqrt(D); the cuDNN backend
                          (sdpa_kernel(SDPBackend.CUDNN_ATTENTION)) when it runs the case, else
                          PyTorch's default choice (the row says which, and why). Eager only:
                          torch.compile would call the same kernel. Bytes: ours for the case;
                          the peer reads bf16 q, k, v and writes bf16 o (peer_bytes_per_call);
                          FLOPs 4 sum_i len_i^2 H D (tflops)

<spec>: fp8_per_tensor (static scale, x * (1/s)), fp8_per_token, fp8_group{64,128}:{row,col,
col_tma}:{f32,ue8m0,ue8m0_packed}, nvfp4:{swizzled,linear} (E2M1 rounded in software, packed two
per byte, E4M3 block scales in the 128x4 swizzle of SPEC §0.3): the same bytes as ours.

Each case runs twice: "eager" (the PyTorch ops as written) and "compile" (torch.compile, Inductor,
dynamic=False, fullgraph=True; mode "default" unless --compile-mode says otherwise; compiled
once per case after torch._dynamo.reset(), so no case falls back to eager on a recompile limit).
Timing (SPEC §8): K rotating input sets (K * bytes >= 2 * L2, K <= 64), a CUDA graph of >= 20
calls rotating through them (calls a multiple of K), 25 replays between CUDA events, median per
call; eager launches between events when a graph cannot be captured (the row says so). Bytes:
ours for the case (each input read once, each output and scale written once, plus the 4-byte
given scale where the spec reads one); the merge peer also writes its lse, counted in its own
GB/s (peer_bytes_per_call). The comparison is by time.

Robustness: every case runs under try/except (a failure is recorded with its reason and the run
goes on); cases run in priority order (the bar shapes of issue 19 first), eager then compiled,
each compile only while the time budget (--budget-s) has room for it and under a per-compile
alarm; the JSON is rewritten after every row, so a run killed from outside keeps what it has.

  python3 bench/peers/peers.py --plan plan_issue2.json --plan plan_issue3.json --out peers.json
  python3 bench/peers/peers.py --plan plan.json --device cpu --tiny --out /tmp/p.json  # logic check
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from types import SimpleNamespace

FP8_MAX = 448.0
MIN_SCALE = 1.0 / (448.0 * 512.0)  # SPEC §0.2
PER_TENSOR_SCALE = 0.05  # bench_given_scale() of bench/routines_act_quant.cu
NVFP4_GLOBAL_SCALE = 448.0 * 6.0 / 8.0


# ---- cases -------------------------------------------------------------------------------------


@dataclass
class Spec:
    kind: str  # fp8_per_tensor | fp8_per_token | fp8_group | nvfp4 | none
    group: int = 0
    layout: str = ""  # row | col | col_tma | swizzled | linear
    fmt: str = ""  # f32 | ue8m0 | ue8m0_packed | e4m3

    @property
    def reads_scale(self) -> bool:
        return self.kind in ("fp8_per_tensor", "nvfp4")


def parse_spec(text: str) -> Spec:
    if text in ("", "none"):
        return Spec("none")
    if text in ("fp8_per_tensor", "fp8_per_token"):
        return Spec(text)
    parts = text.split(":")
    if parts[0].startswith("fp8_group") and len(parts) == 3:
        g = int(parts[0][len("fp8_group"):])
        if g not in (64, 128) or parts[1] not in ("row", "col", "col_tma") or parts[2] not in (
            "f32",
            "ue8m0",
            "ue8m0_packed",
        ):
            raise ValueError(f"unsupported spec {text!r}")
        return Spec("fp8_group", g, parts[1], parts[2])
    if parts[0] == "nvfp4" and len(parts) == 2 and parts[1] in ("swizzled", "linear"):
        return Spec("nvfp4", 16, parts[1], "e4m3")
    raise ValueError(f"unsupported spec {text!r}")


@dataclass
class Case:
    suite: str
    section: str
    routine: str
    shape: dict
    ours_bytes: int | None = None  # bytes_per_call of `qfuse bench` for this case
    ours_us: float | None = None  # our median, when read from a bench JSON
    op: str = ""  # silu | quantize | merge | vit
    spec: Spec = field(default_factory=lambda: Spec("none"))

    @property
    def eager_only(self) -> bool:
        """The vit peers are SDPA calls: torch.compile would call the same kernel."""
        return self.op == "vit"

    def key(self):
        return (self.routine, tuple(sorted(self.shape.items())))

    def shape_str(self) -> str:
        order = ["N", "T", "S", "H", "D", "NIMG"]
        keys = sorted(self.shape, key=lambda k: order.index(k) if k in order else 9)
        return " ".join(f"{k}={self.shape[k]}" for k in keys)


def classify(routine: str):
    """(op, spec) of a routine we have a peer for, or None (e.g. our unfused paths)."""
    if routine == "silu_and_mul":
        return "silu", Spec("none")
    if routine == "merge_states":
        return "merge", Spec("none")
    head, _, spec = routine.partition("/")
    if head in ("vit_attention", "vit_layer") and spec:
        return "vit", Spec("none")
    ops = {"silu_mul_quant": "silu", "quantize": "quantize", "merge_states": "merge"}
    if head in ops and spec:
        return ops[head], parse_spec(spec)
    return None


def load_cases(paths: list[str]) -> tuple[list[Case], list[dict]]:
    """Cases of plan files or bench JSONs; also the rows we have no peer for."""
    cases, unsupported, seen = [], [], set()
    for path in paths:
        with open(path) as f:
            doc = json.load(f)
        suite = doc.get("suite") or os.path.basename(path).split(".")[0]
        rows = doc.get("cases") if "cases" in doc else doc.get("results", [])
        for row in rows:
            if row.get("is_unfused_peer"):
                continue
            routine = row["routine"]
            shape = {k: int(v) for k, v in row["shape"].items()}
            timing = row.get("timing") or {}
            c = Case(
                suite,
                row.get("section", ""),
                routine,
                shape,
                row.get("bytes_per_call", timing.get("bytes_per_call")),
                timing.get("median_us"),
            )
            if c.key() in seen:
                continue
            seen.add(c.key())
            try:
                kind = classify(routine)
            except ValueError as e:
                kind, why = None, str(e)
            else:
                why = "no PyTorch peer for this routine"
            if kind is None:
                unsupported.append({"routine": routine, "shape": shape, "skipped": why})
                continue
            c.op, c.spec = kind
            cases.append(c)
    return cases, unsupported


def tiny_shape(c: Case) -> dict:
    """A small shape of the same family (divisibility kept), for --tiny."""
    s = dict(c.shape)
    if c.op == "vit":
        s["H"] = min(s["H"], 2)
        s["NIMG"] = min(s.get("NIMG", 1), 3)
        s["S"] = max(min(s["S"], 96), s["NIMG"])
        return s
    if c.op == "merge":
        s["T"] = min(s["T"], 48)
        s["H"] = min(s["H"], 4)
        s["D"] = min(s["D"], 128)
    else:
        s["T"] = min(s["T"], 40)
        s["H"] = min(s["H"], 256)
    return s


def round_up(a: int, b: int) -> int:
    return (a + b - 1) // b * b


def quant_output_bytes(spec: Spec, T: int, H: int) -> tuple[int, int]:
    """(value bytes, scale bytes) of an output of [T, H] values: scale_shape() of
    src/quant/kind.cpp, padding included."""
    if spec.kind == "none":
        return T * H * 2, 0
    if spec.kind == "fp8_per_tensor":
        return T * H, 0
    if spec.kind == "fp8_per_token":
        return T * H, T * 4
    if spec.kind == "fp8_group":
        G = -(-H // spec.group)
        ld = round_up(T, 4) if spec.layout == "col_tma" else T
        if spec.fmt == "ue8m0_packed":
            G4 = round_up(G, 4)
            return T * H, (T * G4 if spec.layout == "row" else G4 * ld)
        return T * H, (T * G * 4 if spec.layout == "row" else G * ld * 4)
    if spec.kind == "nvfp4":
        K = -(-H // 16)
        if spec.layout == "swizzled":
            return T * (H // 2), round_up(T, 128) * round_up(K, 4)
        return T * (H // 2), T * K
    raise ValueError(spec.kind)


def image_lengths(S: int, n: int) -> list[int]:
    """The image lengths of a vit case (vit_image_lengths() of bench/vit_attention/routines.cu):
    image i < n - 1 has 1 + (S - n) (i + 1) // (n (n + 1) / 2) tokens, the last one the rest."""
    if not 1 <= n <= S:
        raise ValueError(f"NIMG={n} outside [1, S={S}]")
    rest, weights = S - n, n * (n + 1) // 2
    lens = [1 + rest * (i + 1) // weights for i in range(n - 1)]
    return lens + [S - sum(lens)]


def vit_flops(shape: dict) -> int:
    """4 sum_i len_i^2 H D (SPEC §8; D the original head size)."""
    lens = image_lengths(shape["S"], shape.get("NIMG", 1))
    return 4 * sum(n * n for n in lens) * shape["H"] * shape["D"]


def case_bytes(c: Case, shape: dict) -> tuple[int, int]:
    """(our minimum bytes, the peer's bytes: ours + the merged lse it writes; for vit, the
    bf16 q, k, v the SDPA peer reads and the bf16 o it writes)."""
    if c.op == "vit":
        S, H, D = shape["S"], shape["H"], shape["D"]
        io = S * H * D * 2
        peer = 4 * io
        if c.routine.startswith("vit_attention/fp8"):
            Dp = round_up(D, 16)  # V transposed for the tensor-core kernel: [H, Dp, S_pad]
            v = H * Dp * (round_up(S, 32) if c.routine.endswith(":tc") else S)
            return 2 * S * H * Dp + v + io, peer
        return peer, peer
    if c.op == "merge":
        N, T, H, D = shape["N"], shape["T"], shape["H"], shape["D"]
        read = N * T * H * D * 2 + N * H * T * 4
        cols = H * D
    else:
        T, H = shape["T"], shape["H"]
        read = T * (2 * H if c.op == "silu" else H) * 2
        cols = H
    v, s = quant_output_bytes(c.spec, T, cols)
    ours = read + v + s + (4 if c.spec.reads_scale else 0)
    return ours, ours + (H * T * 4 if c.op == "merge" else 0)


def priority(c: Case) -> int:
    """Run order: the bar shapes of issue 19 first, then latency-bound shapes, then the rest."""
    s = c.shape
    if c.op == "vit":
        return 0  # issue 15's bar shapes; SDPA rows take seconds, no compile
    if c.op == "merge":
        big = s["T"] * s["H"] * s["D"] >= (1 << 24)
        return 0 if big and c.spec.kind != "none" else (1 if s["T"] <= 256 else 2)
    big = s["T"] * s["H"] >= (1 << 24)
    if big and c.spec.kind != "none":
        return 0
    return 1 if s["T"] <= 256 else 2


def order_cases(cases: list[Case]) -> list[Case]:
    """By priority; within one, the op families taken in turn (silu, quantize, merge, silu, ...),
    each in suite order, so that a budget that runs out cuts every family alike."""
    rank, seen = {}, {}
    for i, c in enumerate(cases):
        g = (priority(c), c.op)
        rank[i] = (g[0], seen.get(g, 0), ["silu", "quantize", "merge", "vit"].index(c.op))
        seen[g] = seen.get(g, 0) + 1
    return [cases[i] for i in sorted(range(len(cases)), key=lambda i: rank[i])]


# ---- the PyTorch ops ---------------------------------------------------------------------------


def build_ops(torch):
    """The peer ops, as functions of tensors; .make(case) gives a case's callable
    (inputs..., given scale) -> outputs."""
    F = torch.nn.functional
    fp8 = torch.float8_e4m3fn

    def silu_mul(x):
        h = x.shape[-1] // 2
        return F.silu(x[:, :h].float()) * x[:, h:].float()

    def to_fp8(v):
        return v.clamp(-FP8_MAX, FP8_MAX).to(fp8)

    def per_tensor(y, scale):
        return (to_fp8(y * (1.0 / scale)),)

    def per_token(y):
        s = torch.clamp(y.abs().amax(dim=-1, keepdim=True) / FP8_MAX, min=MIN_SCALE)
        return to_fp8(y / s), s.view(-1)

    def per_group(y, spec: Spec):
        T, H = y.shape
        g = spec.group
        G = H // g
        yg = y.view(T, G, g)
        s = torch.clamp(yg.abs().amax(dim=-1) / FP8_MAX, min=MIN_SCALE)  # [T, G]
        if spec.fmt != "f32":
            e = torch.ceil(torch.log2(s))  # UE8M0: s = 2^ceil(log2(s))
            s = torch.exp2(e)
        q = to_fp8(yg / s.unsqueeze(-1)).view(T, H)
        ld = round_up(T, 4) if spec.layout == "col_tma" else T
        if spec.fmt == "ue8m0_packed":
            G4 = round_up(G, 4)
            b = (e + 127.0).to(torch.uint8)  # the biased exponent byte
            b = F.pad(b, (0, G4 - G))  # [T, G4]
            if spec.layout == "row":
                return q, b
            b = F.pad(b.t(), (0, ld - T)).t()  # [ld, G4]
            return q, b.reshape(ld, G4 // 4, 4).permute(1, 0, 2).contiguous()  # [G4/4, ld, 4]
        if spec.layout == "row":
            return q, s
        # NOTE: [G, ld], column-major scales. contiguous(): a pad by 0 clones the transposed
        # view with its strides, which would leave the scales row-major.
        return q, F.pad(s.t(), (0, ld - T)).contiguous()

    def e2m1_codes(v):
        """E2M1 codes (sign in bit 3) of v, round to nearest even, saturating at 6."""
        a = v.abs()
        c = (
            (a > 0.25).to(torch.uint8)
            + (a >= 0.75).to(torch.uint8)
            + (a > 1.25).to(torch.uint8)
            + (a >= 1.75).to(torch.uint8)
            + (a > 2.5).to(torch.uint8)
            + (a >= 3.5).to(torch.uint8)
            + (a > 5.0).to(torch.uint8)
        )
        return c | ((v < 0).to(torch.uint8) << 3)

    def nvfp4(y, gs, spec: Spec):
        T, H = y.shape
        K = H // 16
        yb = y.view(T, K, 16)
        bmax = yb.abs().amax(dim=-1)  # [T, K]
        sf = torch.clamp(gs * bmax / 6.0, max=FP8_MAX).to(fp8)
        sff = sf.float()
        out_scale = torch.where(sff == 0, torch.zeros_like(sff), gs / sff)
        codes = e2m1_codes(yb * out_scale.unsqueeze(-1)).view(T, H // 2, 2)
        packed = codes[..., 0] | (codes[..., 1] << 4)  # element 2k low nibble, 2k+1 high
        sfb = sf.view(torch.uint8)
        return packed, (sfb if spec.layout == "linear" else swizzle_128x4(sfb))

    def swizzle_128x4(sfb):
        """[T, K] scale bytes -> the [round_up(T, 128), round_up(K, 4)] swizzled buffer (SPEC
        §0.3): byte (m, k) at (m/128)*K4*128 + (k/4)*512 + (m%32)*16 + ((m%128)/32)*4 + k%4,
        padding zero."""
        T, K = sfb.shape
        Tp, K4 = round_up(T, 128), round_up(K, 4)
        sfb = F.pad(sfb, (0, K4 - K, 0, Tp - T))
        sw = sfb.view(Tp // 128, 4, 32, K4 // 4, 4).permute(0, 3, 2, 1, 4).contiguous()
        return sw.view(Tp, K4)

    def quantize(y, spec: Spec, scale):
        if spec.kind == "none":
            return (y.to(torch.bfloat16),)
        if spec.kind == "fp8_per_tensor":
            return per_tensor(y, scale)
        if spec.kind == "fp8_per_token":
            return per_token(y)
        if spec.kind == "fp8_group":
            return per_group(y, spec)
        return nvfp4(y, scale, spec)

    def merge(o, lse):
        """o [N, T, H, D], lse [N, H, T] -> (merged [T, H*D] fp32, merged lse [H, T]); SPEC §2."""
        N, T, H, D = o.shape
        neg_inf = torch.full_like(lse, -math.inf)
        lse = torch.where(torch.isinf(lse), neg_inf, lse)  # +inf marks an empty partial too
        m = lse.amax(dim=0)  # [H, T]
        empty = m == -math.inf
        m0 = torch.where(empty, torch.zeros_like(m), m)
        w = torch.exp(lse - m0)  # [N, H, T]; 0 for empty partials
        s = w.sum(dim=0)
        out_lse = torch.where(empty, torch.full_like(m, -math.inf), torch.log(s) + m0)
        w = w / torch.where(empty, torch.ones_like(s), s)
        out = (o.float() * w.permute(0, 2, 1).unsqueeze(-1)).sum(dim=0)  # [T, H, D]
        return out.reshape(T, H * D), out_lse

    def sdpa(backend: str):
        """(q0, k0, v0, q1, k1, v1, ..., given scale) -> (o0, o1, ...): per image
        F.scaled_dot_product_attention of [1, H, len, D] bf16, non-causal, scale 1/sqrt(D), with
        the cuDNN backend ("cudnn") or PyTorch's default choice ("default")."""
        if backend == "cudnn":
            from torch.nn.attention import SDPBackend, sdpa_kernel

            def context():
                return sdpa_kernel(SDPBackend.CUDNN_ATTENTION)
        else:
            context = contextlib.nullcontext

        def run(*args):
            t = args[:-1]  # the given scale (last) is not used
            with context():
                return tuple(F.scaled_dot_product_attention(t[i], t[i + 1], t[i + 2])
                             for i in range(0, len(t), 3))

        return run

    def pick_sdpa(inputs, scale, device):
        """(fn, backend text): SDPA on the cuDNN backend when it runs these inputs, else the
        default choice, with the reason."""
        if device == "cpu":
            return sdpa("default"), "default (CPU)"
        try:
            fn = sdpa("cudnn")
            fn(*inputs, scale)
            torch.cuda.synchronize()
            return fn, "cudnn"
        except Exception as e:  # noqa: BLE001 - no cuDNN attention here: the default backend
            first = (str(e).strip().splitlines() or [""])[0][:200]
            return sdpa("default"), f"default (cuDNN attention refused: {type(e).__name__}: {first})"

    def make(c: Case):
        spec = c.spec
        if c.op == "vit":
            return sdpa("default")
        if c.op == "silu":
            return lambda x, scale: quantize(silu_mul(x), spec, scale)
        if c.op == "quantize":
            return lambda x, scale: quantize(x.float(), spec, scale)

        def merge_quant(o, lse, scale):
            out, out_lse = merge(o, lse)
            return quantize(out, spec, scale) + (out_lse,)

        return merge_quant

    return SimpleNamespace(make=make, silu_mul=silu_mul, quantize=quantize, merge=merge,
                           e2m1_codes=e2m1_codes, swizzle_128x4=swizzle_128x4, sdpa=sdpa,
                           pick_sdpa=pick_sdpa)


def make_inputs(torch, c: Case, shape: dict, device, seed: int):
    """One input set: the tensors the op reads (the given scale is shared and appended later)."""
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    if c.op == "vit":
        H, D = shape["H"], shape["D"]
        return [torch.randn((1, H, n, D), generator=g, device=device, dtype=torch.bfloat16)
                for n in image_lengths(shape["S"], shape.get("NIMG", 1)) for _ in range(3)]
    if c.op == "merge":
        N, T, H, D = shape["N"], shape["T"], shape["H"], shape["D"]
        o = torch.randn((N, T, H, D), generator=g, device=device, dtype=torch.bfloat16)
        lse = torch.rand((N, H, T), generator=g, device=device, dtype=torch.float32) * 8.0 - 4.0
        flat = lse.view(-1)
        flat[5::16] = -math.inf  # every 16th entry an empty partial, as routines_merge.cu
        return [o, lse]
    T, H = shape["T"], shape["H"]
    cols = 2 * H if c.op == "silu" else H
    return [torch.randn((T, cols), generator=g, device=device, dtype=torch.bfloat16)]


def given_scale(torch, c: Case, device):
    v = NVFP4_GLOBAL_SCALE if c.spec.kind == "nvfp4" else PER_TENSOR_SCALE
    return torch.tensor([v], device=device, dtype=torch.float32)


# ---- timing ------------------------------------------------------------------------------------


class CompileTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise CompileTimeout("compile took longer than the per-compile limit")


def rotating_sets(nbytes: int, l2_bytes: int) -> int:
    target = 2 * l2_bytes
    if nbytes <= 0 or nbytes >= target:
        return 1
    return min(-(-target // nbytes), 64)


def median(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


def time_fn(torch, fn, sets, scale, calls, replays, device):
    """Median/min/max µs per call: graph replays on CUDA (eager launches if capture fails),
    a wall clock on the CPU."""
    K = len(sets)
    if device == "cpu":
        us = []
        for _ in range(replays):
            t0 = time.perf_counter()
            for i in range(calls):
                fn(*sets[i % K], scale)
            us.append((time.perf_counter() - t0) * 1e6 / calls)
        return median(us), min(us), max(us), "wall clock (CPU)"
    method = "CUDA graph replay"
    graph = None
    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up on the capture stream, as PyTorch advises
            for i in range(K):
                fn(*sets[i], scale)
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for i in range(calls):
                fn(*sets[i % K], scale)
        run = graph.replay
    except Exception as e:  # noqa: BLE001 - any capture failure: time eager launches instead
        graph = None
        torch.cuda.synchronize()
        method = f"eager launches (graph capture failed: {type(e).__name__}: {str(e)[:160]})"

        def run():
            for i in range(calls):
                fn(*sets[i % K], scale)

    run()  # warm-up replays
    run()
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(replays)]
    for a, b in events:
        a.record()
        run()
        b.record()
    torch.cuda.synchronize()
    us = [1e3 * a.elapsed_time(b) / calls for a, b in events]
    del graph
    return median(us), min(us), max(us), method


def compare_outputs(torch, a, b) -> list:
    """The compiled peer's outputs against the eager peer's on the same inputs, per output: the
    fraction of equal bytes; for fp8 codes also the fraction within one code; for floats the
    largest difference where both are finite (fused arithmetic may round differently)."""
    out = []
    for x, y in zip(a, b):
        if x.shape != y.shape or x.dtype != y.dtype:
            out.append({"error": f"{tuple(x.shape)} {x.dtype} vs {tuple(y.shape)} {y.dtype}"})
            continue
        xb = x.contiguous().view(torch.uint8).view(-1)
        yb = y.contiguous().view(torch.uint8).view(-1)
        r = {"dtype": str(x.dtype).replace("torch.", ""),
             "equal": float((xb == yb).float().mean().item()) if xb.numel() else 1.0}
        if x.dtype == torch.float8_e4m3fn:
            near = ((xb.int() - yb.int()).abs() <= 1) & ((xb ^ yb) < 128)  # same sign, ±1 code
            r["within_one_code"] = float(near.float().mean().item())
        elif x.is_floating_point():
            both = torch.isfinite(x) & torch.isfinite(y)
            d = (x.float() - y.float()).abs()[both]
            r["max_abs_diff"] = float(d.max().item()) if d.numel() else 0.0
            r["same_nonfinite"] = bool(torch.equal(torch.isfinite(x), torch.isfinite(y)))
        out.append(r)
    return out


# ---- the run -----------------------------------------------------------------------------------


class Writer:
    """Keeps the report and rewrites it after every row."""

    def __init__(self, path, header):
        self.path, self.doc = path, dict(header, results=[])

    def add(self, row):
        self.doc["results"].append(row)
        self.flush()

    def flush(self):
        if not self.path:
            return
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.doc, f, indent=1)
            f.write("\n")
        os.replace(tmp, self.path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plan", action="append", default=[],
                    help="cases: `qfuse bench --plan --json` output or a `qfuse bench --json` "
                         "report (repeatable)")
    ap.add_argument("--out", default="", help="JSON report (rewritten after every row)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--tiny", action="store_true", help="small shapes (a logic check, not timing)")
    ap.add_argument("--budget-s", type=float, default=240.0,
                    help="wall-clock budget; compiles that would not fit are skipped")
    ap.add_argument("--compile-timeout-s", type=float, default=90.0,
                    help="limit for one case's compile and first call (twice this for the "
                         "first compile of the run)")
    ap.add_argument("--compile-mode", default="default",
                    choices=["default", "max-autotune-no-cudagraphs"])
    ap.add_argument("--modes", default="eager,compile", help="eager, compile or both")
    ap.add_argument("--only", default="", help="substring a routine must contain")
    ap.add_argument("--max-cases", type=int, default=0, help="first N cases only (0: all)")
    ap.add_argument("--min-calls", type=int, default=20)
    ap.add_argument("--replays", type=int, default=25)
    args = ap.parse_args(argv)
    start = time.monotonic()
    deadline = start + args.budget_s

    def left() -> float:
        return deadline - time.monotonic()

    def log(msg):
        print(f"[peers {time.monotonic() - start:6.1f} s] {msg}", file=sys.stderr, flush=True)

    if not args.plan:
        ap.error("give at least one --plan FILE (qfuse bench --suite S --plan --json FILE)")
    cases, unsupported = load_cases(args.plan)
    if args.only:
        cases = [c for c in cases if args.only in c.routine]
    if args.max_cases:
        cases = cases[: args.max_cases]

    import torch  # noqa: E402 - after argument errors, which need no torch

    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("peers: no CUDA device visible to PyTorch; nothing timed", file=sys.stderr)
        return 2
    import torch._dynamo  # noqa: E402

    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 16)
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        dev = {"name": props.name, "sm_count": props.multi_processor_count,
               "l2_bytes": getattr(props, "L2_cache_size", 50 << 20)}
        l2 = dev["l2_bytes"]
    else:
        dev, l2 = {"name": "cpu"}, 32 << 20
    try:
        import triton  # noqa: F401

        triton_version = triton.__version__
    except Exception:  # noqa: BLE001
        triton_version = None
    modes = [m for m in args.modes.split(",") if m]
    writer = Writer(args.out, {
        "tool": "qfuse peers (bench/peers/peers.py)",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "torch": torch.__version__,
        "triton": triton_version,
        "device": dev,
        "compile": {"mode": args.compile_mode, "dynamic": False, "fullgraph": True,
                    "backend": "inductor"},
        "method": ("K rotating input sets (K * bytes >= 2 * L2, K <= 64); CUDA graph of >= "
                   f"{args.min_calls} calls; {args.replays} replays; median per call"),
        "bytes": ("bytes_per_call: ours for the case (inputs read once, outputs and scales "
                  "written once); peer_bytes_per_call adds what the peer writes beyond that "
                  "(the merged lse)"),
        "tiny": args.tiny,
        "budget_s": args.budget_s,
        "eager_only": "vit_attention/*, vit_layer/*: the peer is one SDPA call per image, which "
                      "torch.compile would run as the same kernel",
        "unsupported": unsupported,
    })
    ops = build_ops(torch)
    make = ops.make
    compile_times: list[float] = []

    def run_case(c: Case, mode: str):
        shape = tiny_shape(c) if args.tiny else c.shape
        ours, peer_bytes = case_bytes(c, shape)
        row = {"suite": c.suite, "section": c.section, "routine": c.routine, "shape": shape,
               "peer": mode, "bytes_per_call": ours, "peer_bytes_per_call": peer_bytes,
               "writes_lse": c.op == "merge"}
        if c.op == "vit":
            row["flops_per_call"] = vit_flops(shape)
        if c.ours_bytes is not None and not args.tiny and c.ours_bytes != ours:
            row["bytes_mismatch"] = f"qfuse counts {c.ours_bytes}, this script {ours}"
            log(f"WARNING {c.routine} {c.shape_str()}: {row['bytes_mismatch']}")
        label = f"{mode:7s} {c.routine} " + " ".join(f"{k}={v}" for k, v in shape.items())
        if mode == "compile":
            need = max(10.0, 1.5 * median(compile_times)) if compile_times else 30.0
            if left() < need:
                row["skipped"] = f"time budget: {left():.0f} s left, a compile needs ~{need:.0f} s"
                writer.add(row)
                return
        elif left() <= 0:
            row["skipped"] = "time budget: none left"
            writer.add(row)
            return
        sets = None
        try:
            fn = make(c)
            K = rotating_sets(peer_bytes, l2)
            sets = [make_inputs(torch, c, shape, device, 17 + s) for s in range(K)]
            scale = given_scale(torch, c, device)
            if c.op == "vit":
                fn, row["sdpa_backend"] = ops.pick_sdpa(sets[0], scale, device)
            if mode == "compile":
                torch._dynamo.reset()
                fn = torch.compile(fn, dynamic=False, fullgraph=True,
                                   mode=None if args.compile_mode == "default"
                                   else args.compile_mode)
                # NOTE: the first compile also starts Inductor's workers: twice the limit.
                first = 1 if compile_times else 2
                limit = int(max(1, min(first * args.compile_timeout_s, left())))
                old = signal.signal(signal.SIGALRM, _alarm)
                signal.alarm(limit)
                t0 = time.monotonic()
                try:
                    out_c = fn(*sets[0], scale)  # compiles
                    if device == "cuda":
                        torch.cuda.synchronize()
                finally:
                    signal.alarm(0)
                    signal.signal(signal.SIGALRM, old)
                row["compile_s"] = round(time.monotonic() - t0, 2)
                compile_times.append(row["compile_s"])
                out_e = make(c)(*sets[0], scale)
                row["check_vs_eager"] = compare_outputs(torch, out_c, out_e)
                del out_c, out_e
            out = fn(*sets[0], scale)
            row["outputs"] = [f"{str(t.dtype).replace('torch.', '')}{list(t.shape)}" +
                              ("" if t.is_contiguous() else " (not contiguous)") for t in out]
            del out
            calls = max(args.min_calls, K)
            calls = -(-calls // K) * K
            med, lo, hi, method = time_fn(torch, fn, sets, scale, calls, args.replays, device)
            row["timing"] = {"median_us": med, "min_us": lo, "max_us": hi, "sets": K,
                             "calls_per_graph": calls, "replays": args.replays,
                             "method": method}
            row["gbps"] = peer_bytes / (med * 1e3) if med > 0 else 0.0
            row["gbps_ours_bytes"] = ours / (med * 1e3) if med > 0 else 0.0
            if "flops_per_call" in row:
                row["tflops"] = row["flops_per_call"] / (med * 1e6) if med > 0 else 0.0
            log(f"{label}: {med:.2f} µs" + (f" (compile {row['compile_s']} s)"
                                            if "compile_s" in row else ""))
        except Exception as e:  # noqa: BLE001 - a failed peer is a row with its reason
            msg = f"{type(e).__name__}: {e}"
            row["error"] = msg[:2000]
            log(f"{label}: FAILED " +
                " | ".join(ln.strip() for ln in msg.splitlines() if ln.strip())[:400])
            if os.environ.get("QFUSE_PEERS_TRACEBACK"):
                traceback.print_exc()
        finally:
            del sets
            if device == "cuda":
                try:
                    torch.cuda.synchronize()
                    torch.cuda.empty_cache()
                except Exception as e:  # noqa: BLE001 - a sticky CUDA error ends the run
                    row.setdefault("error", f"CUDA error after the case: {e}")
                    writer.add(row)
                    raise SystemExit(f"peers: CUDA context lost ({e}); stopping")
        writer.add(row)

    if device == "cuda":
        # NOTE: ~0.5 s of copies so that an idle GPU reaches its clocks before the first row.
        a = torch.empty(64 << 20, device="cuda", dtype=torch.float32)
        b = torch.empty_like(a)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 0.5:
            for _ in range(8):
                b.copy_(a)
            torch.cuda.synchronize()
        del a, b
        torch.cuda.empty_cache()
    log(f"{len(cases)} cases, modes {modes}, budget {args.budget_s:.0f} s, torch "
        f"{torch.__version__}, device {dev['name']}")
    # NOTE: case by case in priority order (stable: suite order within a priority), eager then
    # compiled, so that a budget that runs out leaves the bar shapes with both peers.
    for c in order_cases(cases):
        for mode in modes:
            if mode == "compile" and c.eager_only:
                continue
            run_case(c, mode)
    writer.doc["elapsed_s"] = round(time.monotonic() - start, 1)
    writer.flush()
    rows = writer.doc["results"]
    n_ok = sum(1 for r in rows if "timing" in r)
    n_err = sum(1 for r in rows if "error" in r)
    n_skip = sum(1 for r in rows if "skipped" in r)
    log(f"done: {n_ok} rows timed, {n_err} failed, {n_skip} skipped, "
        f"{writer.doc['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
