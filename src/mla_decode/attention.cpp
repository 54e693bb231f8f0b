// mla_attention: the MLA attention op with the reference engine's contract (mla_decode.h): views
// of the step's real rows, the cache write, then mla_decode with W_UV. Host code only.
#include <string>

#include "qfuse/mla_decode/mla_decode.h"
#include "quant/validate.h"

namespace qfuse {
namespace {

std::string str(int64_t v) {
  return std::to_string(v);
}

/// The first `rows` rows of a [R, ...] view (rank >= 1).
TensorRef first_rows(TensorRef t, int64_t rows) {
  if (t.rank >= 1) t.sizes[0] = rows;
  return t;
}

/// What mla_attention runs: the decode call's arguments over the step's real rows.
struct Plan {
  int64_t num_tokens = 0;
  MlaDecodeArgs decode;
  bool write = false;
  MlaCacheWriteArgs cache_write;
};

Status plan(const MlaAttentionArgs& a, const MlaAttentionMetadata& m, Plan* p) {
  if (a.q.rank != 3)
    return Status::InvalidArgument("q.rank", "3 ([num_tokens, N, 576])", str(a.q.rank));
  p->num_tokens = a.q.sizes[0];
  const int64_t T = p->num_tokens, N = a.q.sizes[1];
  if (m.num_actual_tokens < 0 || m.num_actual_tokens > T)
    return Status::InvalidArgument("metadata.num_actual_tokens",
                                   "in [0, num_tokens = " + str(T) + "]", str(m.num_actual_tokens));
  if (m.num_decode_tokens < 0 || m.num_decode_tokens > m.num_actual_tokens)
    return Status::InvalidArgument("metadata.num_decode_tokens",
                                   "in [0, num_actual_tokens = " + str(m.num_actual_tokens) + "]",
                                   str(m.num_decode_tokens));
  if (m.num_actual_tokens > m.num_decode_tokens)
    return Status::NotSupported(
        "mla_attention: rows [" + str(m.num_decode_tokens) + ", " + str(m.num_actual_tokens) +
        ") are prefill tokens; the prefill attention family is not built yet (decode rows only, "
        "s_q <= 4)");
  if (a.w_uv.empty_ref())
    return Status::InvalidArgument("w_uv", "[N, 512, 128] bf16 (the op writes the up-projected o)",
                                   "empty");
  const int64_t rows = m.num_actual_tokens;
  // The output: the whole buffer must fit [num_tokens, N * 128]; the kernels see its first rows.
  QuantOutput out;
  QFUSE_RETURN_IF_ERROR(
      detail::flatten_head_output(a.output, "output is [num_tokens, N * 128]", &out));
  QFUSE_RETURN_IF_ERROR(out.spec.validate());
  QFUSE_RETURN_IF_ERROR(validate_quant_output(out, T, N * kMlaVHeadDim));
  if (rows < T) {
    const ScaleLayout l = out.spec.layout;
    if (l == ScaleLayout::kColMajor || l == ScaleLayout::kColMajorTma)
      return Status::NotSupported(
          "mla_attention: " + to_string(out.spec) +
          " scales are column-major over the buffer's num_tokens rows; with num_actual_tokens (" +
          str(rows) + ") < num_tokens (" + str(T) +
          ") its real rows' scales are not a prefix of it: pass a buffer of num_actual_tokens "
          "rows, or a row-major layout");
    out.out = first_rows(out.out, rows);
    if (!out.scales.empty_ref()) {
      ScaleShape sh;
      QFUSE_RETURN_IF_ERROR(scale_shape(out.spec, rows, N * kMlaVHeadDim, &sh));
      TensorRef s = out.scales;
      for (int d = 0; d < sh.rank; ++d) s.sizes[d] = sh.sizes[d];
      out.scales = s;
    }
  }
  MlaDecodeArgs& d = p->decode;
  d.q = first_rows(a.q, m.num_decode_tokens);
  d.cache = a.kv_cache;
  d.k_scale = a.k_scale;
  d.block_table = m.block_table;
  d.seq_lens = m.seq_lens;
  d.s_q = m.decode_s_q;
  d.softmax_scale = a.softmax_scale;
  d.out = out;
  d.w_uv = a.w_uv;
  if (!a.lse.empty_ref()) d.lse = first_rows(a.lse, m.num_decode_tokens);
  p->write = !a.kv_c.empty_ref() || !a.k_pe.empty_ref();
  if (p->write) {
    if (a.kv_c.empty_ref() || a.k_pe.empty_ref())
      return Status::InvalidArgument("kv_c / k_pe", "both given or both empty",
                                     a.kv_c.empty_ref() ? "k_pe only" : "kv_c only");
    if (a.kv_c.rank != 2 || a.kv_c.sizes[0] != T)
      return Status::InvalidArgument("kv_c.sizes", "[num_tokens = " + str(T) + ", 512]",
                                     a.kv_c.shape_string());
    if (a.k_pe.rank != 2 || a.k_pe.sizes[0] != T)
      return Status::InvalidArgument("k_pe.sizes", "[num_tokens = " + str(T) + ", 64]",
                                     a.k_pe.shape_string());
    if (rows > 0 && m.slot_mapping == nullptr)
      return Status::InvalidArgument("metadata.slot_mapping",
                                     "a device int64 array of num_actual_tokens entries", "null");
    MlaCacheWriteArgs& w = p->cache_write;
    w.kv_c = first_rows(a.kv_c, rows);
    w.k_pe = first_rows(a.k_pe, rows);
    w.slot_mapping = m.slot_mapping;
    w.cache = a.kv_cache;
    w.k_scale = a.k_scale;
  }
  return Status::Ok();
}

}  // namespace

Status mla_attention_workspace_size(const MlaAttentionArgs& a, const MlaAttentionMetadata& m,
                                    size_t* bytes) {
  if (bytes == nullptr) return Status::InvalidArgument("bytes", "a size_t to fill", "null");
  if (a.q.rank != 3) return Status::InvalidArgument("q.rank", "3", str(a.q.rank));
  if (m.decode_s_q < 1 || m.num_decode_tokens % m.decode_s_q != 0)
    return Status::InvalidArgument("metadata.num_decode_tokens",
                                   "a multiple of decode_s_q = " + str(m.decode_s_q),
                                   str(m.num_decode_tokens));
  return mla_decode_workspace_size(m.num_decode_tokens / m.decode_s_q, m.decode_s_q,
                                   static_cast<int>(a.q.sizes[1]), {}, bytes);
}

Status mla_attention(const MlaAttentionArgs& a, const MlaAttentionMetadata& m,
                     const MlaWorkspace& ws, cudaStream_t stream) {
  Plan p;
  QFUSE_RETURN_IF_ERROR(plan(a, m, &p));
  // NOTE: every check before the first launch: the cache write must not run when the decode
  // would be refused.
  QFUSE_RETURN_IF_ERROR(mla_decode_can_implement(p.decode, ws, {}));
  if (p.write) QFUSE_RETURN_IF_ERROR(mla_write_cache(p.cache_write, stream));
  return mla_decode(p.decode, ws, {}, stream);
}

}  // namespace qfuse
