"""torch.ops.qfuse: the custom ops (schemas, CUDA implementations, fake implementations).

Two implementations of every op's CUDA kernel, one path taken per op when this module defines it:
* C++ (qfuse/_torch_ops.so, python/src/torch_ops.cpp): registered with the PyTorch dispatcher, so
  an eager call goes Python -> dispatcher -> C++ -> the qfuse C++ API with no Python in between.
  Taken where the library is present, built for this torch.__version__, and its kernel is written
  for the schema defined here (CPP_OPS lists the ops that took it); QFUSE_TORCH_OPS=0 turns it off.
* Python (the functions below, _IMPLS): tensors reach qfuse._qfuse as DLPack capsules
  (``torch.utils.dlpack.to_dlpack``: no stream synchronisation, which matters under CUDA-graph
  capture) with the stream of ``torch.cuda.current_stream()``.
Both read FP8/FP4 tensors as uint8 views after a dtype check: DLPack has no FP4-pair dtype, and a
uint8 view in a slot whose format the spec fixes is what the binding reads as that format. Both
raise the same exceptions with the same messages (test_torch.CppOps checks).
"""

import ctypes
import functools
import os
import warnings

import torch
from torch.utils.dlpack import to_dlpack

import qfuse as _q

__all__ = [
    "quantize",
    "silu_and_mul",
    "silu_mul_quant",
    "merge_states",
    "dynamic_per_tensor_quant",
    "mla_write_cache",
    "mla_decode",
    "mla_decode_schedule",
    "mla_workspace",
    "mla_schedule",
    "vit_quantize_qkv",
    "vit_attention",
    "vit_workspace",
    "quantize_alloc",
    "silu_mul_quant_alloc",
    "merge_states_alloc",
    "OPS",
]

FP8 = torch.float8_e4m3fn
_FP4X2 = getattr(torch, "float4_e2m1fn_x2", None)
_E8M0 = getattr(torch, "float8_e8m0fnu", None)
# The torch dtypes a slot of each byte format accepts (uint8 views always).
_BYTE_SLOT = {
    "e4m3": {torch.uint8, FP8},
    "e2m1x2": {torch.uint8, _FP4X2} - {None},
    "ue8m0": {torch.uint8, _E8M0} - {None},
}
_TORCH_NAME = {
    torch.bfloat16: "bf16",
    torch.float16: "fp16",
    torch.float32: "fp32",
    FP8: "e4m3",
    torch.int32: "i32",
    torch.uint8: "u8",
}


def _name(dtype):
    return _TORCH_NAME.get(dtype, str(dtype).replace("torch.", ""))


def _dl(t, name, fmt=None):
    """The DLPack capsule of `t`; a one-byte float dtype becomes a uint8 view when `fmt` (the
    slot's format) accepts it, else the error the C++ library would give."""
    t = t.detach()
    if t.dtype.itemsize == 1 and t.dtype not in (torch.uint8, torch.int8, torch.bool):
        if fmt is not None and t.dtype in _BYTE_SLOT.get(fmt, ()):
            return to_dlpack(t.view(torch.uint8))
        try:  # PyTorch versions that export FP8 over DLPack: the C++ check names the slot's dtype
            return to_dlpack(t)
        except Exception:
            want = fmt or "a dtype of qfuse (bf16|fp16|fp32|e4m3|ue8m0|i32|u8)"
            raise TypeError(
                f"argument '{name}.dtype': expected {want}, got {_name(t.dtype)}") from None
    return to_dlpack(t)


def _opt(t, name, fmt=None):
    return None if t is None else _dl(t, name, fmt)


def _stream(t):
    # NOTE: a tensor off the GPU gets stream 0; the binding then names the tensor and its device.
    return torch.cuda.current_stream(t.device).cuda_stream if t.is_cuda else 0


@functools.lru_cache(maxsize=256)
def _scale_fmt(spec):
    spec = _q.canonical_spec(spec)
    if spec.startswith("nvfp4"):
        return "e4m3"
    if spec.endswith("ue8m0_packed"):
        return "ue8m0"
    return None


