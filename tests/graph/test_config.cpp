// Configuration: defaults, JSON keys and values, SPEC §5 ViT rules, SPEC §4 cache-dtype aliases.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "qfuse/graph/config.h"

namespace qfuse::graph {
namespace {

void expect_error(const Status& st, std::initializer_list<const char*> fragments) {
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
  for (const char* f : fragments)
    EXPECT_NE(st.message().find(f), std::string::npos) << f << " in: " << st.message();
}

std::string temp_file(const std::string& name, const std::string& text) {
  const auto p = std::filesystem::temp_directory_path() / name;
  std::ofstream(p) << text;
  return p.string();
}

TEST(Config, Defaults) {
  const FusionConfig c;
  EXPECT_TRUE(c.fuse_act_quant);
  EXPECT_TRUE(c.fuse_attn_quant);
  EXPECT_EQ(c.attention_backend, "");  // none selected
  EXPECT_EQ(c.kv_cache_dtype, "auto");
  EXPECT_EQ(c.vit_attn_dtype, "bf16");
  EXPECT_TRUE(c.vit_scale_path.empty());
  EXPECT_TRUE(c.vit_save_path.empty());
  EXPECT_EQ(c.vit_margin, 1.5);
  EXPECT_TRUE(validate_config(c).ok());
}

TEST(Config, ParsesEveryKeyAndRoundTrips) {
  FusionConfig c;
  const std::string dir = std::filesystem::temp_directory_path().string();
  const Status st = parse_config_json(
      R"({"fuse_act_quant": false, "fuse_attn_quant": false, "attention_backend": "",
          "kv_cache_dtype": "fp8", "vit_attn_dtype": "fp8", "vit_save_path": ")" +
          dir + R"(/scales.json", "vit_margin": 2.0})",
      &c);
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_FALSE(c.fuse_act_quant);
  EXPECT_FALSE(c.fuse_attn_quant);
  EXPECT_EQ(c.attention_backend, "");
  EXPECT_EQ(c.kv_cache_dtype, "fp8");
  EXPECT_EQ(c.vit_attn_dtype, "fp8");
  EXPECT_EQ(c.vit_margin, 2.0);
  EXPECT_TRUE(validate_config(c).ok());
  FusionConfig back;
  ASSERT_TRUE(parse_config_json(to_json(c), &back).ok());
  EXPECT_EQ(to_json(back), to_json(c));
  // Keys not given keep their values.
  FusionConfig partial;
  ASSERT_TRUE(parse_config_json(R"({"fuse_attn_quant": false})", &partial).ok());
  EXPECT_TRUE(partial.fuse_act_quant);
  EXPECT_FALSE(partial.fuse_attn_quant);
}

TEST(Config, UnknownKeysAndBadValuesNameTheKey) {
  FusionConfig c;
  expect_error(parse_config_json(R"({"fuse_act_qaunt": true})", &c),
               {"config key 'fuse_act_qaunt' is unknown", "fuse_act_quant"});
  expect_error(parse_config_json(R"({"fuse_act_quant": "yes"})", &c),
               {"config key 'fuse_act_quant'", "true or false"});
  expect_error(parse_config_json(R"({"kv_cache_dtype": "fp4"})", &c),
               {"config key 'kv_cache_dtype'", "auto|bf16|fp8|fp8_e4m3|fp8_ds_mla", "fp4"});
  // Only backends a kernel family registered are known; the message lists them.
  std::string known = "no attention family is registered";
  if (!attention_backends().empty()) known = "registered: " + attention_backends().front().name;
  expect_error(parse_config_json(R"({"attention_backend": "flashinfer"})", &c),
               {"config key 'attention_backend'", "unknown backend 'flashinfer'", known.c_str()});
  expect_error(parse_config_json(R"({"vit_attn_dtype": "fp16"})", &c),
               {"config key 'vit_attn_dtype'", "bf16|fp8"});
  expect_error(parse_config_json(R"({"vit_margin": -1})", &c), {"config key 'vit_margin'"});
  expect_error(parse_config_json(R"({"vit_margin": "1.5"})", &c), {"config key 'vit_margin'"});
  expect_error(parse_config_json(R"([1, 2])", &c), {"config JSON"});
  expect_error(parse_config_json(R"({"fuse_act_quant": tru})", &c), {"config JSON"});
  EXPECT_TRUE(c.fuse_act_quant) << "a failed parse leaves the config as it was";
  expect_error(load_config_file("/nonexistent/qfuse.json", &c), {"cannot be read"});
}

/// Backends like the reference engine's (test data: the resolution rule, not registered families).
const std::vector<AttentionBackend>& test_backends() {
  static const std::vector<AttentionBackend> v = {
      {"flashmla", {"bf16", "fp8_e4m3"}, "dense MLA: bf16 or per-tensor FP8"},
      {"triton_mla", {"bf16", "fp8_e4m3"}, "dense MLA: bf16 or FP8"},
      {"flashmla_sparse", {"bf16", "fp8_ds_mla"}, "sparse MLA: reads FP8 only as fp8_ds_mla"},
      {"qfuse_sparse_mla", {"bf16", "fp8_e4m3", "fp8_ds_mla"}, "every format"},
  };
  return v;
}

