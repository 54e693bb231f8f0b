#include "qfuse/quant/kind.h"

#include <string>

#include "qfuse/core/checked.h"
#include "qfuse/core/quote.h"

namespace qfuse {

std::string_view to_string(QuantKind kind) {
  switch (kind) {
    case QuantKind::kNone:
      return "none";
    case QuantKind::kFp8PerTensor:
      return "fp8_per_tensor";
    case QuantKind::kFp8PerToken:
      return "fp8_per_token";
    case QuantKind::kFp8PerGroup:
      return "fp8_group";
    case QuantKind::kNvfp4:
      return "nvfp4";
  }
  return "unknown";
}

std::string_view to_string(ScaleLayout layout) {
  switch (layout) {
    case ScaleLayout::kNone:
      return "none";
    case ScaleLayout::kRowMajor:
      return "row";
    case ScaleLayout::kColMajor:
      return "col";
    case ScaleLayout::kColMajorTma:
      return "col_tma";
    case ScaleLayout::kNvfp4Swizzled:
      return "swizzled";
  }
  return "unknown";
}

std::string_view to_string(ScaleFormat format) {
  switch (format) {
    case ScaleFormat::kF32:
      return "f32";
    case ScaleFormat::kUe8m0F32:
      return "ue8m0";
    case ScaleFormat::kUe8m0Packed:
      return "ue8m0_packed";
    case ScaleFormat::kE4M3:
      return "e4m3";
  }
  return "unknown";
}

std::string_view to_string(QuantRule rule) {
  switch (rule) {
    case QuantRule::kNative:
      return "native";
    case QuantRule::kEngine:
      return "engine";
  }
  return "unknown";
}

bool sees_whole_scale_units(const QuantSpec& spec, int64_t cols, int64_t col0, int64_t out_cols) {
  const QuantNeeds n = quant_needs(spec);
  switch (n.scope) {
    case ScaleScope::kGroup:
      return cols % n.group_cols == 0 && col0 % n.group_cols == 0;
    case ScaleScope::kRow:
      return col0 == 0 && cols >= out_cols;
    default:
      return true;
  }
}

QuantNeeds quant_needs(const QuantSpec& spec) {
  switch (spec.kind) {
    case QuantKind::kNone:
      return {ScaleScope::kNone, 0};
    case QuantKind::kFp8PerTensor:
      return {ScaleScope::kTensor, 0};
    case QuantKind::kFp8PerToken:
      return {ScaleScope::kRow, 0};
    case QuantKind::kFp8PerGroup:
    case QuantKind::kNvfp4:
      return {ScaleScope::kGroup, spec.group_size};
  }
  return {};
}

namespace {

constexpr std::string_view kEngineSuffix = ":engine";

std::string native_text(const QuantSpec& s) {
  switch (s.kind) {
    case QuantKind::kNone:
    case QuantKind::kFp8PerTensor:
    case QuantKind::kFp8PerToken:
      return std::string(to_string(s.kind));
    case QuantKind::kFp8PerGroup:
      return "fp8_group" + std::to_string(s.group_size) + ":" + std::string(to_string(s.layout)) +
             ":" + std::string(to_string(s.format));
    case QuantKind::kNvfp4:
      return std::string("nvfp4:") +
             (s.layout == ScaleLayout::kNvfp4Swizzled ? "swizzled" : "linear");
  }
  return "unknown";
}

}  // namespace

std::string to_string(const QuantSpec& s) {
  std::string t = native_text(s);
  if (s.rule != QuantRule::kNative) t += s.rule == QuantRule::kEngine ? kEngineSuffix : ":unknown";
  return t;
}

Status QuantSpec::validate() const {
  const std::string self = to_string(*this);
  if (rule != QuantRule::kNative) {
    if (rule != QuantRule::kEngine)
      return Status::InvalidArgument("quant.rule", "native|engine", self);
    if (!has_engine_rule())
      return Status::InvalidArgument(
          "quant.rule",
          "native for " + std::string(qfuse::to_string(kind)) +
              " (it rounds as the reference engine does: no engine rule)",
          "engine");
  }
  switch (kind) {
    case QuantKind::kNone:
    case QuantKind::kFp8PerTensor:
    case QuantKind::kFp8PerToken:
      if (group_size != 0 || layout != ScaleLayout::kNone || format != ScaleFormat::kF32)
        return Status::InvalidArgument(
            "quant.spec",
            "no group size, layout or scale format for " + std::string(qfuse::to_string(kind)),
            "group_size " + std::to_string(group_size) + ", layout " +
                std::string(qfuse::to_string(layout)) + ", format " +
                std::string(qfuse::to_string(format)));
      return Status::Ok();
    case QuantKind::kFp8PerGroup:
      if (group_size != 64 && group_size != 128)
        return Status::InvalidArgument("quant.group_size", "64|128", std::to_string(group_size));
      if (layout != ScaleLayout::kRowMajor && layout != ScaleLayout::kColMajor &&
          layout != ScaleLayout::kColMajorTma)
        return Status::InvalidArgument("quant.layout", "row|col|col_tma",
                                       std::string(qfuse::to_string(layout)));
      if (format == ScaleFormat::kE4M3)
        return Status::InvalidArgument("quant.format", "f32|ue8m0|ue8m0_packed", "e4m3");
      return Status::Ok();
    case QuantKind::kNvfp4:
      if (group_size != 16)
        return Status::InvalidArgument("quant.group_size", "16", std::to_string(group_size));
      if (layout != ScaleLayout::kNvfp4Swizzled && layout != ScaleLayout::kRowMajor)
        return Status::InvalidArgument("quant.layout", "swizzled|linear",
                                       std::string(qfuse::to_string(layout)));
      if (format != ScaleFormat::kE4M3)
        return Status::InvalidArgument("quant.format", "e4m3",
                                       std::string(qfuse::to_string(format)));
      return Status::Ok();
  }
  return Status::InvalidArgument("quant.kind", "a QuantKind", self);
}

std::vector<QuantSpec> all_quant_specs() {
  std::vector<QuantSpec> v = {QuantSpec::none(), QuantSpec::fp8_per_tensor(),
                              QuantSpec::fp8_per_token()};
  for (int g : {64, 128})
    for (ScaleLayout l :
         {ScaleLayout::kRowMajor, ScaleLayout::kColMajor, ScaleLayout::kColMajorTma})
      for (ScaleFormat f : {ScaleFormat::kF32, ScaleFormat::kUe8m0F32, ScaleFormat::kUe8m0Packed})
        v.push_back(QuantSpec::fp8_per_group(g, l, f));
  v.push_back(QuantSpec::nvfp4(ScaleLayout::kNvfp4Swizzled));
  v.push_back(QuantSpec::nvfp4(ScaleLayout::kRowMajor));
  return v;
}

std::vector<QuantSpec> engine_quant_specs() {
  std::vector<QuantSpec> v;
  for (const QuantSpec& s : all_quant_specs())
    if (s.has_engine_rule()) v.push_back(s.with_rule(QuantRule::kEngine));
  return v;
}

Status parse_quant_spec(std::string_view text, QuantSpec* out) {
  if (out == nullptr) return Status::InvalidArgument("out", "a QuantSpec to write", "null");
  // NOTE: the native form, then the engine form; a suffix on a kind without an engine rule is
  // named as such (the native text alone would be valid).
  std::string_view base = text;
  const bool engine = base.size() > kEngineSuffix.size() &&
                      base.substr(base.size() - kEngineSuffix.size()) == kEngineSuffix;
  if (engine) base.remove_suffix(kEngineSuffix.size());
  for (const QuantSpec& s : all_quant_specs()) {
    if (native_text(s) == base) {
      const QuantSpec r = s.with_rule(engine ? QuantRule::kEngine : QuantRule::kNative);
      if (!r.has_engine_rule() && engine)
        return Status::InvalidArgument(
            "quant",
            std::string(base) + " (" + std::string(to_string(s.kind)) +
                " has no engine rule: it rounds as the reference engine does)",
            quote_text(text));
      *out = r;
      return Status::Ok();
    }
  }
  return Status::InvalidArgument(
      "quant",
      "none|fp8_per_tensor|fp8_per_token[:engine]|fp8_group{64,128}:{row,col,col_tma}:"
      "{f32,ue8m0,ue8m0_packed}[:engine]|nvfp4:{swizzled,linear}[:engine]",
      quote_text(text));
}

Status scale_shape(const QuantSpec& spec, int64_t rows, int64_t cols, ScaleShape* out) {
  if (out == nullptr) return Status::InvalidArgument("out", "a ScaleShape to write", "null");
  QFUSE_RETURN_IF_ERROR(spec.validate());
  return detail::scale_shape_valid(spec, rows, cols, out);
}

Status detail::scale_shape_valid(const QuantSpec& spec, int64_t rows, int64_t cols,
                                 ScaleShape* out) {
  // NOTE: rows and cols within the element limit keep every rounding and product below in
  // int64_t; the buffer's own sizes are checked at the end.
  const int64_t values[2] = {rows, cols};
  if (const SizeProblem p = check_sizes(values, 2); !p.ok())
    return Status::InvalidArgument(
        p.dim == 0 ? "rows" : "cols", p.reason,
        std::to_string(values[p.dim]) + " ([rows, cols] = " + sizes_text(values, 2) + ")");
  ScaleShape s;
  switch (spec.kind) {
    case QuantKind::kNone:
    case QuantKind::kFp8PerTensor:
      break;
    case QuantKind::kFp8PerToken:
      s.dtype = DType::kF32;
      s.rank = 1;
      s.sizes[0] = rows;
      s.num_groups = 1;
      s.padded_rows = rows;
      break;
    case QuantKind::kFp8PerGroup: {
      const int64_t G = ceil_div(cols, spec.group_size);
      const int64_t ld = spec.layout == ScaleLayout::kColMajorTma ? round_up(rows, 4) : rows;
      s.num_groups = G;
      s.padded_rows = ld;
      if (spec.format == ScaleFormat::kUe8m0Packed) {
        const int64_t G4 = round_up(G, 4);
        s.dtype = DType::kUE8M0;
        if (spec.layout == ScaleLayout::kRowMajor) {
          s.rank = 2;
          s.sizes[0] = rows;
          s.sizes[1] = G4;
        } else {
          s.rank = 3;
          s.sizes[0] = G4 / 4;
          s.sizes[1] = ld;
          s.sizes[2] = 4;
        }
      } else {
        s.dtype = DType::kF32;
        s.rank = 2;
        if (spec.layout == ScaleLayout::kRowMajor) {
          s.sizes[0] = rows;
          s.sizes[1] = G;
        } else {
          s.sizes[0] = G;
          s.sizes[1] = ld;
        }
      }
      break;
    }
    case QuantKind::kNvfp4: {
      const int64_t K = ceil_div(cols, 16);
      s.dtype = DType::kE4M3;
      s.rank = 2;
      s.num_groups = K;
      if (spec.layout == ScaleLayout::kNvfp4Swizzled) {
        s.sizes[0] = round_up(rows, 128);
        s.sizes[1] = round_up(K, 4);
      } else {
        s.sizes[0] = rows;
        s.sizes[1] = K;
      }
      s.padded_rows = s.sizes[0];
      break;
    }
  }
  QFUSE_RETURN_IF_ERROR(check_sizes("scales", s.sizes, s.rank, nullptr));
  *out = s;
  return Status::Ok();
}

std::optional<DType> quantized_dtype(const QuantSpec& spec) {
  if (spec.is_fp8()) return DType::kE4M3;
  if (spec.kind == QuantKind::kNvfp4) return DType::kE2M1x2;
  return std::nullopt;
}

}  // namespace qfuse
