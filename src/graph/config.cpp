// Fusion / attention configuration: defaults, JSON, SPEC §5 validation, SPEC §4 alias resolution.
#include "qfuse/graph/config.h"
#include "graph/text.h"
#include "qfuse/graph/family.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <new>

#include "graph/json_reader.h"
#include "qfuse/core/quote.h"

namespace qfuse::graph {
namespace {

using json = detail::json;

using detail::invalid;
/// String values (backend names, dtypes, paths): at most this many bytes.
constexpr size_t kMaxValueBytes = 4096;
const char* const kKvCacheDtypes[] = {"auto", "bf16", "fp8", "fp8_e4m3", "fp8_ds_mla"};
const char* const kKeys[] = {"fuse_act_quant", "fuse_attn_quant", "attention_backend",
                             "kv_cache_dtype", "vit_attn_dtype",  "vit_scale_path",
                             "vit_save_path",  "vit_margin"};

using detail::join;
const AttentionBackend* find_backend(const std::vector<AttentionBackend>& list,
                                     const std::string& name) {
  for (const AttentionBackend& b : list)
    if (b.name == name) return &b;
  return nullptr;
}

}  // namespace

const std::vector<AttentionBackend>& attention_backends() {
  static const std::vector<AttentionBackend> table = [] {
    std::vector<AttentionBackend> v;
    GraphFamilyRegistrar r(nullptr, &v);
    detail::register_graph_families(r);
    return v;
  }();
  return table;
}

Status resolve_kv_cache_dtype(const std::string& backend, const std::string& requested,
                              std::string* resolved, const LogSink& log,
                              const std::vector<AttentionBackend>* backends) {
  const std::vector<AttentionBackend>& list = backends ? *backends : attention_backends();
  bool known = false;
  for (const char* d : kKvCacheDtypes) known |= requested == d;
  if (!known)
    return invalid("config key 'kv_cache_dtype': expected auto|bf16|fp8|fp8_e4m3|fp8_ds_mla, got " +
                   quote_text(requested));
  if (backend.empty()) {  // no attention backend selected: nothing to resolve against
    *resolved = requested == "auto" ? "bf16" : requested;
    return Status::Ok();
  }
  const AttentionBackend* b = find_backend(list, backend);
  if (b == nullptr) {
    std::vector<std::string> names;
    for (const AttentionBackend& x : list) names.push_back(x.name);
    return invalid("config key 'attention_backend': unknown backend " + quote_text(backend) + " (" +
                   (names.empty() ? std::string("no attention family is registered")
                                  : "registered: " + join(names)) +
                   ")");
  }
  auto reads = [&](const std::string& d) {
    for (const std::string& c : b->cache_dtypes)
      if (c == d) return true;
    return false;
  };
  auto say = [&](const std::string& line) {
    if (log)
      log(line);
    else
      std::fprintf(stderr, "qfuse: %s\n", line.c_str());
  };
  std::string r = requested;
  if (requested == "auto") {
    r = "bf16";
  } else if (requested == "fp8") {
    // NOTE: the standard per-tensor format when the backend reads it; else the FP8 format the
    // backend does read (SPEC §4: a backend that only reads fp8_ds_mla resolves fp8 to it).
    if (reads("fp8_e4m3"))
      r = "fp8_e4m3";
    else if (reads("fp8_ds_mla"))
      r = "fp8_ds_mla";
  }
  if (!reads(r))
    return invalid("config key 'kv_cache_dtype': backend '" + backend + "' does not read '" +
                   requested + "' (it reads " + join(b->cache_dtypes, "|") +
                   (reads("fp8_e4m3") || reads("fp8_ds_mla") ? ", and fp8 as an alias" : "") + ")");
  if (r != requested)
    say("kv_cache_dtype '" + requested + "' resolved to '" + r + "' for attention backend '" +
        backend + "'");
  *resolved = r;
  return Status::Ok();
}

namespace {

/// The ViT settings that need no file system (SPEC §5).
Status check_vit_values(const FusionConfig& c) {
  if (c.vit_attn_dtype != "bf16" && c.vit_attn_dtype != "fp8")
    return invalid("config key 'vit_attn_dtype': expected bf16|fp8, got " +
                   quote_text(c.vit_attn_dtype));
  if (!std::isfinite(c.vit_margin) || c.vit_margin <= 0.0)
    return invalid("config key 'vit_margin': expected a finite number > 0, got " +
                   std::to_string(c.vit_margin));
  return Status::Ok();
}

}  // namespace

namespace {

Status read_config(const detail::json& j, FusionConfig* out) {
  using detail::type_name;
  if (!j.is_object())
    return invalid(std::string("config JSON: expected an object of key: value, got ") +
                   type_name(j));
  FusionConfig c = *out;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    const detail::json& v = it.value();
    bool known = false;
    for (const char* key : kKeys) known |= k == key;
    if (!known) {
      std::vector<std::string> keys(std::begin(kKeys), std::end(kKeys));
      return invalid("config key " + quote_text(k) + " is unknown (keys: " + join(keys) + ")");
    }
    const std::string label = "config key '" + k + "'";
    if (k == "fuse_act_quant" || k == "fuse_attn_quant") {
      if (!v.is_boolean()) return invalid(label + ": expected true or false, got " + type_name(v));
      (k == "fuse_act_quant" ? c.fuse_act_quant : c.fuse_attn_quant) = v.get<bool>();
    } else if (k == "vit_margin") {
      if (!v.is_number()) return invalid(label + ": expected a number, got " + type_name(v));
      c.vit_margin = v.get<double>();
    } else {
      if (!v.is_string()) return invalid(label + ": expected a string, got " + type_name(v));
      const std::string& s = v.get_ref<const std::string&>();
      // NOTE: values are names or paths: bounded, so that no message can carry a megabyte.
      if (s.size() > kMaxValueBytes)
        return invalid(label + ": expected a string of at most " + std::to_string(kMaxValueBytes) +
                       " bytes, got " + std::to_string(s.size()) + " bytes");
      if (k == "attention_backend") c.attention_backend = s;
      if (k == "kv_cache_dtype") c.kv_cache_dtype = s;
      if (k == "vit_attn_dtype") c.vit_attn_dtype = s;
      if (k == "vit_scale_path") c.vit_scale_path = s;
      if (k == "vit_save_path") c.vit_save_path = s;
    }
  }
  // Values that need no file system are checked here, so a bad value names its key at once.
  QFUSE_RETURN_IF_ERROR(check_vit_values(c));
  std::string resolved;
  QFUSE_RETURN_IF_ERROR(
      resolve_kv_cache_dtype(c.attention_backend, c.kv_cache_dtype, &resolved, [](auto) {}));
  *out = c;
  return Status::Ok();
}

}  // namespace

