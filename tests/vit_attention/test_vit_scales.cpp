// The static FP8 scale file of the ViT attention layers (SPEC §5, qfuse/vit_attention/scales.h):
// both formats and every key spelling, exact float round trips, the margin, every malformed
// input rejected with a short message naming the layer and key, lookups, bounded files and the
// atomic save. Host only.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/hostile.h"
#include "qfuse/vit_attention/scales.h"

namespace qfuse::vit {
namespace {

namespace fs = std::filesystem;

constexpr size_t kShort = 1000;  // every message is shorter than this, for any input

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

void expect_same(const QkvScales& a, const QkvScales& b, const std::string& what) {
  EXPECT_EQ(bits(a.q), bits(b.q)) << what << " q: " << a.q << " vs " << b.q;
  EXPECT_EQ(bits(a.k), bits(b.k)) << what << " k: " << a.k << " vs " << b.k;
  EXPECT_EQ(bits(a.v), bits(b.v)) << what << " v: " << a.v << " vs " << b.v;
}

QkvScales get_ok(const ScaleTable& t, const std::string& layer) {
  QkvScales s{-1.0f, -1.0f, -1.0f};
  const Status st = t.get(layer, &s);
  EXPECT_TRUE(st.ok()) << st.to_string();
  return s;
}

/// parse fails with kInvalidArgument, a short message holding every fragment, no raw control
/// byte, and `*out` untouched.
std::string expect_error(const std::string& text, std::initializer_list<std::string> fragments) {
  ScaleTable t;
  EXPECT_TRUE(t.set("keep", {2.0f, 3.0f, 4.0f}).ok());
  const Status st = ScaleTable::parse(text, "scale file 'x.json'", &t);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
  for (const std::string& f : fragments)
    EXPECT_NE(st.message().find(f), std::string::npos)
        << "missing: " << f << "\n in: " << st.message().substr(0, 600);
  EXPECT_LT(st.message().size(), kShort) << st.message().substr(0, 300);
  for (const char c : st.message())
    EXPECT_FALSE(static_cast<unsigned char>(c) < 0x20) << "raw control byte in the message";
  EXPECT_EQ(t.layers().size(), 1u);
  expect_same(get_ok(t, "keep"), {2.0f, 3.0f, 4.0f}, "untouched");
  return st.message();
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

void write_file(const fs::path& p, const std::string& text) {
  std::ofstream f(p, std::ios::binary);
  f << text;
}

/// A random float of magnitude 1e-30 .. 1e30 with a random mantissa.
float random_scale(std::mt19937_64& rng) {
  std::uniform_real_distribution<double> exponent(-30.0, 30.0), mantissa(1.0, 10.0);
  return static_cast<float>(mantissa(rng) * std::pow(10.0, exponent(rng)));
}

// A unique directory per test, removed at the end.
class ScaleFileTest : public testing::Test {
 protected:
  void SetUp() override {
    const auto* info = testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("qfuse_vit_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    ASSERT_TRUE(fs::create_directories(dir_)) << dir_;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  /// The names of the directory's entries.
  std::vector<std::string> entries() const {
    std::vector<std::string> r;
    for (const auto& e : fs::directory_iterator(dir_)) r.push_back(e.path().filename());
    return r;
  }
  fs::path dir_;
};

TEST(VitScales, BothFormatsAndEveryKeySpellingParseToTheExactFloats) {
  const std::string plain = R"({
    "visual.blocks.0.attn": {"q": 0.0123, "k": 2, "v": 1e-3},
    "visual.blocks.1.attn": {"q_scale": 3.5, "k_scale": 0.1, "v_scale": 18446744073709551615},
    "visual.blocks.2.attn": {"v": 7e-20, "q_scale": 1.5e30, "k": 0.333333333333}
  })";
  const std::string wrapped = "{\"layers\": " + plain + "}";
  for (const std::string& text : {plain, wrapped}) {
    ScaleTable t;
    const Status st = ScaleTable::parse(text, "test", &t);
    ASSERT_TRUE(st.ok()) << st.to_string();
    ASSERT_EQ(t.layers().size(), 3u);
    expect_same(get_ok(t, "visual.blocks.0.attn"),
                {static_cast<float>(0.0123), 2.0f, static_cast<float>(1e-3)}, "layer 0");
    expect_same(get_ok(t, "visual.blocks.1.attn"),
                {3.5f, static_cast<float>(0.1), static_cast<float>(18446744073709551615.0)},
                "layer 1");
    expect_same(
        get_ok(t, "visual.blocks.2.attn"),
        {static_cast<float>(1.5e30), static_cast<float>(0.333333333333), static_cast<float>(7e-20)},
        "layer 2");
  }
}

TEST(VitScales, WrappedFormOnlyWhenLayersIsTheOnlyKeyAndAnObject) {
  // "layers" beside another key is a layer named "layers".
  std::string m =
      expect_error(R"({"layers": {"a": {"q": 1, "k": 1, "v": 1}}, "b": {"q": 1, "k": 1, "v": 1}})",
                   {"scale file 'x.json': layer 'layers': unknown key 'a'", "q|q_scale"});
  m = expect_error(R"({"layers": 5})", {"layer 'layers': expected an object", "got an integer"});
  // A layer named "layers" with another layer parses unwrapped.
  ScaleTable t;
  ASSERT_TRUE(ScaleTable::parse(
                  R"({"layers": {"q": 1, "k": 2, "v": 3}, "b": {"q": 4, "k": 5, "v": 6}})", "t", &t)
                  .ok());
  expect_same(get_ok(t, "layers"), {1, 2, 3}, "layers");
  expect_same(get_ok(t, "b"), {4, 5, 6}, "b");
}

TEST(VitScales, ToJsonRoundTripsEveryFloatOverManyMagnitudes) {
  std::mt19937_64 rng(20250514);
  ScaleTable t;
  for (int i = 0; i < 2000; ++i)
    ASSERT_TRUE(t.set("layer." + std::to_string(i),
                      {random_scale(rng), random_scale(rng), random_scale(rng)})
                    .ok());
  // Edges of float: the largest, the smallest normal and subnormal, one ulp above 1.
  ASSERT_TRUE(t.set("edges", {std::numeric_limits<float>::max(), std::numeric_limits<float>::min(),
                              std::numeric_limits<float>::denorm_min()})
                  .ok());
  ASSERT_TRUE(t.set("one_ulp", {std::nextafter(1.0f, 2.0f), 1.0f, 0.1f}).ok());
  // Names the writer must escape.
  const std::string odd = "a\"b\\c\x01\td \xc3\xa9/\xe2\x82\xac";
  ASSERT_TRUE(t.set(odd, {0.5f, 0.25f, 0.125f}).ok());

  ScaleTable back;
  const Status st = ScaleTable::parse(t.to_json(), "round trip", &back);
  ASSERT_TRUE(st.ok()) << st.to_string();
  ASSERT_EQ(back.layers().size(), t.layers().size());
  for (const auto& [name, s] : t.layers()) expect_same(get_ok(back, name), s, name);
}

TEST(VitScales, MarginIsAppliedInDoubleThenRoundedToFloat) {
  std::mt19937_64 rng(7);
  ScaleTable t;
  for (int i = 0; i < 500; ++i) {
    std::string name = "l";  // NOTE: not "l" + ...: GCC 12 warns (-Wrestrict, a false positive)
    name += std::to_string(i);
    ASSERT_TRUE(t.set(name, {random_scale(rng), random_scale(rng), random_scale(rng)}).ok());
  }
  for (const double margin : {1.5, 1.0, 0.75, 3.0e-5, 1e5}) {
    ScaleTable back;
    const Status st = ScaleTable::parse(t.to_json(margin), "margin", &back);
    ASSERT_TRUE(st.ok()) << st.to_string();
    for (const auto& [name, s] : t.layers()) {
      auto m = [&](float x) { return static_cast<float>(static_cast<double>(x) * margin); };
      expect_same(get_ok(back, name), {m(s.q), m(s.k), m(s.v)}, name);
    }
  }
}

TEST(VitScales, ALayerNamedLayersAloneIsWrittenWrapped) {
  ScaleTable t;
  ASSERT_TRUE(t.set("layers", {1.0f, 2.0f, 3.0f}).ok());
  const std::string text = t.to_json();
  EXPECT_EQ(text.rfind("{\"layers\": {", 0), 0u) << text;
  ScaleTable back;
  ASSERT_TRUE(ScaleTable::parse(text, "t", &back).ok());
  expect_same(get_ok(back, "layers"), {1.0f, 2.0f, 3.0f}, "layers");
}

TEST(VitScales, ScaledValuesThatAreNotFiniteAreWrittenAsNullAndRejected) {
  ScaleTable t;
  ASSERT_TRUE(t.set("big", {3e38f, 1.0f, 1.0f}).ok());
  const std::string text = t.to_json(10.0);
  EXPECT_NE(text.find("\"q\": null"), std::string::npos) << text;
  ScaleTable back;
  const Status st = ScaleTable::parse(text, "t", &back);
  EXPECT_NE(st.message().find("layer 'big': key 'q': expected a finite number > 0, got null"),
            std::string::npos)
      << st.message();
}

TEST(VitScales, BadValuesNameTheLayerTheKeyAndTheValue) {
  auto layer = [](const std::string& q) {
    return R"({"vis.0": {"q": 1, "k": 1, "v": 1}, "vis.1": {"k": 1, "q_scale": )" + q +
           R"(, "v": 1}})";
  };
  const std::string at = "scale file 'x.json': layer 'vis.1': key 'q_scale': ";
  expect_error(layer("\"1.5\""), {at + "expected a finite number > 0, got a string"});
  expect_error(layer("true"), {at + "expected a finite number > 0, got true or false"});
  expect_error(layer("null"), {at + "expected a finite number > 0, got null"});
  expect_error(layer("[1]"), {at + "expected a finite number > 0, got an array"});
  expect_error(layer("{\"x\": 1}"), {at + "expected a finite number > 0, got an object"});
  expect_error(layer("-2.5"), {at + "expected a finite number > 0, got -2.5"});
  expect_error(layer("-3"), {at + "expected a finite number > 0, got -3"});
  expect_error(layer("0"), {at + "expected a finite number > 0, got 0"});
  expect_error(layer("0.0"), {at + "expected a finite number > 0, got 0"});
  expect_error(layer("-0.0"), {at + "expected a finite number > 0, got -0"});
  // Finite doubles that are not finite or not > 0 as floats.
  expect_error(layer("1e300"), {at, "finite as a float", "got 1e+300"});
  expect_error(layer("3.5e38"), {at, "finite as a float", "got 3.5e+38"});
  expect_error(layer("1e-300"), {at, "> 0 as a float", "got 1e-300"});
  expect_error(layer("1e-46"), {at, "> 0 as a float", "got 1e-46"});
  // NOTE: the reader refuses numbers that overflow a double (it would read them as inf).
  expect_error(layer("1e999"), {"scale file 'x.json'", "number overflow", "vis.1.q_scale"});
  expect_error(layer("-1e999"), {"scale file 'x.json'", "number overflow", "vis.1.q_scale"});
  // NaN and inf are not JSON.
  expect_error(layer("NaN"), {"scale file 'x.json': line 1"});
  expect_error(layer("Infinity"), {"scale file 'x.json': line 1"});
  // A huge string is named by its type, never dumped.
  const std::string huge = "\"" + std::string(100000, '7') + "\"";
  const std::string m =
      expect_error(layer(huge), {at + "expected a finite number > 0, got a string"});
  EXPECT_FALSE(test::echoes_input(m, huge)) << m.substr(0, 300);
  // The smallest subnormal float and the largest float are accepted.
  ScaleTable t;
  ASSERT_TRUE(ScaleTable::parse(layer("1.5e-45"), "t", &t).ok());
  EXPECT_EQ(get_ok(t, "vis.1").q, std::numeric_limits<float>::denorm_min());
  ASSERT_TRUE(ScaleTable::parse(layer("3.4028234e38"), "t", &t).ok());
  EXPECT_EQ(get_ok(t, "vis.1").q, std::numeric_limits<float>::max());
}

TEST(VitScales, MalformedLayersAreNamed) {
  expect_error(R"({"a": {"q": 1, "k": 1, "v": 1}, "b": [1, 2, 3]})",
               {"scale file 'x.json': layer 'b': expected an object", "got an array"});
  expect_error(R"({"b": 0.5})", {"layer 'b': expected an object", "got a number"});
  expect_error(R"({"b": {"q": 1, "k": 1}})",
               {"layer 'b' is incomplete: key 'v' (or 'v_scale') is missing"});
  expect_error(R"({"b": {}})", {"layer 'b' is incomplete: key 'q' (or 'q_scale') is missing"});
  expect_error(R"({"b": {"q": 1, "q_scale": 1, "k": 1, "v": 1}})",
               {"layer 'b': key 'q' given twice (as 'q' and 'q_scale')"});
  expect_error(R"({"b": {"k_scale": 1, "q": 1, "k": 1, "v": 1}})",
               {"layer 'b': key 'k' given twice (as 'k_scale' and 'k')"});
  expect_error(R"({"b": {"q": 1, "k": 1, "v": 1, "o": 1}})",
               {"layer 'b': unknown key 'o' (keys: q|q_scale, k|k_scale, v|v_scale)"});
  expect_error(R"({"b": {"Q": 1, "k": 1, "v": 1}})", {"layer 'b': unknown key 'Q'"});
  // Duplicate keys are the reader's error.
  expect_error(R"({"b": {"q": 1, "q": 2, "k": 1, "v": 1}})", {"duplicate key 'q'", "b.q"});
  expect_error(R"({"b": {"q": 1, "k": 1, "v": 1}, "b": {"q": 1, "k": 1, "v": 1}})",
               {"duplicate key 'b'"});
}

TEST(VitScales, LayerNamesAreBoundedAndQuoted) {
  const std::string body = R"({"q": 1, "k": 1, "v": 1})";
  expect_error("{\"\": " + body + "}", {"layer '': expected a non-empty layer name"});
  const std::string long_name(200, 'n');
  const std::string m = expect_error("{\"" + long_name + "\": " + body + "}",
                                     {"expected a name of at most 128 bytes, got 200"});
  EXPECT_FALSE(test::echoes_input(m, long_name, 64)) << m;
  ScaleTable t;
  ASSERT_TRUE(ScaleTable::parse("{\"" + std::string(128, 'n') + "\": " + body + "}", "t", &t).ok());
  // Control bytes are escaped in messages.
  expect_error(R"({"a\u0001\u001b[31m": {"q": "x", "k": 1, "v": 1}})",
               {"layer 'a\\x01\\x1b[31m': key 'q'"});
}

TEST(VitScales, DocumentsThatAreNotScaleTables) {
  for (const char* text : {"{}", R"({"layers": {}})"})
    expect_error(text, {"scale file 'x.json': expected at least one layer, got an empty object"});
  for (const char* text : {"[]", "1", "\"x\"", "null", "true", R"([{"a": {"q": 1}}])"})
    expect_error(text, {"scale file 'x.json': expected an object {\"<layer>\""});
  for (const char* text : {"", "   ", "{", R"({"a": {"q": 1, "k": 1, "v": 1},})",
                           R"({"a": {"q": 1 "k": 1}})", "{} {}", "\xff\xfe", "{'a': 1}"})
    expect_error(text, {"scale file 'x.json': "});
  // Deep nesting, inside a layer and at the top.
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  expect_error(R"({"a": {"q": )" + deep + "}}", {"nesting deeper than 32"});
  expect_error(deep, {"nesting deeper than 32"});
  expect_error(R"({"a": {"q": {"b": {"c": [1, {"d": null}]}}, "k": 1, "v": 1}})",
               {"layer 'a': key 'q': expected a finite number > 0, got an object"});
}

TEST(VitScales, ThousandsOfLayersKeepMessagesShort) {
  std::string text = "{";
  for (int i = 0; i < 5000; ++i) {
    char name[16];
    std::snprintf(name, sizeof name, "layer_%04d", i);
    text += std::string(i ? "," : "") + "\"" + name + "\": {\"q\": 1, \"k\": 2, \"v\": 3}";
  }
  ScaleTable t;
  ASSERT_TRUE(ScaleTable::parse(text + "}", "scale file 'big.json'", &t).ok());
  QkvScales s{9.0f, 9.0f, 9.0f};
  const Status st = t.get("visual.blocks.31.attn", &s);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_LT(st.message().size(), kShort) << st.message();
  for (const char* f : {"layer 'visual.blocks.31.attn' is not in scale file 'big.json'",
                        "available: 'layer_0000', 'layer_0001'", "... (5000 in all)"})
    EXPECT_NE(st.message().find(f), std::string::npos) << f << "\n in: " << st.message();
  EXPECT_EQ(st.message().find("layer_0016"), std::string::npos) << st.message();
  expect_same(s, {9.0f, 9.0f, 9.0f}, "out untouched");
  expect_same(get_ok(t, "layer_4999"), {1, 2, 3}, "last layer");

  // 5000 layers whose last is broken: the message names it and stays short.
  expect_error(text + R"(, "broken": {"q": 1, "k": 1}})", {"layer 'broken' is incomplete"});

  // Names of 128 bytes full of control bytes: the list is cut by size too.
  ScaleTable w;
  for (int i = 0; i < 5000; ++i)
    ASSERT_TRUE(w.set(std::string(120, '\x01') + std::to_string(10000 + i), {1, 1, 1}).ok());
  const Status st2 = w.get(std::string(128, '\x02'), &s);
  EXPECT_LT(st2.message().size(), kShort) << st2.message();
  EXPECT_NE(st2.message().find("(5000 in all)"), std::string::npos) << st2.message();
  EXPECT_NE(st2.message().find("is not in the scale table"), std::string::npos) << st2.message();
}

TEST(VitScales, GetOfAMissingLayerListsTheAvailableLayers) {
  ScaleTable t;
  ASSERT_TRUE(ScaleTable::parse(R"({"layers": {"b": {"q": 1, "k": 1, "v": 1},
                                                "a": {"q": 1, "k": 1, "v": 1}}})",
                                "scale file 'two.json'", &t)
                  .ok());
  QkvScales s;
  const Status st = t.get("c", &s);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("layer 'c' is not in scale file 'two.json' (available: 'a', 'b')"),
            std::string::npos)
      << st.message();
  ScaleTable empty;
  EXPECT_NE(empty.get("c", &s).message().find("the table is empty"), std::string::npos);
  EXPECT_EQ(t.get("a", nullptr).code(), StatusCode::kInvalidArgument);
}

