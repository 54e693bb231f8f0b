"""PyTorch CUDA tensors that describe memory without owning any, for machines without a GPU: the
fake DLPack tensors of fake_dlpack.py imported into torch. They dispatch to the ops' CUDA kernels
(the C++ op library's), whose checks run before anything touches memory, so every validation of
the C++ path runs here; a call that passes them fails at the library's device check (no device).
Views (view, narrow, t, as_strided) work on them; Python indexing does not (it sets the device),
so `no_device_indexing()` makes `t[a:b]` a narrow while the Python path runs on them.

valid_cases(): one valid call of every op of qfuse.torch (the shapes of test_gpu.opcheck_cases);
mutations(name, args): calls with one argument made wrong each (a wrong dtype, device, shape,
layout, value), for comparing the C++ and the Python path.
"""

import contextlib
import math
from unittest import mock

import torch

from fake_dlpack import cuda

FP8 = torch.float8_e4m3fn
_KEEP = []  # the fake DLPack structures live as long as the process
# NOTE: above any address a process maps (47-bit user space), so that on a GPU machine the driver
# knows none of them and the library's pointer check refuses every call that gets that far.
_NEXT = [1 << 50]
_DL = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32", torch.float64: "fp64",
       torch.int32: "i32", torch.int64: "i64", torch.uint8: "u8", FP8: "e4m3",
       torch.float8_e5m2: "e5m2", torch.float8_e8m0fnu: "e8m0"}


def fake(shape, dtype=torch.bfloat16, strides=None):
    """A CUDA tensor of `shape` at a fresh 256-byte aligned fake address."""
    if dtype not in _DL:  # float4_e2m1fn_x2 and other one-byte dtypes: a view of uint8
        return fake(shape, torch.uint8, strides).view(dtype)
    item = torch.empty((), dtype=dtype).element_size()
    n = max(math.prod(shape), 1) * item
    addr = _NEXT[0]
    _NEXT[0] += (n + 4096) // 256 * 256
    f = cuda(tuple(shape), _DL[dtype], tuple(strides) if strides is not None else None, addr)
    _KEEP.append(f)
    with mock.patch.object(torch.cuda, "_lazy_init", lambda: None):
        return torch._C._from_dlpack(f.__dlpack__())


def like(t, shape=None, dtype=None, strides=None, device=None):
    """`t` with one property changed (a fake CUDA tensor, or a zeroed CPU one)."""
    shape = tuple(t.shape) if shape is None else tuple(shape)
    dtype = t.dtype if dtype is None else dtype
    device = t.device.type if device is None else device
    if device == "cpu":
        if dtype == torch.float4_e2m1fn_x2:
            return torch.zeros(shape, dtype=torch.uint8).view(dtype)
        return torch.zeros(shape, dtype=dtype)
    return fake(shape, dtype, strides)


@contextlib.contextmanager
def no_device_indexing():
    """`t[a:b]` as a narrow of dimension 0 (the drop-ins' num_token_padding slices)."""
    orig = torch.Tensor.__getitem__

    def getitem(self, idx):
        if isinstance(idx, slice) and idx.step is None and self.dim() > 0:
            n = self.shape[0]
            start, stop, _ = idx.indices(n)
            return self.narrow(0, start, max(0, stop - start))
        return orig(self, idx)

    with mock.patch.object(torch.Tensor, "__getitem__", getitem):
        yield