@functools.lru_cache(maxsize=256)
def _out_fmt(spec):
    return _q.out_dtype(spec)


def _turned_off(var, *also):
    """Whether environment variable `var` turns a layer off (0, off, no, false, or `also`)."""
    return os.environ.get(var, "1").lower() in ("0", "off", "no", "false") + also


def _load_cpp():
    """(the C++ op library, its path), or (None, why not)."""
    if _turned_off("QFUSE_TORCH_OPS", "python"):
        return None, "QFUSE_TORCH_OPS=0"
    path = os.path.join(os.path.dirname(os.path.abspath(_q.__file__)), "_torch_ops.so")
    if not os.path.exists(path):
        return None, "not built"
    try:
        lib = ctypes.CDLL(path)
        lib.qfuse_torch_built_for.restype = ctypes.c_char_p
        built = lib.qfuse_torch_built_for().decode()
    except (OSError, AttributeError) as e:
        warnings.warn(f"qfuse.torch: {path} does not load ({e}); the ops run through Python")
        return None, f"does not load: {e}"
    if built != torch.__version__:
        warnings.warn(f"qfuse.torch: {path} is built for torch {built}, not {torch.__version__}; "
                      "the ops run through Python (rebuild it)")
        return None, f"built for torch {built}"
    lib.qfuse_torch_register.restype = ctypes.c_int
    lib.qfuse_torch_register.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                                         ctypes.c_size_t]
    lib.qfuse_torch_schema.restype = ctypes.c_char_p
    lib.qfuse_torch_schema.argtypes = [ctypes.c_char_p]
    lib.qfuse_torch_bench_calls.argtypes = [ctypes.c_int]
    lib.qfuse_torch_bench_ns.restype = ctypes.c_int64
    lib.qfuse_torch_trusted_calls.restype = ctypes.c_int64
    lib.qfuse_torch_trust_pointers.argtypes = [ctypes.c_int]
    return lib, path


def _load_fast(path):
    """The op library as a PyDLL (its functions called with the GIL held), for its fast-path
    factory (torch_fast.cpp: qfuse_torch_fast), or None: not loaded, QFUSE_TORCH_FAST=0, or a
    PyTorch without substitute_in_graph (Dynamo must trace the op, not the C function)."""
    if path is None or _turned_off("QFUSE_TORCH_FAST"):
        return None
    if not hasattr(getattr(torch, "compiler", None), "substitute_in_graph"):
        return None
    lib = ctypes.PyDLL(path)
    lib.qfuse_torch_fast_taken.restype = ctypes.c_int64
    lib.qfuse_torch_fast.restype = ctypes.py_object
    lib.qfuse_torch_fast.argtypes = [ctypes.c_char_p, ctypes.py_object]
    return lib


def fast_calls_taken():
    """How many calls took the eager fast path so far (0 without it)."""
    return 0 if _FAST is None else _FAST.qfuse_torch_fast_taken()


def trusted_calls():
    """How many calls of the C++ op library vouched for their tensors' devices so far, so that
    the C++ API skipped its driver queries of their pointers (qfuse/core/pointer_checks.h);
    0 without the library."""
    return 0 if _CPP is None else _CPP.qfuse_torch_trusted_calls()


_CPP, _where = _load_cpp()
CPP_LIBRARY = _where if _CPP is not None else None  # the op library's path, when loaded
CPP_UNUSED = None if _CPP is not None else _where  # else why not
CPP_OPS = set()  # the ops whose CUDA kernel is the C++ one
_FAST = _load_fast(CPP_LIBRARY)
FAST_OPS = set()  # the ops whose qfuse.torch function is the eager fast path (torch_fast.cpp)
CALL = {}  # name -> what qfuse.torch calls for torch.ops.qfuse.<name>: its fast path, or the op


def _register_cpp(name, ns="qfuse"):
    """Registers the C++ CUDA kernel of ns::name; False where it stays on the Python path."""
    if _CPP is None:
        return False
    msg = ctypes.create_string_buffer(2048)
    rc = _CPP.qfuse_torch_register(ns.encode(), name.encode(), msg, len(msg))
    if rc < 0:
        warnings.warn(f"qfuse.torch: {ns}::{name} runs through Python: {msg.value.decode()}")
    return rc == 1


