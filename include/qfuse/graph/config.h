// Fusion and attention configuration with documented defaults (SPEC §4, §5, §6; docs/graph.md).
//
//   key                 default      values
//   fuse_act_quant      true         true | false
//   fuse_attn_quant     true         true | false
//   attention_backend   ""           "" (none) or a backend of attention_backends()
//   kv_cache_dtype      "auto"       auto | bf16 | fp8 | fp8_e4m3 | fp8_ds_mla
//   vit_attn_dtype      "bf16"       bf16 | fp8
//   vit_scale_path      ""           static ViT scales (JSON); needs fp8, excludes a save path
//   vit_save_path       ""           where dynamic ViT scales are saved; needs fp8
//   vit_margin          1.5          finite, > 0: factor on saved scales
//
// The KV-cache dtype is resolved per backend: "auto" is bf16 (the model dtype); "fp8" becomes
// the FP8 format the backend reads (fp8_ds_mla for a backend that reads only that one, SPEC §4),
// and the resolution is logged; a dtype the backend does not read is an error naming the set.
// Backends are what the kernel families register (qfuse/graph/family.h): a name no family
// registered is an error listing the registered ones. Without a backend ("") only the dtype's
// name is checked.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "qfuse/core/status.h"

namespace qfuse::graph {

struct FusionConfig {
  bool fuse_act_quant = true;
  bool fuse_attn_quant = true;
  std::string attention_backend;  // "" = none selected
  std::string kv_cache_dtype = "auto";
  std::string vit_attn_dtype = "bf16";
  std::string vit_scale_path;
  std::string vit_save_path;
  double vit_margin = 1.5;
};

/// An attention backend and the KV-cache formats it reads.
struct AttentionBackend {
  std::string name;
  std::vector<std::string> cache_dtypes;  // concrete: bf16, fp8_e4m3, fp8_ds_mla
  std::string summary;
};
/// The backends the kernel families registered (qfuse/graph/family.h), in family-name order.
const std::vector<AttentionBackend>& attention_backends();

/// Receives one line per resolution worth logging (default: stderr with a "qfuse: " prefix).
using LogSink = std::function<void(std::string_view)>;

/// Reads a config from JSON; keys not given keep their defaults. Unknown keys and values of the
/// wrong type are errors naming the key. Does not check files (see validate_config()).
Status parse_config_json(const std::string& text, FusionConfig* out);
Status load_config_file(const std::string& path, FusionConfig* out);

/// Checks values and the ViT rules of SPEC §5 (paths only with fp8, not both, the scale file
/// exists, the save directory exists) and that the KV-cache dtype resolves for the backend.
Status validate_config(const FusionConfig& c);

/// The concrete KV-cache dtype for `backend` (SPEC §4). Logs alias resolutions to `log` (may be
/// empty: the default sink).
/// `backends` (may be nullptr) replaces the registered ones (tests, outside code).
Status resolve_kv_cache_dtype(const std::string& backend, const std::string& requested,
                              std::string* resolved, const LogSink& log = {},
                              const std::vector<AttentionBackend>* backends = nullptr);

/// The config as JSON text (every key).
std::string to_json(const FusionConfig& c);

}  // namespace qfuse::graph
