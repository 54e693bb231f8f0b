// ViT attention dispatch (vit_attention.h, SPEC §5, §7): validate every argument (nothing is
// launched on error), then launch the kernel for the input type.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <string>
#include <type_traits>
#include <vector>

#include "core/tma.h"
#include "qfuse/core/arch.h"
#include "qfuse/core/checked.h"
#include "qfuse/core/cuda_check.h"
#include "qfuse/vit_attention/vit_attention.h"
#include "quant/validate.h"
#include "vit_attention/launch.h"
#include "vit_attention/trace.h"
#include "vit_attention/validate.h"

namespace qfuse {
namespace {

std::string str(int64_t v) {
  return std::to_string(v);
}

/// The head sizes of QFUSE_VIT_HEAD_DIMS as the error names them: "64, 72, 80, 96 or 128".
std::string head_dims_text() {
  static constexpr int dims[] = {
#define QFUSE_VIT_ELEMENT(kD) kD,
      QFUSE_VIT_HEAD_DIMS(QFUSE_VIT_ELEMENT)
#undef QFUSE_VIT_ELEMENT
  };
  constexpr int n = static_cast<int>(std::size(dims));
  std::string s;
  for (int i = 0; i < n; ++i) s += (i == 0 ? "" : i + 1 < n ? ", " : " or ") + str(dims[i]);
  return s;
}

bool supported_head_dim(int d) {
#define QFUSE_VIT_IS(kD) d == kD ||
  return QFUSE_VIT_HEAD_DIMS(QFUSE_VIT_IS) false;
#undef QFUSE_VIT_IS
}

Status head_dim_error(int d) {
  return Status::InvalidArgument("head_dim", head_dims_text(), str(d));
}

/// f(std::integral_constant<int, kD>{}) for head size d == kD of QFUSE_VIT_HEAD_DIMS (the
/// compile-time size of the kernel templates), the head_dim error for any other d.
template <class F>
Status with_head_dim(int d, F&& f) {
  switch (d) {
#define QFUSE_VIT_CASE(kD) \
  case kD:                 \
    return f(std::integral_constant<int, kD>{});
    QFUSE_VIT_HEAD_DIMS(QFUSE_VIT_CASE)
#undef QFUSE_VIT_CASE
  }
  return head_dim_error(d);
}

struct Plan {
  vit::AttnParams p{};
  bool fp8 = false;
  QuantOutput out;  // [S_total, H * D]
};

Status validate(const VitAttentionArgs& a, Plan* plan) {
  vit::AttnParams& p = plan->p;
  const TensorRef* in[3] = {&a.q, &a.k, &a.v};
  const char* names[3] = {"q", "k", "v"};
  const TensorRef& q = a.q;
  if (!supported_head_dim(a.head_dim)) return head_dim_error(a.head_dim);
  const bool fp8 = q.dtype == DType::kE4M3;
  plan->fp8 = fp8;
  if (!fp8 && q.dtype != DType::kBF16)
    return Status::InvalidArgument("q.dtype", "e4m3 or bf16", std::string(to_string(q.dtype)));
  const int64_t Dp = vit_padded_head_dim(a.head_dim);
  if (fp8 ? q.rank != 3 : (q.rank != 3 && q.rank != 4))
    return Status::InvalidArgument(
        "q.rank", fp8 ? "3 ([S_total, H, Dp] e4m3)" : "3 ([S, H, D]) or 4 ([B, S, H, D])",
        str(q.rank));
  const int r = q.rank;
  const bool vt = a.v_layout == VitVLayout::kTransposed;
  if (!vt && a.v_layout != VitVLayout::kRowMajor)
    return Status::InvalidArgument("v_layout", "kRowMajor or kTransposed",
                                   str(static_cast<int>(a.v_layout)));
  if (vt && !fp8)
    return Status::InvalidArgument("v_layout", "kRowMajor for bf16 inputs", "kTransposed");
  for (int i = 0; i < 3; ++i) {
    const TensorRef& t = *in[i];
    const std::string n = names[i];
    if (i == 2 && vt) {  // [H, Dp, S_pad] e4m3 contiguous
      const int64_t want[3] = {q.sizes[1], Dp, vit_vt_keys(q.sizes[0])};
      if (t.dtype != DType::kE4M3 || t.rank != 3 || t.sizes[0] != want[0] ||
          t.sizes[1] != want[1] || t.sizes[2] != want[2] || !t.is_contiguous())
        return Status::InvalidArgument(
            "v",
            "e4m3 [" + str(want[0]) + ", " + str(want[1]) + ", " + str(want[2]) +
                "] contiguous (transposed: [H, Dp, S_total rounded up to 32])",
            t.describe());
      continue;
    }
    QFUSE_RETURN_IF_ERROR(vit::check_like_q(t, n, q));
    const int64_t last = fp8 ? Dp : a.head_dim;
    if (t.sizes[r - 1] != last)
      return Status::InvalidArgument(
          n + ".sizes[" + str(r - 1) + "]",
          fp8 ? str(Dp) + " (head_dim " + str(a.head_dim) + " padded to 16)"
              : str(a.head_dim) + " (head_dim)",
          str(t.sizes[r - 1]));
    if (fp8 && !t.is_contiguous())
      return Status::InvalidArgument(n + ".strides", "contiguous [S_total, H, Dp]", t.describe());
  }
  const int64_t B = r == 4 ? q.sizes[0] : 1, S = q.sizes[r - 3], H = q.sizes[r - 2];
  const int64_t S_total = B * S;
  const float* scales[3] = {a.q_scale, a.k_scale, a.v_scale};
  for (int i = 0; i < 3; ++i) {
    const std::string n = std::string(names[i]) + "_scale";
    if (fp8 && scales[i] == nullptr)
      return Status::InvalidArgument(n, "a device fp32 dequantization scale (e4m3 inputs)", "null");
    if (!fp8 && scales[i] != nullptr)
      return Status::InvalidArgument(n, "null (bf16 inputs)", "a pointer");
  }
  if (!std::isfinite(a.softmax_scale) || a.softmax_scale <= 0.0f)
    return Status::InvalidArgument("softmax_scale", "finite and > 0",
                                   std::to_string(a.softmax_scale));
  if ((a.cu_seqlens == nullptr) != (a.cu_seqlens_host == nullptr))
    return Status::InvalidArgument(
        "cu_seqlens", "given on the device and the host, or neither",
        a.cu_seqlens == nullptr ? "the host copy only" : "the device copy only");
  if (a.cu_seqlens != nullptr) {
    if (a.num_seqs < 1 || a.num_seqs > INT32_MAX - 1)
      return Status::InvalidArgument("num_seqs", ">= 1 with cu_seqlens", str(a.num_seqs));
    if (r == 4)
      return Status::InvalidArgument("cu_seqlens", "null for a 4-D [B, S, H, D] view", "a pointer");
    const int32_t* cu = a.cu_seqlens_host;
    if (cu[0] != 0) return Status::InvalidArgument("cu_seqlens[0]", "0", str(cu[0]));
    for (int64_t b = 1; b <= a.num_seqs; ++b)
      if (cu[b] < cu[b - 1])
        return Status::InvalidArgument("cu_seqlens[" + str(b) + "]",
                                       ">= cu_seqlens[" + str(b - 1) + "] = " + str(cu[b - 1]),
                                       str(cu[b]));
    if (cu[a.num_seqs] != S_total)
      return Status::InvalidArgument("cu_seqlens[" + str(a.num_seqs) + "]",
                                     str(S_total) + " (the packed token count)",
                                     str(cu[a.num_seqs]));
  } else if (a.num_seqs != 0) {
    return Status::InvalidArgument("num_seqs", "0 without cu_seqlens", str(a.num_seqs));
  }
  if ((a.workspace == nullptr) != (a.workspace_bytes == 0))
    return Status::InvalidArgument(
        "workspace / workspace_bytes", "both given, or neither",
        a.workspace == nullptr ? "bytes without a pointer" : "a pointer without bytes");
  if (a.workspace != nullptr) {
    const size_t need = vit_attention_workspace_bytes(S_total, H, a.head_dim);
    if (a.workspace_bytes < need)
      return Status::InvalidArgument(
          "workspace_bytes",
          ">= " + str(static_cast<int64_t>(need)) + " (vit_attention_workspace_bytes)",
          str(static_cast<int64_t>(a.workspace_bytes)));
    if (reinterpret_cast<uintptr_t>(a.workspace) % 16 != 0)
      return Status::InvalidArgument("workspace", "16-byte aligned", "misaligned");
  }
  if (H * a.head_dim > 32768)
    return Status::InvalidArgument("q.sizes", "H * head_dim <= 32768", q.shape_string());
  if (S_total >= (int64_t{1} << 31))
    return Status::InvalidArgument("q.sizes", "fewer than 2^31 tokens", q.shape_string());
  QFUSE_RETURN_IF_ERROR(detail::flatten_head_output(a.out, "o is [S, H * D]", &plan->out));
  const int64_t cols = H * a.head_dim;
  QFUSE_RETURN_IF_ERROR(detail::check_quant_args("vit_attention", plan->out, S_total, cols));
  // NOTE: the kernel hands whole token rows to the shared-memory-tile adapter, which needs the
  // groups of a group kind to tile the row (no partial last group).
  if (!sees_whole_scale_units(plan->out.spec, cols, 0, cols))
    return Status::NotSupported("vit_attention: out.spec " + to_string(plan->out.spec) +
                                " needs H * head_dim (" + str(cols) +
                                ") to be a multiple of its group size");
  if (S_total == 0 || H == 0) return Status::Ok();
  for (int i = 0; i < 3; ++i)
    if (in[i]->data == nullptr)
      return Status::InvalidArgument(std::string(names[i]) + ".data", "a device pointer", "null");
  for (int i = 0; i < 3; ++i) {
    const TensorRef& t = *in[i];
    p.in[i] = t.data;
    p.sb[i] = r == 4 ? t.strides[0] : 0;
    p.ss[i] = t.strides[r - 3];
    p.sh[i] = t.strides[r - 2];
    p.sd[i] = 1;
  }
  p.v_perm = vt;
  if (vt) {  // element (t, h, d) at h * Dp * S_pad + d * S_pad + vit_vt_position(t)
    p.sb[2] = 0;
    p.ss[2] = 1;
    p.sh[2] = a.v.sizes[1] * a.v.sizes[2];
    p.sd[2] = a.v.sizes[2];
  }
  p.S = S;
  p.S_total = S_total;
  p.H = static_cast<int>(H);
  p.D = a.head_dim;
  p.cu_seqlens = a.cu_seqlens;
  p.num_seqs = static_cast<int>(a.num_seqs);
  p.q_scale = a.q_scale;
  p.k_scale = a.k_scale;
  p.v_scale = a.v_scale;
  p.softmax_scale = a.softmax_scale;
  plan->fp8 = fp8;
  return Status::Ok();
}

/// The device-pointer checks (after every structural one, the kernel choice included).
Status check_pointers(const VitAttentionArgs& a, const Plan* plan) {
  QFUSE_RETURN_IF_ERROR(detail::check_quant_pointers(plan->out, {{a.q.data, "q.data"},
                                                                 {a.k.data, "k.data"},
                                                                 {a.v.data, "v.data"},
                                                                 {a.q_scale, "q_scale"},
                                                                 {a.k_scale, "k_scale"},
                                                                 {a.v_scale, "v_scale"},
                                                                 {a.cu_seqlens, "cu_seqlens"}}));
  return Status::Ok();
}

}  // namespace

namespace {

/// Why the tensor-core kernel cannot run this call ("" when it can). The checks need no device
/// except the last (an sm_90 device: wgmma).
std::string tc_unsupported(const VitAttentionArgs& a, const Plan& plan) {
  if (plan.fp8 && a.v_layout != VitVLayout::kTransposed)
    return "it reads e4m3 V transposed (VitVLayout::kTransposed from vit_quantize_qkv)";
  const QuantSpec& spec = plan.out.spec;
  const bool plain_bf16 = spec.kind == QuantKind::kNone && plan.out.out.dtype == DType::kBF16;
  if (!plain_bf16 && spec.kind != QuantKind::kFp8PerTensor)
    return "it writes bf16 or fp8_per_tensor output, not " + to_string(spec) +
           (spec.kind == QuantKind::kNone
                ? std::string(" ") + std::string(to_string(plan.out.out.dtype))
                : std::string());
  for (const void* ptr : {a.q.data, a.k.data, a.v.data})
    if (reinterpret_cast<uintptr_t>(ptr) % 16 != 0)
      return "its TMA loads need 16-byte aligned q, k, v";
  if (!plan.fp8) {  // bf16 views: TMA maps [S_total, H, D] over each view's strides
    const vit::AttnParams& p = plan.p;
    for (int i = 0; i < 3; ++i) {
      const bool tokens_ok = p.S_total <= 1 || (p.ss[i] > 0 && p.ss[i] % 8 == 0);
      const bool heads_ok = p.H <= 1 || (p.sh[i] > 0 && p.sh[i] % 8 == 0);
      if (!tokens_ok || !heads_ok)
        return "its TMA loads need the token and head strides of q, k, v to be positive "
               "multiples of 8 elements (16 bytes)";
      if (a.q.rank == 4 && p.S > 0 && p.S_total > p.S && p.sb[i] != p.S * p.ss[i])
        return "it reads a 4-D [B, S, H, D] view as [B * S, H, D] (batch stride = S * token "
               "stride)";
    }
  }
  if (plan.p.S_total > 0) {
    DeviceInfo info;
    if (!current_device_info(&info).ok() || info.cc_major != 9)
      return "it runs on sm_90 devices (wgmma) only";
  }
  return "";
}

/// The kernel `opt` asks for, if this call can run on it.
Status pick_kernel(const VitAttentionArgs& a, const Plan& plan, const VitAttentionOptions& opt,
                   VitKernel* kernel) {
  const std::string why = opt.kernel == VitKernel::kSimple ? "" : tc_unsupported(a, plan);
  if (opt.kernel == VitKernel::kAuto) {  // the tensor cores wherever they can run the call
    *kernel = why.empty() ? VitKernel::kTensorCore : VitKernel::kSimple;
    return Status::Ok();
  }
  *kernel = opt.kernel;
  if (*kernel != VitKernel::kTensorCore) return Status::Ok();
  if (!why.empty()) return Status::NotSupported("vit_attention: the tensor-core kernel: " + why);
  return Status::Ok();
}

/// Query tiles of `rows` rows over every sequence.
int64_t query_tiles(const VitAttentionArgs& a, const Plan& plan, int rows) {
  int64_t tiles = 0;
  if (a.cu_seqlens_host == nullptr) {
    const int64_t S = plan.p.S, B = S > 0 ? plan.p.S_total / S : 0;
    return B * ((S + rows - 1) / rows);
  }
  for (int64_t b = 0; b < a.num_seqs; ++b)
    tiles += (int64_t{a.cu_seqlens_host[b + 1]} - a.cu_seqlens_host[b] + rows - 1) / rows;
  return tiles;
}

Status prepare_tc_rest(const VitAttentionArgs& a, const Plan& plan, vit::TcParams* tp);

/// Slots of the stream-K workspace: the tickets (a word a block, 256-byte aligned), then two
/// partial slots a block of (D / 2 + 4) floats a consumer thread (three consumers where the head
/// size has the form, so that either form fits).
int64_t stream_k_ticket_bytes(int64_t blocks) {
  return (blocks * 4 + 255) / 256 * 256;
}
int64_t stream_k_slot_floats(int D) {
  return (D / 2 + 4) * 128 * (vit::tc_three_consumers(D) ? 3 : 2);
}

/// The stream-K planner's cost model, in key-tile steps of a query tile whose consumers all work
/// (bench/NOTES.md V25, V28): a segment's start and end (seg: its first tile with nothing under
/// it, its last P V, its epilogue), and a step of a query tile that keeps a of its three
/// consumers busy (w[a]; attention_tc.cuh: the others idle). QFUSE_VIT_SK_COST="seg,w1,w2"
/// at start-up sets it (A/B runs), "off" takes uniform shares.
struct SkCost {
  bool on = true;
  double seg = 2.75;
  double w[4] = {0.0, 0.75, 0.9, 1.0};  // H100, V30: S 4096 135.1 µs against 142.2 at 0.55 / 0.8
};

const SkCost& sk_cost() {
  static const SkCost cost = [] {
    SkCost c;
    const char* e = std::getenv("QFUSE_VIT_SK_COST");
    if (e == nullptr) return c;
    if (std::string(e) == "off") {
      c.on = false;
      return c;
    }
    double seg = 0, w1 = 0, w2 = 0;
    if (std::sscanf(e, "%lf,%lf,%lf", &seg, &w1, &w2) == 3 && seg >= 0 && w1 > 0 && w2 > 0)
      c.seg = seg, c.w[1] = w1, c.w[2] = w2;
    return c;
  }();
  return cost;
}

/// The stream-K schedule of an FP8 tensor-core call (tp's q_rows, tiles set) into tp (its tickets
/// are the launch's to zero); tp->sk_blocks stays 0 (a block a query tile) without a workspace,
/// where the setting turns it off, or where a block could meet more than kStreamKMaxSegments
/// query tiles (many short sequences: that grid balances them).
Status plan_stream_k(const VitAttentionArgs& a, const Plan& plan, vit::TcParams* tp) {
  if (a.workspace == nullptr || !vit::tc_streamk_on()) return Status::Ok();
  const int mode = vit::tc_streamk_mode();
  DeviceInfo info;
  QFUSE_RETURN_IF_ERROR(current_device_info(&info));
  const vit::AttnParams& p = plan.p;
  const int64_t kM = tp->q_rows;
  // The sequences with tokens: their first step in head 0, query tiles and key tiles.
  struct Seq {
    int64_t start, tiles, nk, last_rows;  // last_rows: the rows of its last query tile
  };
  std::vector<Seq> seqs;
  int64_t per_head = 0;
  auto add = [&](int64_t beg, int64_t end) {
    const int64_t nk = vit::tc_key_tiles(beg, end);
    if (nk == 0) return;
    const int64_t tiles = (end - beg + kM - 1) / kM;
    seqs.push_back(Seq{per_head, tiles, nk, end - beg - (tiles - 1) * kM});
    per_head += tiles * nk;
  };
  if (a.cu_seqlens_host != nullptr) {
    for (int64_t b = 0; b < a.num_seqs; ++b) add(a.cu_seqlens_host[b], a.cu_seqlens_host[b + 1]);
  } else {
    for (int64_t b = 0; p.S > 0 && b < p.S_total / p.S; ++b) add(b * p.S, (b + 1) * p.S);
  }
  const int64_t total = per_head * p.H;
  if (total == 0) return Status::Ok();
  int64_t blocks =
      std::min<int64_t>(mode > 0 ? std::min(mode, info.sm_count) : info.sm_count, total);
  // Where every query tile has as many key tiles (one image, or images of one length), the
  // one-unit grid's full waves stay as they are (a block a query tile each wave, in that grid's
  // order: the blocks of a wave share a head's K / V in L2) and only the last, partial wave's
  // steps are spread evenly; otherwise every step is (the waves would not balance).
  const int64_t units = int64_t{tp->tiles} * p.H;
  bool uniform = true;
  for (const Seq& q : seqs) uniform = uniform && q.nk == seqs[0].nk;
  const int64_t waves = uniform ? units / blocks : 0;
  const int64_t base = waves * blocks * seqs[0].nk;
  if (total == base) return Status::Ok();  // whole waves: the one-unit grid balances them
  const int64_t per = (total - base + blocks - 1) / blocks;
  if (waves == 0) blocks = (total + per - 1) / per;
  const int64_t n = static_cast<int64_t>(seqs.size());
  // Cost-balanced shares where the grid fits the table: what a block runs in its whole query
  // tiles and its share, counted as SkCost has it, evened out (the uniform shares give every
  // block as many steps, whatever its segments and idle consumers).
  const SkCost cost = sk_cost();
  tp->sk_table = false;
  if (cost.on && blocks <= vit::kStreamKTableBlocks && total - base < (int64_t{1} << 31)) {
    // The weight of a step of a query tile with `rows` rows: its busy consumers' (three-consumer
    // form only: the two-consumer one has no idle consumers).
    auto weight = [&](int64_t rows) {
      return kM == 192 ? cost.w[std::min<int64_t>((rows + 63) / 64, 3)] : 1.0;
    };
    // Whole query tile u (of waves x blocks, block u % blocks) is tile u % (a head's tiles) of
    // its head: one walk over them in order, the sequence cursor moving with it.
    std::vector<double> base_cost(static_cast<size_t>(blocks), 0.0);
    size_t i = 0;
    int64_t t = 0;  // query tile t of sequence i
    for (int64_t u = 0; u < waves * blocks; ++u) {
      base_cost[static_cast<size_t>(u % blocks)] +=
          cost.seg + seqs[i].nk * weight(t + 1 == seqs[i].tiles ? seqs[i].last_rows : kM);
      if (++t == seqs[i].tiles) t = 0, i = i + 1 == seqs.size() ? 0 : i + 1;
    }
    // The steps after base (a query tile's first step) as runs of query tiles alike.
    std::vector<vit::SkRun> runs;
    auto push = [&](int64_t count, int64_t nk, double w) {
      if (count <= 0) return;
      if (!runs.empty() && runs.back().nk == nk && runs.back().w == w) {
        runs.back().count += count;
      } else {
        runs.push_back(vit::SkRun{count, nk, w});
      }
    };
    for (int64_t k = 0; k < n * p.H; ++k) {
      const Seq& q = seqs[k % n];
      const int64_t st = (k / n) * per_head + q.start;
      if (st + q.tiles * q.nk <= base) continue;
      const int64_t skip = std::max<int64_t>(base - st, 0) / q.nk;
      push(q.tiles - 1 - skip, q.nk, weight(kM));
      push(1, q.nk, weight(q.last_rows));
    }
    tp->sk_table = vit::balance_shares(runs, base_cost, cost.seg, tp->sk_start);
  }
  // Segments of each block: its whole query tiles, then the query tiles its steps [s, e) meet,
  // sequence by sequence (sequence k of head h starts at h * per_head + seqs[k].start), as
  // build_segments lists them.
  auto start_of = [&](int64_t k) { return (k / n) * per_head + seqs[k % n].start; };
  auto len = [&](int64_t k) { return seqs[k % n].tiles * seqs[k % n].nk; };
  int64_t first = 0;  // the first sequence (over heads) ending after the block's first step
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t s = tp->sk_table ? base + tp->sk_start[blk] : base + blk * per;
    const int64_t e = tp->sk_table ? base + tp->sk_start[blk + 1] : std::min(s + per, total);
    if (s >= e) continue;
    while (start_of(first) + len(first) <= s) ++first;
    int64_t segments = waves;
    for (int64_t k = first; k < n * p.H && start_of(k) < e; ++k) {
      const int64_t nk = seqs[k % n].nk, lo = std::max<int64_t>(s - start_of(k), 0) / nk;
      const int64_t hi = std::min((e - start_of(k) + nk - 1) / nk, seqs[k % n].tiles);
      segments += hi - lo;
      if (segments > vit::kStreamKMaxSegments) return Status::Ok();
    }
  }
  tp->sk_blocks = static_cast<int>(blocks);
  tp->sk_waves = static_cast<int>(waves);
  tp->sk_base = base;
  tp->sk_per = per;
  tp->steps_per_head = per_head;
  tp->sk_tickets = static_cast<int*>(a.workspace);
  tp->sk_ws = reinterpret_cast<float*>(static_cast<char*>(a.workspace) +
                                       stream_k_ticket_bytes(info.sm_count));
  return Status::Ok();
}

/// The FP8 tensor-core kernel's parameters (no launch): maps of q (or, where q_bf16, of that bf16
/// view: the fused-Q form), k [S_total, H, Dp] and V^T [H, Dp, S_pad] e4m3, then the rest
/// (prepare_tc_rest) and the stream-K schedule.
Status prepare_tc(const VitAttentionArgs& a, const Plan& plan, const TensorRef* q_bf16,
                  vit::TcParams* tpp) {
  const vit::AttnParams& p = plan.p;
  vit::TcParams& tp = *tpp;
  const int64_t Dp = vit_padded_head_dim(p.D), Sp = vit_vt_keys(p.S_total);
  const cuuint64_t qk_dims[3] = {static_cast<cuuint64_t>(Dp), static_cast<cuuint64_t>(p.H),
                                 static_cast<cuuint64_t>(p.S_total)};
  const cuuint64_t qk_strides[2] = {static_cast<cuuint64_t>(Dp), static_cast<cuuint64_t>(p.H * Dp)};
  // Q in boxes of 64 rows for the three-consumer form (TcTraits::kQBoxRows), else of 128.
  tp.q_rows = vit::tc_query_rows(static_cast<int>(p.D));
  const cuuint32_t q_rows_box = tp.q_rows == 192 ? 64u : 128u;
  const cuuint32_t q_box[3] = {128, 1, q_rows_box}, qk_box[3] = {128, 1, 128};
  if (q_bf16 == nullptr) {
    QFUSE_RETURN_IF_ERROR(detail::encode_tma_3d(&tp.q_map, CU_TENSOR_MAP_DATA_TYPE_UINT8, a.q.data,
                                                qk_dims, qk_strides, q_box,
                                                CU_TENSOR_MAP_SWIZZLE_128B, "vit q"));
  } else {
    // [S_total, H, D] bf16 over the view's strides (a 4-D view flattened: prepare_fused_q checked
    // its batches are evenly spaced), rows of D columns, no swizzle: the consumers read it.
    const TensorRef& q = *q_bf16;
    const int r = q.rank;
    const int64_t sh = p.H > 1 ? q.strides[r - 2] : p.D;
    const int64_t ss = p.S_total > 1 ? q.strides[r - 3] : p.D * p.H;
    const cuuint64_t dims[3] = {static_cast<cuuint64_t>(p.D), static_cast<cuuint64_t>(p.H),
                                static_cast<cuuint64_t>(p.S_total)};
    const cuuint64_t strides[2] = {static_cast<cuuint64_t>(sh * 2),
                                   static_cast<cuuint64_t>(ss * 2)};
    const cuuint32_t box[3] = {static_cast<cuuint32_t>(p.D), 1, q_rows_box};
    QFUSE_RETURN_IF_ERROR(detail::encode_tma_3d(&tp.q_map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, q.data,
                                                dims, strides, box, CU_TENSOR_MAP_SWIZZLE_NONE,
                                                "vit q (bf16, fused)"));
    tp.fused_q = true;
  }
  QFUSE_RETURN_IF_ERROR(detail::encode_tma_3d(&tp.k_map, CU_TENSOR_MAP_DATA_TYPE_UINT8, a.k.data,
                                              qk_dims, qk_strides, qk_box,
                                              CU_TENSOR_MAP_SWIZZLE_128B, "vit k"));
  const cuuint64_t v_dims[3] = {static_cast<cuuint64_t>(Sp), static_cast<cuuint64_t>(Dp),
                                static_cast<cuuint64_t>(p.H)};
  const cuuint64_t v_strides[2] = {static_cast<cuuint64_t>(Sp), static_cast<cuuint64_t>(Dp * Sp)};
  const cuuint32_t v_box[3] = {128, static_cast<cuuint32_t>(p.D), 1};
  QFUSE_RETURN_IF_ERROR(detail::encode_tma_3d(&tp.vt_map, CU_TENSOR_MAP_DATA_TYPE_UINT8, a.v.data,
                                              v_dims, v_strides, v_box, CU_TENSOR_MAP_SWIZZLE_128B,
                                              "vit v (transposed)"));
  QFUSE_RETURN_IF_ERROR(prepare_tc_rest(a, plan, &tp));
  static const bool skip_idle = [] {
    const char* e = std::getenv("QFUSE_VIT_TC_IDLE");
    return e == nullptr || std::string(e) != "0";
  }();
  tp.skip_idle = skip_idle;
  return tp.tiles > 0 ? plan_stream_k(a, plan, &tp) : Status::Ok();
}

/// The FP8 tensor-core kernel's launch: the stream-K tickets zeroed first unless the caller
/// vouches for them (the last block of each split query tile leaves its ticket at 0; the memset
/// covers a workspace never used before, or used for something else in between).
Status launch_tc_params(const VitAttentionArgs& a, const vit::TcParams& tp, int64_t head_dim,
                        const QuantOutput& out, cudaStream_t stream) {
  if (tp.tiles == 0) return Status::Ok();
  if (tp.sk_blocks > 0 && !a.workspace_zeroed)
    QFUSE_CUDA_RETURN(cudaMemsetAsync(a.workspace, 0, size_t{4} * tp.sk_blocks, stream));
  return with_head_dim(static_cast<int>(head_dim), [&](auto d) {  // validated: QFUSE_VIT_HEAD_DIMS
    return vit::launch_tc_for<decltype(d)::value>(tp, out, stream);
  });
}

Status launch_tc(const VitAttentionArgs& a, const Plan& plan, cudaStream_t stream) {
  vit::TcParams tp{};
  QFUSE_RETURN_IF_ERROR(prepare_tc(a, plan, nullptr, &tp));
  return launch_tc_params(a, tp, plan.p.D, plan.out, stream);
}

/// The BF16 tensor-core kernel: maps [S_total, H, D] bf16 over each view's strides (dimension 0
/// is D: the box's columns past D are zero fill), box 64 x 1 x 128, 128-byte swizzle.
Status launch_tc_bf16(const VitAttentionArgs& a, const Plan& plan, cudaStream_t stream) {
  const vit::AttnParams& p = plan.p;
  vit::TcParams tp{};
  CUtensorMap* maps[3] = {&tp.q_map, &tp.k_map, &tp.vt_map};
  const char* what[3] = {"vit q (bf16)", "vit k (bf16)", "vit v (bf16)"};
  const cuuint64_t dims[3] = {static_cast<cuuint64_t>(p.D), static_cast<cuuint64_t>(p.H),
                              static_cast<cuuint64_t>(p.S_total)};
  // Q in boxes of the block's 128 query rows, K and V of 64 tokens (a pair of blocks loads one
  // half each: attention_tc_bf16.cuh).
  const cuuint32_t boxes[2][3] = {{64, 1, 128}, {64, 1, 64}};
  tp.q_rows = 128;
  for (int i = 0; i < 3; ++i) {
    const cuuint32_t(&box)[3] = boxes[i == 0 ? 0 : 1];
    // A dimension of size 1 may come with any stride: give it one TMA accepts.
    const int64_t sh = p.H > 1 ? p.sh[i] : 64, ss = p.S_total > 1 ? p.ss[i] : 64 * p.H;
    const cuuint64_t strides[2] = {static_cast<cuuint64_t>(sh * 2),
                                   static_cast<cuuint64_t>(ss * 2)};
    QFUSE_RETURN_IF_ERROR(detail::encode_tma_3d(maps[i], CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
                                                const_cast<void*>(p.in[i]), dims, strides, box,
                                                CU_TENSOR_MAP_SWIZZLE_128B, what[i]));
  }
  QFUSE_RETURN_IF_ERROR(prepare_tc_rest(a, plan, &tp));
  if (tp.tiles == 0) return Status::Ok();
  return with_head_dim(plan.p.D, [&](auto d) {  // validated: one of QFUSE_VIT_HEAD_DIMS
    return vit::launch_tc_bf16_for<decltype(d)::value>(tp, plan.out, stream);
  });
}

/// The rest of the tensor-core parameters (maps and q_rows set).
Status prepare_tc_rest(const VitAttentionArgs& a, const Plan& plan, vit::TcParams* tpp) {
  const vit::AttnParams& p = plan.p;
  vit::TcParams& tp = *tpp;
  tp.cu_seqlens = p.cu_seqlens;
  tp.num_seqs = p.num_seqs;
  tp.S = p.S;
  tp.S_total = p.S_total;
  tp.H = p.H;
#ifdef QFUSE_VIT_TRACE
  tp.trace = vit::trace::buffer();
#endif
  const int64_t tiles = query_tiles(a, plan, tp.q_rows);
  if (tiles > INT32_MAX / 2)
    return Status::InvalidArgument("q.sizes", "fewer than 2^30 query tiles", str(tiles));
  tp.tiles = static_cast<int>(tiles);
  tp.q_scale = p.q_scale;
  tp.k_scale = p.k_scale;
  tp.v_scale = p.v_scale;
  tp.softmax_scale = p.softmax_scale;
  return Status::Ok();
}

}  // namespace

