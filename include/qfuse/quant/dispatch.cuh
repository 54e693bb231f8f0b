// From a validated QuantOutput to the kind core that writes it (the runtime -> compile-time step
// of every quantizing kernel's dispatch): visit_quantizer() calls a generic callable with a tag
// naming the core type and the core's kernel parameters.
//
//   return quant::visit_quantizer(q, rows, cols, [&](auto tag, const auto& params) {
//     using Core = typename decltype(tag)::type;   // e.g. Fp8PerGroupCore<128>
//     return launch_my_kernel<Core>(params, ...);
//   });
//
// kKinds restricts the kinds a call site instantiates (kPlainKinds, kQuantizedKinds, kAllKinds,
// and the engine-rule cores kEngine*Kinds, which only the drop-in ops' kernels build); a kind
// outside it is an internal error at run time (validation rejects it first: the capability rows
// list what each op builds). kNvfp4Round is the E2M1 round of Nvfp4Core's wide stores
// (quantizer.cuh).
#pragma once

#include <cstdint>
#include <string>

#include "qfuse/core/status.h"
#include "qfuse/quant/quantize.h"
#include "qfuse/quant/quantizer.cuh"

namespace qfuse::quant {

template <class T>
struct CoreTag {
  using type = T;
};

enum RowwiseKinds : unsigned {
  kPlainKinds = 1u,
  kQuantizedKinds = 2u,  // every quantized kind with qfuse's rules
  kAllKinds = 3u,
  // The engine rule (QuantRule::kEngine) of each kind that has one.
  kEngineTokenKinds = 4u,
  kEngineGroupKinds = 8u,
  kEngineNvfp4Kinds = 16u,
  kEngineKinds = 28u,
};

/// True when p and a row stride of `ld` elements of `elem` bytes allow `align`-byte accesses.
inline bool aligned_rows(const void* p, int64_t ld, int64_t elem, int64_t align) {
  return reinterpret_cast<uintptr_t>(p) % align == 0 && (ld * elem) % align == 0;
}

template <class T>
T* typed(const TensorRef& t) {
  return static_cast<T*>(t.data);
}

/// Calls f(CoreTag<Core>{}, const Core::Params&, int64_t padding_units) for the core of `q.spec`
/// (padding_units: ScaleAddr::padding_units of the scale buffer, 0 without one) and returns its
/// Status. `q` must have been validated for an output of [rows, cols] values.
template <unsigned kKinds = kAllKinds, int kNvfp4Round = 0, class F>
Status visit_quantizer(const QuantOutput& q, int64_t rows, int64_t cols, F&& f) {
  const QuantSpec& spec = q.spec;
  const int64_t ld = q.out.strides[0];
  if (spec.kind == QuantKind::kNone) {
    if constexpr ((kKinds & kPlainKinds) != 0) {
      switch (q.out.dtype) {
        case DType::kBF16: {
          using C = PlainCore<__nv_bfloat16>;
          return f(CoreTag<C>{},
                   typename C::Params{typed<__nv_bfloat16>(q.out), ld,
                                      aligned_rows(q.out.data, ld, 2, 16)},
                   int64_t{0});
        }
        case DType::kF16: {
          using C = PlainCore<__half>;
          return f(
              CoreTag<C>{},
              typename C::Params{typed<__half>(q.out), ld, aligned_rows(q.out.data, ld, 2, 16)},
              int64_t{0});
        }
        case DType::kF32: {
          using C = PlainCore<float>;
          return f(CoreTag<C>{},
                   typename C::Params{typed<float>(q.out), ld, aligned_rows(q.out.data, ld, 4, 16)},
                   int64_t{0});
        }
        default:
          return Status::InvalidArgument("out.dtype", "bf16|fp16|fp32",
                                         std::string(to_string(q.out.dtype)));
      }
    } else {
      return Status(StatusCode::kInternal,
                    "visit_quantizer: this call site writes no plain output");
    }
  }
  if constexpr ((kKinds & (kQuantizedKinds | kEngineKinds)) == 0) {
    return Status(StatusCode::kInternal,
                  "visit_quantizer: this call site writes no " + to_string(spec));
  } else {
    const auto unbuilt = [&spec] {
      return Status(StatusCode::kInternal,
                    "visit_quantizer: this call site writes no " + to_string(spec));
    };
    ScaleShape shape;
    QFUSE_RETURN_IF_ERROR(detail::scale_shape_valid(spec, rows, cols, &shape));
    const ScaleAddr sa = ScaleAddr::make(spec, shape, rows);
    const int64_t padded = sa.padding_units();
    uint8_t* out = typed<uint8_t>(q.out);
    const bool vec8 = aligned_rows(q.out.data, ld, 1, 8);
    const bool packed = spec.format == ScaleFormat::kUe8m0Packed;
    const bool pow2 = spec.format != ScaleFormat::kF32;
    if (spec.rule == QuantRule::kEngine) {
      constexpr QuantRule kE = QuantRule::kEngine;
      switch (spec.kind) {
        case QuantKind::kFp8PerToken:
          if constexpr ((kKinds & kEngineTokenKinds) != 0) {
            using C = Fp8PerTokenCore<kE>;
            return f(CoreTag<C>{},
                     typename C::Params{out, ld, typed<float>(q.scales), q.scale_ub, vec8},
                     int64_t{0});
          }
          break;
        case QuantKind::kFp8PerGroup:
          if constexpr ((kKinds & kEngineGroupKinds) != 0) {
            const Fp8PerGroupEngineParams p{
                {out, ld, q.scales.data, sa, q.scale_ub, pow2, packed, vec8}, q.eps};
            if (spec.group_size == 64) return f(CoreTag<Fp8PerGroupCore<64, kE>>{}, p, padded);
            return f(CoreTag<Fp8PerGroupCore<128, kE>>{}, p, padded);
          }
          break;
        case QuantKind::kNvfp4:
          if constexpr ((kKinds & kEngineNvfp4Kinds) != 0) {
            using C = Nvfp4Core<kNvfp4Round, kE>;
            return f(CoreTag<C>{},
                     typename C::Params{out, ld, typed<uint8_t>(q.scales), sa, q.scale,
                                        aligned_rows(q.out.data, ld, 1, 4), vec8},
                     padded);
          }
          break;
        default:
          break;
      }
      return unbuilt();
    }
    if constexpr ((kKinds & kQuantizedKinds) == 0) {
      return unbuilt();
    } else {
      switch (spec.kind) {
        case QuantKind::kFp8PerTensor: {
          using C = Fp8PerTensorCore;
          return f(CoreTag<C>{}, C::Params{out, ld, q.scale, vec8}, int64_t{0});
        }
        case QuantKind::kFp8PerToken: {
          using C = Fp8PerTokenCore<>;
          return f(CoreTag<C>{}, C::Params{out, ld, typed<float>(q.scales), q.scale_ub, vec8},
                   int64_t{0});
        }
        case QuantKind::kFp8PerGroup: {
          if (spec.group_size == 64) {
            using C = Fp8PerGroupCore<64>;
            return f(CoreTag<C>{},
                     C::Params{out, ld, q.scales.data, sa, q.scale_ub, pow2, packed, vec8}, padded);
          }
          using C = Fp8PerGroupCore<128>;
          return f(CoreTag<C>{},
                   C::Params{out, ld, q.scales.data, sa, q.scale_ub, pow2, packed, vec8}, padded);
        }
        case QuantKind::kNvfp4: {
          using C = Nvfp4Core<kNvfp4Round>;
          return f(CoreTag<C>{},
                   typename C::Params{out, ld, typed<uint8_t>(q.scales), sa, q.scale,
                                      aligned_rows(q.out.data, ld, 1, 4), vec8},
                   padded);
        }
        default:
          break;
      }
      return Status::NotSupported("quantization kind " + to_string(spec));
    }
  }
}

}  // namespace qfuse::quant
