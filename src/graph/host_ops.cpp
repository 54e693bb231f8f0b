// Host reference path of the built-in graph ops: the fp64 references of the library
// (ref::silu_and_mul, ref::merge_states), rounded to fp32 and written by ref::quantize, which
// writes the bytes the device ops write (codes, scales in their layout, padding zeroed); GEMMs
// dequantize their operands and accumulate in fp64.
#include <cmath>
#include <cstring>

#include "graph/gemm_block128.h"
#include "graph/op_impls.h"
#include "qfuse/act_quant/silu_mul.h"
#include "qfuse/quant/reference.h"
#include "qfuse/quant/rules.h"
#include "qfuse/quant/scale_addr.h"

namespace qfuse::graph::detail {
namespace {

Status internal(std::string msg) {
  return {StatusCode::kInternal, std::move(msg)};
}

float element(const HostTensor& t, int64_t i) {
  switch (t.desc.dtype) {
    case DType::kBF16: {
      uint16_t b;
      std::memcpy(&b, t.data.data() + 2 * i, 2);
      return ref::bf16_value(b);
    }
    case DType::kF16: {
      uint16_t b;
      std::memcpy(&b, t.data.data() + 2 * i, 2);
      return ref::f16_value(b);
    }
    case DType::kF32: {
      float f;
      std::memcpy(&f, t.data.data() + 4 * i, 4);
      return f;
    }
    case DType::kE4M3:
      return rules::e4m3_value(t.data[i]);
    default:
      return NAN;
  }
}

float scalar(const HostRunArgs& a, const char* port, float fallback) {
  auto it = a.in.find(port);
  return it == a.in.end() ? fallback : element(*it->second, 0);
}

}  // namespace

void host_store(HostTensor* t, int64_t i, float v) {
  switch (t->desc.dtype) {
    case DType::kBF16: {
      const uint16_t b = ref::bf16_bits(v);
      std::memcpy(t->data.data() + 2 * i, &b, 2);
      break;
    }
    case DType::kF16: {
      const uint16_t b = ref::f16_bits(v);
      std::memcpy(t->data.data() + 2 * i, &b, 2);
      break;
    }
    case DType::kF32:
      std::memcpy(t->data.data() + 4 * i, &v, 4);
      break;
    case DType::kE4M3:
      t->data[i] = ref::e4m3_encode(v);
      break;
    default:  // other byte types (packed e2m1, ue8m0): the value is the raw byte
      t->data[i] = static_cast<uint8_t>(static_cast<int>(v) & 0xFF);
      break;
  }
}

Status host_write_quantized(const HostRunArgs& a, const QuantSpec& spec,
                            const std::vector<float>& y, int64_t rows, int64_t cols) {
  HostTensor* out = a.out.at("out");
  if (spec.kind == QuantKind::kNone) {
    for (int64_t i = 0; i < rows * cols; ++i) host_store(out, i, y[i]);
    return Status::Ok();
  }
  ref::RefScalars s;
  s.scale = scalar(a, "scale", 1.0f);
  s.scale_ub = scalar(a, "scale_ub", INFINITY);
  const ref::QuantResult r = ref::quantize(y.data(), rows, cols, spec, s);
  if (r.out.size() != out->data.size())
    return internal("host quantize wrote " + std::to_string(r.out.size()) + " bytes, tensor '" +
                    out->desc.name + "' holds " + std::to_string(out->data.size()));
  out->data = r.out;
  auto sc = a.out.find("scales");
  if (sc != a.out.end()) {
    if (r.scales.size() != sc->second->data.size())
      return internal("host quantize wrote " + std::to_string(r.scales.size()) +
                      " scale bytes, tensor '" + sc->second->desc.name + "' holds " +
                      std::to_string(sc->second->data.size()));
    sc->second->data = r.scales;
  }
  return Status::Ok();
}

namespace {

std::vector<float> to_float(const std::vector<double>& v) {
  return std::vector<float>(v.begin(), v.end());
}

std::vector<double> silu_reference(const HostTensor& x) {
  const int64_t T = x.desc.shape[0], H = x.desc.shape[1] / 2;
  std::vector<uint16_t> bits(static_cast<size_t>(T * 2 * H));
  std::memcpy(bits.data(), x.data.data(), bits.size() * 2);
  return ref::silu_and_mul(bits.data(), x.desc.dtype, T, H, 2 * H);
}

/// Dequantized operand a of a gemm, [M, K] row-major.
std::vector<double> dequant_a(const HostRunArgs& a, const GemmInfo& g) {
  const HostTensor& t = *a.in.at("a");
  std::vector<double> v(static_cast<size_t>(g.M * g.K));
  if (g.a_scaling == GemmScaling::kNone) {
    for (int64_t i = 0; i < g.M * g.K; ++i) v[i] = element(t, i);
    return v;
  }
  if (g.a_scaling == GemmScaling::kPerTensor) {
    const double s = scalar(a, "a_scale", 1.0f);
    for (int64_t i = 0; i < g.M * g.K; ++i) v[i] = element(t, i) * s;
    return v;
  }
  const HostTensor& sc = *a.in.at("a_scales");
  ScaleShape shape;
  (void)scale_shape(g.a_quant, g.M, g.K, &shape);
  const ScaleAddr addr = ScaleAddr::make(g.a_quant, shape, g.M);
  const int64_t gs = g.a_scaling == GemmScaling::kPerToken ? g.K : g.a_quant.group_size;
  for (int64_t m = 0; m < g.M; ++m)
    for (int64_t k = 0; k < g.K; ++k) {
      const int64_t off = addr.offset(m, k / gs);
      const double s =
          shape.dtype == DType::kF32 ? element(sc, off) : rules::ue8m0_value(sc.data[off]);
      v[m * g.K + k] = element(t, m * g.K + k) * s;
    }
  return v;
}

std::vector<double> dequant_b(const HostRunArgs& a, const GemmInfo& g) {
  const HostTensor& t = *a.in.at("b");
  std::vector<double> v(static_cast<size_t>(g.N * g.K));
  const int64_t nb = ceil_div(g.N, 128), kb = ceil_div(g.K, 128);
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t k = 0; k < g.K; ++k) {
      double s = 1.0;
      if (g.b_scaling == GemmScaling::kPerTensor) s = scalar(a, "b_scale", 1.0f);
      if (g.b_scaling == GemmScaling::kBlock128)
        s = element(*a.in.at("b_scale"), qfuse_blk128_offset(n / 128, k / 128, nb, kb));
      v[n * g.K + k] = element(t, n * g.K + k) * s;
    }
  return v;
}

std::map<std::string, const TensorDesc*> descs(const HostRunArgs& a) {
  std::map<std::string, const TensorDesc*> d;
  for (const auto& [p, t] : a.in) d[p] = &t->desc;
  return d;
}

}  // namespace