TEST(VitScales, AnErrorLeavesTheTableUntouched) {
  ScaleTable t;
  ASSERT_TRUE(ScaleTable::parse(R"({"a": {"q": 1, "k": 2, "v": 3}})", "first", &t).ok());
  EXPECT_FALSE(
      ScaleTable::parse(R"({"b": {"q": 4, "k": 5, "v": 6}, "c": {"q": -1}})", "second", &t).ok());
  ASSERT_EQ(t.layers().size(), 1u);
  expect_same(get_ok(t, "a"), {1, 2, 3}, "a");
  QkvScales s;
  EXPECT_NE(t.get("b", &s).message().find("is not in first"), std::string::npos);
  // A successful parse replaces the whole table.
  ASSERT_TRUE(ScaleTable::parse(R"({"b": {"q": 4, "k": 5, "v": 6}})", "third", &t).ok());
  ASSERT_EQ(t.layers().size(), 1u);
  expect_same(get_ok(t, "b"), {4, 5, 6}, "b");
  EXPECT_EQ(ScaleTable::parse("{}", "t", nullptr).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ScaleTable::load("/nonexistent", nullptr).code(), StatusCode::kInvalidArgument);
}

TEST(VitScales, SetChecksNamesAndValues) {
  ScaleTable t;
  ASSERT_TRUE(t.set("a", {1, 2, 3}).ok());
  ASSERT_TRUE(t.set("a", {4, 5, 6}).ok());  // replaces
  expect_same(get_ok(t, "a"), {4, 5, 6}, "a");
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const struct {
    std::string layer;
    QkvScales s;
    std::string fragment;
  } bad[] = {
      {"a", {nan, 1, 1}, "layer 'a': key 'q': expected a finite number > 0, got nan"},
      {"a", {1, inf, 1}, "layer 'a': key 'k': expected a finite number > 0, got inf"},
      {"a", {1, 1, 0.0f}, "layer 'a': key 'v': expected a finite number > 0, got 0"},
      {"a", {1, 1, -1.0f}, "key 'v': expected a finite number > 0, got -1"},
      {"a", {-inf, 1, 1}, "key 'q': expected a finite number > 0, got -inf"},
      {"", {1, 1, 1}, "expected a non-empty layer name"},
      {std::string(129, 'x'), {1, 1, 1}, "at most 128 bytes, got 129"},
      {"bad\xff\xfe", {1, 1, 1}, "layer 'bad\\xff\\xfe': expected a name in UTF-8"},
  };
  for (const auto& b : bad) {
    const Status st = t.set(b.layer, b.s);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(st.message().find(b.fragment), std::string::npos)
        << b.fragment << "\n in: " << st.message();
    ASSERT_EQ(t.layers().size(), 1u);
    expect_same(get_ok(t, "a"), {4, 5, 6}, "a untouched");
  }
}