_lib = torch.library.Library("qfuse", "DEF")
OPS = {}  # name -> schema, every op this module registers
_IMPLS = {}  # name -> its Python CUDA implementation (tests register it for other devices)


def _fast(name, op):
    """The function qfuse.torch offers for torch.ops.qfuse.<name> (`op`): where the op's CUDA
    kernel is the C++ one, the op library's eager fast path (torch_fast.cpp: the arguments
    converted without PyTorch's parser, the same kernel, `op` itself wherever a tracer, a mode, a
    tensor subclass, autograd or the profiler is involved), which torch.compile traces as `op`;
    else `op`."""
    if _FAST is None or name not in CPP_OPS:
        return op
    try:
        fn = _FAST.qfuse_torch_fast(f"qfuse::{name}".encode(), op)
    except (TypeError, ValueError) as e:
        warnings.warn(f"qfuse.torch: {name} has no eager fast path: {e}")
        return op

    @torch.compiler.substitute_in_graph(fn, skip_signature_check=True)
    def traced(*args, **kwargs):
        return op(*args, **kwargs)

    FAST_OPS.add(name)
    return fn


def _define(schema, cuda_impl, fake_impl=None):
    name = schema.split("(", 1)[0]
    _lib.define(schema)
    if _register_cpp(name):
        CPP_OPS.add(name)
    else:
        _lib.impl(name, cuda_impl, "CUDA")
    torch.library.register_fake(f"qfuse::{name}", fake_impl or (lambda *a, **k: None), lib=_lib)
    OPS[name] = schema
    _IMPLS[name] = cuda_impl
    CALL[name] = _fast(name, getattr(torch.ops.qfuse, name))
    return CALL[name]


# ---- ops mirroring the C++ API (destination passing) ------------------------------------------

_QUANT_ARGS = "str spec, Tensor(b!)? scales=None, Tensor? scale=None, Tensor? scale_ub=None"


def _quantize_impl(x, out, spec, scales=None, scale=None, scale_ub=None):
    _q.quantize(_dl(x, "x"), _dl(out, "out", _out_fmt(spec)), spec,
                scales=_opt(scales, "out.scales", _scale_fmt(spec)),
                scale=_opt(scale, "out.scale"), scale_ub=_opt(scale_ub, "out.scale_ub"),
                stream=_stream(x))


quantize = _define(f"quantize(Tensor x, Tensor(a!) out, {_QUANT_ARGS}) -> ()", _quantize_impl)


def _silu_and_mul_impl(x, out):
    _q.silu_and_mul(_dl(x, "x"), _dl(out, "out"), stream=_stream(x))


silu_and_mul = _define("silu_and_mul(Tensor x, Tensor(a!) out) -> ()", _silu_and_mul_impl)


def _silu_mul_quant_impl(x, out, spec, scales=None, scale=None, scale_ub=None):
    _q.silu_mul_quant(_dl(x, "x"), _dl(out, "out", _out_fmt(spec)), spec,
                      scales=_opt(scales, "out.scales", _scale_fmt(spec)),
                      scale=_opt(scale, "out.scale"), scale_ub=_opt(scale_ub, "out.scale_ub"),
                      stream=_stream(x))


silu_mul_quant = _define(f"silu_mul_quant(Tensor x, Tensor(a!) out, {_QUANT_ARGS}) -> ()",
                         _silu_mul_quant_impl)


def _merge_states_impl(outputs, lses, out, spec="none", scales=None, scale=None, scale_ub=None,
                       out_lse=None, lse_base=0, copy_from=-1):
    if len(outputs) == 0:
        raise ValueError("argument 'outputs': expected 2 to 8 partial states, got 0")
    _q.merge_states([_dl(o, f"o[{i}]") for i, o in enumerate(outputs)],
                    [_dl(s, f"lse[{i}]") for i, s in enumerate(lses)],
                    _dl(out, "out", _out_fmt(spec)), spec,
                    scales=_opt(scales, "out.scales", _scale_fmt(spec)),
                    scale=_opt(scale, "out.scale"), scale_ub=_opt(scale_ub, "out.scale_ub"),
                    out_lse=_opt(out_lse, "out_lse"), lse_base=lse_base, copy_from=copy_from,
                    stream=_stream(outputs[0]))


