// Host reference path of the gemm op: dequantizes its operands and accumulates in fp64.
// (The families' ops have theirs in src/<family>/graph_ops.cpp.)
#include <cmath>
#include <cstring>

#include "graph/gemm_block128.h"
#include "graph/op_helpers.h"
#include "graph/op_impls.h"
#include "qfuse/quant/reference.h"
#include "qfuse/quant/rules.h"
#include "qfuse/quant/scale_addr.h"

namespace qfuse::graph::detail {
namespace {

/// Dequantized operand a of a gemm, [M, K] row-major.
std::vector<double> dequant_a(const HostRunArgs& a, const GemmInfo& g) {
  const HostTensor& t = *a.in.at("a");
  std::vector<double> v(static_cast<size_t>(g.M * g.K));
  if (g.a_scaling == GemmScaling::kNone) {
    for (int64_t i = 0; i < g.M * g.K; ++i) v[i] = host_element(t, i);
    return v;
  }
  if (g.a_scaling == GemmScaling::kPerTensor) {
    const double s = host_scalar(a, "a_scale", 1.0f);
    for (int64_t i = 0; i < g.M * g.K; ++i) v[i] = host_element(t, i) * s;
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
          shape.dtype == DType::kF32 ? host_element(sc, off) : rules::ue8m0_value(sc.data[off]);
      v[m * g.K + k] = host_element(t, m * g.K + k) * s;
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
      if (g.b_scaling == GemmScaling::kPerTensor) s = host_scalar(a, "b_scale", 1.0f);
      if (g.b_scaling == GemmScaling::kBlock128)
        s = host_element(*a.in.at("b_scale"), qfuse_blk128_offset(n / 128, k / 128, nb, kb));
      v[n * g.K + k] = host_element(t, n * g.K + k) * s;
    }
  return v;
}

std::map<std::string, const TensorDesc*> descs(const HostRunArgs& a) {
  std::map<std::string, const TensorDesc*> d;
  for (const auto& [p, t] : a.in) d[p] = &t->desc;
  return d;
}

}  // namespace

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
