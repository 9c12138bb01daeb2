// The tokenizer of a GGUF file (Tokenizer::from_gguf) against the tokenizer.json tokenizer of
// the Hugging Face directory scripts/hf-to-gguf.py converted it from, and its errors on bad
// tokenizer.ggml.* metadata.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "moed/model/gguf.hpp"
#include "moed/model/tokenizer.hpp"

namespace fs = std::filesystem;
using namespace moed::model;

namespace {

const fs::path kModels = MOED_TEST_MODELS;

struct Converted {
  const char* gguf;
  const char* hf_dir;
};
// tiny-f32 is a SentencePiece-style tokenizer (tokenizer.ggml.model "llama"), tiny-bytelevel a
// GPT-2-style one ("gpt2", pre "gpt-2"), the last read from the first of three splits.
//
// The "llama" files merge by score (llama.cpp's llm_tokenizer_spm: the adjacent pair whose
// concatenation is the token of highest score) where tokenizer.json merges by rank (the pair
// earliest in "merges"). They agree only because hf-to-gguf.py writes each token's score as
// minus the rank of the merge that makes it, so a higher score is an earlier merge.
const Converted kConverted[] = {{"tiny-f32.gguf", "tiny-f32"},
                                {"tiny-q8_0.gguf", "tiny-f32"},
                                {"tiny-bytelevel-q6_k-00001-of-00003.gguf", "tiny-bytelevel"}};

const std::vector<std::string> kTexts = {
    "",
    "Hello world",
    "The capital of France is Paris.",
    "  leading, inner   and trailing spaces  ",
    "tabs\tand\nnewlines\n\n and \r\n too",
    "digits 1234567890, 3.14159 and 42nd",
    "Unicode: w\u00f6rds caf\u00e9 \u2713 \u4f60\u597d \U0001F600 \u043f\u0440\u0438",
    "it's they're we'll I'd you've",
    "punctuation!!! ... ??? (brackets) [and] {braces} #hash @at",
    "special <s> in </s> text <unk>",
    "<s>",
    "<|endoftext|>between<|endoftext|> tokens<|endoftext|>",
    " ",
    "\n",
};

fs::path gguf_path(const Converted& c) {
  return kModels / c.gguf;
}

// Random texts from pieces the tiny vocabularies know and pieces they do not, with spaces,
// digits and special tokens between: merges of every kind get exercised. With invalid_utf8,
// stray bytes (a lone lead, a cut sequence, 0xff) are among the pieces.
std::vector<std::string> random_texts(std::size_t count, bool invalid_utf8 = false) {
  // clang-format off
  std::vector<std::string> pieces = {
      "the", "capital", "of", "France", "is", "Paris", "model", "expert", "zq", "xylo", "ing",
      "Z", "a", "b", "er", "\u00e9", "\u20ac", "\U0001F600", "42", "7", "2024", "0", ",", ".", "!",
      "-", "'s", " ", "  ", "\n", "\t", "  \n", "\r\n", "<s>", "</s>", "<|endoftext|>"};
  // clang-format on
  if (invalid_utf8)
    for (const char* bytes : {"\xff", "\xc3", "\xe4\xbd"}) pieces.emplace_back(bytes);
  std::mt19937 rng(1234);
  std::uniform_int_distribution<std::size_t> pick(0, pieces.size() - 1);
  std::uniform_int_distribution<int> length(1, 12);
  std::vector<std::string> texts;
  for (std::size_t i = 0; i < count; ++i) {
    std::string text;
    for (int k = length(rng); k > 0; --k) text += pieces[pick(rng)];
    texts.push_back(std::move(text));
  }
  return texts;
}

// The fixture's metadata, edited: `edit` sees each entry and returns the value to keep (the
// same, another, or none to drop it); `extra` entries are added after.
GgufMetadata edited_metadata(
    const GgufMetadata& from,
    const std::function<std::optional<GgufValue>(const std::string&, const GgufValue&)>& edit,
    const std::vector<std::pair<std::string, GgufValue>>& extra = {}) {
  GgufMetadata out("edited.gguf");
  for (const auto& [key, value] : from.entries())
    if (auto kept = edit(key, value)) out.add(key, std::move(*kept));
  for (const auto& [key, value] : extra) out.add(key, value);
  return out;
}

GgufMetadata without(const GgufMetadata& from, const std::string& dropped) {
  return edited_metadata(from, [&](const std::string& key, const GgufValue& value) {
    return key == dropped ? std::nullopt : std::optional<GgufValue>(value);
  });
}

GgufMetadata with(const GgufMetadata& from, const std::string& replaced, GgufValue replacement) {
  const bool present = from.contains(replaced);
  std::vector<std::pair<std::string, GgufValue>> extra;
  if (!present) extra.emplace_back(replaced, replacement);
  return edited_metadata(
      from,
      [&](const std::string& key, const GgufValue& value) {
        return std::optional<GgufValue>(key == replaced ? replacement : value);
      },
      extra);
}

GgufValue string_array(std::vector<std::string> texts) {
  GgufArray array{GgufValueType::string, {}};
  for (auto& text : texts) array.elements.push_back(GgufValue{std::move(text)});
  return GgufValue{std::move(array)};
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

void expect_rejected(const GgufMetadata& metadata, std::initializer_list<std::string> parts) {
  const std::string message = error_of([&] { Tokenizer::from_gguf(metadata, "edited.gguf"); });
  ASSERT_FALSE(message.empty()) << "expected an error naming " << *parts.begin();
  EXPECT_NE(message.find("edited.gguf"), std::string::npos) << message;
  for (const auto& part : parts)
    EXPECT_NE(message.find(part), std::string::npos)
        << "'" << message << "' lacks '" << part << "'";
}

}  // namespace

TEST(GgufTokenizer, EncodesAndDecodesAsTheTokenizerItWasConvertedFrom) {
  auto texts = kTexts;
  for (auto& text : random_texts(400)) texts.push_back(std::move(text));
  for (const auto& c : kConverted) {
    SCOPED_TRACE(c.gguf);
    const auto gguf = load_tokenizer(gguf_path(c));
    const auto hf = load_tokenizer(kModels / c.hf_dir);
    for (const auto& text : texts) {
      SCOPED_TRACE("text '" + text + "'");
      const auto ids = hf.encode(text);
      ASSERT_EQ(gguf.encode(text), ids);
      const auto bare = hf.encode(text, false);
      ASSERT_EQ(gguf.encode(text, false), bare);
      // After a leading special token decode skips, llama.cpp keeps the space before the first
      // word (SentencePieceDecodeKeepsTheSpaceAfterASkippedToken).
      if (bare.empty() || !hf.is_special(bare.front())) {
        EXPECT_EQ(gguf.decode(bare), hf.decode(bare));
      }
      EXPECT_EQ(gguf.decode(bare, false), hf.decode(bare, false));
      EXPECT_EQ(gguf.decode(ids, false), hf.decode(ids, false));
    }
    // Text with invalid UTF-8 encodes alike too. (Decoding it differs where the bytes come back
    // invalid: tokenizers' ByteFallback turns a whole run of byte tokens into U+FFFDs, the GGUF
    // tokenizer only the invalid bytes of llama.cpp's raw output.)
    for (const auto& text : random_texts(400, true)) {
      SCOPED_TRACE("text '" + text + "'");
      ASSERT_EQ(gguf.encode(text), hf.encode(text));
    }
  }
}

TEST(GgufTokenizer, EachTokenDecodesAsInTheTokenizerJson) {
  for (const auto& c : kConverted) {
    SCOPED_TRACE(c.gguf);
    const auto gguf = load_tokenizer(gguf_path(c));
    const auto hf = load_tokenizer(kModels / c.hf_dir);
    // hf-to-gguf.py pads the vocabulary to the model's embedding rows with unused tokens.
    ASSERT_GE(gguf.vocab_size(), hf.vocab_size());
    for (std::int32_t id = 0; id < hf.vocab_size(); ++id) {
      const std::int32_t one[] = {id};
      EXPECT_EQ(gguf.token_string(id), hf.token_string(id)) << id;
      EXPECT_EQ(gguf.is_special(id), hf.is_special(id)) << id;
      EXPECT_EQ(gguf.decode(one, false), hf.decode(one, false)) << id;
      EXPECT_EQ(gguf.decode(one), hf.decode(one)) << id;
    }
    for (std::int32_t id = static_cast<std::int32_t>(hf.vocab_size()); id < gguf.vocab_size();
         ++id) {
      const std::int32_t one[] = {id};
      EXPECT_EQ(gguf.decode(one, false), "") << "unused token " << id;
    }
  }
}

TEST(GgufTokenizer, SpecialTokensAndChatTemplateAgree) {
  for (const auto& c : kConverted) {
    SCOPED_TRACE(c.gguf);
    const auto gguf = load_tokenizer(gguf_path(c));
    const auto hf = load_tokenizer(kModels / c.hf_dir);
    EXPECT_EQ(gguf.bos_id(), hf.bos_id());
    EXPECT_EQ(gguf.eos_id(), hf.eos_id());
    ASSERT_TRUE(gguf.eos_id().has_value());
    EXPECT_EQ(gguf.bos_token(), hf.bos_token());
    EXPECT_EQ(gguf.eos_token(), hf.eos_token());
    EXPECT_EQ(gguf.adds_bos(), hf.adds_bos());
    EXPECT_FALSE(gguf.chat_template().empty());
    EXPECT_EQ(gguf.chat_template(), hf.chat_template());
  }
  EXPECT_TRUE(load_tokenizer(kModels / "tiny-f32.gguf").adds_bos());
  EXPECT_FALSE(load_tokenizer(kModels / "tiny-bytelevel-q6_k-00001-of-00003.gguf").adds_bos());
}

// llama.cpp's llama_detokenize drops the space SentencePiece put before the first word only
// from the first token's piece: not when a BOS it removes or a special token it skips came
// first. tokenizers' Strip decoder strips the decoded text's first space either way.
TEST(GgufTokenizer, SentencePieceDecodeKeepsTheSpaceAfterASkippedToken) {
  const auto gguf = load_tokenizer(kModels / "tiny-f32.gguf");
  const auto hf = load_tokenizer(kModels / "tiny-f32");
  const auto ids = gguf.encode("Hello world");
  ASSERT_EQ(ids.front(), gguf.bos_id());
  EXPECT_EQ(gguf.decode(ids), " Hello world");
  EXPECT_EQ(hf.decode(ids), "Hello world");
  EXPECT_EQ(gguf.decode(std::span(ids).subspan(1)), "Hello world");
  EXPECT_EQ(gguf.decode(ids, false), "<s> Hello world");
  const auto after_eos = gguf.encode("</s>Paris", false);
  EXPECT_EQ(gguf.decode(after_eos), " Paris");
  EXPECT_EQ(hf.decode(after_eos), "Paris");
  EXPECT_EQ(gguf.decode(after_eos, false), "</s> Paris");
}

TEST(GgufTokenizer, AddBosAndSpacePrefixFollowTheirKeys) {
  const GgufFile file(kModels / "tiny-f32.gguf");
  const auto& metadata = file.metadata();
  const auto plain = Tokenizer::from_gguf(metadata, "tiny-f32.gguf");
  const auto no_bos =
      Tokenizer::from_gguf(with(metadata, "tokenizer.ggml.add_bos_token", GgufValue{false}), "x");
  EXPECT_EQ(no_bos.encode("Paris"), plain.encode("Paris", false));
  const auto with_eos =
      Tokenizer::from_gguf(with(metadata, "tokenizer.ggml.add_eos_token", GgufValue{true}), "x");
  EXPECT_EQ(with_eos.encode("Paris").back(), *plain.eos_id());
  const auto no_prefix = Tokenizer::from_gguf(
      with(metadata, "tokenizer.ggml.add_space_prefix", GgufValue{false}), "x");
  const auto ids = no_prefix.encode("Paris", false);
  EXPECT_NE(ids, plain.encode("Paris", false));
  EXPECT_EQ(no_prefix.decode(ids), "Paris");
  EXPECT_NE(no_prefix.token_string(ids.front()).rfind("\xe2\x96\x81", 0), 0u)
      << "no leading U+2581 without add_space_prefix";
}

// Every tokenizer.ggml.pre name from_gguf knows loads (its regexes compile) and cuts text into
// pieces that byte-level BPE puts back together; a few are checked piece by piece.
TEST(GgufTokenizer, PreTokenizerNamesSplitAsLlamaCppDoes) {
  const GgufFile file(kModels / "tiny-bytelevel-q6_k-00001-of-00003.gguf");
  const auto load = [&](const std::string& pre) {
    return Tokenizer::from_gguf(with(file.metadata(), "tokenizer.ggml.pre", GgufValue{pre}), pre);
  };
  const std::string sample =
      "Hello, World! It's 2024: 1234567 caf\xc3\xa9s\n\n  \xe4\xbd\xa0\xe5\xa5\xbd\xe3\x81\x82 "
      "\xce\xa9mega <|endoftext|> end ";
  for (const char* pre : {"default",     "llama3", "llama-bpe",    "dbrx",
                          "smaug-bpe",   "glm4",   "deepseek-llm", "deepseek-coder",
                          "deepseek-v3", "falcon", "starcoder",    "gpt-2",
                          "olmo",        "mpt",    "qwen2",        "deepseek-r1-qwen",
                          "stablelm2",   "qwen35", "poro-chat",    "bloom",
                          "tekken",      "gpt-4o", "llama4",       "seed-coder",
                          "bailingmoe",  "grok-2", "command-r",    "smollm",
                          "exaone4"}) {
    SCOPED_TRACE(pre);
    const auto tokenizer = load(pre);
    EXPECT_EQ(tokenizer.decode(tokenizer.encode(sample, false), false), sample);
  }
  const auto pieces = [&](const std::string& pre, const std::string& text) {
    return load(pre).pre_tokenize(text);
  };
  using Pieces = std::vector<std::string>;
  // Ġ is the byte-level space.
  EXPECT_EQ(pieces("gpt-2", "Hello  world's 123"),
            (Pieces{"Hello", "\u0120", "\u0120world", "'s", "\u0120123"}));
  EXPECT_EQ(pieces("llama3", "1234567 Hi"), (Pieces{"123", "456", "7", "\u0120Hi"}));
  EXPECT_EQ(pieces("qwen2", "x123"), (Pieces{"x", "1", "2", "3"}));
  EXPECT_EQ(pieces("deepseek-v3", "a1234b"), (Pieces{"a", "123", "4", "b"}));
  // default: punctuation runs, then GPT-2's split, then digits, then digit triples.
  EXPECT_EQ(pieces("default", "a+b 12345"), (Pieces{"a", "+", "b", "\u0120", "123", "45"}));
  // deepseek-llm: newlines alone, letters with one leading space, CJK runs.
  EXPECT_EQ(
      pieces("deepseek-llm", "ab\ncd \xe4\xbd\xa0\xe5\xa5\xbd"),
      (Pieces{"ab", "\u010a", "cd", "\u0120", "\xc3\xa4\xc2\xbd\xc5\x82\xc3\xa5\xc2\xa5\xc2\xbd"}));
}

TEST(GgufTokenizer, BadMetadataIsAnErrorNamingTheKey) {
  const GgufFile spm_file(kModels / "tiny-f32.gguf");
  const GgufFile bpe_file(kModels / "tiny-bytelevel-q6_k-00001-of-00003.gguf");
  const auto& spm = spm_file.metadata();
  const auto& bpe = bpe_file.metadata();

  expect_rejected(without(spm, "tokenizer.ggml.model"), {"tokenizer.ggml.model", "missing"});
  for (const char* model : {"bert", "t5", "rwkv", "no_vocab"})
    expect_rejected(with(spm, "tokenizer.ggml.model", GgufValue{std::string(model)}),
                    {"tokenizer.ggml.model", model});
  expect_rejected(with(bpe, "tokenizer.ggml.pre", GgufValue{std::string("klingon-bpe")}),
                  {"tokenizer.ggml.pre", "klingon-bpe"});
  expect_rejected(without(spm, "tokenizer.ggml.tokens"), {"tokenizer.ggml.tokens", "missing"});
  expect_rejected(with(spm, "tokenizer.ggml.tokens", GgufValue{std::uint32_t{5}}),
                  {"tokenizer.ggml.tokens", "uint32"});
  expect_rejected(with(spm, "tokenizer.ggml.tokens", string_array({})),
                  {"tokenizer.ggml.tokens", "empty"});
  expect_rejected(with(spm, "tokenizer.ggml.scores", string_array({"1"})),
                  {"tokenizer.ggml.scores", "array of string"});
  expect_rejected(
      with(spm, "tokenizer.ggml.scores", GgufValue{GgufArray{GgufValueType::float32, {}}}),
      {"tokenizer.ggml.scores", "0 entries"});
  expect_rejected(
      with(spm, "tokenizer.ggml.token_type", GgufValue{GgufArray{GgufValueType::int32, {}}}),
      {"tokenizer.ggml.token_type", "0 entries"});
  expect_rejected(with(spm, "tokenizer.ggml.token_type", string_array({"1"})),
                  {"tokenizer.ggml.token_type"});
  expect_rejected(with(spm, "tokenizer.ggml.bos_token_id", GgufValue{std::uint32_t{1u << 30}}),
                  {"tokenizer.ggml.bos_token_id", "1073741824"});
  expect_rejected(with(spm, "tokenizer.ggml.eos_token_id", GgufValue{std::string("</s>")}),
                  {"tokenizer.ggml.eos_token_id"});
  expect_rejected(with(spm, "tokenizer.ggml.padding_token_id", GgufValue{-1.0f}),
                  {"tokenizer.ggml.padding_token_id", "float32"});
  // As llama.cpp: a padding (or eot, eom, FIM) id past the vocabulary is ignored.
  const auto padded = Tokenizer::from_gguf(
      with(spm, "tokenizer.ggml.padding_token_id", GgufValue{std::uint32_t{1u << 30}}), "x");
  EXPECT_EQ(padded.encode("Paris"), load_tokenizer(kModels / "tiny-f32.gguf").encode("Paris"));
  expect_rejected(with(spm, "tokenizer.ggml.add_bos_token", GgufValue{std::uint8_t{1}}),
                  {"tokenizer.ggml.add_bos_token", "bool"});
  expect_rejected(with(spm, "tokenizer.chat_template", GgufValue{std::int32_t{3}}),
                  {"tokenizer.chat_template"});
  expect_rejected(without(bpe, "tokenizer.ggml.merges"), {"tokenizer.ggml.merges", "missing"});
  expect_rejected(with(without(bpe, "tokenizer.ggml.bos_token_id"), "tokenizer.ggml.add_bos_token",
                       GgufValue{true}),
                  {"tokenizer.ggml.add_bos_token", "bos_token_id"});
}

TEST(GgufTokenizer, LoadTokenizerPicksByPath) {
  const auto from_dir = load_tokenizer(kModels / "tiny-f32");
  const auto from_gguf = load_tokenizer(kModels / "tiny-f32.gguf");
  EXPECT_EQ(from_dir.encode("Paris"), from_gguf.encode("Paris"));
  const std::string missing = error_of([] { load_tokenizer(kModels / "no-such.gguf"); });
  EXPECT_NE(missing.find("no-such.gguf"), std::string::npos) << missing;
  const std::string no_dir = error_of([] { load_tokenizer(kModels / "no-such-dir"); });
  EXPECT_NE(no_dir.find("no-such-dir"), std::string::npos) << no_dir;
}

// A byte-level GGUF vocabulary of these tokens and types, without merges.
GgufMetadata crafted_gpt2(const std::vector<std::string>& tokens,
                          const std::vector<std::int32_t>& token_types) {
  GgufMetadata metadata("crafted.gguf");
  metadata.add("tokenizer.ggml.model", GgufValue{std::string("gpt2")});
  metadata.add("tokenizer.ggml.pre", GgufValue{std::string("gpt-2")});
  metadata.add("tokenizer.ggml.tokens", string_array(tokens));
  GgufArray types{GgufValueType::int32, {}};
  for (const std::int32_t type : token_types) types.elements.push_back(GgufValue{type});
  metadata.add("tokenizer.ggml.token_type", GgufValue{std::move(types)});
  metadata.add("tokenizer.ggml.merges", string_array({}));
  return metadata;
}

// What llama.cpp loads, moed loads alike: a text listed twice encodes as its later id (both ids
// decode to it), and a merge that is not two tokens with a space merges nothing.
TEST(GgufTokenizer, DuplicateTokensAndMalformedMergesLoadAsInLlamaCpp) {
  using Ids = std::vector<std::int32_t>;
  const auto duplicated =
      Tokenizer::from_gguf(crafted_gpt2({"a", "b", "a"}, {1, 1, 1}), "crafted.gguf");
  EXPECT_EQ(duplicated.encode("aba", false), (Ids{2, 1, 2}));
  EXPECT_EQ(duplicated.decode(Ids{0, 1, 2}), "aba");
  const auto added_twice =
      Tokenizer::from_gguf(crafted_gpt2({"a", "<x>", "b", "<x>"}, {1, 4, 1, 4}), "crafted.gguf");
  EXPECT_EQ(added_twice.encode("a<x>b", false), (Ids{0, 3, 2}));
  EXPECT_EQ(added_twice.decode(Ids{1, 3}), "<x><x>");
  const auto merged =
      Tokenizer::from_gguf(with(crafted_gpt2({"a", "b", "ab"}, {1, 1, 1}), "tokenizer.ggml.merges",
                                string_array({"ab", "a b"})),
                           "crafted.gguf");
  EXPECT_EQ(merged.encode("ab", false), (Ids{2}));
}

// llama.cpp's tokenizer_st_partition lets the longest added token take its matches first, even
// where a shorter one starts further left ("ab" | "bcd" in "abcd"); tokenizers would take "ab".
TEST(GgufTokenizer, LongerAddedTokensClaimTheirMatchesFirst) {
  const auto tokenizer = Tokenizer::from_gguf(
      crafted_gpt2({"a", "b", "c", "d", "ab", "bcd"}, {1, 1, 1, 1, 4, 4}), "crafted.gguf");
  using Ids = std::vector<std::int32_t>;
  EXPECT_EQ(tokenizer.encode("abcd", false), (Ids{0, 5}));
  EXPECT_EQ(tokenizer.encode("cabab", false), (Ids{2, 4, 4}));
  EXPECT_EQ(tokenizer.encode("abcdab"), (Ids{0, 5, 4}));
  // User-defined tokens are text, not special: decoded even when skipping special tokens.
  EXPECT_EQ(tokenizer.decode(Ids{0, 5, 4}), "abcdab");
  EXPECT_FALSE(tokenizer.adds_bos());
}

// llama.cpp's regexes for a family cut text as that family's tokenizer.json pre-tokenizer does
// (tests/golden/pretokenizer-splits.json, whose splits Python's regex module computed), save
// where llama.cpp departs from it: no NFC normalizer for Qwen2, and for DeepSeek LLM/V2 digit
// runs kept whole (\p{N}+) where the tokenizer.json splits each digit alone.
TEST(GgufTokenizer, PreTokenizerRegexesMatchTheFamiliesTokenizerJson) {
  nlohmann::json golden;
  std::ifstream(fs::path(MOED_GOLDEN_DIR) / "pretokenizer-splits.json") >> golden;
  const std::pair<const char*, const char*> families[] = {{"gpt2-bytelevel", "gpt-2"},
                                                          {"qwen2", "qwen2"},
                                                          {"llama3", "llama-bpe"},
                                                          {"deepseek-v3", "deepseek-v3"},
                                                          {"deepseek-v2", "deepseek-llm"}};
  GgufMetadata base("crafted.gguf");
  base.add("tokenizer.ggml.model", GgufValue{std::string("gpt2")});
  base.add("tokenizer.ggml.tokens", string_array({"a"}));
  base.add("tokenizer.ggml.merges", string_array({}));
  base.add("tokenizer.ggml.add_bos_token", GgufValue{false});  // llama-bpe's default is true
  auto texts = random_texts(400, true);
  for (const auto& c : golden["gpt2-bytelevel"]["cases"]) texts.push_back(c["text"]);
  for (const auto& [family, pre] : families) {
    SCOPED_TRACE(family);
    ASSERT_TRUE(golden.contains(family));
    auto pre_tokenizer = golden[family]["pre_tokenizer"];
    for (auto& step : pre_tokenizer["pretokenizers"])
      if (step["type"] == "Digits")
        step = {{"type", "Split"},
                {"pattern", {{"Regex", "\\p{N}+"}}},
                {"behavior", "Isolated"},
                {"invert", false}};
    const nlohmann::json tokenizer_json = {
        {"model", {{"type", "BPE"}, {"vocab", {{"a", 0}}}, {"merges", nlohmann::json::array()}}},
        {"pre_tokenizer", pre_tokenizer}};
    const auto hf = Tokenizer::from_json(tokenizer_json.dump());
    const auto gguf = Tokenizer::from_gguf(with(base, "tokenizer.ggml.pre", GgufValue{pre}), pre);
    for (const auto& text : texts)
      EXPECT_EQ(gguf.pre_tokenize(text), hf.pre_tokenize(text)) << text;
    const bool departs = std::string(family) == "deepseek-v2";
    for (const auto& c : golden[family]["cases"]) {
      const std::string text = c["text"];
      if (departs || (golden[family]["normalizer"].is_object() &&
                      text.find('\xcc') != std::string::npos))  // combining marks NFC would join
        continue;
      EXPECT_EQ(gguf.pre_tokenize(text), c["pieces"].get<std::vector<std::string>>()) << text;
    }
  }
}

// llama.cpp ends generation on EOS, the eot/eom ids and tokens it knows by their text, which it
// makes control tokens if the converter did not; o200k_harmony's <|end|> is then plain text.
TEST(GgufTokenizer, EndOfGenerationIsLlamaCppsSet) {
  using Ids = std::vector<std::int32_t>;
  EXPECT_EQ(load_tokenizer(kModels / "tiny-f32.gguf").end_of_generation_ids(), Ids{2});
  const auto bytelevel = load_tokenizer(kModels / "tiny-bytelevel-q6_k-00001-of-00003.gguf");
  EXPECT_EQ(bytelevel.end_of_generation_ids(), Ids{*bytelevel.eos_id()});
  EXPECT_EQ(load_tokenizer(kModels / "tiny-f32").end_of_generation_ids(), Ids{2});

  // 0 a, 1 b, 2 <|im_end|> (normal), 3 <|endoftext|>, 4 <x>, 5 <|end|>, 6 <|return|>, 7 <|call|>
  auto metadata = crafted_gpt2(
      {"a", "b", "<|im_end|>", "<|endoftext|>", "<x>", "<|end|>", "<|return|>", "<|call|>"},
      {1, 1, 1, 3, 3, 3, 3, 3});
  metadata.add("tokenizer.ggml.eos_token_id", GgufValue{std::uint32_t{3}});
  metadata.add("tokenizer.ggml.eot_token_id", GgufValue{std::uint32_t{4}});
  const auto tokenizer = Tokenizer::from_gguf(metadata, "crafted.gguf");
  EXPECT_EQ(tokenizer.end_of_generation_ids(), (Ids{2, 3, 4, 6, 7}));
  EXPECT_TRUE(tokenizer.is_special(2));
  EXPECT_EQ(tokenizer.encode("a<|im_end|>b", false), (Ids{0, 2, 1}));
  EXPECT_EQ(tokenizer.decode(Ids{0, 2, 5, 1}), "a<|end|>b");
}
