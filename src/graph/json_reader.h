// Total JSON reading for the graph and config readers (SPEC §7): every input, however hostile,
// gives a document or a Status, in time linear in its size.
//
// - nesting deeper than kMaxJsonDepth, duplicate keys, numbers out of range and syntax errors
//   are errors naming the key path ("nodes[2].attrs.copy_from") and the line and column;
// - objects are built in linear time (nlohmann's ordered_json searches its key vector on every
//   insert: quadratic in the keys of one object);
// - messages never print a value: they say its type ("got an array"), and quote names and
//   tokens cut to a few dozen bytes;
// - files must be regular files of at most kMaxJsonFileBytes (a device or a FIFO is refused
//   before it is read).
#pragma once

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "qfuse/core/status.h"

namespace qfuse::graph::detail {

using json = nlohmann::ordered_json;

inline constexpr int kMaxJsonDepth = 32;
/// Graph files: 64 MiB (the examples are a few KiB; 1 M keys take about 20 MiB).
inline constexpr size_t kMaxJsonFileBytes = size_t{64} << 20;
/// Config files: 1 MiB (eight keys).
inline constexpr size_t kMaxConfigFileBytes = size_t{1} << 20;
/// Names (dims, tensors, nodes, ops, ports, attributes, shape expressions): at most this many
/// bytes, so that a message naming a few of them stays short.
inline constexpr size_t kMaxNameBytes = 128;

/// Parses `text` (`what`: "graph JSON", "config JSON", the start of every message).
Status parse_json(std::string_view text, const char* what, json* out);

/// Reads a whole regular file of at most `max_bytes` (`what`: "graph file", "config file").
Status read_regular_file(const std::string& path, const char* what, size_t max_bytes,
                         std::string* out);

/// "an object", "an array", "a string", "an integer", "a number", "true or false", "null".
const char* type_name(const json& v);

/// An integer value in [lo, hi]; `label` names it ("key 'dims': dim 'T'").
Status get_int(const json& v, const std::string& label, int64_t lo, int64_t hi, int64_t* out);

/// A name: 1..kMaxNameBytes bytes, no control characters; `label` says what it names.
Status check_name(std::string_view name, const std::string& label);

}  // namespace qfuse::graph::detail
