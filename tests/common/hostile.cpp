#include "common/hostile.h"

#include <limits>

#include "qfuse/core/quote.h"

namespace qfuse::test {

int64_t hostile_int64(std::mt19937_64& rng) {
  static const int64_t kEdges[] = {0,
                                   1,
                                   -1,
                                   std::numeric_limits<int64_t>::min(),
                                   std::numeric_limits<int64_t>::max(),
                                   int64_t{1} << 31,
                                   int64_t{1} << 32,
                                   (int64_t{1} << 40) - 1,
                                   int64_t{1} << 40,
                                   (int64_t{1} << 40) + 1,
                                   int64_t{1} << 62,
                                   -(int64_t{1} << 62),
                                   3,
                                   128,
                                   4096};
  const uint64_t pick = rng() % 24;
  if (pick < sizeof(kEdges) / sizeof(kEdges[0])) return kEdges[pick];
  const int bits = static_cast<int>(rng() % 63);
  const int64_t v = static_cast<int64_t>(rng() >> (63 - bits) >> 1);
  return rng() % 4 == 0 ? -v : v;
}

std::string mutate_text(const std::string& text, std::mt19937_64& rng) {
  static const char* const kTokens[] = {"[",
                                        "{",
                                        "\"",
                                        "]",
                                        "}",
                                        "1e999",
                                        "-1e999",
                                        "18446744073709551616",
                                        "-9223372036854775809",
                                        "-1",
                                        "null",
                                        "true",
                                        ",",
                                        ":",
                                        "0.5",
                                        "\"\\ud800\"",
                                        "\"\xff\xfe\"",
                                        "9223372036854775807",
                                        "1099511627777"};
  std::string s = text;
  const int edits = 1 + static_cast<int>(rng() % 8);
  for (int e = 0; e < edits; ++e) {
    const size_t at = s.empty() ? 0 : rng() % (s.size() + 1);
    switch (rng() % 9) {
      case 0:
        if (!s.empty() && at < s.size()) s[at] = static_cast<char>(rng());
        break;
      case 1:
        if (at < s.size()) s.erase(at, 1 + rng() % 8);
        break;
      case 2:
        if (at < s.size()) s.insert(at, s.substr(at, 1 + rng() % 32));
        break;
      case 3:
        s.resize(at);
        break;
      case 4:
      case 5:
        s.insert(at, kTokens[rng() % (sizeof(kTokens) / sizeof(kTokens[0]))]);
        break;
      case 6: {  // duplicate the "key": that starts after a quote near `at`
        const size_t q = s.find('"', at);
        const size_t c = q == std::string::npos ? q : s.find("\":", q + 1);
        if (c != std::string::npos && c - q < 40) s.insert(q, s.substr(q, c - q + 2) + "1, ");
        break;
      }
      case 7:
        s.insert(at, std::string(100 + rng() % 200, rng() % 2 ? '[' : '{'));
        break;
      default:
        s.insert(at, "\"" + std::string(10000, 'v') + "\"");
        break;
    }
  }
  return s;
}

namespace {

void put_value(std::string* out, std::mt19937_64& rng, const std::vector<std::string>& keys,
               int depth) {
  const uint64_t kind = depth <= 0 ? rng() % 6 : rng() % 8;
  switch (kind) {
    case 0:
      *out += std::to_string(hostile_int64(rng));
      break;
    case 1:
      *out += rng() % 2 ? "1e999" : "18446744073709551616";
      break;
    case 2:
      *out += rng() % 2 ? "true" : "null";
      break;
    case 3:
      *out += "0.25";
      break;
    case 4:
    case 5: {
      static const char* const kStrings[] = {
          "bf16", "T", "2*H", "fp8_group128:col_tma:f32", "x", "", "gemm", "T*T*T*T", "\\u0001"};
      *out += "\"";
      *out += rng() % 16 == 0 ? std::string(5000, 'z')
                              : kStrings[rng() % (sizeof(kStrings) / sizeof(kStrings[0]))];
      *out += "\"";
      break;
    }
    case 6: {
      *out += "[";
      const int n = static_cast<int>(rng() % 5);
      for (int i = 0; i < n; ++i) {
        if (i) *out += ",";
        put_value(out, rng, keys, depth - 1);
      }
      *out += "]";
      break;
    }
    default: {
      *out += "{";
      const int n = static_cast<int>(rng() % 6);
      for (int i = 0; i < n; ++i) {
        if (i) *out += ",";
        *out += "\"" +
                (keys.empty() || rng() % 5 == 0 ? std::string("k") + std::to_string(i)
                                                : keys[rng() % keys.size()]) +
                "\":";
        put_value(out, rng, keys, depth - 1);
      }
      *out += "}";
      break;
    }
  }
}

}  // namespace

std::string random_json(std::mt19937_64& rng, const std::vector<std::string>& keys, int max_depth) {
  std::string out = "{";
  const int n = 1 + static_cast<int>(rng() % 8);
  for (int i = 0; i < n; ++i) {
    if (i) out += ",";
    out += "\"" + (keys.empty() ? std::string("k") : keys[rng() % keys.size()]) + "\":";
    put_value(&out, rng, keys, max_depth - 1);
  }
  return out + "}";
}

bool echoes_input(const std::string& message, const std::string& input, size_t max_run) {
  if (message.size() <= max_run) return false;
  for (size_t i = 0; i + max_run < message.size(); i += max_run / 2)
    if (input.find(message.substr(i, max_run + 1)) != std::string::npos) return true;
  return false;
}

std::string quoted_for_test(const std::string& text) {
  return quote_text(text, 200);
}

}  // namespace qfuse::test