def valid_cases(T=16, H=256):
    """name -> a valid argument tuple of every op, on fake CUDA tensors."""
    x = fake((T, 2 * H))
    s = fake((1,), torch.float32)
    o = [fake((T, 4, 64)) for _ in range(2)]
    lse = [fake((4, T), torch.float32) for _ in range(2)]
    f32 = torch.float32
    u8 = torch.uint8
    S, Hv, D = 24, 2, 72
    qkv = fake((S, 3, Hv, D))
    vq, vk, vv = (qkv.select(1, i) for i in range(3))
    cu = fake((3,), torch.int32)
    cu_cpu = torch.tensor([0, 5, S], dtype=torch.int32)
    ws = fake((1 << 20,), u8)  # mla_workspace_size asks the device
    cases = {
        "quantize": (x, fake((T, 2 * H), FP8), "fp8_per_token", fake((T,), f32), None, s),
        "silu_and_mul": (x, fake((T, H))),
        "silu_mul_quant": (x, fake((T, H // 2), u8), "nvfp4:swizzled", fake((128, 16), u8), s,
                           None),
        "merge_states": (o, lse, fake((T, 256)), "none", None, None, None, fake((4, T), f32), 0,
                         -1),
        "dynamic_per_tensor_quant": (x, fake((T, 2 * H), FP8), fake((1,), f32)),
        "static_scaled_fp8_quant": (fake((T, 2 * H), FP8), x, s),
        "dynamic_scaled_fp8_quant": (fake((T, 2 * H), FP8), x, fake((1,), f32)),
        "dynamic_per_token_scaled_fp8_quant": (fake((T, 2 * H), FP8), x, fake((T, 1), f32), None),
        "per_token_group_fp8_quant": (x, fake((T, 2 * H), FP8), fake((T, 4), f32), 128, 1e-10,
                                      -448.0, 448.0, False, False, False),
        "scaled_fp4_quant": (fake((T, H), u8), x, fake((128, 32), u8), s, True),
        "silu_and_mul_per_block_quant": (fake((T, H), FP8), x, fake((T, 2), f32), 128, None,
                                         False),
        "merge_attn_states": (fake((T, 4, 64), FP8), fake((4, T), f32), o[0], lse[0], o[1],
                              lse[1], s),
        "silu_mul_static_scaled_fp8_quant": (fake((T, H), FP8), x, s),
        "silu_mul_dynamic_per_token_scaled_fp8_quant": (fake((T, H), FP8), x, fake((T, 1), f32),
                                                        None),
        "silu_mul_per_token_group_fp8_quant": (x, fake((T, H), FP8), fake((T, 4), f32), 64, 1e-10,
                                               -448.0, 448.0, False, False, False),
        "silu_mul_scaled_fp4_quant": (fake((T, H // 2), u8), x, fake((128, 16), u8), s, True),
        "mla_write_cache": (fake((T, 512)), fake((T, 64)), fake((T,), torch.int64),
                            fake((6, 64, 576)), None),
        "mla_decode": (fake((3, 16, 576)), fake((14, 64, 576)), fake((3, 4), torch.int32),
                       fake((3,), torch.int32), fake((3, 16 * 512)), ws, 1, 0.07, "none", None,
                       None, None, None, fake((3, 16), f32), "auto", "auto"),
        "mla_decode_schedule": (fake((3, 16, 576)), fake((14, 64, 576)),
                                fake((3, 4), torch.int32), fake((3,), torch.int32),
                                fake((3, 16 * 512)), ws, torch.zeros(16, dtype=torch.int64), 1,
                                0.07, "none", None, None, None, None, fake((3, 16), f32), "auto",
                                "auto"),
        "vit_quantize_qkv": (vq, vk, vv, fake((S, Hv, 80), u8), fake((S, Hv, 80), u8),
                             fake((S, Hv, 80), u8), s, s, s, False),
        "vit_attention": (fake((S, Hv, 80), u8), fake((S, Hv, 80), u8), fake((S, Hv, 80), u8),
                          fake((S, Hv * D)), D, D ** -0.5, cu, cu_cpu, "none", None, None, None,
                          s, s, s, False, "auto"),
    }
    return cases


_SPECS = ["none", "fp8_per_tensor", "fp8_per_token", "fp8_group128:row:f32",
          "fp8_group64:col:ue8m0", "fp8_group128:col_tma:ue8m0_packed", "nvfp4:linear", "bogus"]


def _tensor_variants(t):
    yield "float64", like(t, dtype=torch.float64)
    yield "e5m2", like(t, dtype=torch.float8_e5m2)
    yield "e4m3", like(t, dtype=FP8)
    yield "uint8", like(t, dtype=torch.uint8)
    yield "int32", like(t, dtype=torch.int32)
    yield "fp4x2", like(t, dtype=torch.float4_e2m1fn_x2)
    yield "e8m0", like(t, dtype=torch.float8_e8m0fnu)
    yield "bf16", like(t, dtype=torch.bfloat16)
    yield "cpu" if t.is_cuda else "cuda", like(t, device="cpu" if t.is_cuda else "cuda")
    if t.dim() >= 1:
        yield "rows+1", like(t, shape=(t.shape[0] + 1,) + tuple(t.shape[1:]))
        yield "cols+16", like(t, shape=tuple(t.shape[:-1]) + (t.shape[-1] + 16,))
        yield "cols-1", like(t, shape=tuple(t.shape[:-1]) + (max(t.shape[-1] - 1, 0),))
        yield "no rows", like(t, shape=(0,) + tuple(t.shape[1:]))
    yield "rank+1", like(t, shape=(1,) + tuple(t.shape))
    yield "rank 5", like(t, shape=(1, 1, 1, 1, 1))
    if t.dim() >= 2 and t.is_cuda:
        shape = tuple(t.shape)
        strides = [1] * len(shape)
        for d in range(1, len(shape)):  # column-major strides
            strides[d] = strides[d - 1] * shape[d - 1]
        yield "column-major", like(t, strides=strides)
        yield "padded rows", like(t, strides=(t.stride(0) + 16,) + tuple(t.stride()[1:]))


def mutations(name, args):
    """(label, args) with one argument of `args` made wrong each, keeping the schema's types."""
    schema = getattr(torch.ops.qfuse, name).default._schema
    for i, (a, v) in enumerate(zip(schema.arguments, args)):
        t = str(a.type)

        def at(value, i=i):
            return args[:i] + (value,) + args[i + 1:]

        if t == "Tensor" or (t == "Optional[Tensor]" and v is not None):
            for label, w in _tensor_variants(v):
                yield f"{a.name}: {label}", at(w)
            if t == "Optional[Tensor]":
                yield f"{a.name}: None", at(None)
        elif t == "Optional[Tensor]":
            yield f"{a.name}: a scalar", at(fake((1,), torch.float32))
            yield f"{a.name}: a matrix", at(fake((16, 4), torch.float32))
        elif t == "List[Tensor]":
            yield f"{a.name}: one", at(list(v[:1]))
            yield f"{a.name}: none", at([])
            yield f"{a.name}: three", at(list(v) + [v[0]])
            yield f"{a.name}: nine", at(list(v) * 5)
            for label, w in _tensor_variants(v[1]):
                yield f"{a.name}[1]: {label}", at([v[0], w] + list(v[2:]))
        elif t == "str":
            for s in (_SPECS if a.name == "spec" else ["bogus", "auto", "none", "simple"]):
                if s != v:
                    yield f"{a.name}: {s}", at(s)
        elif t == "int":
            for n in (-1, 0, 1, 2, 3, 64, 100, 1 << 20):
                if n != v:
                    yield f"{a.name}: {n}", at(n)
        elif t == "float":
            for f in (-1.0, 0.0, 1e-10, -240.0, 448.0, 1.5e-05, 1e16, float("nan"), float("inf")):
                if f != v:
                    yield f"{a.name}: {f}", at(f)
        elif t == "bool":
            yield f"{a.name}: {not v}", at(not v)