Status host_quantize(const HostRunArgs& a) {
  const HostTensor& x = *a.in.at("x");
  QuantSpec spec;
  QFUSE_RETURN_IF_ERROR(node_quant_spec(*a.node, &spec));
  const int64_t T = x.desc.shape[0], H = x.desc.shape[1];
  std::vector<float> y(static_cast<size_t>(T * H));
  for (int64_t i = 0; i < T * H; ++i) y[i] = element(x, i);
  return host_write_quantized(a, spec, y, T, H);
}

Status host_silu_and_mul(const HostRunArgs& a) {
  const HostTensor& x = *a.in.at("x");
  const std::vector<double> y = silu_reference(x);
  HostTensor* out = a.out.at("out");
  for (size_t i = 0; i < y.size(); ++i)
    host_store(out, static_cast<int64_t>(i), static_cast<float>(y[i]));
  return Status::Ok();
}

Status host_silu_mul_quant(const HostRunArgs& a) {
  const HostTensor& x = *a.in.at("x");
  QuantSpec spec;
  QFUSE_RETURN_IF_ERROR(node_quant_spec(*a.node, &spec));
  return host_write_quantized(a, spec, to_float(silu_reference(x)), x.desc.shape[0],
                              x.desc.shape[1] / 2);
}

Status host_gemm(const HostRunArgs& a) {
  GemmInfo g;
  QFUSE_RETURN_IF_ERROR(gemm_info(*a.node, descs(a), &g));
  const std::vector<double> A = dequant_a(a, g), B = dequant_b(a, g);
  HostTensor* out = a.out.at("out");
  for (int64_t m = 0; m < g.M; ++m)
    for (int64_t n = 0; n < g.N; ++n) {
      double acc = 0.0;
      const double* ar = A.data() + m * g.K;
      const double* br = B.data() + n * g.K;
      for (int64_t k = 0; k < g.K; ++k) acc += ar[k] * br[k];
      host_store(out, m * g.N + n, static_cast<float>(acc));
    }
  return Status::Ok();
}

}  // namespace qfuse::graph::detail
