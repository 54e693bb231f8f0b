// merge_states dispatch (SPEC §2, §7): validate every argument, then launch the kernel of the
// input dtype (merge_{bf16,f16,f32}.cu). Both input forms (N views, one stacked tensor) end here.
#include "qfuse/merge_states/merge_states.h"

#include <climits>
#include <string>

#include "merge_states/launch.h"
#include "qfuse/core/checked.h"
#include "quant/validate.h"

namespace qfuse {
namespace {

std::string idx(const char* name, int i) {
  return std::string(name) + "[" + std::to_string(i) + "]";
}

bool aligned16(const void* p, int64_t stride_elems, int64_t esize) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0 && (stride_elems * esize) % 16 == 0;
}

/// The output matrix [T, H * D]: a 2-D view as given, or a 3-D [T, H, D'] view (D' = D, or D / 2
/// packed e2m1x2) whose heads are contiguous within a row.
Status flatten_output(const QuantOutput& in, QuantOutput* out) {
  *out = in;
  const TensorRef& o = in.out;
  if (o.rank != 3) return Status::Ok();  // rank 2 (or wrong: validate_quant_output names it)
  if (o.sizes[2] > 1 && o.strides[2] != 1)
    return Status::InvalidArgument("out.strides[2]", "1 (last dimension contiguous)",
                                   std::to_string(o.strides[2]));
  if (o.sizes[1] > 1 && o.strides[1] != o.sizes[2])
    return Status::InvalidArgument(
        "out.strides[1]",
        std::to_string(o.sizes[2]) + " (heads contiguous: the output is [T, H * D])",
        std::to_string(o.strides[1]));
  out->out = TensorRef::strided(o.data, o.dtype, {o.sizes[0], o.sizes[1] * o.sizes[2]},
                                {o.sizes[0] > 1 ? o.strides[0] : o.sizes[1] * o.sizes[2], 1});
  return Status::Ok();
}

}  // namespace

Status unstack_partials(const TensorRef& o, const TensorRef& lse, MergePartials* out) {
  if (out == nullptr) return Status::InvalidArgument("out", "a MergePartials to write", "null");
  if (o.rank != 4)
    return Status::InvalidArgument("o.rank", "4 ([N, T, H, D])", std::to_string(o.rank));
  if (lse.rank != 3)
    return Status::InvalidArgument("lse.rank", "3 ([N, H, T])", std::to_string(lse.rank));
  const int64_t n = o.sizes[0];
  if (n < 2 || n > kMaxMergeStates)
    return Status::InvalidArgument(
        "o.sizes[0]", "N in [2, " + std::to_string(kMaxMergeStates) + "]", std::to_string(n));
  if (lse.sizes[0] != n)
    return Status::InvalidArgument("lse.sizes[0]", std::to_string(n) + " (N of o)",
                                   std::to_string(lse.sizes[0]));
  QFUSE_RETURN_IF_ERROR(check_sizes("o", o.sizes.data(), o.rank, nullptr));
  QFUSE_RETURN_IF_ERROR(check_sizes("lse", lse.sizes.data(), lse.rank, nullptr));
  // NOTE: partial i starts i * strides[0] elements in; (N - 1) * strides[0] within the element
  // limit keeps the byte offsets below from wrapping.
  for (const auto& [t, name] : {std::pair{&o, "o"}, std::pair{&lse, "lse"}}) {
    int64_t last = 0;
    if (!checked_mul(n - 1, t->strides[0], &last) || last < -kMaxElements || last > kMaxElements)
      return Status::InvalidArgument(std::string(name) + ".strides[0]",
                                     std::string("a stride that keeps (N - 1) * stride within ") +
                                         kMaxElementsText + " elements",
                                     std::to_string(t->strides[0]));
  }
  out->n = static_cast<int>(n);
  const int64_t eo = static_cast<int64_t>(dtype_size(o.dtype));
  for (int i = 0; i < out->n; ++i) {
    out->o[i] = TensorRef::strided(static_cast<char*>(o.data) + i * o.strides[0] * eo, o.dtype,
                                   {o.sizes[1], o.sizes[2], o.sizes[3]},
                                   {o.strides[1], o.strides[2], o.strides[3]});
    out->lse[i] =
        TensorRef::strided(static_cast<char*>(lse.data) + i * lse.strides[0] * 4, lse.dtype,
                           {lse.sizes[1], lse.sizes[2]}, {lse.strides[1], lse.strides[2]});
  }
  return Status::Ok();
}

