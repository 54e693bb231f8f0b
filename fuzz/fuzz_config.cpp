// Fuzz target: the config reader (parse_config_json). Invariants (a violation aborts): it returns
// a Status for every input; a config it accepts prints (to_json) as JSON that it reads back to
// the same values; an error message stays short (no value dumped).
#include <cstdint>
#include <cstdlib>
#include <string>

#include "qfuse/graph/config.h"

using namespace qfuse::graph;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  FusionConfig c;
  const qfuse::Status st = parse_config_json(text, &c);
  if (!st.ok()) {
    if (st.message().empty() || st.message().size() > 2048) std::abort();
    return 0;
  }
  FusionConfig back;
  if (!parse_config_json(to_json(c), &back).ok()) std::abort();
  if (back.fuse_act_quant != c.fuse_act_quant || back.fuse_attn_quant != c.fuse_attn_quant ||
      back.attention_backend != c.attention_backend || back.kv_cache_dtype != c.kv_cache_dtype ||
      back.vit_attn_dtype != c.vit_attn_dtype || back.vit_margin != c.vit_margin)
    std::abort();
  return 0;
}
