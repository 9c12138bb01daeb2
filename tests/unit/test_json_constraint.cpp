#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include "moed/server/json_constraint.hpp"

namespace fs = std::filesystem;
using moed::server::CompiledSchema;
using moed::server::constraint_vocabulary;
using moed::server::ConstraintVocabulary;
using moed::server::json_object_constraint;
using moed::server::json_schema_constraint;
using moed::server::JsonPrefix;
using moed::server::OutputPattern;
using moed::server::PatternConstraint;
using moed::server::PatternPrefix;

namespace {

const fs::path kModels = MOED_TEST_MODELS;

// How many bytes of text the prefix takes before it refuses one.
std::size_t taken(std::string_view text, JsonPrefix& prefix) {
  for (std::size_t i = 0; i < text.size(); ++i)
    if (!prefix.feed(static_cast<unsigned char>(text[i]))) return i;
  return text.size();
}

bool takes_whole_object(std::string_view text) {
  JsonPrefix prefix;
  return taken(text, prefix) == text.size() && prefix.complete();
}

bool is_json_object(const std::string& text) {
  return nlohmann::json::accept(text) && nlohmann::json::parse(text).is_object();
}

const std::vector<std::string> kObjects = {
    R"({})",
    R"({"a":1})",
    R"({"a": [1, -0.5e+3, 2E-7, 0, -0, 10.25, true, false, null, "x\u00e9\n\"\\\/\b\f\r\t"],)"
    R"( "b": {"c": {}, "d": [[], {}]}})",
    "{\n  \"key\": \"w\xc3\xb6rds \xe2\x9c\x93\",\n  \"n\": 12345\n}",
    " \n{}",
    R"({"":""})",
};

}  // namespace

TEST(JsonPrefix, TakesJsonObjects) {
  for (const auto& text : kObjects) {
    ASSERT_TRUE(is_json_object(text)) << text;  // the test's own inputs, checked independently
    EXPECT_TRUE(takes_whole_object(text)) << text;
  }
  const std::string unfinished = R"({"a": [1, {"b": "c)";
  JsonPrefix open;
  EXPECT_EQ(taken(unfinished, open), unfinished.size());
  EXPECT_FALSE(open.complete());
}

TEST(JsonPrefix, RefusesTheFirstByteThatCannotContinueAnObject) {
  struct Case {
    std::string text;
    std::size_t refused_at;
  };
  const std::vector<Case> cases = {
      {"[1]", 0},
      {"\"a\"", 0},
      {"{,}", 1},
      {"{1:2}", 1},
      {"{\"a\" 1}", 5},
      {"{\"a\":01}", 6},
      {"{\"a\":1.}", 7},
      {"{\"a\":.5}", 5},
      {"{\"a\":+1}", 5},
      {"{\"a\":-}", 6},
      {"{\"a\":1e}", 7},
      {"{\"a\":NaN}", 5},
      {"{\"a\":1,}", 7},
      {"{\"a\":tru}", 8},
      {"{\"a\":\"\x01\"}", 6},
      {"{\"a\":\"\\q\"}", 7},
      {"{\"a\":\"\\u12g4\"}", 10},
      {"{\"a\":1]", 6},
      {"{\"a\":[1}", 7},
      {"{}}", 2},
  };
  for (const auto& [text, at] : cases) {
    ASSERT_FALSE(is_json_object(text)) << text;
    JsonPrefix prefix;
    EXPECT_EQ(taken(text, prefix), at) << text;
  }
  // JSON, but nothing may follow the object: the end of generation must come.
  JsonPrefix trailing;
  EXPECT_EQ(taken("{} ", trailing), 2u);
}