TEST(VitScales, SourceNamesAreCut) {
  ScaleTable t;
  const Status st = ScaleTable::parse("[]", std::string(100000, 's'), &t);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_LT(st.message().size(), kShort) << st.message().substr(0, 300);
}

// Random documents and mutants of a valid file: every input gives a table or a short error.
TEST(VitScales, HostileInputsGiveATableOrAShortError) {
  std::mt19937_64 rng(12);
  const std::string valid =
      R"({"layers": {"vis.0": {"q": 0.5, "k_scale": 2, "v": 1e-3}, "vis.1": {"q": 1, "k": 2, "v": 3}}})";
  const std::vector<std::string> keys = {"layers",  "q",       "k",       "v",
                                         "q_scale", "k_scale", "v_scale", "vis.0"};
  for (int i = 0; i < 3000; ++i) {
    const std::string text = i % 2 ? test::mutate_text(valid, rng) : test::random_json(rng, keys);
    ScaleTable t;
    const Status st = ScaleTable::parse(text, "scale file 'h.json'", &t);
    if (st.ok()) {
      EXPECT_FALSE(t.empty());
      for (const auto& [name, s] : t.layers()) {
        EXPECT_FALSE(name.empty());
        for (const float x : {s.q, s.k, s.v}) EXPECT_TRUE(std::isfinite(x) && x > 0) << x;
      }
      continue;
    }
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
    EXPECT_LT(st.message().size(), kShort) << test::quoted_for_test(st.message());
    EXPECT_EQ(st.message().rfind("scale file 'h.json'", 0), 0u)
        << test::quoted_for_test(st.message());
    EXPECT_FALSE(test::echoes_input(st.message(), text)) << test::quoted_for_test(st.message());
  }
}

