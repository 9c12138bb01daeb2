#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>

#include "moed/server/tool_calls.hpp"

using namespace moed::server;

namespace {

// The calls as (name, arguments) pairs, the arguments parsed back, so that tests compare values
// rather than spacing.
std::vector<std::pair<std::string, nlohmann::json>> named(
    const std::optional<ParsedCalls>& parsed) {
  std::vector<std::pair<std::string, nlohmann::json>> out;
  if (!parsed) return out;
  for (const auto& call : parsed->calls)
    out.emplace_back(call.name, nlohmann::json::parse(call.arguments));
  return out;
}

const nlohmann::json kParis = {{"city", "Paris"}};
const nlohmann::json kRome = {{"city", "Rome"}, {"days", 3}};

}  // namespace

// The syntaxes as the families' own chat templates render earlier calls (excerpts).
TEST(ToolCallSyntax, ComesFromTheChatTemplate) {
  EXPECT_EQ(tool_call_syntax(R"({{- '<tool_call>\n{"name": "' }}{{- tool_call.name }})"),
            ToolCallSyntax::hermes);
  EXPECT_EQ(tool_call_syntax(R"({{- "[TOOL_CALLS] [" }}{%- for tool in message.tool_calls %})"),
            ToolCallSyntax::mistral);
  EXPECT_EQ(tool_call_syntax("{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + "
                             "tool['type'] + '<｜tool▁sep｜>' + tool['function']['name']}}"),
            ToolCallSyntax::deepseek);
  EXPECT_EQ(tool_call_syntax("{% for m in messages %}[INST] {{ m.content }} [/INST]{% endfor %}"),
            ToolCallSyntax::none);
  // Qwen3-Coder's calls are XML-like inside <tool_call>: not Hermes JSON, so left as text.
  EXPECT_EQ(tool_call_syntax(R"({{- '<tool_call>\n<function=' + tool_call.name + '>\n' }})"),
            ToolCallSyntax::none);
  EXPECT_EQ(tool_calls_opening(ToolCallSyntax::none), "");
  EXPECT_EQ(parse_tool_calls("<tool_call>{\"name\": \"f\"}</tool_call>", ToolCallSyntax::none),
            std::nullopt);
}

TEST(ToolCallParse, HermesCallsOneTagEach) {
  const auto calls = parse_tool_calls(
      "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"
      "\n<tool_call>\n{\"name\": \"plan\", \"arguments\": {\"city\": \"Rome\", \"days\": 3}}\n"
      "</tool_call>\n",
      ToolCallSyntax::hermes);
  ASSERT_TRUE(calls);
  EXPECT_EQ(named(calls), (std::vector<std::pair<std::string, nlohmann::json>>{
                              {"get_weather", kParis}, {"plan", kRome}}));
  EXPECT_EQ(calls->content, "");
  // Ids are OpenAI's shape, one of their own per call.
  EXPECT_TRUE(calls->calls[0].id.starts_with("call_"));
  EXPECT_EQ(calls->calls[0].id.size(), 29u);
  EXPECT_NE(calls->calls[0].id, calls->calls[1].id);
  // The arguments keep the model's key order.
  EXPECT_EQ(calls->calls[1].arguments, R"({"city":"Rome","days":3})");
  // Text between and after the calls stays content, as vLLM and llama.cpp keep it.
  const auto around = parse_tool_calls(
      R"(<tool_call>{"name": "a"}</tool_call> then <tool_call>{"name": "b"}</tool_call>)"
      "\nDone.",
      ToolCallSyntax::hermes);
  ASSERT_TRUE(around);
  EXPECT_EQ(around->calls.size(), 2u);
  EXPECT_EQ(around->content, "then Done.");
}

TEST(ToolCallParse, HermesTakesALastCallCutBeforeItsClosingTagAndNoArguments) {
  EXPECT_EQ(named(parse_tool_calls("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
                                   "{\"city\": \"Paris\"}}\n",
                                   ToolCallSyntax::hermes)),
            (std::vector<std::pair<std::string, nlohmann::json>>{{"get_weather", kParis}}));
  EXPECT_EQ(
      named(parse_tool_calls(R"(<tool_call>{"name": "now"}</tool_call>)", ToolCallSyntax::hermes)),
      (std::vector<std::pair<std::string, nlohmann::json>>{{"now", nlohmann::json::object()}}));
  // Arguments some models write as a JSON string are that text already.
  const auto quoted = parse_tool_calls(
      R"(<tool_call>{"name": "f", "arguments": "{\"a\": 1}"}</tool_call>)", ToolCallSyntax::hermes);
  ASSERT_TRUE(quoted);
  EXPECT_EQ(quoted->calls[0].arguments, R"({"a": 1})");
  // Quoted text that is not JSON becomes a JSON string; null arguments are none.
  const auto text_arguments =
      parse_tool_calls(R"(<tool_call>{"name": "f", "arguments": "Paris"}</tool_call>)"
                       R"(<tool_call>{"name": "g", "arguments": null}</tool_call>)",
                       ToolCallSyntax::hermes);
  ASSERT_TRUE(text_arguments);
  EXPECT_EQ(text_arguments->calls[0].arguments, R"("Paris")");
  EXPECT_EQ(text_arguments->calls[1].arguments, "{}");
}

// A string in the arguments may hold the syntax's closing markers: the JSON is read first.
TEST(ToolCallParse, ArgumentsMayHoldTheClosingMarkers) {
  const nlohmann::json tagged = {{"html", "</tool_call> and <｜tool▁call▁end｜>```"}};
  const std::string arguments = tagged.dump();
  EXPECT_EQ(named(parse_tool_calls(
                "<tool_call>\n{\"name\": \"f\", \"arguments\": " + arguments + "}\n</tool_call>",
                ToolCallSyntax::hermes)),
            (std::vector<std::pair<std::string, nlohmann::json>>{{"f", tagged}}));
  EXPECT_EQ(
      named(parse_tool_calls("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>"
                             "f\n```json\n" +
                                 arguments + "\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
                             ToolCallSyntax::deepseek)),
      (std::vector<std::pair<std::string, nlohmann::json>>{{"f", tagged}}));
  EXPECT_EQ(named(parse_tool_calls("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f<｜tool▁sep｜>" +
                                       arguments + "<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
                                   ToolCallSyntax::deepseek)),
            (std::vector<std::pair<std::string, nlohmann::json>>{{"f", tagged}}));
}

// A forced call written in each syntax's form parses back to that call, for each variant the
// template's source shows.
TEST(CallForm, WritesACallTheParserReadsBack) {
  struct Case {
    ToolCallSyntax syntax;
    const char* template_source;
  };
  for (const auto& [syntax, source] : std::vector<Case>{
           {ToolCallSyntax::hermes, "<tool_call>"},
           {ToolCallSyntax::mistral, "[TOOL_CALLS] ["},
           {ToolCallSyntax::mistral, "[TOOL_CALLS]{{ name }}[ARGS]"},
           {ToolCallSyntax::deepseek, "<｜tool▁calls▁begin｜>...```json"},
           {ToolCallSyntax::deepseek, "<｜tool▁calls▁begin｜>"},
       }) {
    const auto form = call_form(syntax, source);
    ASSERT_TRUE(form) << source;
    const std::string text = form->before_name + "get_weather" + form->before_arguments +
                             R"({"city": "Paris"})" + form->after_arguments;
    EXPECT_TRUE(text.starts_with(tool_calls_opening(syntax))) << text;
    const auto parsed = parse_tool_calls(text, syntax);
    EXPECT_EQ(named(parsed),
              (std::vector<std::pair<std::string, nlohmann::json>>{{"get_weather", kParis}}))
        << text;
    ASSERT_TRUE(parsed);
    EXPECT_EQ(parsed->content, "") << text;
  }
  EXPECT_EQ(call_form(ToolCallSyntax::none, ""), std::nullopt);
}

// What does not parse stays content: nothing the model wrote is lost.
TEST(ToolCallParse, MalformedCallsAreNotCalls) {
  for (const char* text : {
           "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": }\n</tool_call>",  // bad JSON
           "<tool_call>\n{\"arguments\": {}}\n</tool_call>",                         // no name
           "<tool_call>\n{\"name\": \"\"}\n</tool_call>",                            // empty name
           "<tool_call>\n{\"name\": 7}\n</tool_call>",                        // name not text
           "<tool_call>\n{\"name\": \"f\", \"arguments\": 3}\n</tool_call>",  // not an object
           "<tool_call>",                                                     // nothing
           "<tool_call>\n{\"name\": \"f\", \"argu",                           // cut short
       })
    EXPECT_EQ(parse_tool_calls(text, ToolCallSyntax::hermes), std::nullopt) << text;
}

TEST(ToolCallParse, MistralListAndV11Calls) {
  const auto list = parse_tool_calls(
      R"([TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "a1b2c3d4e"},)"
      R"( {"name": "plan", "arguments": {"city": "Rome", "days": 3}}])",
      ToolCallSyntax::mistral);
  EXPECT_EQ(named(list), (std::vector<std::pair<std::string, nlohmann::json>>{
                             {"get_weather", kParis}, {"plan", kRome}}));
  ASSERT_TRUE(list);
  EXPECT_EQ(list->calls[0].id, "a1b2c3d4e");  // the model's own id, which the tool result cites
  // Mistral's templates take only ids of 9 letters or digits in the next turn.
  const std::string& made = list->calls[1].id;
  EXPECT_EQ(made.size(), 9u);
  EXPECT_TRUE(std::all_of(made.begin(), made.end(),
                          [](char c) { return std::isalnum(static_cast<unsigned char>(c)); }));
  // A JSON string holding brackets does not end the list early.
  EXPECT_EQ(named(parse_tool_calls(R"([TOOL_CALLS][{"name": "f", "arguments": {"q": "a]}["}}])",
                                   ToolCallSyntax::mistral)),
            (std::vector<std::pair<std::string, nlohmann::json>>{{"f", {{"q", "a]}["}}}}));

  const auto v11 = parse_tool_calls(
      R"([TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]plan[CALL_ID]x9[ARGS]{"city": "Rome", "days": 3})",
      ToolCallSyntax::mistral);
  EXPECT_EQ(named(v11), (std::vector<std::pair<std::string, nlohmann::json>>{
                            {"get_weather", kParis}, {"plan", kRome}}));
  ASSERT_TRUE(v11);
  EXPECT_EQ(v11->calls[1].id, "x9");
  const auto after =
      parse_tool_calls(R"([TOOL_CALLS] [{"name": "f"}] more)", ToolCallSyntax::mistral);
  ASSERT_TRUE(after);
  EXPECT_EQ(after->content, "more");
  for (const char* text : {"[TOOL_CALLS] [", "[TOOL_CALLS] []",
                           "[TOOL_CALLS]f[ARGS]{\"a\":", "[TOOL_CALLS]f{\"a\": 1}"})
    EXPECT_EQ(parse_tool_calls(text, ToolCallSyntax::mistral), std::nullopt) << text;
  // A name or id that could not be written in an answer (bytes that are not UTF-8, control
  // characters; fuzz_tool_calls found the first) is no call.
  using namespace std::string_literals;
  for (const std::string& text :
       {"[TOOL_CALLS]get_weat\xf0\x00]\xac[ARGS]{}"s, "[TOOL_CALLS]f[CALL_ID]\xff[ARGS]{}"s,
        R"([TOOL_CALLS] [{"name": "f\u0001", "arguments": {}}])"s})
    EXPECT_EQ(parse_tool_calls(text, ToolCallSyntax::mistral), std::nullopt) << text;
}