// What a JSON parser would refuse after all: strings that are not UTF-8, \\u escapes of unpaired
// surrogates, numbers past a double.
TEST(JsonPrefix, KeepsStringsUtf8AndNumbersWithinADouble) {
  for (const std::string text :
       {"{\"a\": \"\\ud83d\\ude00 \xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf\"}",
        "{\"a\": 12345678901234567890, \"b\": -1.5e-99, \"c\": 0.000000000000000000000001}"}) {
    ASSERT_TRUE(is_json_object(text)) << text;
    EXPECT_TRUE(takes_whole_object(text)) << text;
  }
  struct Case {
    std::string text;
    std::size_t refused_at;
  };
  for (const auto& [text, at] : std::vector<Case>{
           {"{\"a\":\"\\udc00\"}", 9},           // a low surrogate alone
           {"{\"a\":\"\\ud800x\"}", 12},         // a high one without its pair
           {"{\"a\":\"\\ud800\\n\"}", 13},       // ... or with another escape
           {"{\"a\":\"\\ud800\\u0041\"}", 14},   // ... or with a character
           {"{\"a\":\"\xc3\"}", 7},              // a character cut short
           {"{\"a\":\"\xc0\xaf\"}", 6},          // an overlong form
           {"{\"a\":\"\xed\xa0\x80\"}", 7},      // a surrogate in UTF-8
           {"{\"a\":\"\xf4\x90\x80\x80\"}", 7},  // past U+10FFFF
           {"{\"a\":\"\x80\"}", 6},              // a continuation byte first
           {"{\"a\":123456789012345678901}", 25},
           {"{\"a\":1e100}", 9},
       }) {
    ASSERT_FALSE(is_json_object(text) && takes_whole_object(text)) << text;
    JsonPrefix prefix;
    EXPECT_EQ(taken(text, prefix), at) << text;
  }
}

// A model must not fill its answer with blanks or brackets, which JSON would allow forever.
TEST(JsonPrefix, LimitsBlankRunsAndNesting) {
  auto spaced = [](int blanks) {
    std::string text = "{";
    text.append(static_cast<std::size_t>(blanks), ' ');
    return text += '}';
  };
  EXPECT_TRUE(takes_whole_object(spaced(JsonPrefix::kMaxIndent)));
  JsonPrefix wide;
  EXPECT_EQ(taken(spaced(JsonPrefix::kMaxIndent + 1), wide), JsonPrefix::kMaxIndent + 1u);
  JsonPrefix tall;
  EXPECT_EQ(taken("{\n\n}", tall), 2u);
  EXPECT_TRUE(takes_whole_object("{\n" + std::string(JsonPrefix::kMaxIndent, ' ') +
                                 "\"a\": 1,\n  \"b\": [\n    2\n  ]\n}"));

  // The top object is the first level.
  std::string nested = "{\"a\":" + std::string(JsonPrefix::kMaxDepth - 1, '[');
  JsonPrefix deep;
  EXPECT_EQ(taken(nested + "[", deep), nested.size());
  nested += std::string(JsonPrefix::kMaxDepth - 1, ']') + "}";
  EXPECT_TRUE(is_json_object(nested));
  EXPECT_TRUE(takes_whole_object(nested));
}

// Against nlohmann's parser: mutated objects the prefix takes whole are JSON objects, and JSON
// objects within the limits (no blank after the object, one line break per blank run) are taken.
TEST(JsonPrefix, AgreesWithAnIndependentParserOnMutatedObjects) {
  const std::vector<std::string> seeds = {
      R"({"a": [1, -0.5e+3, true], "b": {"c": null, "d": "x\u00e9y"}})",
      R"({"key": "value", "n": [0, 1.5, -2E-3, false, []]})",
      "{\n  \"list\": [\n    {\"x\": 1},\n    {\"y\": \"\\\"q\\\"\"}\n  ]\n}",
  };
  const std::string alphabet = "{}[]\",:0123456789.eE+-truefalsnDdc\\u \n\xc3\xa9\xe2\x9c\x93\x80";
  std::mt19937 rng(11);
  int objects = 0;
  int others = 0;
  for (int trial = 0; trial < 30000; ++trial) {
    std::string text = seeds[static_cast<std::size_t>(trial) % seeds.size()];
    for (int edit = 0; edit <= trial % 3; ++edit) {
      const std::size_t at = rng() % (text.size() + 1);
      const char c = alphabet[rng() % alphabet.size()];
      switch (rng() % 3) {
        case 0:
          text.insert(at, 1, c);
          break;
        case 1:
          if (at < text.size()) text.erase(at, 1);
          break;
        default:
          if (at < text.size()) text[at] = c;
      }
    }
    const bool whole = takes_whole_object(text);
    const bool object = is_json_object(text);
    if (whole) {
      EXPECT_TRUE(object) << text;
    }
    bool within_limits = !text.empty() && text.back() != ' ' && text.back() != '\n';
    for (std::size_t i = 0; i + 1 < text.size(); ++i) {
      if (text[i] != '\n') continue;
      std::size_t j = i + 1;
      while (j < text.size() && text[j] == ' ') ++j;
      if (j < text.size() && text[j] == '\n') within_limits = false;
    }
    if (object && within_limits) {
      EXPECT_TRUE(whole) << text;
    }
    ++(object ? objects : others);
  }
  // Both sides of the comparison were exercised.
  EXPECT_GT(objects, 1000);
  EXPECT_GT(others, 1000);
}

