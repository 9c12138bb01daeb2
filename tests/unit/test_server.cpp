#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "moed/model/tokenizer.hpp"
#include "moed/server/http_server.hpp"
#include "moed/server/text_stream.hpp"

using namespace moed::server;

TEST(PlainError, AnyMessageGivesValidJsonInTheOpenAiShape) {
  // Control characters, quotes, backslashes and bytes that are not UTF-8, as client input
  // quoted in an error message may hold.
  const std::string message = std::string("bad \"x\" \\ tab\there\nnul:") + '\0' + "\x01\xff end";
  const Response r = plain_error(http::status::bad_request, message, "invalid_request_error");
  EXPECT_EQ(r.result(), http::status::bad_request);
  EXPECT_EQ(r[http::field::content_type], "application/json");
  EXPECT_FALSE(r.keep_alive());
  const auto body = nlohmann::json::parse(r.body());  // throws on invalid JSON
  const std::string got = body.at("error").at("message");
  EXPECT_EQ(got, std::string("bad \"x\" \\ tab\there\nnul:") + '\0' + "\x01\xEF\xBF\xBD end");
  EXPECT_EQ(body["error"]["type"], "invalid_request_error");
  EXPECT_TRUE(body["error"]["code"].is_null());
}

namespace {

const std::filesystem::path kModels = MOED_TEST_MODELS;

// What a TextStream gives for an answer fed token by token: the content deltas joined, and
// finish()'s rest.
struct Streamed {
  std::string content, rest;
  std::optional<std::vector<ToolCall>> calls;
  bool stopped = false;
  bool held_partial_opening = true;  // no delta ended inside the calls' opening
};

Streamed stream(const moed::model::Tokenizer& tokenizer, const std::string& answer,
                ToolCallSyntax syntax, std::vector<std::string> stops = {}) {
  TextStream text(tokenizer, std::move(stops), syntax);
  Streamed out;
  const std::string opening(tool_calls_opening(syntax));
  for (const auto id : tokenizer.encode(answer, false)) {
    const std::string delta = text.add(id);
    out.content += delta;
    if (!opening.empty())
      for (std::size_t k = 1; k < opening.size(); ++k)
        if (out.content.ends_with(opening.substr(0, k))) out.held_partial_opening = false;
    if (text.stopped()) break;
  }
  out.rest = text.finish();
  out.calls = text.calls();
  out.stopped = text.stopped();
  EXPECT_EQ(text.text(), out.content + out.rest);
  return out;
}

}  // namespace

// A Qwen answer's call, whose opening tag a byte-level vocabulary spells in several tokens: the
// content before it streams, the tag's first pieces are held until they turn out to open a call,
// and the call comes out parsed rather than as text.
TEST(TextStream, HoldsBackACallAndParsesIt) {
  const auto tokenizer = moed::model::load_tokenizer(kModels / "tiny-qwen2_moe");
  const std::string content = "Let me check the weather. 1 < 2.";
  const std::string call =
      "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n"
      "</tool_call>";
  ASSERT_GT(tokenizer.encode("<tool_call>", false).size(), 1u);
  const auto got = stream(tokenizer, content + call, ToolCallSyntax::hermes);
  EXPECT_EQ(got.content, content);
  EXPECT_EQ(got.rest, "");
  EXPECT_TRUE(got.held_partial_opening);
  ASSERT_TRUE(got.calls);
  ASSERT_EQ(got.calls->size(), 1u);
  EXPECT_EQ((*got.calls)[0].name, "get_weather");
  EXPECT_EQ((*got.calls)[0].arguments, R"({"city":"Paris"})");

  // Without tools (no syntax) the same answer is all content.
  const auto plain = stream(tokenizer, content + call, ToolCallSyntax::none);
  EXPECT_EQ(plain.content + plain.rest, content + call);
  EXPECT_FALSE(plain.calls);
  // A call that does not parse comes back as content at the end, whole.
  const std::string broken = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\"\n";
  const auto kept = stream(tokenizer, content + broken, ToolCallSyntax::hermes);
  EXPECT_EQ(kept.content, content);
  EXPECT_EQ(kept.rest, broken);
  EXPECT_FALSE(kept.calls);
  // A stop string before the call ends the answer there.
  const auto stopped = stream(tokenizer, content + call, ToolCallSyntax::hermes, {"weather"});
  EXPECT_TRUE(stopped.stopped);
  EXPECT_EQ(stopped.content + stopped.rest, "Let me check the ");
  EXPECT_FALSE(stopped.calls);
}

// Reasoning may mention the syntax; the calls are looked for after it (Qwen3 and DeepSeek-R1
// reason in <think>; a template may open the reasoning in the prompt, leaving only its end in the
// answer). Text after the calls stays content.
TEST(TextStream, LooksForCallsAfterTheReasoning) {
  const auto tokenizer = moed::model::load_tokenizer(kModels / "tiny-qwen2_moe");
  const std::string call =
      "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {}}\n</tool_call>";
  for (const std::string reasoning : {"<think>\nI could call <tool_call> here.\n</think>\n\n",
                                      "I could call <tool_call>.</think>\n\n"}) {
    const auto got = stream(tokenizer, reasoning + call + "\nDone.", ToolCallSyntax::hermes);
    EXPECT_EQ(got.content, reasoning);
    EXPECT_EQ(got.rest, "Done.");
    ASSERT_TRUE(got.calls) << reasoning;
    EXPECT_EQ((*got.calls)[0].name, "get_weather");
  }
  // Reasoning cut short by max_tokens: its mention is content, not a call.
  const std::string cut = "<think>\nI could call " + call;
  const auto got = stream(tokenizer, cut, ToolCallSyntax::hermes);
  EXPECT_EQ(got.content + got.rest, cut);
  EXPECT_FALSE(got.calls);
}