TEST(ToolCallParse, DeepSeekV3AndV31Calls) {
  const auto v3 = parse_tool_calls(
      "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
      "{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>"
      "plan\n```json\n{\"city\": \"Rome\", \"days\": "
      "3}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
      ToolCallSyntax::deepseek);
  EXPECT_EQ(named(v3), (std::vector<std::pair<std::string, nlohmann::json>>{{"get_weather", kParis},
                                                                            {"plan", kRome}}));
  const auto v31 = parse_tool_calls(
      "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{\"city\": \"Paris\"}"
      "<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
      ToolCallSyntax::deepseek);
  EXPECT_EQ(named(v31),
            (std::vector<std::pair<std::string, nlohmann::json>>{{"get_weather", kParis}}));
  // A V3.1 tool may be named "function" itself.
  EXPECT_EQ(
      named(parse_tool_calls("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>"
                             "{\"city\": \"Paris\"}<｜tool▁call▁end｜>",
                             ToolCallSyntax::deepseek)),
      (std::vector<std::pair<std::string, nlohmann::json>>{{"function", kParis}}));
  const auto after = parse_tool_calls(
      "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f<｜tool▁sep｜>{}<｜tool▁call▁end｜>"
      "<｜tool▁calls▁end｜> after",
      ToolCallSyntax::deepseek);
  ASSERT_TRUE(after);
  EXPECT_EQ(after->content, "after");
  // Generation may end before the closing marker of the list, not of a call.
  EXPECT_TRUE(
      parse_tool_calls("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f<｜tool▁sep｜>{}"
                       "<｜tool▁call▁end｜>",
                       ToolCallSyntax::deepseek));
  for (const char* text : {
           "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f<｜tool▁sep｜>{}",       // call not closed
           "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f{}<｜tool▁call▁end｜>",  // no separator
           "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n{}"
           "<｜tool▁call▁end｜>",                         // V3's fence missing
           "<｜tool▁calls▁begin｜><｜tool▁calls▁end｜>",  // no call
           "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f{}<｜tool▁call▁end｜><｜tool▁call▁begin｜>g"
           "<｜tool▁sep｜>{}<｜tool▁call▁end｜>",  // the first call's separator missing
       })
    EXPECT_EQ(parse_tool_calls(text, ToolCallSyntax::deepseek), std::nullopt) << text;
}