size_t vit_attention_workspace_bytes(int64_t S_total, int64_t H, int head_dim) {
  if (S_total <= 0 || H <= 0 || !supported_head_dim(head_dim)) return 0;
  DeviceInfo info;
  if (!current_device_info(&info).ok() || info.sm_count <= 0) return 0;
  const int64_t sms = info.sm_count;
  return static_cast<size_t>(stream_k_ticket_bytes(sms) +
                             2 * sms * stream_k_slot_floats(head_dim) * 4);
}

size_t vit_attention_ticket_bytes() {
  DeviceInfo info;
  if (!current_device_info(&info).ok() || info.sm_count <= 0) return 0;
  return static_cast<size_t>(stream_k_ticket_bytes(info.sm_count));
}

Status vit_attention_can_implement(const VitAttentionArgs& args, const VitAttentionOptions& opt) {
  Plan plan;
  QFUSE_RETURN_IF_ERROR(validate(args, &plan));
  VitKernel kernel;
  QFUSE_RETURN_IF_ERROR(pick_kernel(args, plan, opt, &kernel));
  if (plan.p.S_total == 0 || plan.p.H == 0) return Status::Ok();
  return check_pointers(args, &plan);
}

Status vit_attention(const VitAttentionArgs& args, const VitAttentionOptions& opt,
                     cudaStream_t stream) {
  Plan plan;
  QFUSE_RETURN_IF_ERROR(validate(args, &plan));
  VitKernel kernel;
  QFUSE_RETURN_IF_ERROR(pick_kernel(args, plan, opt, &kernel));
  if (plan.p.S_total == 0 || plan.p.H == 0) return Status::Ok();
  QFUSE_RETURN_IF_ERROR(check_pointers(args, &plan));
  if (kernel == VitKernel::kTensorCore)
    return plan.fp8 ? launch_tc(args, plan, stream) : launch_tc_bf16(args, plan, stream);
  return plan.fp8 ? vit::launch_simple_fp8(plan.p, plan.out, stream)
                  : vit::launch_simple_bf16(plan.p, plan.out, stream);
}