TEST_F(ScaleFileTest, LoadReadsAFileAndNamesItInErrors) {
  const fs::path p = dir_ / "scales.json";
  write_file(p, R"({"a": {"q": 0.25, "k": 0.5, "v": 0.75}})");
  ScaleTable t;
  Status st = ScaleTable::load(p, &t);
  ASSERT_TRUE(st.ok()) << st.to_string();
  expect_same(get_ok(t, "a"), {0.25f, 0.5f, 0.75f}, "a");
  QkvScales s;
  st = t.get("b", &s);
  EXPECT_NE(st.message().find("layer 'b' is not in scale file '" + p.string() + "'"),
            std::string::npos)
      << st.message();

  write_file(p, R"({"a": {"q": 0.25, "k": 0.5, "v": -0.75}})");
  st = ScaleTable::load(p, &t);
  EXPECT_NE(st.message().find("scale file '" + p.string() + "': layer 'a': key 'v'"),
            std::string::npos)
      << st.message();
  expect_same(get_ok(t, "a"), {0.25f, 0.5f, 0.75f}, "untouched");
}

TEST_F(ScaleFileTest, LoadRefusesMissingFilesDirectoriesAndOversizedFiles) {
  ScaleTable t;
  const fs::path missing = dir_ / "missing.json";
  Status st = ScaleTable::load(missing, &t);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("scale file '" + missing.string() + "' cannot be read"),
            std::string::npos)
      << st.message();

  st = ScaleTable::load(dir_, &t);
  EXPECT_NE(st.message().find("scale file '" + dir_.string() +
                              "': expected a regular file, got "
                              "a directory"),
            std::string::npos)
      << st.message();

  st = ScaleTable::load("/dev/null", &t);
  EXPECT_NE(st.message().find("got a character device"), std::string::npos) << st.message();

  const fs::path big = dir_ / "big.json";
  write_file(big, R"({"a": {"q": 1, "k": 1, "v": 1}})");
  fs::resize_file(big, (size_t{16} << 20) + 1);  // sparse: not read
  st = ScaleTable::load(big, &t);
  EXPECT_NE(st.message().find("scale file '" + big.string() + "': expected at most 16777216 bytes"),
            std::string::npos)
      << st.message();
  EXPECT_TRUE(t.empty());

  // 16 MiB exactly is read (padding after the document is whitespace).
  std::string text = R"({"a": {"q": 1, "k": 1, "v": 1}})";
  text.resize(size_t{16} << 20, ' ');
  write_file(big, text);
  st = ScaleTable::load(big, &t);
  EXPECT_TRUE(st.ok()) << st.to_string();
}

