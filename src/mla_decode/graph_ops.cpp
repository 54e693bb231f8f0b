// The MLA decode family in the graph (issue 14, SPEC §3, §6):
//
//   mla_write_cache  kv_c [T, 512], k_pe [T, 64] bf16, slot_mapping [T] i64, cache_in [blocks,
//                    block_size, 576] bf16|e4m3 (k_scale [1] fp32 for e4m3) -> cache: cache_in
//                    with the slots written, in place (OpDef::in_place: on the device `cache`
//                    is cache_in's storage, which nothing else may read; the host path copies).
//   mla_attention    q [T, N, 576] bf16 (the absorbed query), kv_cache, k_scale, block_table
//                    [B, max_blocks] i32, seq_lens [B] i32 (T = B * s_q), optional w_uv [N, 512,
//                    128] bf16 -> out: o [T, N * 128] with w_uv (o_latent [T, N * 512] without)
//                    in the node's quant kind (attr quant: any kind with qfuse's rules; scale /
//                    scale_ub inputs as every quantizing op), optional lse [T, N] fp32. Attrs s_q
//                    (1, 2, 4; default 1) and softmax_scale (default 192^-0.5, DeepSeek V3's).
//                    Device: mla_decode() with its workspace as the node's scratch.
//
// mla_attention is an attention op with a quantized epilogue (FusionFamily::kAttention): the
// fuse_attn_quant pass rewrites mla_attention -> quantize into mla_attention{quant = spec} where
// the capability row of the fused kernel (mla_decode_up_proj; o_latent's mla_decode row lists the
// same kinds) says it writes that kind. The host path is the fp64 reference (ref::mla_decode, then
// ref::mla_up_proj of the exact o_latent) written through the host quantizer.
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "graph/op_helpers.h"
#include "qfuse/core/cuda_check.h"
#include "qfuse/graph/family.h"
#include "qfuse/mla_decode/mla_decode.h"
#include "qfuse/quant/capabilities.h"

