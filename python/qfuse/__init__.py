"""qfuse: FP8/NVFP4-writing CUDA kernels for LLM inference (Hopper), from Python.

The core package works without PyTorch: every op takes DLPack tensors (PyTorch, CuPy, JAX, ...)
that the caller allocated, launches on the stream it is given (an integer ``cudaStream_t``;
0 is the legacy default stream) and allocates nothing. Outputs are written in the form a
quantization spec names (``fp8_per_tensor``, ``fp8_per_token``, ``fp8_group128:col_tma:ue8m0``,
``nvfp4:swizzled``, ... ; :func:`all_specs`). FP8/FP4 buffers may be the framework's dtype or
uint8 views: the spec fixes their format.

Errors are the C++ library's messages ("argument 'out.dtype': expected e4m3, got bf16"), raised
as ValueError (TypeError for a dtype, NotImplementedError for an unsupported call, RuntimeError
for CUDA errors); nothing is launched on error.

The PyTorch layer (custom ops, the reference engine's drop-in signatures, allocating wrappers
and the torch.compile fusion pass) is the optional module :mod:`qfuse.torch`.
See docs/python.md.
"""

import importlib.util as _util
import sys as _sys

# PyTorch first where it is installed and not yet imported: on the device (torch 2.11, CUDA 13),
# `import torch` after this package's extension was loaded ends in a segmentation fault inside
# torch's own import, while the other order is fine (bench/NOTES.md P1). An engine imports torch
# first anyway; this makes every order safe at the cost of torch's import for a DLPack-only user
# who has it installed. A PyTorch that fails to import leaves the core working without it.
if "torch" not in _sys.modules and _util.find_spec("torch") is not None:
    try:
        import torch  # noqa: F401
    except Exception:  # noqa: BLE001  (a broken install: the core does not need it)
        pass

from ._qfuse import (  # noqa: E402,F401
    MAX_MERGE_STATES,
    MLA_SCHEDULE_WORDS,
    all_specs,
    canonical_spec,
    dynamic_per_tensor_quant,
    merge_states,
    merge_states_stacked,
    mla_attention,
    mla_attention_workspace_size,
    mla_decode,
    mla_decode_check,
    mla_decode_schedule,
    mla_workspace_size,
    mla_write_cache,
    op_specs,
    out_dtype,
    quantize,
    ref_quantize,
    scale_shape,
    silu_and_mul,
    silu_mul_quant,
    tensor_info,
    vit_attention,
    vit_attention_workspace_size,
    vit_quantize_qkv,
    vit_quantize_qkv_dynamic,
    vit_scale_state_bytes,
    vit_scale_state_reset,
)

__version__ = "0.2.0"

__all__ = [
    "MAX_MERGE_STATES",
    "MLA_SCHEDULE_WORDS",
    "all_specs",
    "canonical_spec",
    "dynamic_per_tensor_quant",
    "merge_states",
    "merge_states_stacked",
    "mla_attention",
    "mla_attention_workspace_size",
    "mla_decode",
    "mla_decode_check",
    "mla_decode_schedule",
    "mla_workspace_size",
    "mla_write_cache",
    "op_specs",
    "out_dtype",
    "quantize",
    "ref_quantize",
    "scale_shape",
    "silu_and_mul",
    "silu_mul_quant",
    "tensor_info",
    "vit_attention",
    "vit_attention_workspace_size",
    "vit_quantize_qkv",
    "vit_quantize_qkv_dynamic",
    "vit_scale_state_bytes",
    "vit_scale_state_reset",
]