TEST_F(ScaleFileTest, SaveWritesScalesTimesMarginAtomically) {
  std::mt19937_64 rng(99);
  ScaleTable t;
  for (int i = 0; i < 300; ++i)
    ASSERT_TRUE(t.set("visual.blocks." + std::to_string(i) + ".attn",
                      {random_scale(rng), random_scale(rng), random_scale(rng)})
                    .ok());
  const fs::path p = dir_ / "saved.json";
  for (const double margin : {1.5, 1.0, 2.75}) {  // the second and third overwrite the file
    const Status st = save_scales_atomic(p, t, margin);
    ASSERT_TRUE(st.ok()) << st.to_string();
    EXPECT_EQ(entries(), std::vector<std::string>{"saved.json"}) << "a temporary file is left";
    EXPECT_EQ(slurp(p), t.to_json(margin));
    ScaleTable back;
    ASSERT_TRUE(ScaleTable::load(p, &back).ok());
    ASSERT_EQ(back.layers().size(), t.layers().size());
    for (const auto& [name, s] : t.layers()) {
      auto m = [&](float x) { return static_cast<float>(static_cast<double>(x) * margin); };
      expect_same(get_ok(back, name), {m(s.q), m(s.k), m(s.v)}, name);
    }
  }
  // A relative path in the working directory.
  const fs::path cwd = fs::current_path();
  fs::current_path(dir_);
  const Status st = save_scales_atomic("relative.json", t, 1.5);
  fs::current_path(cwd);
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_TRUE(fs::is_regular_file(dir_ / "relative.json"));
}