// DeepSeek's markers are added tokens. Where a tokenizer marks them special (as Mistral's
// [TOOL_CALLS] is), decoding would drop them; the stream keeps them, as llama-server keeps a
// format's preserved tokens, so the calls still parse.
TEST(TextStream, KeepsTheSyntaxMarkersATokenizerMarksSpecial) {
  const std::string call =
      "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
      "{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
  const auto dir = std::filesystem::temp_directory_path() / "moed-test-special-tool-markers";
  std::filesystem::create_directories(dir);
  for (const char* file : {"tokenizer.json", "tokenizer_config.json"})
    std::filesystem::copy_file(kModels / "tiny-deepseek_v3" / file, dir / file,
                               std::filesystem::copy_options::overwrite_existing);
  nlohmann::json tokenizer_json = nlohmann::json::parse(std::ifstream(dir / "tokenizer.json"));
  for (auto& added : tokenizer_json["added_tokens"])
    if (added["content"].get<std::string>().find("tool") != std::string::npos)
      added["special"] = true;
  std::ofstream(dir / "tokenizer.json") << tokenizer_json.dump();

  for (const auto& model : {kModels / "tiny-deepseek_v3", dir}) {
    const auto tokenizer = moed::model::load_tokenizer(model);
    const auto got = stream(tokenizer, "Checking." + call, ToolCallSyntax::deepseek);
    EXPECT_EQ(got.content, "Checking.") << model;
    ASSERT_TRUE(got.calls) << model;
    EXPECT_EQ((*got.calls)[0].name, "get_weather");
  }
  const auto special = moed::model::load_tokenizer(dir);
  EXPECT_EQ(special.decode(special.encode(call, false)).find("<｜tool▁calls▁begin｜>"),
            std::string::npos);
  std::filesystem::remove_all(dir);
}

// A long answer streams as the decode of all its ids, though the stream decodes each token
// after the text it already returned rather than the whole answer again; in SentencePiece,
// byte-level and GGUF vocabularies, with characters spelled in byte tokens, byte tokens after
// them included (a '"' after "\xc3\xb6" in tiny-f32, which once read as U+FFFD).
TEST(TextStream, ALongAnswerStreamsAsItsWholeDecode) {
  std::string answer;
  for (int i = 0; i < 60; ++i)
    answer += "Line " + std::to_string(i) +
              ": w\xc3\xb6rds \xe2\x9c\x93 and  spaces, \"quotes\", \"\xc3\xb6\"q\xe2\x9c\x93\"\n";
  for (const char* model : {"tiny-f32", "tiny-bytelevel", "tiny-qwen3_moe", "tiny-f32.gguf"}) {
    const auto tokenizer = moed::model::load_tokenizer(kModels / model);
    const auto ids = tokenizer.encode(answer, false);
    ASSERT_GT(ids.size(), 1000u) << model;
    TextStream text(tokenizer, {});
    std::string content;
    for (const auto id : ids) content += text.add(id);
    content += text.finish();
    EXPECT_EQ(content, tokenizer.decode(ids)) << model;
  }
}

// Hugging Face's ByteFallback decodes a run of byte tokens that is not UTF-8 as a whole to one
// U+FFFD per byte, so a stray byte token changes the text of the byte tokens before it: ")" as
// <0x29> reads as U+FFFD once <0xE2> follows. The ")" already returned stays, and the answer
// goes on after it (it used to stop there: every later token gave nothing, finish() too).
TEST(TextStream, GoesOnWhereATokenChangesTextAlreadyReturned) {
  const auto tokenizer = moed::model::load_tokenizer(kModels / "tiny-f32");
  const auto paren = tokenizer.token_id("<0x29>"), stray = tokenizer.token_id("<0xE2>");
  ASSERT_TRUE(paren && stray);
  const std::vector<std::int32_t> ids{*paren};
  ASSERT_EQ(tokenizer.decode(ids), ")");
  ASSERT_EQ(tokenizer.decode(std::vector<std::int32_t>{*paren, *stray}),
            "\xEF\xBF\xBD\xEF\xBF\xBD");
  std::vector<std::int32_t> rest{*stray};
  for (const auto id : tokenizer.encode("ed the end", false)) rest.push_back(id);

  TextStream text(tokenizer, {});
  std::string content = text.add(*paren);
  EXPECT_EQ(content, ")");
  for (const auto id : rest) content += text.add(id);
  content += text.finish();
  EXPECT_EQ(content, ")" + tokenizer.decode(rest));
  EXPECT_EQ(text.text(), content);
  EXPECT_NE(content.find("the end"), std::string::npos) << content;
}
