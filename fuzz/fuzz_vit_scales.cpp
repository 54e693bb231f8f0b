// Fuzz target: the ViT static scale file reader (vit::ScaleTable::parse). Invariants (a violation
// aborts): it returns a Status for every input; an error message stays short (no value or name
// dumped whole) and leaves the table untouched; a table it accepts has finite scales > 0 for
// every layer, prints (to_json) as JSON that it reads back to the same floats, and every layer
// is found by get().
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "qfuse/vit_attention/scales.h"

using qfuse::vit::QkvScales;
using qfuse::vit::ScaleTable;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  ScaleTable t;
  const qfuse::Status st = ScaleTable::parse(text, "fuzz", &t);
  if (!st.ok()) {
    if (st.message().empty() || st.message().size() > 2048 || !t.empty()) std::abort();
    return 0;
  }
  auto good = [](float s) { return std::isfinite(s) && s > 0.0f; };
  for (const auto& [name, s] : t.layers()) {
    if (!good(s.q) || !good(s.k) || !good(s.v)) std::abort();
    QkvScales got;
    if (!t.get(name, &got).ok() || got.q != s.q || got.k != s.k || got.v != s.v) std::abort();
  }
  ScaleTable back;
  if (!ScaleTable::parse(t.to_json(), "fuzz round trip", &back).ok()) std::abort();
  if (back.layers().size() != t.layers().size()) std::abort();
  for (const auto& [name, s] : t.layers()) {
    QkvScales got;
    if (!back.get(name, &got).ok() || got.q != s.q || got.k != s.k || got.v != s.v) std::abort();
  }
  return 0;
}