Status merge_states(const MergePartials& in, const QuantOutput& q, const MergeOptions& opt,
                    cudaStream_t stream) {
  if (in.n < 2 || in.n > kMaxMergeStates)
    return Status::InvalidArgument("in.n", "N in [2, " + std::to_string(kMaxMergeStates) + "]",
                                   std::to_string(in.n));
  const TensorRef& o0 = in.o[0];
  const std::initializer_list<DType> kIn = {DType::kBF16, DType::kF16, DType::kF32};
  merge::MergeArgs a{};
  a.n = in.n;
  int64_t T = 0, H = 0, D = 0;
  for (int i = 0; i < in.n; ++i) {
    const TensorRef& o = in.o[i];
    const std::string name = idx("o", i);
    if (o.rank != 3)
      return Status::InvalidArgument(name + ".rank", "3 ([T, H, D])", std::to_string(o.rank));
    if (i == 0) {
      bool ok = false;
      for (DType d : kIn) ok |= d == o.dtype;
      if (!ok)
        return Status::InvalidArgument(name + ".dtype", detail::dtype_list(kIn),
                                       std::string(to_string(o.dtype)));
      // NOTE: checked first: every product of T, H and D below then fits in int64_t.
      QFUSE_RETURN_IF_ERROR(check_sizes(name, o.sizes.data(), o.rank, nullptr));
      T = o.sizes[0], H = o.sizes[1], D = o.sizes[2];
    } else {
      if (o.dtype != o0.dtype)
        return Status::InvalidArgument(name + ".dtype",
                                       std::string(to_string(o0.dtype)) + " (dtype of o[0])",
                                       std::string(to_string(o.dtype)));
      if (o.sizes[0] != T || o.sizes[1] != H || o.sizes[2] != D)
        return Status::InvalidArgument(name + ".sizes", o0.shape_string() + " (shape of o[0])",
                                       o.shape_string());
    }
    if (D > 1 && o.strides[2] != 1)
      return Status::InvalidArgument(name + ".strides[2]", "1 (last dimension contiguous)",
                                     std::to_string(o.strides[2]));
    if (H > 1 && o.strides[1] < D)
      return Status::InvalidArgument(name + ".strides[1]",
                                     ">= " + std::to_string(D) + " (head stride >= D)",
                                     std::to_string(o.strides[1]));
    if (T > 1 && o.strides[0] < 1)
      return Status::InvalidArgument(name + ".strides[0]", ">= 1", std::to_string(o.strides[0]));
    // NOTE: the kernel addresses t * strides[0] + h * strides[1] + d in 64 bits: the span of the
    // view stays inside the element limit so that it cannot wrap.
    int64_t span = D, part = 0;
    const bool span_ok =
        (T <= 1 || (checked_mul(T - 1, o.strides[0], &part) && checked_add(span, part, &span))) &&
        (H <= 1 || (checked_mul(H - 1, o.strides[1], &part) && checked_add(span, part, &span))) &&
        span <= kMaxElements;
    if (!span_ok)
      return Status::InvalidArgument(
          name + ".strides",
          std::string("strides that keep the view's span within ") + kMaxElementsText + " elements",
          o.describe());
    const TensorRef& l = in.lse[i];
    const std::string lname = idx("lse", i);
    if (l.dtype != DType::kF32)
      return Status::InvalidArgument(lname + ".dtype", "fp32", std::string(to_string(l.dtype)));
    if (l.rank != 2)
      return Status::InvalidArgument(lname + ".rank", "2 ([H, T])", std::to_string(l.rank));
    if (l.sizes[0] != H || l.sizes[1] != T)
      return Status::InvalidArgument(
          lname + ".sizes", "[" + std::to_string(H) + ", " + std::to_string(T) + "] ([H, T])",
          l.shape_string());
    QFUSE_RETURN_IF_ERROR(detail::check_matrix(l, lname, {DType::kF32}, H, T));
  }
  const int64_t esize = static_cast<int64_t>(dtype_size(o0.dtype));
  const bool empty = T * H * D == 0;
  for (int i = 0; i < in.n && !empty; ++i) {
    const std::string name = idx("o", i);
    if (in.o[i].data == nullptr)
      return Status::InvalidArgument(name + ".data", "a non-null pointer", "null");
    if (reinterpret_cast<uintptr_t>(in.o[i].data) % esize != 0)
      return Status::InvalidArgument(name + ".data",
                                     std::to_string(esize) + "-byte aligned address", "misaligned");
  }
  if (H * D > INT_MAX / 2)
    return Status::InvalidArgument("o.sizes", "H * D <= " + std::to_string(INT_MAX / 2),
                                   o0.shape_string());
  if (opt.copy_from < -1 || opt.copy_from > T)
    return Status::InvalidArgument("opt.copy_from",
                                   "-1 (off) or in [0, T = " + std::to_string(T) + "]",
                                   std::to_string(opt.copy_from));
  if (!opt.out_lse.empty_ref()) {
    QFUSE_RETURN_IF_ERROR(detail::check_matrix(opt.out_lse, "opt.out_lse", {DType::kF32}, H, T));
    // The side pass splits its units (h, t) with 32-bit arithmetic (merge_kernel.cuh).
    if (H * T >= (int64_t{1} << 30))
      return Status::NotSupported("opt.out_lse with H x T = " + std::to_string(H * T) +
                                  " >= 2^30 entries");
    // The side pass writes out_lse while row tasks read the partials' lse (merge_kernel.cuh).
    const auto extent = [&](const TensorRef& l) {
      const auto* p = static_cast<const char*>(l.data);
      return std::make_pair(p, p + ((H - 1) * l.strides[0] + T) * 4);
    };
    const auto out_range = extent(opt.out_lse);
    for (int i = 0; i < in.n && H * T > 0; ++i) {
      const auto r = extent(in.lse[i]);
      if (out_range.first < r.second && r.first < out_range.second)
        return Status::InvalidArgument("opt.out_lse.data", "not overlapping " + idx("lse", i),
                                       "overlapping");
    }
  }

  QuantOutput out;
  QFUSE_RETURN_IF_ERROR(flatten_output(q, &out));
  QFUSE_RETURN_IF_ERROR(detail::check_quant_args("merge_states", out, T, H * D));
  if (empty) return Status::Ok();
  // The inputs' pointers first, then the output's (as every op checks them).
  for (int i = 0; i < in.n; ++i) {
    const std::string oname = idx("o", i) + ".data", lname = idx("lse", i) + ".data";
    QFUSE_RETURN_IF_ERROR(detail::check_device_pointers(
        {{in.o[i].data, oname.c_str()}, {in.lse[i].data, lname.c_str()}}));
  }
  QFUSE_RETURN_IF_ERROR(
      detail::check_quant_pointers(out, {{opt.out_lse.data, "opt.out_lse.data"}}));

  a.D = static_cast<int>(D);
  a.d_shift = -1;
  for (int k = 0; k < 31; ++k)
    if ((int64_t{1} << k) == D) a.d_shift = k;
  a.vec = D % 8 == 0;
  for (int i = 0; i < in.n; ++i) {
    a.o[i] = in.o[i].data;
    a.st[i] = in.o[i].strides[0];
    a.sh[i] = in.o[i].strides[1];
    a.lse[i] = static_cast<const float*>(in.lse[i].data);
    a.ld_lse[i] = in.lse[i].strides[0];
    // NOTE: an unaligned partial sends every chunk down the element-wise path (correct, slower)
    // rather than failing: head starts of sliced views are not always 16-byte aligned.
    a.vec = a.vec && aligned16(a.o[i], a.st[i], esize) && aligned16(a.o[i], a.sh[i], esize);
  }
  a.copy_from = opt.copy_from < 0 ? T : opt.copy_from;
  a.no_copy = a.copy_from >= T;
  a.base2 = opt.lse_base == LseBase::kBase2;
  a.out_lse = static_cast<float*>(opt.out_lse.data);
  a.ld_out_lse = opt.out_lse.empty_ref() ? 0 : opt.out_lse.strides[0];
  a.lse_units = H * T;
  a.lse_rows = FastDiv::make(static_cast<uint32_t>(T));  // H * T < 2^30 when out_lse is given
  switch (o0.dtype) {
    case DType::kBF16:
      return merge::launch_merge_bf16(a, out, T, H, stream);
    case DType::kF16:
      return merge::launch_merge_f16(a, out, T, H, stream);
    default:
      return merge::launch_merge_f32(a, out, T, H, stream);
  }
}

Status merge_states_stacked(const TensorRef& o, const TensorRef& lse, const QuantOutput& out,
                            const MergeOptions& opt, cudaStream_t stream) {
  MergePartials p;
  QFUSE_RETURN_IF_ERROR(unstack_partials(o, lse, &p));
  return merge_states(p, out, opt, stream);
}

}  // namespace qfuse
