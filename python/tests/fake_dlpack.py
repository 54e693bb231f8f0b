"""DLPack tensors that describe memory without owning any: a CUDA tensor for tests on machines
without a GPU (the binding validates before it touches memory, so it never reads these
pointers), built with ctypes so that the host tests need neither numpy nor PyTorch."""

import ctypes

# DLPack device types and (type code, bits) of the dtypes the tests use.
CPU, CUDA = 1, 2
DTYPES = {
    "bf16": (4, 16),
    "fp16": (2, 16),
    "fp32": (2, 32),
    "fp64": (2, 64),
    "i32": (0, 32),
    "i64": (0, 64),
    "u8": (1, 8),
    "e4m3": (10, 8),  # float8_e4m3fn
    "e5m2": (12, 8),
    "e8m0": (14, 8),  # float8_e8m0fnu
}
ITEMSIZE = {k: v[1] // 8 for k, v in DTYPES.items()}


class _Device(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _Tensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", _Device),
        ("ndim", ctypes.c_int32),
        ("dtype", _DataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


class _Managed(ctypes.Structure):
    _fields_ = [
        ("dl_tensor", _Tensor),
        ("manager_ctx", ctypes.c_void_p),
        ("deleter", ctypes.c_void_p),  # null: the structures live as long as the FakeTensor
    ]


_capsule_new = ctypes.pythonapi.PyCapsule_New
_capsule_new.restype = ctypes.py_object
_capsule_new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]


def contiguous_strides(shape):
    strides, acc = [], 1
    for s in reversed(shape):
        strides.append(acc)
        acc *= s
    return tuple(reversed(strides))


class FakeTensor:
    """A DLPack producer: `shape` of `dtype` at address `data` on `device` (type, id)."""

    def __init__(self, shape, dtype, strides=None, data=0x100000, device=(CUDA, 0)):
        self.shape = tuple(shape)
        self.dtype = dtype
        self.strides = tuple(strides) if strides is not None else contiguous_strides(shape)
        self.data = data
        self.device = device
        self._keep = []

    def __dlpack_device__(self):
        return self.device

    def __dlpack__(self, stream=None, max_version=None, dl_device=None, copy=None):
        n = len(self.shape)
        shape = (ctypes.c_int64 * max(n, 1))(*self.shape)
        strides = (ctypes.c_int64 * max(n, 1))(*self.strides)
        code, bits = DTYPES[self.dtype]
        m = _Managed()
        m.dl_tensor = _Tensor(
            self.data, _Device(*self.device), n, _DataType(code, bits, 1), shape, strides, 0
        )
        self._keep.append((m, shape, strides))
        return _capsule_new(ctypes.addressof(m), b"dltensor", None)


def cuda(shape, dtype, strides=None, data=0x100000):
    return FakeTensor(shape, dtype, strides, data)


def cpu(shape, dtype, strides=None, data=0x100000):
    return FakeTensor(shape, dtype, strides, data, device=(CPU, 0))


class HostFloats(FakeTensor):
    """A real host fp32 [rows, cols] matrix (ctypes memory) exported over DLPack."""

    def __init__(self, rows, cols, values):
        self.buffer = (ctypes.c_float * max(rows * cols, 1))(*values)
        super().__init__((rows, cols), "fp32", data=ctypes.addressof(self.buffer),
                         device=(CPU, 0))


class HostInts(FakeTensor):
    """A real host int32 vector (ctypes memory) exported over DLPack."""

    def __init__(self, values):
        self.buffer = (ctypes.c_int32 * max(len(values), 1))(*values)
        super().__init__((len(values),), "i32", data=ctypes.addressof(self.buffer),
                         device=(CPU, 0))


class HostInt64s(FakeTensor):
    """A real host int64 vector (ctypes memory) exported over DLPack."""

    def __init__(self, values):
        self.buffer = (ctypes.c_int64 * max(len(values), 1))(*values)
        super().__init__((len(values),), "i64", data=ctypes.addressof(self.buffer),
                         device=(CPU, 0))