TEST(KvCacheDtype, AliasResolutionPerBackendIsLogged) {
  struct Case {
    const char* backend;
    const char* requested;
    const char* resolved;
    bool logged;
  };
  const Case cases[] = {
      {"flashmla_sparse", "fp8", "fp8_ds_mla", true},
      {"flashmla_sparse", "fp8_ds_mla", "fp8_ds_mla", false},
      {"flashmla_sparse", "auto", "bf16", true},
      {"flashmla_sparse", "bf16", "bf16", false},
      {"flashmla", "fp8", "fp8_e4m3", true},
      {"flashmla", "fp8_e4m3", "fp8_e4m3", false},
      {"triton_mla", "fp8", "fp8_e4m3", true},
      {"qfuse_sparse_mla", "fp8", "fp8_e4m3", true},
      {"qfuse_sparse_mla", "fp8_ds_mla", "fp8_ds_mla", false},
  };
  for (const Case& c : cases) {
    std::vector<std::string> log;
    std::string r;
    const Status st = resolve_kv_cache_dtype(
        c.backend, c.requested, &r, [&](std::string_view l) { log.emplace_back(l); },
        &test_backends());
    ASSERT_TRUE(st.ok()) << c.backend << " " << c.requested << ": " << st.to_string();
    EXPECT_EQ(r, c.resolved) << c.backend << " " << c.requested;
    ASSERT_EQ(log.size(), c.logged ? 1u : 0u) << c.backend << " " << c.requested;
    if (c.logged) {
      EXPECT_NE(log[0].find(std::string("'") + c.requested + "' resolved to '" + c.resolved + "'"),
                std::string::npos)
          << log[0];
      EXPECT_NE(log[0].find(c.backend), std::string::npos) << log[0];
    }
  }
}

TEST(KvCacheDtype, UnsupportedCombinationNamesTheSupportedSet) {
  std::string r = "unchanged";
  expect_error(resolve_kv_cache_dtype(
                   "flashmla", "fp8_ds_mla", &r, [](auto) {}, &test_backends()),
               {"backend 'flashmla' does not read 'fp8_ds_mla'", "bf16|fp8_e4m3"});
  expect_error(resolve_kv_cache_dtype(
                   "flashmla_sparse", "fp8_e4m3", &r, [](auto) {}, &test_backends()),
               {"backend 'flashmla_sparse' does not read 'fp8_e4m3'", "bf16|fp8_ds_mla"});
  expect_error(resolve_kv_cache_dtype(
                   "nope", "bf16", &r, [](auto) {}, &test_backends()),
               {"unknown backend 'nope'", "registered: flashmla, triton_mla"});
  EXPECT_EQ(r, "unchanged");
  // Without a backend only the dtype's name is checked.
  ASSERT_TRUE(resolve_kv_cache_dtype("", "auto", &r, [](auto) {}).ok());
  EXPECT_EQ(r, "bf16");
  expect_error(resolve_kv_cache_dtype("", "fp4", &r, [](auto) {}), {"kv_cache_dtype", "fp4"});
  // A config naming a backend no family registered is refused.
  FusionConfig c;
  c.attention_backend = "triton_mla";
  expect_error(validate_config(c), {"unknown backend 'triton_mla'"});
}

TEST(VitConfig, Spec5Rules) {
  const std::string scales = temp_file("qfuse_vit_scales.json", R"({"layer0": {"q": 1}})");
  const std::string dir = std::filesystem::temp_directory_path().string();
  FusionConfig c;
  c.vit_scale_path = scales;
  expect_error(validate_config(c), {"config key 'vit_scale_path'", "needs vit_attn_dtype fp8"});
  c.vit_attn_dtype = "fp8";
  EXPECT_TRUE(validate_config(c).ok());
  c.vit_save_path = dir + "/out.json";
  expect_error(validate_config(c), {"'vit_scale_path' and 'vit_save_path'", "not both"});
  c.vit_scale_path.clear();
  EXPECT_TRUE(validate_config(c).ok());
  c.vit_attn_dtype = "bf16";
  expect_error(validate_config(c), {"config key 'vit_save_path'", "needs vit_attn_dtype fp8"});
  c.vit_attn_dtype = "fp8";
  c.vit_save_path = dir + "/no_such_dir_qfuse/out.json";
  expect_error(validate_config(c),
               {"config key 'vit_save_path'", "no_such_dir_qfuse", "does not exist"});
  c.vit_save_path.clear();
  c.vit_scale_path = dir + "/no_such_scales_qfuse.json";
  expect_error(validate_config(c),
               {"config key 'vit_scale_path'", "no_such_scales_qfuse.json", "does not exist"});
  c.vit_scale_path.clear();
  c.vit_margin = 0.0;
  expect_error(validate_config(c), {"config key 'vit_margin'"});
  std::remove(scales.c_str());
}

}  // namespace
}  // namespace qfuse::graph