merge_states = _define(
    "merge_states(Tensor[] outputs, Tensor[] lses, Tensor(a!) out, str spec=\"none\", "
    "Tensor(b!)? scales=None, Tensor? scale=None, Tensor? scale_ub=None, "
    "Tensor(c!)? out_lse=None, int lse_base=0, int copy_from=-1) -> ()",
    _merge_states_impl)


def _dynamic_per_tensor_impl(x, out, scale):
    _q.dynamic_per_tensor_quant(_dl(x, "x"), _dl(out, "out", "e4m3"), _dl(scale, "out.scale"),
                                stream=_stream(x))


dynamic_per_tensor_quant = _define(
    "dynamic_per_tensor_quant(Tensor x, Tensor(a!) out, Tensor(b!) scale) -> ()",
    _dynamic_per_tensor_impl)


def _mla_write_cache_impl(kv_c, k_pe, slot_mapping, cache, k_scale=None):
    _q.mla_write_cache(_dl(kv_c, "kv_c"), _dl(k_pe, "k_pe"), _dl(slot_mapping, "slot_mapping"),
                       _dl(cache, "cache", "e4m3"), k_scale=_opt(k_scale, "k_scale"),
                       stream=_stream(kv_c))


mla_write_cache = _define(
    "mla_write_cache(Tensor kv_c, Tensor k_pe, Tensor slot_mapping, Tensor(a!) cache, "
    "Tensor? k_scale=None) -> ()", _mla_write_cache_impl)


def _mla_decode_impl(q, cache, block_table, seq_lens, out, workspace, s_q, softmax_scale,
                     spec="none", scales=None, scale=None, scale_ub=None, k_scale=None, lse=None,
                     split="auto", kernel="auto", schedule=None, w_uv=None):
    _q.mla_decode(_dl(q, "q"), _dl(cache, "cache", "e4m3"), _dl(block_table, "block_table"),
                  _dl(seq_lens, "seq_lens"), _dl(out, "out", _out_fmt(spec)),
                  _dl(workspace, "workspace"), s_q, softmax_scale, spec,
                  scales=_opt(scales, "out.scales", _scale_fmt(spec)),
                  scale=_opt(scale, "out.scale"), scale_ub=_opt(scale_ub, "out.scale_ub"),
                  k_scale=_opt(k_scale, "k_scale"), lse=_opt(lse, "lse"), split=split,
                  kernel=kernel, schedule=_opt(schedule, "schedule"), w_uv=_opt(w_uv, "w_uv"),
                  stream=_stream(q))


# NOTE: schedule (a host int64 [qfuse.MLA_SCHEDULE_WORDS] tensor from mla_decode_schedule): the
# call reuses the split schedule computed once for the decode step and launches no scheduler.
# w_uv ([N, 512, 128] bf16, W_UV): out is the up-projected o [T, N * 128] in `spec`, the
# up-projection fused into the split-KV combine (docs/mla_decode.md), instead of o_latent.
mla_decode = _define(
    "mla_decode(Tensor q, Tensor cache, Tensor block_table, Tensor seq_lens, Tensor(a!) out, "
    "Tensor(b!) workspace, int s_q, float softmax_scale, str spec=\"none\", "
    "Tensor(c!)? scales=None, Tensor? scale=None, Tensor? scale_ub=None, Tensor? k_scale=None, "
    "Tensor(d!)? lse=None, str split=\"auto\", str kernel=\"auto\", Tensor? schedule=None, "
    "Tensor? w_uv=None) -> ()",
    _mla_decode_impl)


