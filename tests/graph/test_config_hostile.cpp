// The config reader on hostile input (issue 12): duplicate keys, numbers out of range, depth,
// wrong types (named, never dumped), oversized values, files that are not regular files, and
// random mutants of a valid config.
#include <gtest/gtest.h>

#include <random>

#include "common/hostile.h"
#include "qfuse/graph/config.h"

namespace qfuse::graph {
namespace {

void expect_error(const std::string& text, std::initializer_list<std::string> fragments) {
  FusionConfig c;
  const Status st = parse_config_json(text, &c);
  ASSERT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
  for (const std::string& f : fragments)
    EXPECT_NE(st.message().find(f), std::string::npos) << f << "\n in: " << st.message();
  EXPECT_LT(st.message().size(), 600u) << st.message().substr(0, 300);
}

TEST(ConfigHostile, DuplicateKeysAreErrors) {
  // NOTE: the last value used to win silently.
  expect_error(R"({"fuse_act_quant": true, "fuse_act_quant": false})",
               {"config JSON", "duplicate key 'fuse_act_quant'"});
}

TEST(ConfigHostile, NumbersOutOfRangeAndNonFiniteMargins) {
  expect_error(R"({"vit_margin": 1e400})", {"config JSON", "number overflow", "vit_margin"});
  expect_error(R"({"vit_margin": -1e308})", {"config key 'vit_margin'", "finite number > 0"});
  expect_error(R"({"vit_margin": 0})", {"config key 'vit_margin'"});
}

TEST(ConfigHostile, WrongTypesNameTheKeyNotTheValue) {
  const std::string huge = "[" + std::string(50000, '[') + std::string(50000, ']') + "]";
  expect_error(R"({"fuse_act_quant": )" + huge + "}", {"nesting deeper than 32"});
  const std::string wide = "[\"" + std::string(100000, 'w') + "\"]";
  expect_error(R"({"fuse_act_quant": )" + wide + "}",
               {"config key 'fuse_act_quant': expected true or false, got an array"});
  expect_error(R"({"attention_backend": {"a": 1}})",
               {"config key 'attention_backend': expected a string, got an object"});
  expect_error(R"({"vit_margin": "1.5"})",
               {"config key 'vit_margin': expected a number, got a string"});
  expect_error(R"({"kv_cache_dtype": ")" + std::string(10000, 'k') + R"("})",
               {"config key 'kv_cache_dtype': expected a string of at most 4096 bytes"});
  expect_error(R"({")" + std::string(3000, 'u') + R"(": 1})", {"config key 'uuuu", "is unknown"});
  expect_error("[1, 2]", {"expected an object of key: value, got an array"});
}

TEST(ConfigHostile, NullOutAndNonRegularFiles) {
  EXPECT_EQ(parse_config_json("{}", nullptr).code(), StatusCode::kInvalidArgument);
  FusionConfig c;
  Status st = load_config_file("/dev/zero", &c);
  EXPECT_NE(st.message().find("config file '/dev/zero': expected a regular file, got a character "
                              "device"),
            std::string::npos)
      << st.message();
  st = load_config_file("/", &c);
  EXPECT_NE(st.message().find("got a directory"), std::string::npos) << st.message();
}

TEST(ConfigHostile, RandomMutantsGiveAStatusAndRoundTripWhenAccepted) {
  const std::string base =
      R"({"fuse_act_quant": false, "fuse_attn_quant": true, "attention_backend": "",
          "kv_cache_dtype": "fp8", "vit_attn_dtype": "fp8", "vit_margin": 2.0})";
  std::mt19937_64 rng(21);
  int accepted = 0;
  for (int iter = 0; iter < 5000; ++iter) {
    const std::string text = qfuse::test::mutate_text(base, rng);
    FusionConfig c;
    const Status st = parse_config_json(text, &c);
    if (!st.ok()) {
      ASSERT_LT(st.message().size(), 2000u) << st.message().substr(0, 300);
      ASSERT_FALSE(qfuse::test::echoes_input(st.message(), text)) << st.message();
      continue;
    }
    ++accepted;
    FusionConfig back;
    ASSERT_TRUE(parse_config_json(to_json(c), &back).ok());
    EXPECT_EQ(back.vit_margin, c.vit_margin);
    EXPECT_EQ(back.kv_cache_dtype, c.kv_cache_dtype);
  }
  EXPECT_GT(accepted, 0);
}

}  // namespace
}  // namespace qfuse::graph
