// Graph tools (bench/graph_tools.h).
#include "bench/graph_tools.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <set>

#include "graph/op_helpers.h"
#include "graph/text.h"
#include "qfuse/core/quote.h"
#include "qfuse/quant/reference.h"

namespace qfuse::graph {
namespace {
using detail::invalid;
}  // namespace

namespace {
Status make_random_inputs_impl(const Graph& g, uint64_t seed, HostTensors* out,
                               const OpRegistry& reg);
}  // namespace

Status make_random_inputs(const Graph& g, uint64_t seed, HostTensors* out,
                          const OpRegistry* registry) {
  if (out == nullptr) return invalid("argument 'out': expected a map to fill, got null");
  try {
    return make_random_inputs_impl(g, seed, out,
                                   registry != nullptr ? *registry : default_registry());
  } catch (const std::exception& e) {  // std::bad_alloc, std::length_error
    return Status(StatusCode::kInvalidArgument, "graph " + quote_text(g.name) +
                                                    ": out of host memory making the random "
                                                    "inputs (" +
                                                    e.what() + ")");
  }
}

namespace {
Status make_random_inputs_impl(const Graph& g, uint64_t seed, HostTensors* out,
                               const OpRegistry& reg) {
  for (const std::string& name : g.inputs) {
    const TensorDesc* d = g.tensor(name);
    if (d == nullptr) return invalid("graph input '" + name + "' is not declared");
    HostTensor t;
    t.desc = *d;
    t.data.assign(d->bytes(), 0);
    std::mt19937_64 rng(seed ^ std::hash<std::string>{}(name));
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::uniform_real_distribution<float> unif(0.0f, 1.0f);
    auto activation = [&] {
      const float v = normal(rng);
      return unif(rng) < 0.01f ? 2.5f * v : v;
    };

    // What reads it decides what it holds.
    const auto readers = g.consumers(name);
    const Node* node = readers.empty() ? nullptr : readers.front().first;
    const std::string port = readers.empty() ? "" : readers.front().second;
    const OpDef* def = node ? reg.find(node->op) : nullptr;
    const bool gemm = def != nullptr && def->cls == OpClass::kGemm;
    const TensorDesc* b =
        gemm && node->inputs.count("b") ? g.tensor(node->inputs.at("b")) : nullptr;
    const double inv_sqrt_k =
        b != nullptr ? 1.0 / std::sqrt(static_cast<double>(b->shape[1])) : 1.0;
    const int64_t n = d->numel();

    if (gemm && port == "b") {
      const double s = d->dtype == DType::kE4M3 ? 1.0 : inv_sqrt_k;
      for (int64_t i = 0; i < n; ++i)
        detail::host_store(&t, i, static_cast<float>(normal(rng) * s));
    } else if (gemm && port == "b_scale") {
      for (int64_t i = 0; i < n; ++i)
        detail::host_store(
            &t, i,
            static_cast<float>(inv_sqrt_k * (n == 1 ? 1.0 + 0.25 * unif(rng) : 0.5 + unif(rng))));
    } else if (port == "scale_ub") {
      for (int64_t i = 0; i < n; ++i) detail::host_store(&t, i, 0.01f);
    } else if (port == "scale" || port == "a_scale") {
      QuantSpec q;
      if (node != nullptr) (void)node_quant_spec(*node, &q);
      const float base = q.kind == QuantKind::kNvfp4 ? 448.0f * 6.0f / 4.0f : 4.0f / 448.0f;
      for (int64_t i = 0; i < n; ++i) detail::host_store(&t, i, base * (1.0f + 0.2f * unif(rng)));
    } else if (port == "block_table" && node->inputs.count("kv_cache")) {
      // MLA: valid physical block ids of the cache the node reads.
      const int64_t blocks = g.tensor(node->inputs.at("kv_cache"))->shape[0];
      for (int64_t i = 0; i < n; ++i) {
        const int32_t id = static_cast<int32_t>(rng() % static_cast<uint64_t>(blocks));
        std::memcpy(t.data.data() + 4 * i, &id, 4);
      }
    } else if (port == "seq_lens" && node->inputs.count("block_table")) {
      // MLA: lengths in [1, what the block table covers], spread out.
      const int64_t cap = g.tensor(node->inputs.at("block_table"))->shape[1] *
                          g.tensor(node->inputs.at("kv_cache"))->shape[1];
      for (int64_t i = 0; i < n; ++i) {
        const int32_t len = static_cast<int32_t>(1 + rng() % static_cast<uint64_t>(cap));
        std::memcpy(t.data.data() + 4 * i, &len, 4);
      }
    } else if (port == "slot_mapping" && node->inputs.count("cache_in")) {
      // MLA cache writer: distinct slots of the cache (two tokens never write one slot), about
      // one in eight -1 (a padding token: skipped).
      const TensorDesc* c = g.tensor(node->inputs.at("cache_in"));
      const uint64_t slots = static_cast<uint64_t>(c->shape[0] * c->shape[1]);
      std::set<int64_t> used;
      for (int64_t i = 0; i < n; ++i) {
        int64_t slot = -1;
        if (rng() % 8 != 0 && used.size() < slots) {
          do {
            slot = static_cast<int64_t>(rng() % slots);
          } while (!used.insert(slot).second);
        }
        std::memcpy(t.data.data() + 8 * i, &slot, 8);
      }
    } else if (port == "k_scale") {
      for (int64_t i = 0; i < n; ++i) detail::host_store(&t, i, 0.05f * (1.0f + 0.2f * unif(rng)));
    } else if (port == "w_uv") {
      const float s = 1.0f / std::sqrt(static_cast<float>(d->shape[1]));
      for (int64_t i = 0; i < n; ++i) detail::host_store(&t, i, normal(rng) * s);
    } else if (port == "lse") {
      for (int64_t i = 0; i < n; ++i) detail::host_store(&t, i, 2.0f * normal(rng));
    } else if (d->dtype == DType::kUE8M0) {
      for (int64_t i = 0; i < n; ++i) t.data[i] = static_cast<uint8_t>(118 + rng() % 6);
    } else if (d->dtype == DType::kI32 || d->dtype == DType::kI64 || d->dtype == DType::kU8 ||
               d->dtype == DType::kE2M1x2) {
      for (size_t i = 0; i < t.data.size(); ++i) t.data[i] = static_cast<uint8_t>(rng());
    } else if (d->dtype == DType::kF32 && d->quant.kind == QuantKind::kNone && port == "a_scales") {
      for (int64_t i = 0; i < n; ++i) detail::host_store(&t, i, 0.01f * (0.5f + unif(rng)));
    } else {
      for (int64_t i = 0; i < n; ++i) detail::host_store(&t, i, activation());
    }
    (*out)[name] = std::move(t);
  }
  return Status::Ok();
}

}  // namespace

Status host_values(const HostTensor& t, std::vector<double>* out) {
  const int64_t n = t.desc.numel();
  out->resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    switch (t.desc.dtype) {
      case DType::kBF16:
      case DType::kF16: {
        uint16_t b;
        std::memcpy(&b, t.data.data() + 2 * i, 2);
        (*out)[i] = t.desc.dtype == DType::kBF16 ? ref::bf16_value(b) : ref::f16_value(b);
        break;
      }
      case DType::kF32: {
        float f;
        std::memcpy(&f, t.data.data() + 4 * i, 4);
        (*out)[i] = f;
        break;
      }
      default:
        return invalid("tensor '" + t.desc.name + "': values of dtype " +
                       std::string(to_string(t.desc.dtype)) + " are not plain numbers");
    }
  }
  return Status::Ok();
}

Difference compare_values(const std::vector<double>& a, const std::vector<double>& b) {
  Difference d;
  d.count = static_cast<int64_t>(std::min(a.size(), b.size()));
  for (int64_t i = 0; i < d.count; ++i)
    if (std::isfinite(b[i])) d.ref_max_abs = std::max(d.ref_max_abs, std::fabs(b[i]));
  const double floor = std::max(1e-2 * d.ref_max_abs, 1e-30);
  double se = 0.0, sb = 0.0;
  for (int64_t i = 0; i < d.count; ++i) {
    if (std::isnan(a[i]) != std::isnan(b[i])) {
      ++d.nan_mismatch;
      continue;
    }
    if (std::isnan(a[i])) continue;
    const double e = std::fabs(a[i] - b[i]);
    d.max_abs = std::max(d.max_abs, e);
    d.max_rel = std::max(d.max_rel, e / std::max(std::fabs(b[i]), floor));
    se += e * e;
    sb += b[i] * b[i];
  }
  d.rms_rel = sb > 0.0 ? std::sqrt(se / sb) : (se > 0.0 ? INFINITY : 0.0);
  return d;
}

}  // namespace qfuse::graph