namespace {

std::vector<std::int64_t> end_ids(const moed::model::Tokenizer& tokenizer) {
  std::vector<std::int64_t> ids(tokenizer.end_of_generation_ids().begin(),
                                tokenizer.end_of_generation_ids().end());
  if (ids.empty() && tokenizer.eos_id()) ids.push_back(*tokenizer.eos_id());
  return ids;
}

// mask() refuses exactly the tokens allows() refuses (its tables, shortcuts and cache are only
// faster).
void expect_mask_agrees(const moed::server::PatternConstraint& constraint, std::int64_t vocab) {
  std::vector<float> logits(static_cast<std::size_t>(vocab), 0.0f);
  constraint.mask(logits);
  for (std::int32_t id = 0; id < vocab; ++id)
    ASSERT_EQ(std::isfinite(logits[static_cast<std::size_t>(id)]), constraint.allows(id))
        << "token " << id;
}

// Whether the constraint lets the tokens of text through, one after another, and then the end.
bool lets_through(const moed::model::Tokenizer& tokenizer,
                  const std::shared_ptr<const moed::server::ConstraintVocabulary>& vocabulary,
                  const std::string& text) {
  auto constraint = *json_object_constraint(vocabulary);
  for (const auto id : tokenizer.encode(text, false)) {
    expect_mask_agrees(constraint, static_cast<std::int64_t>(vocabulary->bytes.size()));
    if (!constraint.allows(id)) return false;
    constraint.advance(id);
  }
  expect_mask_agrees(constraint, static_cast<std::int64_t>(vocabulary->bytes.size()));
  for (const auto id : end_ids(tokenizer))
    if (!constraint.allows(static_cast<std::int32_t>(id))) return false;
  return true;
}

}  // namespace

// Over real vocabularies (SentencePiece with byte fallback, byte-level BPE; tokenizer.json and
// GGUF): the tokens a tokenizer gives for a JSON object pass one by one, then only the end of
// generation may come; special tokens and ids past the tokenizer's vocabulary never pass.
TEST(JsonObjectConstraint, LetsAnObjectsTokensThroughAndThenOnlyTheEnd) {
  for (const char* model : {"tiny-f32", "tiny-bytelevel", "tiny-qwen3_moe", "tiny-f32.gguf",
                            "tiny-bytelevel-q6_k-00001-of-00003.gguf"}) {
    SCOPED_TRACE(model);
    const auto tokenizer = moed::model::load_tokenizer(kModels / model);
    const auto ends = end_ids(tokenizer);
    ASSERT_FALSE(ends.empty());
    const std::int64_t padded = tokenizer.vocab_size() + 8;
    const auto vocabulary = constraint_vocabulary(tokenizer, padded, ends);
    for (const auto& text : kObjects)
      EXPECT_TRUE(lets_through(tokenizer, vocabulary, text)) << text;
    for (const std::string text : {R"({"a": 01})", R"({"a": 1,})", R"({"a": 1)", R"([1, 2])"})
      EXPECT_FALSE(lets_through(tokenizer, vocabulary, text)) << text;

    auto constraint = *json_object_constraint(vocabulary);
    for (const auto id : tokenizer.encode("{}", false)) constraint.advance(id);
    std::int64_t allowed = 0;
    for (std::int32_t id = 0; id < padded; ++id) allowed += constraint.allows(id);
    EXPECT_EQ(allowed, static_cast<std::int64_t>(ends.size()));

    auto fresh = *json_object_constraint(vocabulary);
    for (std::int32_t id = 0; id < padded; ++id) {
      if (id >= tokenizer.vocab_size() || tokenizer.is_special(id)) {
        EXPECT_FALSE(fresh.allows(id)) << id;
      }
    }
  }
}

