"""The PyTorch layer of qfuse (optional: the core package works without PyTorch).

Importing it registers the ``torch.ops.qfuse.*`` custom ops (mutation-annotated schemas, fake
implementations, so they trace under ``torch.compile`` and capture in CUDA graphs) and offers:

* destination-passing ops mirroring the C++ API: ``quantize``, ``silu_and_mul``,
  ``silu_mul_quant``, ``merge_states``, ``dynamic_per_tensor_quant``, ``mla_write_cache``,
  ``mla_decode`` (``mla_workspace`` allocates its workspace), ``mla_decode_schedule`` (the split
  schedule once a decode step; ``mla_schedule`` allocates its host descriptor),
  ``vit_quantize_qkv``, ``vit_attention`` (``vit_workspace`` allocates its optional stream-K
  workspace);
* the reference engine's drop-in surface (SPEC §9, docs/python.md): ``scaled_fp8_quant``,
  ``per_token_group_fp8_quant``, ``scaled_fp4_quant``, ``silu_and_mul_per_block_quant``,
  ``merge_attn_states`` with the same names, argument order, dtypes and shapes;
* allocating wrappers (``quantize_alloc``, ``silu_mul_quant_alloc``, ``merge_states_alloc``);
* the torch.compile fusion pass: :mod:`qfuse.torch.fusion`.

Every op runs on ``torch.cuda.current_stream()`` of the input's device and allocates nothing;
the wrappers allocate their outputs with torch (so a CUDA graph captures them in its pool).
"""

from .ops import *  # noqa: F401,F403
from .ops import __all__ as _ops_all
from .dropin import *  # noqa: F401,F403
from .dropin import __all__ as _dropin_all

__all__ = list(_ops_all) + list(_dropin_all)
