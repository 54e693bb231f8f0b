"""The reference engine's op signatures (SPEC §9), backed by qfuse: an engine swaps its kernel for
ours by changing one import. docs/python.md maps each to the qfuse kind it runs and states where
the numbers can differ.

The drop-ins write their kinds with the reference engine's rule (spec suffix ":engine", the C++
QuantRule::kEngine) where it differs from qfuse's own: dynamic per-token and per-group FP8 (codes
x / s, the per-group amax floor eps and UE8M0 rounding), NVFP4 (approximate reciprocals) and the
SiLU of silu_and_mul_per_block_quant; static per-tensor FP8 and the merge already round alike.
The fused twins "silu_mul_<name>" (the fusion pass's) have no reference op to match (the unfused
graph rounds the product to bf16 first) and keep qfuse's rule.

Destination-passing ops (``torch.ops.qfuse.<name>``, the reference engine's custom-op schemas):
  static_scaled_fp8_quant, dynamic_scaled_fp8_quant, dynamic_per_token_scaled_fp8_quant,
  per_token_group_fp8_quant, scaled_fp4_quant, silu_and_mul_per_block_quant, merge_attn_states.
Python functions with the reference engine's wrapper signatures:
  scaled_fp8_quant, scaled_fp4_quant, silu_and_mul_per_block_quant (both forms),
  per_token_group_fp8_quant, merge_attn_states.
"""

import torch

import qfuse as _q

from .ops import CALL as _CALL
from .ops import FP8, _define, _dl, _opt, _stream

__all__ = [
    "scaled_fp8_quant",
    "scaled_fp4_quant",
    "per_token_group_fp8_quant",
    "silu_and_mul_per_block_quant",
    "merge_attn_states",
]

FP8_MAX = 448.0


def _round_up(a, b):
    return (a + b - 1) // b * b


def _col_major_base(s, rows, groups, ld, name):
    """The [groups, ld] buffer behind column-major scales: the reference engine passes them as a
    [rows, groups] view with strides (1, ld) (a transposed [groups, ld] allocation); a contiguous
    [groups, ld] tensor is taken as is."""
    if tuple(s.shape) == (groups, ld) and s.is_contiguous():
        return s
    if tuple(s.shape) == (rows, groups) and (groups == 1 or s.stride(1) == ld) and \
            (rows <= 1 or s.stride(0) == 1):
        return s.as_strided((groups, ld), (ld, 1))
    raise ValueError(
        f"argument '{name}': expected column-major scales, a [{rows}, {groups}] view with "
        f"strides (1, {ld}) or a contiguous [{groups}, {ld}] tensor, got "
        f"{list(s.shape)} strides {list(s.stride())}")


def _check_fp8_range(fp8_min, fp8_max):
    if fp8_min != -FP8_MAX or fp8_max != FP8_MAX:
        raise ValueError(
            f"argument 'fp8_min/fp8_max': expected -448.0/448.0 (float8_e4m3fn), "
            f"got {fp8_min}/{fp8_max}")


# ---- destination-passing ops with the reference engine's schemas ---------------------------------

# NOTE: each quantizing op also has a fused twin "silu_mul_<name>" with the same schema whose
# input is [T, 2H] and which quantizes silu(input[:, :H]) * input[:, H:]: the ops the
# torch.compile pass (fusion.py) rewrites "quant(silu(x[:, :H]) * x[:, H:])" into.
def _run(silu):
    return _q.silu_mul_quant if silu else _q.quantize


def _static_fp8_impl(result, input, scale, silu=False):
    # NOTE: num_token_padding rows past the input stay unwritten, as in the reference.
    out = result[: input.shape[0]] if result.dim() == 2 else result
    _run(silu)(_dl(input, "x"), _dl(out, "out", "e4m3"), "fp8_per_tensor",
               scale=_dl(scale, "out.scale"), stream=_stream(input))


def _define_pair(schema, impl):
    _define(schema, impl)
    _define("silu_mul_" + schema, lambda *a, **k: impl(*a, silu=True, **k))