namespace {

std::size_t taken(std::string_view text, PatternPrefix& prefix) {
  for (std::size_t i = 0; i < text.size(); ++i)
    if (!prefix.feed(static_cast<unsigned char>(text[i]))) return i;
  return text.size();
}

struct Refusal {
  std::string text;
  std::size_t at;  // the byte refused
};

// Each of `whole` is taken to its end and completes the pattern; each refusal's text is taken up
// to its byte `at`.
void expect_reads(const OutputPattern& pattern, const std::vector<std::string>& whole,
                  const std::vector<Refusal>& refused) {
  for (const auto& text : whole) {
    PatternPrefix prefix(pattern);
    EXPECT_EQ(taken(text, prefix), text.size()) << text;
    EXPECT_TRUE(prefix.complete()) << text;
  }
  for (const auto& [text, at] : refused) {
    PatternPrefix prefix(pattern);
    EXPECT_EQ(taken(text, prefix), at) << text;
  }
}

}  // namespace

// A forced call's shape: literal text, a choice among names (one a prefix of another), a JSON
// object, literal text.
TEST(PatternPrefix, TakesLiteralsChoicesAndObjectsInOrder) {
  OutputPattern pattern;
  pattern.literal("<c>")
      .choice({"get", "get_weather", "now"})
      .literal(":")
      .json_object()
      .literal("</c>");
  expect_reads(pattern, {"<c>get_weather:{\"a\": 1}</c>", "<c>get:{}</c>", "<c>now: {}</c>"},
               {{"<c>ge:{}", 5},
                {"<c>get_w:{}", 8},
                {"<c>other", 3},
                {"<c>now:{} </c>", 9},
                {"<c>now:[]", 7},
                {"<c>now:{}</c>x", 13}});
}

// A literal given as tokens is those tokens alone, even where others spell it, and no token
// crosses into it; a name that may go on takes both its longer names' bytes and the literal's
// token; once the pattern is whole, only the end of generation.
TEST(PatternConstraint, LiteralsGivenAsTokensAreThoseTokens) {
  const std::vector<std::string> bytes = {"<c>", "<",    "c>",  "get",   "_weather", ":", "{",
                                          "}",   "get:", "now", "}</c>", "</c>",     ""};
  std::vector<bool> ends(bytes.size());
  ends.back() = true;
  const auto vocabulary = std::make_shared<const ConstraintVocabulary>(bytes, ends);
  auto pattern = std::make_shared<OutputPattern>();
  pattern->literal("<c>", {0})
      .choice({"get", "get_weather", "now"})
      .literal(":", {5})
      .json_object()
      .literal("</c>", {11});
  PatternConstraint constraint(vocabulary, pattern);
  const auto vocab = static_cast<std::int64_t>(bytes.size());
  auto allowed = [&] {
    std::vector<std::int32_t> ids;
    for (std::int32_t id = 0; id < vocab; ++id)
      if (constraint.allows(id)) ids.push_back(id);
    expect_mask_agrees(constraint, vocab);
    return ids;
  };
  using Ids = std::vector<std::int32_t>;
  EXPECT_EQ(allowed(), (Ids{0}));
  constraint.advance(0);
  EXPECT_EQ(allowed(), (Ids{3, 9}));  // not "get:", which would cross into ":"
  constraint.advance(3);
  EXPECT_EQ(allowed(), (Ids{4, 5}));
  constraint.advance(5);
  EXPECT_EQ(allowed(), (Ids{6}));
  constraint.advance(6);
  EXPECT_EQ(allowed(), (Ids{7}));  // not "}</c>"
  constraint.advance(7);
  EXPECT_EQ(allowed(), (Ids{11}));
  constraint.advance(11);
  EXPECT_EQ(allowed(), (Ids{12}));
}

