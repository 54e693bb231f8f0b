// Static FP8 scales of the ViT attention layers (qfuse/vit_attention/scales.h, SPEC §5): the
// scale file's reader (through the bounded JSON reader of the graph layer), the per-layer lookup,
// the writer and its atomic save.
#include "qfuse/vit_attention/scales.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <new>
#include <utility>

#include "graph/json_reader.h"
#include "graph/text.h"
#include "qfuse/core/quote.h"
#include "qfuse/graph/family.h"

namespace qfuse::vit {
namespace {

using graph::detail::invalid;
using json = graph::detail::json;

constexpr size_t kMaxScaleFileBytes = size_t{16} << 20;
constexpr size_t kMaxLayerNameBytes = graph::detail::kMaxNameBytes;  // 128
/// A source ("scale file '...'") is cut to this many bytes, so that every message stays short.
constexpr size_t kMaxSourceBytes = 256;
/// get()'s list of available layers: at most this many names and about this many bytes.
constexpr size_t kListNames = 16, kListBytes = 400;
constexpr const char* kKeys = "q|q_scale, k|k_scale, v|v_scale";

std::string bounded_source(const std::string& source) {
  if (source.empty()) return "scale JSON";
  if (source.size() <= kMaxSourceBytes) return source;
  // NOTE: cut through quote_text so that a caller's control bytes are escaped here too.
  const std::string q = quote_text(source, kMaxSourceBytes - 16);
  return q.substr(1, q.rfind('\'') - 1) + "...";
}

/// A number as a message shows it: short ("%.9g"), never a dumped input.
std::string number_text(double d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", d);
  return buf;
}

std::string layer_label(const std::string& source, const std::string& layer) {
  return source + ": layer " + quote_text(layer, 48);
}

/// The float of a scale read as `d`: finite and > 0 before and after the conversion.
Status to_scale(double d, const std::string& label, float* out) {
  if (!(std::isfinite(d) && d > 0.0))
    return invalid(label + ": expected a finite number > 0, got " + number_text(d));
  // NOTE: IEEE conversion: a double past FLT_MAX becomes inf, one below the smallest subnormal 0.
  const float f = static_cast<float>(d);
  if (!std::isfinite(f))
    return invalid(label + ": expected a number > 0 that is finite as a float (at most " +
                   number_text(3.4028234663852886e38) + "), got " + number_text(d));
  if (!(f > 0.0f))
    return invalid(label + ": expected a number > 0 that is > 0 as a float (at least " +
                   number_text(1.401298464324817e-45) + "), got " + number_text(d));
  *out = f;
  return Status::Ok();
}

Status check_layer_name(const std::string& layer, const std::string& label) {
  if (layer.empty()) return invalid(label + ": expected a non-empty layer name");
  if (layer.size() > kMaxLayerNameBytes)
    return invalid(label + ": expected a name of at most " + std::to_string(kMaxLayerNameBytes) +
                   " bytes, got " + std::to_string(layer.size()));
  // NOTE: names are written back as JSON strings (to_json): they must be UTF-8. Names read from
  // JSON always are; set() may be given anything.
  try {
    (void)json(layer).dump();
  } catch (const json::type_error&) {
    return invalid(label + ": expected a name in UTF-8, got invalid UTF-8");
  }
  return Status::Ok();
}

Status check_scales(const QkvScales& s, const std::string& label) {
  const std::pair<const char*, float> values[] = {{"q", s.q}, {"k", s.k}, {"v", s.v}};
  for (const auto& [key, value] : values) {
    float f = 0.0f;
    QFUSE_RETURN_IF_ERROR(to_scale(value, label + ": key '" + key + "'", &f));
  }
  return Status::Ok();
}

/// One layer's object: every key known, each of q/k/v given once under one of its spellings.
Status read_layer(const json& v, const std::string& label, QkvScales* out) {
  using graph::detail::type_name;
  if (!v.is_object())
    return invalid(label + ": expected an object {\"q\": .., \"k\": .., \"v\": ..}, got " +
                   type_name(v));
  struct Slot {
    const char* name;
    const char* alias;
    float* dst;
    const std::string* used = nullptr;  // the spelling read
  };
  QkvScales s;
  Slot slots[] = {{"q", "q_scale", &s.q}, {"k", "k_scale", &s.k}, {"v", "v_scale", &s.v}};
  for (auto it = v.begin(); it != v.end(); ++it) {
    const std::string& key = it.key();
    Slot* slot = nullptr;
    for (Slot& x : slots)
      if (key == x.name || key == x.alias) slot = &x;
    if (slot == nullptr)
      return invalid(label + ": unknown key " + quote_text(key, 48) + " (keys: " + kKeys + ")");
    if (slot->used != nullptr)
      return invalid(label + ": key '" + slot->name + "' given twice (as '" + *slot->used +
                     "' and '" + key + "')");
    slot->used = &key;
    const std::string key_label = label + ": key '" + key + "'";
    if (!it.value().is_number())
      return invalid(key_label + ": expected a finite number > 0, got " + type_name(it.value()));
    QFUSE_RETURN_IF_ERROR(to_scale(it.value().get<double>(), key_label, slot->dst));
  }
  for (const Slot& x : slots)
    if (x.used == nullptr)
      return invalid(label + " is incomplete: key '" + x.name + "' (or '" + x.alias +
                     "') is missing");
  *out = s;
  return Status::Ok();
}

/// "'a', 'b', ... (5000 in all)": the first names that fit a short message.
std::string available_text(const std::map<std::string, QkvScales>& layers) {
  if (layers.empty()) return "the table is empty";
  std::string r = "available: ";
  size_t n = 0;
  for (const auto& entry : layers) {
    if (n == kListNames || r.size() > kListBytes) break;
    r += (n ? ", " : "") + quote_text(entry.first, 32);
    ++n;
  }
  if (n < layers.size()) r += ", ... (" + std::to_string(layers.size()) + " in all)";
  return r;
}

float scaled(float s, double margin) {
  return static_cast<float>(static_cast<double>(s) * margin);
}

/// The shortest text that reads back to `f` (std::to_chars: locale-independent); null when `f`
/// is not finite (JSON has no inf or NaN).
void append_float(std::string* r, float f) {
  if (!std::isfinite(f)) {
    *r += "null";
    return;
  }
  char buf[48];
  const auto res = std::to_chars(buf, buf + sizeof buf, f);
  r->append(buf, res.ptr);
}

}  // namespace

Status ScaleTable::parse(const std::string& text, const std::string& source, ScaleTable* out) {
  using graph::detail::type_name;
  const std::string src = bounded_source(source);
  if (out == nullptr)
    return invalid(src + ": argument 'out': expected a ScaleTable to write, got null");
  // NOTE: every type is checked before a value is read; the catch turns what the library or the
  // allocator may still throw into a Status.
  try {
    json j;
    QFUSE_RETURN_IF_ERROR(graph::detail::parse_json(text, src.c_str(), &j));
    if (!j.is_object())
      return invalid(src + ": expected an object {\"<layer>\": {\"q\": .., \"k\": .., \"v\": ..}}" +
                     " (or one wrapped as {\"layers\": {...}}), got " + type_name(j));
    const json* layers = &j;
    if (j.size() == 1 && j.begin().key() == "layers" && j.begin().value().is_object())
      layers = &j.begin().value();
    if (layers->empty())
      return invalid(src + ": expected at least one layer, got an empty object" +
                     (layers == &j ? "" : " in \"layers\""));
    ScaleTable t;
    t.source_ = src;
    for (auto it = layers->begin(); it != layers->end(); ++it) {
      const std::string label = layer_label(src, it.key());
      QFUSE_RETURN_IF_ERROR(check_layer_name(it.key(), label));
      QkvScales s;
      QFUSE_RETURN_IF_ERROR(read_layer(it.value(), label, &s));
      // NOTE: the reader rejects duplicate keys, so every layer is new here.
      t.layers_.emplace(it.key(), s);
    }
    *out = std::move(t);
    return Status::Ok();
  } catch (const std::bad_alloc&) {
    return invalid(src + ": out of host memory");
  } catch (const std::exception& e) {
    return invalid(src + ": " + quote_text(e.what(), 160));
  }
}

Status ScaleTable::load(const std::string& path, ScaleTable* out) {
  const std::string name = "scale file " + quote_text(path, 200);
  if (out == nullptr)
    return invalid(name + ": argument 'out': expected a ScaleTable to write, got null");
  std::string text;
  QFUSE_RETURN_IF_ERROR(
      graph::detail::read_regular_file(path, "scale file", kMaxScaleFileBytes, &text));
  return parse(text, name, out);
}

Status ScaleTable::get(const std::string& layer, QkvScales* out) const {
  if (out == nullptr)
    return invalid("ViT attention scales: argument 'out': expected QkvScales to write, got null");
  const auto it = layers_.find(layer);
  if (it == layers_.end())
    return invalid("ViT attention scales: layer " + quote_text(layer, 48) + " is not in " +
                   source_ + " (" + available_text(layers_) + ")");
  *out = it->second;
  return Status::Ok();
}

Status ScaleTable::set(const std::string& layer, const QkvScales& s) {
  const std::string label = layer_label("ViT attention scales", layer);
  QFUSE_RETURN_IF_ERROR(check_layer_name(layer, label));
  QFUSE_RETURN_IF_ERROR(check_scales(s, label));
  layers_[layer] = s;
  return Status::Ok();
}

std::string ScaleTable::to_json(double margin) const {
  // NOTE: {"layers": {"q": ...}} would read back as the wrapped form of a table of layer "q".
  const bool wrap = layers_.size() == 1 && layers_.begin()->first == "layers";
  const std::string indent = wrap ? "    " : "  ";
  std::string r = wrap ? "{\"layers\": {\n" : "{\n";
  size_t i = 0;
  for (const auto& [name, s] : layers_) {
    r += indent;
    // NOTE: `replace` never throws; names are checked to be UTF-8 when they are added.
    r += json(name).dump(-1, ' ', false, json::error_handler_t::replace);
    r += ": {\"q\": ";
    append_float(&r, scaled(s.q, margin));
    r += ", \"k\": ";
    append_float(&r, scaled(s.k, margin));
    r += ", \"v\": ";
    append_float(&r, scaled(s.v, margin));
    r += ++i < layers_.size() ? "},\n" : "}\n";
  }
  r += wrap ? "}}\n" : "}\n";
  return r;
}

Status save_scales_atomic(const std::string& path, const ScaleTable& t, double margin) {
  namespace fs = std::filesystem;
  const std::string name = "scale save " + quote_text(path, 200);
  if (!(std::isfinite(margin) && margin > 0.0))
    return invalid(name + ": argument 'margin': expected a finite number > 0, got " +
                   number_text(margin));
  if (t.empty()) return invalid(name + ": the scale table has no layers (nothing to save)");
  for (const auto& [layer, s] : t.layers()) {
    const std::pair<const char*, float> values[] = {{"q", s.q}, {"k", s.k}, {"v", s.v}};
    for (const auto& [key, value] : values) {
      const float f = scaled(value, margin);
      if (!(std::isfinite(f) && f > 0.0f))
        return invalid(name + ": layer " + quote_text(layer, 48) + ": key '" + key +
                       "': " + number_text(value) + " x margin " + number_text(margin) + " = " +
                       number_text(f) + ", expected a finite float > 0");
    }
  }
  std::string tmp;
  int fd = -1;
  auto fail = [&](const std::string& what, int err) {
    if (fd >= 0) ::close(fd);
    if (!tmp.empty()) ::unlink(tmp.c_str());
    return invalid(name + ": " + what + (err ? std::string(": ") + std::strerror(err) : ""));
  };
  try {
    const fs::path p(path);
    if (path.empty() || !p.has_filename())
      return invalid(name + ": expected the path of a file, got " +
                     (path.empty() ? std::string("an empty string") : "a directory path"));
    const fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0) {
      const int err = errno;
      return invalid(name + ": directory " + quote_text(dir.native(), 200) +
                     (err == ENOENT ? std::string(" does not exist")
                                    : std::string(" cannot be read: ") + std::strerror(err)));
    }
    if (!S_ISDIR(st.st_mode))
      return invalid(name + ": " + quote_text(dir.native(), 200) + " is not a directory");
    const std::string text = t.to_json(margin);

    // NOTE: pid and a per-process counter: distinct for every save of every thread and process;
    // O_EXCL never reuses a file left by a crashed process with the same pid.
    static std::atomic<unsigned> counter{0};
    for (int attempt = 0; fd < 0; ++attempt) {
      tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
      fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0666);
      if (fd >= 0) break;
      const int err = errno;
      if (err != EEXIST || attempt == 100) {
        const std::string what = "cannot create the temporary file " + quote_text(tmp, 240);
        tmp.clear();  // not ours: nothing to remove
        return fail(what, err);
      }
    }
    for (size_t done = 0; done < text.size();) {
      const ssize_t w = ::write(fd, text.data() + done, text.size() - done);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) return fail("cannot write the temporary file", errno);
      done += static_cast<size_t>(w);
    }
    if (::fsync(fd) != 0) return fail("cannot flush the temporary file", errno);
    const int closed = ::close(fd);
    fd = -1;
    if (closed != 0) return fail("cannot close the temporary file", errno);
    if (std::rename(tmp.c_str(), path.c_str()) != 0)
      return fail("cannot rename the temporary file over it", errno);
    tmp.clear();
    // NOTE: best effort: make the rename itself durable.
    if (const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
      (void)::fsync(dfd);
      ::close(dfd);
    }
    return Status::Ok();
  } catch (const std::bad_alloc&) {
    return fail("out of host memory", 0);
  } catch (const std::exception& e) {
    return fail(quote_text(e.what(), 160), 0);
  }
}

}  // namespace qfuse::vit

// NOTE: family.cmake lists this file under GRAPH, so the build calls the family's graph
// registration; the family has no graph ops or attention backends yet (they belong in
// graph_ops.cpp, which then takes this function over).
QFUSE_REGISTER_GRAPH_FAMILY(vit_attention) {
  (void)r;
}
