"""The launch functions of qfuse._qfuse emulated on CPU tensors through the C++ host reference
(qfuse.ref_quantize), and the torch ops' implementations registered for CPU: lets the drop-in,
opcheck and torch.compile tests of test_gpu.py run on a machine without a GPU, checking the
Python layers (argument plumbing, layouts, schemas, the fusion pass under Inductor) — not the
kernels. No argument validation here: the real binding's checks are in test_host.py."""

import math

import torch
import torch.nn.functional as F
from torch.utils.dlpack import from_dlpack

import qfuse
from qfuse.torch import dropin, ops


def _t(capsule):
    return None if capsule is None else from_dlpack(capsule)


def _write(dst, data):
    view = dst.view(torch.uint8)
    view.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8).view(view.shape))


def _quantize_values(y, out, spec, scales, scale, ub, eps=0.0):
    ro, rs = qfuse.ref_quantize(y.float().contiguous(), spec,
                                float(scale) if scale is not None else 1.0,
                                float(ub) if ub is not None else math.inf,
                                {torch.float16: "fp16", torch.float32: "fp32"}.get(out.dtype,
                                                                                    "bf16"),
                                eps)
    _write(out, ro)
    if scales is not None:
        _write(scales, rs)


def _silu_mul(x):
    h = x.shape[1] // 2
    return F.silu(x[:, :h].float()) * x[:, h:].float()


class HostBackend:
    """Stands in for the extension module inside qfuse.torch.ops / dropin."""

    def __getattr__(self, name):
        return getattr(qfuse, name)

    @staticmethod
    def quantize(x, out, spec, scales=None, scale=None, scale_ub=None, stream=0, eps=0.0):
        x, out, scales, scale, ub = map(_t, (x, out, scales, scale, scale_ub))
        _quantize_values(x.float(), out, spec, scales, scale, ub, eps)

    @staticmethod
    def silu_mul_quant(x, out, spec, scales=None, scale=None, scale_ub=None, stream=0, eps=0.0):
        # NOTE: PyTorch's silu, also for the engine rule (whose SiLU arithmetic only the C++
        # kernel and ref::silu_and_mul_engine have): this backend checks the Python plumbing.
        x, out, scales, scale, ub = map(_t, (x, out, scales, scale, scale_ub))
        _quantize_values(_silu_mul(x), out, spec, scales, scale, ub, eps)

    @staticmethod
    def silu_and_mul(x, out, stream=0):
        x, out = _t(x), _t(out)
        out.copy_(_silu_mul(x).to(out.dtype))

    @staticmethod
    def dynamic_per_tensor_quant(x, out, scale, stream=0):
        x, out, scale = _t(x), _t(out), _t(scale)
        s = torch.tensor(float(x.float().abs().max()), dtype=torch.float32) / 448.0
        scale.copy_(torch.clamp(s, min=torch.finfo(torch.float32).tiny).view(scale.shape))
        _quantize_values(x.float(), out, "fp8_per_tensor", None, scale, None)

    @staticmethod
    def merge_states(outputs, lses, out, spec="none", scales=None, scale=None, scale_ub=None,
                     out_lse=None, lse_base=0, copy_from=-1, stream=0):
        o = [_t(c) for c in outputs]
        lse = torch.stack([_t(c) for c in lses]).double()
        out, scales, scale, ub, out_lse = map(_t, (out, scales, scale, scale_ub, out_lse))
        lse = torch.where(torch.isinf(lse), torch.full_like(lse, -math.inf), lse)
        m = lse.amax(0)
        w = torch.exp(lse - m)
        tot = w.sum(0)
        weights = torch.nan_to_num(w / tot)
        y = sum(weights[i].t()[:, :, None] * o[i].double() for i in range(len(o)))
        T = y.shape[0]
        _quantize_values(y.reshape(T, -1), out.view(T, -1) if out.dim() == 3 else out, spec,
                         scales, scale, ub)
        if out_lse is not None:
            out_lse.copy_(torch.where(torch.isinf(m), m, torch.log(tot) + m).float())


BACKEND = HostBackend()
_lib = torch.library.Library("qfuse", "IMPL")
for _name, _impl in ops._IMPLS.items():
    _lib.impl(_name, _impl, "CPU")
MODULES = (ops, dropin)
