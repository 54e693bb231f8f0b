// Hostile inputs for the negative tests (issue 12): integers at the edges of int64_t and of the
// element limit, text mutated towards malformed JSON and specs, and random JSON documents.
// Every generator is deterministic in the rng it is given.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace qfuse::test {

/// An int64_t from the edges: 0, +-1, INT64_MIN/MAX, 2^31, 2^32, 2^40 (the element limit) +-1,
/// 2^62, 2^63 - 1, or a random value of random magnitude.
int64_t hostile_int64(std::mt19937_64& rng);

/// `text` with 1..8 random edits: a byte flipped, deleted or duplicated, a cut, or a JSON-ish
/// token inserted ("[", "{", "\"", "1e999", "18446744073709551616", "-1", "null", ",", ":",
/// a duplicated "key": value pair, 100 nested brackets, a 10 KB string).
std::string mutate_text(const std::string& text, std::mt19937_64& rng);

/// A random JSON document of at most `max_depth` levels whose objects use `keys` (and other
/// names), with every kind of value including huge and out-of-range numbers.
std::string random_json(std::mt19937_64& rng, const std::vector<std::string>& keys,
                        int max_depth = 6);

/// True when `message` holds a run of more than `max_run` bytes copied from `input` (a dumped
/// value); runs of key names and short tokens are shorter.
bool echoes_input(const std::string& message, const std::string& input, size_t max_run = 96);

/// The first 200 bytes of `text`, printable (for assertion messages about hostile inputs).
std::string quoted_for_test(const std::string& text);

}  // namespace qfuse::test
