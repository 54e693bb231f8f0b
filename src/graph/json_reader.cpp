// Total JSON reading (json_reader.h): a SAX handler that builds the document with bounded depth,
// rejects duplicate keys and appends object members in constant time.
#include "graph/json_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <new>
#include <unordered_set>
#include <utility>
#include <vector>

#include "graph/text.h"
#include "qfuse/core/quote.h"

namespace qfuse::graph::detail {
namespace {

/// A library message with control bytes escaped, the token it quotes ("last read: '...'",
/// "parsing '...'": a number or string that may be a megabyte long) cut to a few dozen bytes.
std::string bounded(std::string msg) {
  constexpr size_t kToken = 24, kMax = 200;
  for (const char* marker : {"last read: '", "parsing '"}) {
    const size_t at = msg.find(marker);
    if (at == std::string::npos) continue;
    const size_t start = at + std::strlen(marker);
    const size_t end = msg.find('\'', start);
    const size_t len = (end == std::string::npos ? msg.size() : end) - start;
    if (len > kToken) msg.replace(start + kToken, len - kToken, "...");
  }
  const std::string q = quote_text(msg, kMax);
  return q.substr(1, q.rfind('\'') - 1) + (msg.size() > kMax ? "..." : "");
}

class Builder {
 public:
  using number_integer_t = json::number_integer_t;
  using number_unsigned_t = json::number_unsigned_t;
  using number_float_t = json::number_float_t;
  using string_t = json::string_t;
  using binary_t = json::binary_t;

  explicit Builder(json* root) : root_(root) {}

  bool null() { return nullptr != put(json(nullptr)); }
  bool boolean(bool v) { return nullptr != put(json(v)); }
  bool number_integer(number_integer_t v) { return nullptr != put(json(v)); }
  bool number_unsigned(number_unsigned_t v) { return nullptr != put(json(v)); }
  bool number_float(number_float_t v, const string_t&) { return nullptr != put(json(v)); }
  bool string(string_t& v) { return nullptr != put(json(std::move(v))); }
  bool binary(binary_t&) { return fail("binary values are not JSON"); }

  bool start_object(std::size_t) { return open(json::object()); }
  bool start_array(std::size_t) { return open(json::array()); }
  bool end_object() { return close(); }
  bool end_array() { return close(); }

  bool key(string_t& k) {
    Frame& f = stack_.back();
    if (!f.keys.insert(k).second) {
      f.key = k;
      return fail("duplicate key " + quote_text(k) + " (each key may appear once)");
    }
    f.key = k;  // NOTE: kept (not moved) until the next key: the error path names it
    f.has_key = true;
    return true;
  }

  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& e) {
    std::string m = e.what();
    // "[json.exception.parse_error.101] parse error at line 1, column 5: syntax error ..."
    if (const size_t p = m.find("] "); p != std::string::npos) m.erase(0, p + 2);
    if (m.rfind("parse error at ", 0) == 0) {
      if (const size_t p = m.find(": "); p != std::string::npos) m.erase(0, p + 2);
    }
    position_ = position;
    return fail(bounded(m));
  }

  const std::string& error() const { return error_; }
  /// Byte offset of the error (0 when the library did not say).
  size_t position() const { return position_; }

 private:
  struct Frame {
    json* value = nullptr;
    std::unordered_set<std::string> keys;  // objects: keys seen
    std::string key;                       // objects: the member being read
    bool has_key = false;
  };

  bool fail(std::string msg) {
    const std::string p = path();
    error_ = std::move(msg) + (p.empty() ? "" : " (at " + p + ")");
    return false;
  }

  /// "nodes[2].attrs.copy_from"; names cut to a few dozen bytes. A path longer than kMaxPath
  /// keeps its first step and the innermost steps that fit ("a...x.y.z"): 32 levels of long keys
  /// would otherwise make a message of 2 KB.
  std::string path() const {
    constexpr size_t kMaxPath = 240, kTail = 180;
    std::vector<std::string> steps;
    for (size_t i = 0; i < stack_.size(); ++i) {
      const Frame& f = stack_[i];
      if (f.value->is_array()) {
        // NOTE: an open child is already the array's last element; a scalar is not yet in it.
        const size_t n = f.value->size();
        steps.push_back("[" + std::to_string(i + 1 < stack_.size() && n > 0 ? n - 1 : n) + "]");
      } else if (f.has_key) {
        const std::string q = quote_text(f.key, 48);
        steps.push_back((steps.empty() ? "" : ".") + q.substr(1, q.rfind('\'') - 1) +
                        (q.back() == '\'' ? "" : "..."));
      }
    }
    std::string p;
    for (const std::string& s : steps) p += s;
    if (p.size() <= kMaxPath) return p;
    std::string tail;
    for (size_t i = steps.size(); i-- > 1 && tail.size() + steps[i].size() <= kTail;)
      tail = steps[i] + tail;
    return steps.front() + "..." + tail;
  }

  json* put(json v) {
    if (stack_.empty()) {
      *root_ = std::move(v);
      return root_;
    }
    json& parent = *stack_.back().value;
    if (parent.is_array()) {
      auto& a = parent.get_ref<json::array_t&>();
      a.push_back(std::move(v));
      return &a.back();
    }
    // NOTE: append to ordered_map's vector directly: its emplace() searches every key first.
    auto& members = static_cast<json::object_t::Container&>(parent.get_ref<json::object_t&>());
    members.emplace_back(stack_.back().key, std::move(v));
    return &members.back().second;
  }

