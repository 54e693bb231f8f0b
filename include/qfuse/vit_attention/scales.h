// Static FP8 scales of the ViT attention layers (SPEC §5): read once from a JSON file, looked up
// per layer, and written (scaled by a margin, atomically) by dynamic scaling's save.
//
// File format: {"<layer>": {"q": s, "k": s, "v": s}, ...}, or the same object wrapped as
// {"layers": {...}} (recognised when "layers" is the only key and its value is an object). Keys
// q|q_scale, k|k_scale, v|v_scale (one spelling per key, all three required, no others). Every
// value a JSON number, finite and > 0 both as read and as a float. Layer names: 1..128 bytes of
// UTF-8. Errors (kInvalidArgument) name the layer and key, stay short for any input, and leave
// the table untouched (nothing is half-read). Files: regular files of at most 16 MiB.
// docs/vit_attention.md has the details.
#pragma once

#include <map>
#include <string>

#include "qfuse/core/status.h"

namespace qfuse::vit {

/// Dequantization scales of one layer's Q, K and V (x ~ fp8 * scale).
struct QkvScales {
  float q = 1.0f, k = 1.0f, v = 1.0f;
};

/// Every layer's static scales, keyed by the layer's name.
class ScaleTable {
 public:
  /// Parses JSON text; `source` names it in errors ("scale file 'x.json'").
  static Status parse(const std::string& text, const std::string& source, ScaleTable* out);
  /// Reads and parses a regular file of bounded size.
  static Status load(const std::string& path, ScaleTable* out);

  /// The scales of `layer`; a layer not in the table is an error listing the available layers.
  Status get(const std::string& layer, QkvScales* out) const;
  /// Adds or replaces a layer (name: 1..128 bytes of UTF-8; values finite and > 0).
  Status set(const std::string& layer, const QkvScales& s);

  const std::map<std::string, QkvScales>& layers() const { return layers_; }
  bool empty() const { return layers_.empty(); }

  /// The table as JSON (the unwrapped form, keys q/k/v), every scale multiplied by `margin` in
  /// double and rounded to float; floats printed so that they read back to the same value. A
  /// scaled value that is not finite is written as null (the reader rejects it naming the layer
  /// and key; save_scales_atomic refuses it). NOTE: a table whose only layer is named "layers"
  /// is written wrapped, so that it does not read back as the wrapped form.
  std::string to_json(double margin = 1.0) const;

 private:
  std::map<std::string, QkvScales> layers_;
  std::string source_ = "the scale table";  // where the layers came from, for get()'s errors
};

/// Writes t.to_json(margin) to `path` atomically: a temporary file in the same directory
/// (`<path>.tmp.<pid>.<n>`), written, fsync'ed, then renamed over `path`; on any failure the
/// temporary file is removed and `path` is left as it was. margin must be finite and > 0; the
/// table must not be empty and every scale × margin must be a finite float > 0; the directory
/// must exist.
Status save_scales_atomic(const std::string& path, const ScaleTable& t, double margin);

}  // namespace qfuse::vit
