// Host references of the ViT attention family (vit_attention.h): the quantizer byte for byte
// (the rules of qfuse/quant/rules.h in fp32, as the device applies them) and attention in fp64.
#include <algorithm>
#include <cfloat>
#include <cmath>

#include "qfuse/quant/reference.h"
#include "qfuse/quant/rules.h"
#include "qfuse/vit_attention/vit_attention.h"

namespace qfuse::ref {

float VitHostView::value(int64_t t, int64_t h, int64_t d) const {
  const int64_t b = t / S, s = t % S;
  return bf16_value(data[b * sb + s * ss + h * sh + d]);
}

std::vector<uint8_t> vit_quantize(const VitHostView& x, float scale, VitVLayout layout) {
  const int64_t T = x.B * x.S, Dp = vit_padded_head_dim(x.D), Tp = vit_vt_keys(T);
  const bool vt = layout == VitVLayout::kTransposed;
  std::vector<uint8_t> out(static_cast<size_t>((vt ? Tp : T) * x.H * Dp), 0);
  const float inv = rules::fp8_inv_scale(scale);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < x.H; ++h)
      for (int64_t d = 0; d < x.D; ++d) {
        const int64_t at = vt ? (h * Dp + d) * Tp + vit_vt_position(t) : (t * x.H + h) * Dp + d;
        out[static_cast<size_t>(at)] = e4m3_encode(x.value(t, h, d) * inv);
      }
  return out;
}

float vit_amax(const VitHostView& x) {
  float m = 0.0f;
  for (int64_t t = 0; t < x.B * x.S; ++t)
    for (int64_t h = 0; h < x.H; ++h)
      for (int64_t d = 0; d < x.D; ++d) m = rules::nan_max(m, std::fabs(x.value(t, h, d)));
  return m;
}

float vit_dynamic_scale(const std::array<float, kVitHistory>& history) {
  float m = 0.0f;
  for (float a : history) m = rules::nan_max(m, a);
  float s = m / rules::kFp8Max;
  s = rules::nan_max(s, FLT_MIN);
  return s > FLT_MAX ? FLT_MAX : s;
}

void vit_attention(const std::vector<double>& q, const std::vector<double>& k,
                   const std::vector<double>& v, int64_t H, int64_t D,
                   const std::vector<int32_t>& cu_seqlens, double softmax_scale,
                   std::vector<double>* out) {
  const int64_t T = cu_seqlens.empty() ? 0 : cu_seqlens.back();
  out->assign(static_cast<size_t>(T * H * D), 0.0);
  std::vector<double> s;
  for (size_t b = 0; b + 1 < cu_seqlens.size(); ++b) {
    const int64_t beg = cu_seqlens[b], end = cu_seqlens[b + 1];
    s.resize(static_cast<size_t>(end - beg));
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = beg; i < end; ++i) {
        const double* qi = q.data() + (i * H + h) * D;
        double m = -INFINITY;
        for (int64_t j = beg; j < end; ++j) {
          const double* kj = k.data() + (j * H + h) * D;
          double dot = 0.0;
          for (int64_t d = 0; d < D; ++d) dot += qi[d] * kj[d];
          s[j - beg] = dot * softmax_scale;
          m = std::max(m, s[j - beg]);
        }
        double l = 0.0;
        for (double& x : s) l += (x = std::exp(x - m));
        double* o = out->data() + (i * H + h) * D;
        for (int64_t j = beg; j < end; ++j) {
          const double* vj = v.data() + (j * H + h) * D;
          const double p = s[j - beg] / l;
          for (int64_t d = 0; d < D; ++d) o[d] += p * vj[d];
        }
      }
  }
}

}  // namespace qfuse::ref