def _mla_decode_schedule_impl(q, cache, block_table, seq_lens, out, workspace, schedule, s_q,
                              softmax_scale, spec="none", scales=None, scale=None, scale_ub=None,
                              k_scale=None, lse=None, split="auto", kernel="auto", w_uv=None):
    _q.mla_decode_schedule(_dl(q, "q"), _dl(cache, "cache", "e4m3"),
                           _dl(block_table, "block_table"), _dl(seq_lens, "seq_lens"),
                           _dl(out, "out", _out_fmt(spec)), _dl(workspace, "workspace"),
                           _dl(schedule, "schedule"), s_q, softmax_scale, spec,
                           scales=_opt(scales, "out.scales", _scale_fmt(spec)),
                           scale=_opt(scale, "out.scale"), scale_ub=_opt(scale_ub, "out.scale_ub"),
                           k_scale=_opt(k_scale, "k_scale"), lse=_opt(lse, "lse"), split=split,
                           kernel=kernel, w_uv=_opt(w_uv, "w_uv"), stream=_stream(q))


# NOTE: the split schedule of a decode step (every layer's call shares seq_lens and the shapes)
# into `workspace`, described in `schedule`, a host int64 tensor of qfuse.MLA_SCHEDULE_WORDS
# (mla_schedule() allocates it): the step's mla_decode calls take it as schedule=. It takes the
# arguments of those calls (the same checks); it writes none of out, scales or lse.
mla_decode_schedule = _define(
    "mla_decode_schedule(Tensor q, Tensor cache, Tensor block_table, Tensor seq_lens, "
    "Tensor out, Tensor(a!) workspace, Tensor(b!) schedule, int s_q, float softmax_scale, "
    "str spec=\"none\", Tensor? scales=None, Tensor? scale=None, Tensor? scale_ub=None, "
    "Tensor? k_scale=None, Tensor? lse=None, str split=\"auto\", str kernel=\"auto\", "
    "Tensor? w_uv=None) -> ()",
    _mla_decode_schedule_impl)


def _vit_quantize_qkv_impl(q, k, v, q_out, k_out, v_out, q_scale, k_scale, v_scale,
                           v_transposed=False):
    _q.vit_quantize_qkv(_dl(q, "q"), _dl(k, "k"), _dl(v, "v"), _dl(q_out, "q_out", "e4m3"),
                        _dl(k_out, "k_out", "e4m3"), _dl(v_out, "v_out", "e4m3"),
                        _dl(q_scale, "q_scale"), _dl(k_scale, "k_scale"), _dl(v_scale, "v_scale"),
                        v_transposed=v_transposed, stream=_stream(q))


vit_quantize_qkv = _define(
    "vit_quantize_qkv(Tensor q, Tensor k, Tensor v, Tensor(a!) q_out, Tensor(b!) k_out, "
    "Tensor(c!) v_out, Tensor q_scale, Tensor k_scale, Tensor v_scale, "
    "bool v_transposed=False) -> ()", _vit_quantize_qkv_impl)


def _vit_attention_impl(q, k, v, out, head_dim, softmax_scale, cu_seqlens=None,
                        cu_seqlens_cpu=None, spec="none", scales=None, scale=None, scale_ub=None,
                        q_scale=None, k_scale=None, v_scale=None, v_transposed=False,
                        kernel="auto", workspace=None):
    _q.vit_attention(_dl(q, "q", "e4m3"), _dl(k, "k", "e4m3"), _dl(v, "v", "e4m3"),
                     _dl(out, "out", _out_fmt(spec)), head_dim, softmax_scale,
                     cu_seqlens=_opt(cu_seqlens, "cu_seqlens"),
                     cu_seqlens_host=_opt(cu_seqlens_cpu, "cu_seqlens_host"), spec=spec,
                     scales=_opt(scales, "out.scales", _scale_fmt(spec)),
                     scale=_opt(scale, "out.scale"), scale_ub=_opt(scale_ub, "out.scale_ub"),
                     q_scale=_opt(q_scale, "q_scale"), k_scale=_opt(k_scale, "k_scale"),
                     v_scale=_opt(v_scale, "v_scale"), v_transposed=v_transposed, kernel=kernel,
                     workspace=_opt(workspace, "workspace"), stream=_stream(q))