_define_pair("static_scaled_fp8_quant(Tensor(a!) result, Tensor input, Tensor scale) -> ()",
             _static_fp8_impl)


def _dynamic_fp8_impl(result, input, scale):
    out = result[: input.shape[0]] if result.dim() == 2 else result
    _q.dynamic_per_tensor_quant(_dl(input, "x"), _dl(out, "out", "e4m3"),
                                _dl(scale, "out.scale"), stream=_stream(input))


_define("dynamic_scaled_fp8_quant(Tensor(a!) result, Tensor input, Tensor(b!) scale) -> ()",
        _dynamic_fp8_impl)


def _rule(spec, silu):
    """The drop-in's spec: the reference engine's rule, except in a fused twin (see above)."""
    return spec if silu else spec + ":engine"


def _per_token_fp8_impl(result, input, scale, scale_ub=None, silu=False):
    T = input.shape[0]
    out = result[:T] if result.dim() == 2 else result
    if scale.dim() == 2 and scale.shape[1] == 1:
        scale = scale.view(-1)  # the reference's [T, 1]
    _run(silu)(_dl(input, "x"), _dl(out, "out", "e4m3"), _rule("fp8_per_token", silu),
               scales=_dl(scale, "out.scales"), scale_ub=_opt(scale_ub, "out.scale_ub"),
               stream=_stream(input))


_define_pair("dynamic_per_token_scaled_fp8_quant(Tensor(a!) result, Tensor input, "
             "Tensor(b!) scale, Tensor? scale_ub=None) -> ()", _per_token_fp8_impl)


def _group_spec(group_size, ue8m0, transposed, tma):
    layout = ("col_tma" if tma else "col") if transposed else "row"
    return f"fp8_group{group_size}:{layout}:{'ue8m0' if ue8m0 else 'f32'}"