namespace {

const char* const kToolArguments = R"({
  "type": "object",
  "properties": {
    "city": {"type": "string", "maxLength": 6},
    "unit": {"enum": ["c", "f"]},
    "days": {"type": "array", "items": {"type": "integer"}, "maxItems": 2},
    "from": {"type": "string", "format": "date"}
  },
  "required": ["city", "unit"],
  "additionalProperties": false
})";

std::shared_ptr<const CompiledSchema> compiled(const char* schema) {
  return std::make_shared<const CompiledSchema>(
      CompiledSchema::compile(nlohmann::ordered_json::parse(schema), true));
}

}  // namespace

// A call's arguments follow the schema of the name the choice took, though one name is a
// prefix of the other.
TEST(PatternPrefix, ArgumentsFollowTheSchemaOfTheNameChosen) {
  OutputPattern pattern;
  pattern.choice({"get", "get_time"})
      .literal(":")
      .json_schema({compiled(kToolArguments),
                    compiled(R"({"type": "object", "properties": {"zone": {"type": "integer"}},
                                 "required": ["zone"], "additionalProperties": false})")});
  expect_reads(pattern,
               {R"(get:{"city": "Oslo", "unit": "c"})",
                R"(get:{"city":"","unit":"f","days":[1, 2]})", R"(get_time:{"zone": -2})"},
               {{R"(get:{"zone": 1})", 6},
                {R"(get_time:{"city")", 11},
                {R"(get:{"city": "Oslo", "unit": "k"})", 30},
                {R"(get:{"city": "Bergen!", "unit": "c"})", 20},
                {R"(get:{"city": "", "unit": "c", "days": [1.5]})", 40},
                {R"(get:{"unit": "c"})", 6}});
}

// Over real vocabularies, random walks of tokens through a schema's constraint: at every step
// mask() agrees with allows() and leaves some token, and each walk that reaches the end of
// generation is an instance (checked here for its shape; tests/schema checks instances with an
// independent validator).
TEST(JsonSchemaConstraint, RandomTokenWalksEndInInstances) {
  const auto schema = compiled(kToolArguments);
  for (const char* model :
       {"tiny-f32", "tiny-qwen3_moe", "tiny-bytelevel-q6_k-00001-of-00003.gguf"}) {
    SCOPED_TRACE(model);
    const auto tokenizer = moed::model::load_tokenizer(kModels / model);
    const auto ends = end_ids(tokenizer);
    const auto vocabulary = constraint_vocabulary(tokenizer, tokenizer.vocab_size(), ends);
    const auto vocab = static_cast<std::int64_t>(vocabulary->bytes.size());
    std::mt19937 rng(11);
    int finished = 0;
    for (int walk = 0; walk < 6; ++walk) {
      auto constraint = *json_schema_constraint(vocabulary, schema);
      std::string text;
      for (int step = 0; step < 120; ++step) {
        expect_mask_agrees(constraint, vocab);
        std::vector<float> logits(static_cast<std::size_t>(vocab), 0.0f);
        constraint.mask(logits);
        std::vector<std::int32_t> allowed;
        for (std::int32_t id = 0; id < vocab; ++id)
          if (std::isfinite(logits[static_cast<std::size_t>(id)])) allowed.push_back(id);
        ASSERT_FALSE(allowed.empty()) << "dead end after " << text;
        const auto id =
            allowed[std::uniform_int_distribution<std::size_t>(0, allowed.size() - 1)(rng)];
        if (vocabulary->ends[static_cast<std::size_t>(id)]) {
          const auto answer = nlohmann::json::parse(text);
          EXPECT_TRUE(answer.is_object() && answer.contains("city") && answer.contains("unit") &&
                      answer["city"].get<std::string>().size() <= 6 * 4)
              << text;
          if (answer.contains("from")) {
            EXPECT_TRUE(std::regex_match(answer["from"].get<std::string>(),
                                         std::regex("[0-9]{4}-[0-9]{2}-[0-9]{2}")))
                << text;
          }
          ++finished;
          break;
        }
        constraint.advance(id);
        text += vocabulary->bytes[static_cast<std::size_t>(id)];
      }
    }
    EXPECT_GT(finished, 0);
  }
}
