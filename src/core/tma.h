// TMA tensor maps (host side): cuTensorMapEncodeTiled through the runtime's driver entry point
// (no link against libcuda), for the tensor-core kernels of every family.
#pragma once

#include <cuda.h>

#include "qfuse/core/status.h"

namespace qfuse::detail {

/// Encodes a 3-D tiled map of `base` with sizes `dims` (innermost first, elements), byte strides
/// of dimensions 1 and 2, box `box` (elements), no interleave, L2 promotion 256 B, OOB zero fill.
/// Errors name `what`.
Status encode_tma_3d(CUtensorMap* map, CUtensorMapDataType type, void* base,
                     const cuuint64_t (&dims)[3], const cuuint64_t (&strides)[2],
                     const cuuint32_t (&box)[3], CUtensorMapSwizzle swizzle, const char* what);

}  // namespace qfuse::detail