namespace vit {

namespace {
bool balance_shares_search(const std::vector<SkRun>& runs, const std::vector<double>& base_cost,
                           double seg, int32_t* start);
}  // namespace

bool balance_shares(const std::vector<SkRun>& runs, const std::vector<double>& base_cost,
                    double seg, int32_t* start) {
  const int64_t blocks = static_cast<int64_t>(base_cost.size());
  if (runs.empty() || runs.size() > 4096) return false;
  // The last plan of this thread: an engine calls each layer with the same batch, and the search
  // below takes ~10 us for one image and ~0.6 ms for 4096 runs (on a build machine's CPU).
  struct Last {
    std::vector<SkRun> runs;
    std::vector<double> base_cost;
    double seg = -1;
    bool ok = false;
    std::vector<int32_t> start;
  };
  thread_local Last last;
  auto same_runs = [&]() {
    return std::equal(runs.begin(), runs.end(), last.runs.begin(), last.runs.end(),
                      [](const SkRun& x, const SkRun& y) {
                        return x.count == y.count && x.nk == y.nk && x.w == y.w;
                      });
  };
  if (seg == last.seg && base_cost == last.base_cost && same_runs()) {
    std::copy(last.start.begin(), last.start.end(), start);
    return last.ok;
  }
  const bool ok = balance_shares_search(runs, base_cost, seg, start);
  last.runs = runs, last.base_cost = base_cost, last.seg = seg, last.ok = ok;
  last.start.assign(start, start + blocks + 1);
  return ok;
}

namespace {

bool balance_shares_search(const std::vector<SkRun>& runs, const std::vector<double>& base_cost,
                           double seg, int32_t* start) {
  const int64_t blocks = static_cast<int64_t>(base_cost.size());
  double sum = 0, top = 0;
  for (double b : base_cost) sum += b, top = std::max(top, b);
  for (const SkRun& r : runs) sum += r.count * (seg + r.nk * r.w);
  // fill(C): whether C leaves no step over; the shares into start.
  auto fill = [&](double C) {
    size_t r = 0;
    int64_t unit = 0, off = 0, pos = 0;  // the cursor: run, query tile in it, step in that
    auto next_unit = [&]() {
      off = 0;
      if (++unit == runs[r].count) ++r, unit = 0;
    };
    for (int64_t b = 0; b < blocks; ++b) {
      start[b] = static_cast<int32_t>(pos);
      double c = base_cost[b];
      bool took = false;
      while (r < runs.size()) {
        const SkRun& R = runs[r];
        if (off == 0) {  // whole query tiles at once
          const double whole = seg + R.nk * R.w;
          const int64_t fit = std::min<int64_t>(
              R.count - unit, static_cast<int64_t>(std::max((C - c) / whole, 0.0)));
          if (fit > 0) {
            c += fit * whole, pos += fit * R.nk, took = true;
            unit += fit;
            if (unit == R.count) ++r, unit = 0;
            continue;
          }
        }
        const int64_t rest = R.nk - off;
        if (c + seg + rest * R.w <= C) {  // the rest of a split query tile
          c += seg + rest * R.w, pos += rest, took = true;
          next_unit();
          continue;
        }
        int64_t k = static_cast<int64_t>(std::max((C - c - seg) / R.w, 0.0));
        if (k == 0 && !took) k = 1;
        k = std::min(k, rest);
        if (k > 0) {
          pos += k, off += k;
          if (off == R.nk) next_unit();
        }
        break;
      }
    }
    start[blocks] = static_cast<int32_t>(pos);
    return r == runs.size();
  };
  double lo = std::max(top, sum / static_cast<double>(blocks)), hi = lo + 1.0;
  for (int i = 0; i < 40 && !fill(hi); ++i) hi = lo + 2.0 * (hi - lo);
  if (!fill(hi)) return false;
  while (hi - lo > 1.0 / 64) {
    const double mid = 0.5 * (lo + hi);
    (fill(mid) ? hi : lo) = mid;
  }
  return fill(hi);
}

}  // namespace
}  // namespace vit