namespace qfuse::graph {
namespace {

using detail::device_quant_output;
using detail::expect_input;
using detail::host_store;
using detail::host_write_quantized;
using detail::invalid;
using detail::make_desc;
using detail::shape_text;

/// The fused kernel's capability row (o_latent's, mla_decode, lists the same kinds).
constexpr const char* kCapsOp = "mla_decode_up_proj";
/// Multiprocessors assumed when the workspace is planned without a device (H100 / H200).
constexpr int kPlanSms = 132;

Status shape_is(const Node& n, const char* port, const TensorDesc& d,
                const std::vector<int64_t>& want, const std::string& what) {
  if (d.shape != want)
    return invalid(port_label(n, true, port) + ": expected shape " + shape_text(want) + " (" +
                   what + "), got " + shape_text(d.shape));
  return Status::Ok();
}

/// The cache input `port` ([blocks, block_size, 576] bf16|e4m3) and its k_scale input (required
/// for e4m3, refused for bf16).
Status expect_cache(const Node& n, const std::map<std::string, const TensorDesc*>& in,
                    const char* port, const TensorDesc** cache) {
  QFUSE_RETURN_IF_ERROR(expect_input(n, in, port, {DType::kBF16, DType::kE4M3}, 3, cache));
  const TensorDesc& c = **cache;
  if (c.shape[2] != kMlaHeadDim)
    return invalid(port_label(n, true, port) + ": expected [blocks, block_size, 576], got " +
                   shape_text(c.shape));
  const int64_t bs = c.shape[1];
  if (bs != 16 && bs != 32 && bs != 64 && bs != 128)
    return invalid(port_label(n, true, port) +
                   ": block size (dim 1) must be 16, 32, 64 or 128, got " + std::to_string(bs));
  const bool fp8 = c.dtype == DType::kE4M3;
  if (fp8) {
    const TensorDesc* s = nullptr;
    QFUSE_RETURN_IF_ERROR(expect_input(n, in, "k_scale", {DType::kF32}, 1, &s));
    QFUSE_RETURN_IF_ERROR(shape_is(n, "k_scale", *s, {1}, "the cache's per-tensor scale"));
  } else if (in.count("k_scale")) {
    return invalid(port_label(n, true, "k_scale") + ": only for an e4m3 cache");
  }
  return Status::Ok();
}

ref::MlaHostCache host_cache(const HostTensor& c, const HostRunArgs& a) {
  ref::MlaHostCache h;
  h.dtype = c.desc.dtype;
  h.data = c.data.data();
  h.num_blocks = c.desc.shape[0];
  h.block_size = c.desc.shape[1];
  h.stride_token = kMlaHeadDim;
  h.stride_block = h.block_size * kMlaHeadDim;
  h.k_scale = detail::host_scalar(a, "k_scale", 1.0f);
  return h;
}

// ---- mla_write_cache ------------------------------------------------------------------------

Status infer_write_cache(const Node& n, const std::map<std::string, const TensorDesc*>& in,
                         std::map<std::string, TensorDesc>* out) {
  const TensorDesc *kv_c = nullptr, *k_pe = nullptr, *slots = nullptr, *cache = nullptr;
  QFUSE_RETURN_IF_ERROR(expect_input(n, in, "kv_c", {DType::kBF16}, 2, &kv_c));
  const int64_t T = kv_c->shape[0];
  QFUSE_RETURN_IF_ERROR(shape_is(n, "kv_c", *kv_c, {T, kMlaLatentDim}, "[T, 512]"));
  QFUSE_RETURN_IF_ERROR(expect_input(n, in, "k_pe", {DType::kBF16}, 2, &k_pe));
  QFUSE_RETURN_IF_ERROR(shape_is(n, "k_pe", *k_pe, {T, kMlaRopeDim}, "[T, 64] of kv_c's T"));
  QFUSE_RETURN_IF_ERROR(expect_input(n, in, "slot_mapping", {DType::kI64}, 1, &slots));
  QFUSE_RETURN_IF_ERROR(shape_is(n, "slot_mapping", *slots, {T}, "[T] of kv_c's T"));
  QFUSE_RETURN_IF_ERROR(expect_cache(n, in, "cache_in", &cache));
  (*out)["cache"] = make_desc(cache->dtype, cache->shape);
  return Status::Ok();
}

Status host_write_cache(const HostRunArgs& a) {
  const HostTensor& in = *a.in.at("cache_in");
  HostTensor& cache = *a.out.at("cache");
  cache.data = in.data;
  const HostTensor& kv_c = *a.in.at("kv_c");
  const HostTensor& k_pe = *a.in.at("k_pe");
  const HostTensor& slots = *a.in.at("slot_mapping");
  const int64_t T = kv_c.desc.shape[0];
  std::vector<int64_t> slot(T);
  if (T > 0) std::memcpy(slot.data(), slots.data.data(), T * 8);
  ref::mla_write_cache(reinterpret_cast<const uint16_t*>(kv_c.data.data()), kMlaLatentDim,
                       reinterpret_cast<const uint16_t*>(k_pe.data.data()), kMlaRopeDim,
                       slot.data(), T, host_cache(cache, a), cache.data.data());
  return Status::Ok();
}

Status device_write_cache(const DeviceRunArgs& a, cudaStream_t stream) {
  const TensorRef& in = a.in.at("cache_in");
  const TensorRef& cache = a.out.at("cache");
  // In place (the executor gives `cache` cache_in's storage); a copy only for a caller that
  // does not.
  const size_t bytes = static_cast<size_t>(in.numel()) * dtype_size(in.dtype);
  if (bytes > 0 && cache.data != in.data)
    QFUSE_CUDA_RETURN(
        cudaMemcpyAsync(cache.data, in.data, bytes, cudaMemcpyDeviceToDevice, stream));
  MlaCacheWriteArgs w;
  w.kv_c = a.in.at("kv_c");
  w.k_pe = a.in.at("k_pe");
  w.slot_mapping = static_cast<const int64_t*>(a.in.at("slot_mapping").data);
  w.cache = cache;
  auto ks = a.in.find("k_scale");
  w.k_scale = ks != a.in.end() ? static_cast<const float*>(ks->second.data) : nullptr;
  return mla_write_cache(w, stream);
}

OpDef write_cache_def() {
  OpDef d;
  d.name = "mla_write_cache";
  d.summary =
      "kv_c [T, 512], k_pe [T, 64] bf16, slot_mapping [T] i64 into cache_in [blocks, "
      "block_size, 576] bf16|e4m3 (k_scale for e4m3), in place -> cache";
  d.inputs = {{"kv_c"}, {"k_pe"}, {"slot_mapping"}, {"cache_in"}, {"k_scale", true}};
  d.outputs = {{"cache"}};
  d.in_place = {{"cache", "cache_in"}};
  d.infer = infer_write_cache;
  d.host_run = host_write_cache;
  d.device_run = device_write_cache;
  return d;
}

// ---- mla_attention --------------------------------------------------------------------------

struct AttnGeometry {
  int64_t T = 0, N = 0, B = 0, max_blocks = 0;
  int s_q = 1;
  bool up = false;
  float softmax_scale = 0.0f;
  int64_t cols() const { return N * (up ? kMlaVHeadDim : kMlaLatentDim); }
};

Status attn_attrs(const Node& n, int* s_q, float* softmax_scale) {
  int64_t sq = 1;
  QFUSE_RETURN_IF_ERROR(detail::int_attr(n, "s_q", 1, &sq));
  if (sq != 1 && sq != 2 && sq != 4)
    return invalid("attr 's_q': expected 1, 2 or 4, got " + std::to_string(sq));
  *s_q = static_cast<int>(sq);
  const std::string v = n.attr("softmax_scale");
  const double s = v.empty() ? 1.0 / std::sqrt(192.0) : std::strtod(v.c_str(), nullptr);
  if (!(s > 0.0) || !std::isfinite(s))
    return invalid("attr 'softmax_scale': expected a finite number > 0, got " + v);
  *softmax_scale = static_cast<float>(s);
  return Status::Ok();
}

Status attn_geometry(const Node& n, const std::map<std::string, const TensorDesc*>& in,
                     AttnGeometry* g) {
  QFUSE_RETURN_IF_ERROR(attn_attrs(n, &g->s_q, &g->softmax_scale));
  const TensorDesc *q = nullptr, *cache = nullptr, *bt = nullptr, *lens = nullptr;
  QFUSE_RETURN_IF_ERROR(expect_input(n, in, "q", {DType::kBF16}, 3, &q));
  g->T = q->shape[0];
  g->N = q->shape[1];
  if (q->shape[2] != kMlaHeadDim)
    return invalid(port_label(n, true, "q") +
                   ": expected [T, N, 576] (512 latent + 64 rope), got " + shape_text(q->shape));
  if (g->N != 16 && g->N != 32 && g->N != 64 && g->N != 128)
    return invalid(port_label(n, true, "q") + ": heads (dim 1) must be 16, 32, 64 or 128, got " +
                   std::to_string(g->N));
  if (g->T % g->s_q != 0)
    return invalid(port_label(n, true, "q") + ": T = " + std::to_string(g->T) +
                   " is not a multiple of attr s_q = " + std::to_string(g->s_q));
  g->B = g->T / g->s_q;
  QFUSE_RETURN_IF_ERROR(expect_cache(n, in, "kv_cache", &cache));
  QFUSE_RETURN_IF_ERROR(expect_input(n, in, "block_table", {DType::kI32}, 2, &bt));
  if (bt->shape[0] != g->B || bt->shape[1] < 1)
    return invalid(port_label(n, true, "block_table") + ": expected [B = T / s_q = " +
                   std::to_string(g->B) + ", max_blocks >= 1], got " + shape_text(bt->shape));
  g->max_blocks = bt->shape[1];
  QFUSE_RETURN_IF_ERROR(expect_input(n, in, "seq_lens", {DType::kI32}, 1, &lens));
  QFUSE_RETURN_IF_ERROR(shape_is(n, "seq_lens", *lens, {g->B}, "[B]"));
  g->up = in.count("w_uv") > 0;
  if (g->up) {
    const TensorDesc* w = nullptr;
    QFUSE_RETURN_IF_ERROR(expect_input(n, in, "w_uv", {DType::kBF16}, 3, &w));
    QFUSE_RETURN_IF_ERROR(
        shape_is(n, "w_uv", *w, {g->N, kMlaLatentDim, kMlaVHeadDim}, "[N, 512, 128]"));
  }
  return Status::Ok();
}

Status infer_attention(const Node& n, const std::map<std::string, const TensorDesc*>& in,
                       std::map<std::string, TensorDesc>* out) {
  AttnGeometry g;
  QFUSE_RETURN_IF_ERROR(attn_geometry(n, in, &g));
  QFUSE_RETURN_IF_ERROR(detail::infer_optional_quant_output(n, in, kCapsOp, g.T, g.cols(), out));
  if (n.outputs.count("lse")) (*out)["lse"] = make_desc(DType::kF32, {g.T, g.N});
  return Status::Ok();
}

std::map<std::string, const TensorDesc*> host_descs(const HostRunArgs& a) {
  std::map<std::string, const TensorDesc*> in;
  for (const auto& [p, t] : a.in) in[p] = &t->desc;
  return in;
}

Status host_attention(const HostRunArgs& a) {
  AttnGeometry g;
  QFUSE_RETURN_IF_ERROR(attn_geometry(*a.node, host_descs(a), &g));
  const HostTensor& q = *a.in.at("q");
  const HostTensor& bt = *a.in.at("block_table");
  const HostTensor& lens = *a.in.at("seq_lens");
  std::vector<double> o, lse;
  ref::mla_decode(reinterpret_cast<const uint16_t*>(q.data.data()), g.B, g.s_q, g.N,
                  host_cache(*a.in.at("kv_cache"), a),
                  reinterpret_cast<const int32_t*>(bt.data.data()), g.max_blocks,
                  reinterpret_cast<const int32_t*>(lens.data.data()), g.softmax_scale, &o, &lse);
  if (g.up) {
    std::vector<double> y;
    ref::mla_up_proj(o, reinterpret_cast<const uint16_t*>(a.in.at("w_uv")->data.data()), g.T, g.N,
                     false, &y);
    o.swap(y);
  }
  auto l = a.out.find("lse");
  if (l != a.out.end())
    for (size_t i = 0; i < lse.size(); ++i)
      host_store(l->second, static_cast<int64_t>(i), static_cast<float>(lse[i]));
  QuantSpec spec;
  QFUSE_RETURN_IF_ERROR(node_quant_spec(*a.node, &spec));
  return host_write_quantized(a, spec, std::vector<float>(o.begin(), o.end()), g.T, g.cols());
}

Status device_attention(const DeviceRunArgs& a, cudaStream_t stream) {
  MlaDecodeArgs m;
  QFUSE_RETURN_IF_ERROR(attn_attrs(*a.node, &m.s_q, &m.softmax_scale));
  m.q = a.in.at("q");
  m.cache = a.in.at("kv_cache");
  auto ks = a.in.find("k_scale");
  m.k_scale = ks != a.in.end() ? static_cast<const float*>(ks->second.data) : nullptr;
  m.block_table = a.in.at("block_table");
  m.seq_lens = a.in.at("seq_lens");
  auto w = a.in.find("w_uv");
  if (w != a.in.end()) m.w_uv = w->second;
  QFUSE_RETURN_IF_ERROR(device_quant_output(a, &m.out));
  auto l = a.out.find("lse");
  if (l != a.out.end()) m.lse = l->second;
  return mla_decode(m, MlaWorkspace{a.scratch, a.scratch_bytes}, {}, stream);
}

Status attention_scratch(const Node& n, const std::map<std::string, const TensorDesc*>& in,
                         int sm_count, size_t* bytes) {
  AttnGeometry g;
  QFUSE_RETURN_IF_ERROR(attn_geometry(n, in, &g));
  return mla_decode_workspace_size(g.B, g.s_q, static_cast<int>(g.N), {}, bytes,
                                   sm_count > 0 ? sm_count : kPlanSms);
}

OpDef attention_def() {
  OpDef d;
  d.name = "mla_attention";
  d.summary =
      "MLA decode: q [T, N, 576], paged kv_cache, block_table, seq_lens (+ w_uv [N, 512, 128]) -> "
      "out o [T, N * 128] (o_latent [T, N * 512] without w_uv; attr quant: any kind), lse [T, N]";
  d.inputs = {{"q"},        {"kv_cache"},   {"k_scale", true}, {"block_table"},
              {"seq_lens"}, {"w_uv", true}, {"scale", true},   {"scale_ub", true}};
  d.outputs = {{"out"}, {"scales", true}, {"lse", true}};
  d.attrs = {{"quant", AttrType::kQuant, {}},
             {"out_dtype", AttrType::kDType, {}},
             {"s_q", AttrType::kInt, {}},
             {"softmax_scale", AttrType::kFloat, {}}};
  d.infer = infer_attention;
  d.fusion = FusionFamily::kAttention;
  d.fused_quant_op = "mla_attention";
  d.fused_quant_supported = [](const QuantSpec& s) {
    return fused_output_quant_supported(kCapsOp, s);
  };
  d.host_run = host_attention;
  d.device_run = device_attention;
  d.scratch_bytes = attention_scratch;
  return d;
}

}  // namespace
}  // namespace qfuse::graph

QFUSE_REGISTER_GRAPH_FAMILY(mla_decode) {
  r.add_op(qfuse::graph::write_cache_def());
  r.add_op(qfuse::graph::attention_def());
  r.add_backend({"mla_decode",
                 {"bf16", "fp8_e4m3"},
                 "MLA decode (DeepSeek V2/V3) over bf16 / per-tensor FP8 paged latent caches"});
}