Status parse_config_json(const std::string& text, FusionConfig* out) {
  if (out == nullptr) return invalid("argument 'out': expected a FusionConfig to write, got null");
  // NOTE: every type is checked before a value is read; the catch turns what the library or
  // the allocator may still throw into a Status.
  try {
    detail::json j;
    QFUSE_RETURN_IF_ERROR(detail::parse_json(text, "config JSON", &j));
    return read_config(j, out);
  } catch (const std::bad_alloc&) {
    return invalid("config JSON: out of host memory");
  } catch (const std::exception& e) {
    return invalid("config JSON: " + quote_text(e.what(), 160));
  }
}

Status load_config_file(const std::string& path, FusionConfig* out) {
  if (out == nullptr) return invalid("argument 'out': expected a FusionConfig to write, got null");
  std::string text;
  QFUSE_RETURN_IF_ERROR(
      detail::read_regular_file(path, "config file", detail::kMaxConfigFileBytes, &text));
  const Status st = parse_config_json(text, out);
  if (!st.ok()) return Status(st.code(), quote_text(path, 200) + ": " + st.message());
  return Status::Ok();
}

Status validate_config(const FusionConfig& c) {
  namespace fs = std::filesystem;
  QFUSE_RETURN_IF_ERROR(check_vit_values(c));
  const bool fp8 = c.vit_attn_dtype == "fp8";
  if (!c.vit_scale_path.empty() && !fp8)
    return invalid("config key 'vit_scale_path': needs vit_attn_dtype fp8, got " +
                   c.vit_attn_dtype);
  if (!c.vit_save_path.empty() && !fp8)
    return invalid("config key 'vit_save_path': needs vit_attn_dtype fp8, got " + c.vit_attn_dtype);
  if (!c.vit_scale_path.empty() && !c.vit_save_path.empty())
    return invalid(
        "config keys 'vit_scale_path' and 'vit_save_path': give one (static scales from a file, "
        "or dynamic scales saved to a file), not both");
  std::error_code ec;
  if (!c.vit_scale_path.empty() && !fs::is_regular_file(c.vit_scale_path, ec))
    return invalid("config key 'vit_scale_path': file " + quote_text(c.vit_scale_path, 200) +
                   " does not exist");
  if (!c.vit_save_path.empty()) {
    fs::path dir = fs::path(c.vit_save_path).parent_path();
    if (dir.empty()) dir = ".";
    if (!fs::is_directory(dir, ec))
      return invalid("config key 'vit_save_path': directory " + quote_text(dir.string(), 200) +
                     " does not exist");
  }
  std::string resolved;
  return resolve_kv_cache_dtype(c.attention_backend, c.kv_cache_dtype, &resolved, [](auto) {});
}

std::string to_json(const FusionConfig& c) {
  json j;
  j["fuse_act_quant"] = c.fuse_act_quant;
  j["fuse_attn_quant"] = c.fuse_attn_quant;
  j["attention_backend"] = c.attention_backend;
  j["kv_cache_dtype"] = c.kv_cache_dtype;
  j["vit_attn_dtype"] = c.vit_attn_dtype;
  j["vit_scale_path"] = c.vit_scale_path;
  j["vit_save_path"] = c.vit_save_path;
  j["vit_margin"] = c.vit_margin;
  return j.dump(2, ' ', false, json::error_handler_t::replace);
}

}  // namespace qfuse::graph