TEST_F(ScaleFileTest, SaveRefusesBadArgumentsAndLeavesNothingBehind) {
  ScaleTable t;
  ASSERT_TRUE(t.set("a", {1.0f, 2.0f, 3.0f}).ok());
  const fs::path p = dir_ / "s.json";
  write_file(p, "previous");
  auto expect_fail = [&](const std::string& path, const ScaleTable& table, double margin,
                         std::initializer_list<std::string> fragments) {
    const Status st = save_scales_atomic(path, table, margin);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
    for (const std::string& f : fragments)
      EXPECT_NE(st.message().find(f), std::string::npos) << f << "\n in: " << st.message();
    EXPECT_LT(st.message().size(), kShort) << st.message();
  };
  const std::string name = "scale save '" + p.string() + "'";
  for (const double m : {0.0, -1.0, -0.0, std::nan(""), std::numeric_limits<double>::infinity(),
                         -std::numeric_limits<double>::infinity()})
    expect_fail(p, t, m, {name + ": argument 'margin': expected a finite number > 0, got"});
  expect_fail(p, ScaleTable{}, 1.5, {name + ": the scale table has no layers"});

  ScaleTable big;
  ASSERT_TRUE(big.set("big.layer", {1.0f, 3e38f, 1.0f}).ok());
  expect_fail(p, big, 1.5, {name + ": layer 'big.layer': key 'k'", "expected a finite float > 0"});
  ScaleTable tiny;
  ASSERT_TRUE(tiny.set("tiny", {1.0f, 1.0f, std::numeric_limits<float>::denorm_min()}).ok());
  expect_fail(p, tiny, 0.25, {name + ": layer 'tiny': key 'v'"});

  const fs::path missing_dir = dir_ / "no" / "such";
  expect_fail(missing_dir / "s.json", t, 1.5,
              {"scale save '" + (missing_dir / "s.json").string() + "'",
               "directory '" + missing_dir.string() + "' does not exist"});
  expect_fail(p / "x.json", t, 1.5, {"'" + p.string() + "' is not a directory"});
  expect_fail("", t, 1.5, {"expected the path of a file, got an empty string"});
  expect_fail(dir_.string() + "/", t, 1.5, {"expected the path of a file, got a directory path"});
  // A path that is a directory: the rename fails, the temporary file is removed.
  fs::create_directory(dir_ / "d");
  expect_fail(dir_ / "d", t, 1.5, {"cannot rename the temporary file over it"});

  EXPECT_EQ(slurp(p), "previous");
  std::vector<std::string> names = entries();
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"d", "s.json"}));
  EXPECT_TRUE(fs::is_empty(dir_ / "d"));
}

}  // namespace
}  // namespace qfuse::vit