namespace vit {
namespace {

/// The FP8 tensor-core kernel's consumer warpgroups where no setting forces them: three where the
/// head size has the form (D <= 72), which ran D 72 S 16384 in 0.866x the time of two on an H100
/// (NOTES V12); QFUSE_VIT_TC_CONSUMERS=2 or vit::set_tc_consumers(2) keeps two.
constexpr int kTcDefaultConsumers = 3;

std::atomic<int>& tc_consumers_state() {
  static std::atomic<int> state{[] {
    const char* e = std::getenv("QFUSE_VIT_TC_CONSUMERS");
    return e != nullptr && (e[0] == '2' || e[0] == '3') && e[1] == '\0' ? e[0] - '0' : 0;
  }()};
  return state;
}

std::atomic<int>& tc_streamk_state() {
  static std::atomic<int> state{[] {
    const char* e = std::getenv("QFUSE_VIT_TC_STREAMK");
    return e != nullptr ? std::atoi(e) : 0;
  }()};
  return state;
}

}  // namespace

void set_tc_streamk(int mode) {
  tc_streamk_state().store(mode);
}

int tc_streamk_mode() {
  return tc_streamk_state().load();
}

namespace {

/// A process-wide on / off setting read at start-up: 0 or 1 from the variable `name`, else -1
/// (the default).
int env_switch(const char* name) {
  const char* e = std::getenv(name);
  return e != nullptr && (e[0] == '0' || e[0] == '1') && e[1] == '\0' ? e[0] - '0' : -1;
}

std::atomic<int>& fused_q_state() {
  static std::atomic<int> state{env_switch("QFUSE_VIT_FUSED_Q")};
  return state;
}

/// The fused-Q form's checks of q (bf16, the call's geometry, a view the TMA can describe) and
/// of the call (FP8 K / V, V transposed, the tensor cores, the stream-K grid), into plan and tp.
Status prepare_fused_q(const VitAttentionArgs& a, const TensorRef& q, Plan* plan, TcParams* tp) {
  auto unsupported = [](const std::string& why) {
    return Status::NotSupported("vit attention_fused_q: " + why);
  };
  QFUSE_RETURN_IF_ERROR(validate(a, plan));
  if (!plan->fp8 || a.v_layout != VitVLayout::kTransposed)
    return unsupported("needs e4m3 K and a transposed e4m3 V");
  VitKernel kernel;
  QFUSE_RETURN_IF_ERROR(
      pick_kernel(a, *plan, VitAttentionOptions{VitKernel::kTensorCore}, &kernel));
  const AttnParams& p = plan->p;
  if (p.S_total == 0 || p.H == 0) return unsupported("an empty call");
  const int r = q.rank;
  if (q.dtype != DType::kBF16 || (r != 3 && r != 4))
    return unsupported("q_bf16 must be bf16 [S, H, D] or [B, S, H, D], not " + q.describe());
  const int64_t S_total = r == 4 ? q.sizes[0] * q.sizes[1] : q.sizes[0];
  if (S_total != p.S_total || q.sizes[r - 2] != p.H || q.sizes[r - 1] != p.D ||
      q.strides[r - 1] != 1 || (r == 4 && q.strides[0] != q.sizes[1] * q.strides[1]))
    return unsupported("q_bf16 " + q.describe() + " is not [S_total = " + str(p.S_total) +
                       ", H = " + str(p.H) + ", D = " + str(p.D) +
                       "] with contiguous rows and evenly spaced batches");
  for (int d = r - 3; d < r - 1; ++d)
    if (q.strides[d] * 2 % 16 != 0 || q.strides[d] < 0)
      return unsupported("q_bf16's strides must be multiples of 16 bytes");
  if (q.data == nullptr || reinterpret_cast<uintptr_t>(q.data) % 16 != 0)
    return unsupported("q_bf16 must be 16-byte aligned");
  QFUSE_RETURN_IF_ERROR(check_pointers(a, plan));
  *tp = TcParams{};
  QFUSE_RETURN_IF_ERROR(prepare_tc(a, *plan, &q, tp));
  if (tp->sk_blocks == 0)
    return unsupported(
        "the call takes the one-unit grid (no workspace, stream-K off, whole "
        "waves or many short sequences)");
  return Status::Ok();
}

}  // namespace

bool fused_q_on() {
  return fused_q_state().load() != 0;
}

void set_fused_q(int on) {
  fused_q_state().store(on == 0 || on == 1 ? on : -1);
}

Status fused_q_prepare(const VitAttentionArgs& a, const TensorRef& q_bf16, FusedQCall* call) {
  Plan plan;
  *call = FusedQCall{};
  QFUSE_RETURN_IF_ERROR(prepare_fused_q(a, q_bf16, &plan, &call->tp));
  call->out = plan.out;
  call->head_dim = static_cast<int>(plan.p.D);
  return Status::Ok();
}

Status fused_q_launch(const VitAttentionArgs& a, const FusedQCall& call, cudaStream_t stream) {
  return launch_tc_params(a, call.tp, call.head_dim, call.out, stream);
}

Status attention_fused_q(const VitAttentionArgs& a, const TensorRef& q_bf16, cudaStream_t stream) {
  FusedQCall call;
  QFUSE_RETURN_IF_ERROR(fused_q_prepare(a, q_bf16, &call));
  return fused_q_launch(a, call, stream);
}

namespace {

std::atomic<int>& bf16_cluster_state() {
  static std::atomic<int> state{env_switch("QFUSE_VIT_BF16_CLUSTER")};
  return state;
}

}  // namespace

bool bf16_cluster_on() {
  return bf16_cluster_state().load() != 0;
}

void set_bf16_cluster(int on) {
  bf16_cluster_state().store(on == 0 || on == 1 ? on : -1);
}

void set_tc_consumers(int consumers) {
  tc_consumers_state().store(consumers == 2 || consumers == 3 ? consumers : 0);
}

int tc_query_rows(int D) {
  const int forced = tc_consumers_state().load();
  const int consumers = forced != 0 ? forced : kTcDefaultConsumers;
  return consumers == 3 && tc_three_consumers(D) ? 192 : 128;
}

}  // namespace vit
}  // namespace qfuse