# NOTE: cu_seqlens_cpu is the host copy of cu_seqlens (the library checks the lengths there and
# sizes its grid from them without reading the device). workspace: optional scratch of
# vit_workspace()'s size, any content; with it the FP8 tensor-core kernel spreads the last wave's
# key tiles over every SM (stream-K, docs/vit_attention.md). Not shared by calls in flight at
# the same time.
vit_attention = _define(
    "vit_attention(Tensor q, Tensor k, Tensor v, Tensor(a!) out, int head_dim, "
    "float softmax_scale, Tensor? cu_seqlens=None, Tensor? cu_seqlens_cpu=None, "
    "str spec=\"none\", Tensor(b!)? scales=None, Tensor? scale=None, Tensor? scale_ub=None, "
    "Tensor? q_scale=None, Tensor? k_scale=None, Tensor? v_scale=None, "
    "bool v_transposed=False, str kernel=\"auto\", Tensor(c!)? workspace=None) -> ()",
    _vit_attention_impl)


def vit_workspace(s_total, num_heads, head_dim, device=None):
    """A uint8 workspace of the size vit_attention's stream-K grid needs on the current device
    (None where it needs none: no device, or an empty call)."""
    n = _q.vit_attention_workspace_size(s_total, num_heads, head_dim)
    return torch.empty(n, dtype=torch.uint8, device=device or "cuda") if n > 0 else None


def mla_workspace(batch, s_q, num_heads, device=None, split="auto", kernel="auto"):
    """A uint8 workspace of the size mla_decode needs on the current device."""
    n = _q.mla_workspace_size(batch, s_q, num_heads, split, kernel)
    return torch.empty(n, dtype=torch.uint8, device=device or "cuda")


def mla_schedule():
    """A host int64 tensor for mla_decode_schedule to describe a decode step's schedule in."""
    return torch.zeros(_q.MLA_SCHEDULE_WORDS, dtype=torch.int64)


# ---- allocating wrappers -------------------------------------------------------------------

_QFUSE_TO_TORCH = {"fp32": torch.float32, "e4m3": FP8, "ue8m0": torch.uint8}


def _alloc(spec, rows, cols, device, none_dtype):
    """(out, scales) for an output of [rows, cols] values written as `spec`."""
    od = _q.out_dtype(spec)
    if od is None:
        out = torch.empty((rows, cols), dtype=none_dtype, device=device)
    elif od == "e2m1x2":
        out = torch.empty((rows, cols // 2), dtype=torch.uint8, device=device)
    else:
        out = torch.empty((rows, cols), dtype=FP8, device=device)
    sdt, sizes = _q.scale_shape(spec, rows, cols)
    scales = None
    if sizes:
        scales = torch.empty(sizes, dtype=_QFUSE_TO_TORCH[sdt], device=device)
    return out, scales


def quantize_alloc(x, spec, scale=None, scale_ub=None, out_dtype=None):
    """Allocating form of quantize: returns (out, scales or None)."""
    out, scales = _alloc(spec, x.shape[0], x.shape[1], x.device, out_dtype or x.dtype)
    quantize(x, out, spec, scales, scale, scale_ub)
    return out, scales


def silu_mul_quant_alloc(x, spec, scale=None, scale_ub=None, out_dtype=None):
    """Allocating form of silu_mul_quant on x [T, 2H]: returns (out, scales or None)."""
    out, scales = _alloc(spec, x.shape[0], x.shape[1] // 2, x.device, out_dtype or x.dtype)
    silu_mul_quant(x, out, spec, scales, scale, scale_ub)
    return out, scales


def merge_states_alloc(outputs, lses, spec="none", scale=None, scale_ub=None, return_lse=False,
                       lse_base=0, copy_from=-1, out_dtype=None):
    """Allocating form of merge_states: (out [T, H * D], scales or None[, out_lse [H, T]])."""
    T, H, D = outputs[0].shape
    out, scales = _alloc(spec, T, H * D, outputs[0].device, out_dtype or outputs[0].dtype)
    out_lse = torch.empty((H, T), dtype=torch.float32, device=outputs[0].device) \
        if return_lse else None
    merge_states(list(outputs), list(lses), out, spec, scales, scale, scale_ub, out_lse,
                 lse_base, copy_from)
    return (out, scales, out_lse) if return_lse else (out, scales)