  bool open(json v) {
    if (static_cast<int>(stack_.size()) >= kMaxJsonDepth)
      return fail("nesting deeper than " + std::to_string(kMaxJsonDepth) + " levels");
    json* at = put(std::move(v));
    stack_.push_back(Frame{at, {}, {}, false});
    return true;
  }
  bool close() {
    stack_.pop_back();
    return true;
  }
  json* root_;
  std::vector<Frame> stack_;
  std::string error_;
  size_t position_ = 0;
};

}  // namespace

Status parse_json(std::string_view text, const char* what, json* out) {
  json root;
  Builder b(&root);
  bool ok = false;
  try {
    ok = json::sax_parse(text.begin(), text.end(), &b, json::input_format_t::json, true, false);
  } catch (const std::bad_alloc&) {
    return invalid(std::string(what) + ": out of host memory while parsing " +
                   std::to_string(text.size()) + " bytes");
  } catch (const std::exception& e) {
    return invalid(std::string(what) + ": " + bounded(e.what()));
  }
  if (!ok) {
    std::string at;
    if (b.position() > 0) {
      const size_t pos = std::min(b.position(), text.size());
      size_t line = 1, col = 1;
      for (size_t i = 0; i + 1 < pos; ++i) {
        if (text[i] == '\n') {
          ++line;
          col = 1;
        } else {
          ++col;
        }
      }
      at = "line " + std::to_string(line) + ", column " + std::to_string(col) + ": ";
    }
    return invalid(std::string(what) + ": " + at +
                   (b.error().empty() ? "not a JSON document" : b.error()));
  }
  *out = std::move(root);
  return Status::Ok();
}

Status read_regular_file(const std::string& path, const char* what, size_t max_bytes,
                         std::string* out) {
  const std::string name = quote_text(path, 200);
  // NOTE: O_NONBLOCK: opening a FIFO must not wait for a writer; the checks use the opened file
  // (fstat), so nothing can be swapped in between the check and the read.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd < 0)
    return invalid(std::string(what) + " " + name + " cannot be read: " + std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    return invalid(std::string(what) + " " + name + " cannot be read: " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) {
    const char* kind = S_ISDIR(st.st_mode)    ? "a directory"
                       : S_ISCHR(st.st_mode)  ? "a character device"
                       : S_ISBLK(st.st_mode)  ? "a block device"
                       : S_ISFIFO(st.st_mode) ? "a FIFO"
                       : S_ISSOCK(st.st_mode) ? "a socket"
                                              : "not a regular file";
    return invalid(std::string(what) + " " + name + ": expected a regular file, got " + kind);
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes)
    return invalid(std::string(what) + " " + name + ": expected at most " +
                   std::to_string(max_bytes) + " bytes, got " + std::to_string(st.st_size));
  std::string text;
  try {
    text.resize(static_cast<size_t>(st.st_size));
    size_t have = 0;
    // NOTE: read one byte past the size fstat gave: a file that grows meanwhile is still capped.
    text.resize(text.size() + 1);
    while (true) {
      const ssize_t r = ::read(fd, text.data() + have, text.size() - have);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0)
        return invalid(std::string(what) + " " + name + " cannot be read: " + std::strerror(errno));
      if (r == 0) break;
      have += static_cast<size_t>(r);
      if (have > max_bytes)
        return invalid(std::string(what) + " " + name + ": expected at most " +
                       std::to_string(max_bytes) + " bytes, got more");
      if (have == text.size()) text.resize(std::min(text.size() * 2, max_bytes + 1));
    }
    text.resize(have);
  } catch (const std::bad_alloc&) {
    return invalid(std::string(what) + " " + name + ": out of host memory reading " +
                   std::to_string(st.st_size) + " bytes");
  }
  *out = std::move(text);
  return Status::Ok();
}

const char* type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::object:
      return "an object";
    case json::value_t::array:
      return "an array";
    case json::value_t::string:
      return "a string";
    case json::value_t::boolean:
      return "true or false";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return "an integer";
    case json::value_t::number_float:
      return "a number with a fraction or exponent";
    case json::value_t::null:
      return "null";
    default:
      return "a value of another kind";
  }
}

Status get_int(const json& v, const std::string& label, int64_t lo, int64_t hi, int64_t* out) {
  const std::string range =
      "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(hi))
      return invalid(label + ": expected " + range + ", got " + std::to_string(u));
    *out = static_cast<int64_t>(u);
    return Status::Ok();
  }
  if (v.is_number_integer()) {
    const int64_t i = v.get<int64_t>();
    if (i < lo || i > hi)
      return invalid(label + ": expected " + range + ", got " + std::to_string(i));
    *out = i;
    return Status::Ok();
  }
  return invalid(label + ": expected " + range + ", got " + type_name(v));
}

Status check_name(std::string_view name, const std::string& label) {
  if (name.empty()) return invalid(label + ": expected a name, got an empty string");
  if (name.size() > kMaxNameBytes)
    return invalid(label + ": expected a name of at most " + std::to_string(kMaxNameBytes) +
                   " bytes, got " + std::to_string(name.size()) + " bytes " + quote_text(name, 32));
  for (const char c : name)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F)
      return invalid(label + ": expected a name without control characters, got " +
                     quote_text(name));
  return Status::Ok();
}

}  // namespace qfuse::graph::detail
