// Text taken from a caller (a spec string, a JSON key, a file name) as it appears in an error
// message: quoted, control and non-ASCII bytes escaped, and cut after a few dozen bytes, so a
// hostile input can neither flood a message nor write escape sequences to a terminal.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace qfuse {

/// 'text' with bytes outside printable ASCII as \xNN, cut after `max_bytes` input bytes:
/// 'aaaa…' (100000 bytes).
inline std::string quote_text(std::string_view text, size_t max_bytes = 64) {
  static const char* const kHex = "0123456789abcdef";
  std::string r = "'";
  const size_t n = text.size() < max_bytes ? text.size() : max_bytes;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7F && c != '\\') {
      r += static_cast<char>(c);
    } else {
      r += "\\x";
      r += kHex[c >> 4];
      r += kHex[c & 15];
    }
  }
  r += "'";
  if (n < text.size()) r += "... (" + std::to_string(text.size()) + " bytes)";
  return r;
}

}  // namespace qfuse