// OpenAI's shapes: a message's tool_calls, a stream delta's (each with its index), the first call
// alone where the request said "parallel_tool_calls": false, and the older function_call (the
// first call) for a request that gave functions.
TEST(ToolCallFields, FollowOpenAisChatShapes) {
  const std::vector<ToolCall> calls = {{"call_1", "get_weather", R"({"city":"Paris"})"},
                                       {"call_2", "plan", R"({"city":"Rome","days":3})"}};
  const auto message = tool_call_fields(calls, false, CallsAs::tool_calls);
  EXPECT_EQ(message, nlohmann::json::parse(R"({"tool_calls": [
      {"id": "call_1", "type": "function",
       "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
      {"id": "call_2", "type": "function",
       "function": {"name": "plan", "arguments": "{\"city\":\"Rome\",\"days\":3}"}}]})"));
  const auto delta = tool_call_fields(calls, true, CallsAs::tool_calls);
  ASSERT_EQ(delta["tool_calls"].size(), 2u);
  EXPECT_EQ(delta["tool_calls"][1]["index"], 1);
  EXPECT_EQ(delta["tool_calls"][1]["function"]["name"], "plan");
  const auto first = tool_call_fields(calls, true, CallsAs::first_tool_call);
  ASSERT_EQ(first["tool_calls"].size(), 1u);
  EXPECT_EQ(first["tool_calls"][0]["id"], "call_1");
  EXPECT_EQ(first["tool_calls"][0]["index"], 0);
  EXPECT_EQ(tool_call_fields(calls, false, CallsAs::function_call),
            nlohmann::json::parse(R"({"function_call": {"name": "get_weather",
                                                      "arguments": "{\"city\":\"Paris\"}"}})"));
}