def _per_token_group_impl(input, output_q, output_s, group_size, eps=1e-10, fp8_min=-FP8_MAX,
                          fp8_max=FP8_MAX, scale_ue8m0=False, is_scale_transposed=False,
                          is_tma_aligned=False, silu=False):
    _check_fp8_range(fp8_min, fp8_max)
    if eps <= 0:
        raise ValueError(f"argument 'eps': expected > 0, got {eps}")
    spec = _rule(_group_spec(group_size, scale_ue8m0, is_scale_transposed, is_tma_aligned), silu)
    T, H = input.shape[0], input.shape[-1] // (2 if silu else 1)
    if is_scale_transposed:
        G = -(-H // group_size)
        ld = _round_up(T, 4) if is_tma_aligned else T
        output_s = _col_major_base(output_s, T, G, ld, "output_s")
    # The engine's amax floor: s = max(amax, eps) / 448 (the native rule of the twin floors the
    # scale at 1 / (448 * 512) instead).
    _run(silu)(_dl(input, "x"), _dl(output_q, "out", "e4m3"), spec,
               scales=_dl(output_s, "out.scales"), stream=_stream(input),
               eps=0.0 if silu else float(eps))


_define_pair("per_token_group_fp8_quant(Tensor input, Tensor(a!) output_q, Tensor(b!) output_s, "
             "int group_size, float eps=1e-10, float fp8_min=-448.0, float fp8_max=448.0, "
             "bool scale_ue8m0=False, bool is_scale_transposed=False, "
             "bool is_tma_aligned=False) -> ()", _per_token_group_impl)


def _fp4_scale_bytes(s):
    # The reference allocates the swizzled block scales as int32 (four E4M3 bytes each) or views
    # them as float8_e4m3fn; qfuse reads the bytes.
    return s.view(torch.uint8) if s.dtype in (torch.int32, FP8) else s


def _scaled_fp4_impl(output, input, output_scale, input_global_scale, is_sf_swizzled_layout=True,
                     silu=False):
    spec = _rule("nvfp4:swizzled" if is_sf_swizzled_layout else "nvfp4:linear", silu)
    _run(silu)(_dl(input, "x"), _dl(output, "out", "e2m1x2"), spec,
               scales=_dl(_fp4_scale_bytes(output_scale), "out.scales", "e4m3"),
               scale=_dl(input_global_scale, "out.scale"), stream=_stream(input))


_define_pair("scaled_fp4_quant(Tensor(a!) output, Tensor input, Tensor(b!) output_scale, "
             "Tensor input_global_scale, bool is_sf_swizzled_layout=True) -> ()",
             _scaled_fp4_impl)


def _silu_block_impl(out, input, scales, group_size, scale_ub=None, is_scale_transposed=False):
    # The engine's rule, its SiLU arithmetic included (the reference op itself, not a twin).
    spec = _group_spec(group_size, False, is_scale_transposed, False) + ":engine"
    if is_scale_transposed:
        T, H = input.shape[0], input.shape[1] // 2
        scales = _col_major_base(scales, T, -(-H // group_size), T, "scales")
    _q.silu_mul_quant(_dl(input, "x"), _dl(out, "out", "e4m3"), spec,
                      scales=_dl(scales, "out.scales"), scale_ub=_opt(scale_ub, "out.scale_ub"),
                      stream=_stream(input))


_define("silu_and_mul_per_block_quant(Tensor(a!) out, Tensor input, Tensor(b!) scales, "
        "int group_size, Tensor? scale_ub=None, bool is_scale_transposed=False) -> ()",
        _silu_block_impl)


def _merge_attn_impl(output, output_lse, prefix_output, prefix_lse, suffix_output, suffix_lse,
                     output_scale=None):
    spec = "none" if output_scale is None else "fp8_per_tensor"
    _q.merge_states([_dl(prefix_output, "o[0]"), _dl(suffix_output, "o[1]")],
                    [_dl(prefix_lse, "lse[0]"), _dl(suffix_lse, "lse[1]")],
                    _dl(output, "out", "e4m3" if output_scale is not None else None), spec,
                    scale=_opt(output_scale, "out.scale"), out_lse=_opt(output_lse, "out_lse"),
                    stream=_stream(prefix_output))


_define("merge_attn_states(Tensor(a!) output, Tensor(b!)? output_lse, Tensor prefix_output, "
        "Tensor prefix_lse, Tensor suffix_output, Tensor suffix_lse, "
        "Tensor? output_scale=None) -> ()", _merge_attn_impl)


# ---- the reference engine's Python wrappers ---------------------------------------------------

def scaled_fp8_quant(input, scale=None, num_token_padding=None, scale_ub=None,
                     use_per_token_if_dynamic=False, output=None):
    """FP8 E4M3 quantization of input [T, H]: static per-tensor with `scale`; without it dynamic
    per-tensor, or dynamic per-token ([T, 1] scales, `scale_ub` bounding the amax) with
    `use_per_token_if_dynamic`. `num_token_padding` pads the output to at least that many rows
    (the padding rows are not written). Returns (out, scale)."""
    if input.dim() != 2:
        raise ValueError(f"argument 'input.rank': expected 2, got {input.dim()}")
    shape = tuple(input.shape)
    if num_token_padding:
        shape = (max(num_token_padding, shape[0]), shape[1])
    if output is None:
        output = torch.empty(shape, device=input.device, dtype=FP8)
    elif num_token_padding is not None:
        raise ValueError("argument 'output': expected None with num_token_padding, got a tensor")
    if scale is None:
        if use_per_token_if_dynamic:
            scale = torch.empty((shape[0], 1), device=input.device, dtype=torch.float32)
            _CALL["dynamic_per_token_scaled_fp8_quant"](
                output, input, scale[: input.shape[0]], scale_ub)
        else:
            scale = torch.empty(1, device=input.device, dtype=torch.float32)
            _CALL["dynamic_scaled_fp8_quant"](output, input, scale)
    else:
        if scale.numel() != 1:
            raise ValueError(f"argument 'scale': expected one element, got {scale.numel()}")
        _CALL["static_scaled_fp8_quant"](output, input, scale)
    return output, scale


def scaled_fp4_quant(input, global_scale, is_sf_swizzled_layout=True):
    """NVFP4 quantization of input [m, n] (n % 16 == 0): returns (out uint8 [m, n/2], block_scale
    float8_e4m3fn [round_up(m, 128), round_up(n/16, 4)] swizzled, or [m, n/16] linear)."""
    if input.dim() != 2:
        raise ValueError(f"argument 'input.rank': expected 2, got {input.dim()}")
    m, n = input.shape
    if n % 16 != 0:
        raise ValueError(f"argument 'input.sizes[1]': expected a multiple of 16, got {n}")
    out = torch.empty((m, n // 2), device=input.device, dtype=torch.uint8)
    if is_sf_swizzled_layout:
        bs = torch.empty((_round_up(m, 128), _round_up(n // 16, 4)), device=input.device,
                         dtype=torch.uint8)
    else:
        bs = torch.empty((m, n // 16), device=input.device, dtype=torch.uint8)
    _CALL["scaled_fp4_quant"](out, input, bs, global_scale, is_sf_swizzled_layout)
    return out, bs.view(FP8)


def per_token_group_fp8_quant(input, output_q, output_s, group_size, eps=1e-10, fp8_min=-FP8_MAX,
                              fp8_max=FP8_MAX, scale_ue8m0=False, is_scale_transposed=False,
                              is_tma_aligned=False):
    """Per-(token, group) FP8 into caller-owned output_q [T, H] and output_s (row-major [T, G];
    column-major [T, G] views of [G, ld] with ld = T, or round_up(T, 4) when TMA-aligned)."""
    _CALL["per_token_group_fp8_quant"](input, output_q, output_s, group_size, eps, fp8_min,
                                       fp8_max, scale_ue8m0, is_scale_transposed, is_tma_aligned)
    return output_q, output_s


def _silu_block_alloc(input, group_size, quant_dtype=FP8, scale_ub=None,
                      is_scale_transposed=False):
    if quant_dtype != FP8:
        raise TypeError(f"argument 'quant_dtype': expected torch.float8_e4m3fn, got {quant_dtype}")
    T, H = input.shape[0], input.shape[-1] // 2
    G = -(-H // group_size)
    out = torch.empty((T, H), device=input.device, dtype=FP8)
    if is_scale_transposed:
        scales = torch.empty((G, T), device=input.device, dtype=torch.float32).t()
    else:
        scales = torch.empty((T, G), device=input.device, dtype=torch.float32)
    _CALL["silu_and_mul_per_block_quant"](out, input, scales, group_size, scale_ub,
                                          is_scale_transposed)
    return out, scales


def silu_and_mul_per_block_quant(*args, **kwargs):
    """silu(input[:, :H]) * input[:, H:] as FP8 with one fp32 scale per group of `group_size`.
    Destination form (out, input, scales, group_size, scale_ub=None, is_scale_transposed=False)
    or wrapper form (input, group_size, quant_dtype, scale_ub=None, is_scale_transposed=False)
    -> (out, scales), told apart as the reference engine's two entry points are: by whether the
    second argument is a tensor."""
    second = args[1] if len(args) > 1 else kwargs.get("input")
    if isinstance(second, torch.Tensor) or "out" in kwargs:
        _CALL["silu_and_mul_per_block_quant"](*args, **kwargs)
        return None
    return _silu_block_alloc(*args, **kwargs)


def merge_attn_states(output, output_lse, prefix_output, prefix_lse, suffix_output, suffix_lse,
                      output_scale=None):
    """Merges two attention states into output [T, H, D] (FP8 when output_scale is given) and
    optionally output_lse [H, T]."""
    _CALL["merge_attn_states"](output, output_lse, prefix_output, prefix_lse, suffix_output,
                               suffix_lse, output_scale)
