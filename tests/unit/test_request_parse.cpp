// Request validation (daemon/server/request_parse.hpp): what the fuzz target
// tests/fuzz/fuzz_http_request.cpp found, kept as regression tests.

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "moed/server/request_parse.hpp"

namespace {

using namespace moed::server;

const ModelLimits kLimits{"tiny", 512, 4096, 4, 8, 16};

std::vector<std::int32_t> one_token_per_byte(const std::string& text) {
  return std::vector<std::int32_t>(text.begin(), text.end());
}

// Returns the field a rejected body names; "" when it was accepted.
std::string rejected_field(const std::string& body) {
  try {
    (void)parse_completion(parse_body(body), kLimits, one_token_per_byte);
  } catch (const RequestError& e) {
    return e.field();
  }
  return "";
}

TEST(RequestParse, AcceptsAValidCompletion) {
  const auto g = parse_completion(
      parse_body(R"({"prompt": "Hi", "max_tokens": 8, "temperature": 0.5, "stop": "."})"), kLimits,
      one_token_per_byte);
  EXPECT_EQ(g.prompt, (std::vector<std::int32_t>{'H', 'i'}));
  EXPECT_EQ(g.max_tokens, 8);
  EXPECT_FLOAT_EQ(g.temperature, 0.5f);
  EXPECT_EQ(g.stops, std::vector<std::string>{"."});
}

TEST(RequestParse, ResponseFormatJsonObjectAsksForAJsonAnswer) {
  auto json_object = [](const std::string& format) {
    return parse_completion(parse_body(R"({"prompt": "Hi", "response_format": )" + format + "}"),
                            kLimits, one_token_per_byte)
        .json_object;
  };
  EXPECT_TRUE(json_object(R"({"type": "json_object"})"));
  EXPECT_FALSE(json_object(R"({"type": "text"})"));
  EXPECT_FALSE(json_object("null"));
}

// OpenAI's legacy completions stop at 16 tokens by default; its chat has no limit, so the
// daemon's own default (limits.default_chat_max_tokens). A default is not the client's to fit
// the context: the scheduler cuts it, where a max_tokens the client gave is checked here.
TEST(RequestParse, DefaultMaxTokensArePerRouteAndNotCheckedAgainstTheContext) {
  const auto completion =
      parse_completion(parse_body(R"({"prompt": "Hi"})"), kLimits, one_token_per_byte);
  EXPECT_EQ(completion.max_tokens, 16);
  EXPECT_FALSE(completion.max_tokens_given);
  const auto chat = parse_chat(parse_body(R"({"messages": []})"), {1, 2}, kLimits);
  EXPECT_EQ(chat.max_tokens, kLimits.default_chat_max_tokens);
  EXPECT_FALSE(chat.max_tokens_given);
  const auto given = parse_chat(parse_body(R"({"max_tokens": 5})"), {1, 2}, kLimits);
  EXPECT_EQ(given.max_tokens, 5);
  EXPECT_TRUE(given.max_tokens_given);
  const std::vector<std::int32_t> near_the_end(static_cast<std::size_t>(kLimits.context) - 2, 7);
  EXPECT_NO_THROW(parse_chat(parse_body("{}"), near_the_end, kLimits));
  EXPECT_THROW(parse_chat(parse_body(R"({"max_tokens": 3})"), near_the_end, kLimits), RequestError);
}

TEST(RequestParse, StreamOptionsIncludeUsageOnlyWhenStreaming) {
  auto parse = [](const std::string& body) {
    return parse_completion(parse_body(body), kLimits, one_token_per_byte);
  };
  EXPECT_TRUE(
      parse(R"({"prompt": "Hi", "stream": true, "stream_options": {"include_usage": true}})")
          .include_usage);
  EXPECT_FALSE(parse(R"({"prompt": "Hi", "stream": true})").include_usage);
  EXPECT_FALSE(parse(R"({"prompt": "Hi", "stream": true, "stream_options": {}})").include_usage);
  EXPECT_FALSE(
      parse(R"({"prompt": "Hi", "stream_options": {"include_usage": true}})").include_usage);
  EXPECT_TRUE(
      parse_chat(parse_body(R"({"stream": true, "stream_options": {"include_usage": true}})"),
                 {1, 2}, kLimits)
          .include_usage);
  EXPECT_EQ(rejected_field(R"({"prompt": "Hi", "stream": true, "stream_options": true})"),
            "stream_options");
  EXPECT_EQ(rejected_field(
                R"({"prompt": "Hi", "stream": true, "stream_options": {"include_usage": "yes"}})"),
            "stream_options.include_usage");
}

// Calls come back as tool_calls, only the first where "parallel_tool_calls" is false, and as
// function_call where the older "functions" are offered.
TEST(RequestParse, ParallelToolCallsIsABooleanThatDefaultsToTrue) {
  auto calls_as = [](const char* body) {
    return parse_chat(parse_body(body), {1, 2}, kLimits).calls_as;
  };
  EXPECT_EQ(calls_as(R"({"tools": []})"), CallsAs::tool_calls);
  EXPECT_EQ(calls_as(R"({"tools": [], "parallel_tool_calls": true})"), CallsAs::tool_calls);
  EXPECT_EQ(calls_as(R"({"tools": [], "parallel_tool_calls": false})"), CallsAs::first_tool_call);
  EXPECT_EQ(calls_as(R"({"functions": []})"), CallsAs::function_call);
  try {
    parse_chat(parse_body(R"({"parallel_tool_calls": "no"})"), {1, 2}, kLimits);
    ADD_FAILURE() << "a string was accepted";
  } catch (const RequestError& e) {
    EXPECT_EQ(e.field(), "parallel_tool_calls");
  }
}

// Found by fuzz_http_request: max_tokens near INT64_MAX overflowed max_tokens + prompt tokens
// (undefined behaviour; in practice it wrapped negative and passed the context check).
TEST(RequestParse, HugeMaxTokensIsRejectedNotOverflowed) {
  EXPECT_EQ(rejected_field(R"({"prompt": "Hi", "max_tokens": 9223372036854775807})"), "max_tokens");
  EXPECT_EQ(rejected_field(R"({"prompt": [1, 2, 3], "max_tokens": 9223372036854775806})"),
            "max_tokens");
  EXPECT_EQ(rejected_field(R"({"prompt": "Hi", "max_tokens": 4094})"), "");
  EXPECT_EQ(rejected_field(R"({"prompt": "Hi", "max_tokens": 4095})"), "max_tokens");
}

// Found by reading after fuzzing: a body of 200,000 nested brackets in a field whose error message
// quotes the value overflowed the stack (the JSON writer recurses per level), killing the
// daemon. Bodies are now limited in depth when parsed.
TEST(RequestParse, DeeplyNestedBodiesAreRejectedWhenParsed) {
  const std::size_t depth = 200000;
  const std::string deep = std::string(depth, '[') + std::string(depth, ']');
  try {
    (void)parse_body(R"({"prompt": [1], "stop": [)" + deep + "]}");
    FAIL() << "accepted a body nested " << depth << " levels";
  } catch (const RequestError& e) {
    EXPECT_NE(std::string(e.what()).find("nests deeper than"), std::string::npos) << e.what();
  }
  const std::size_t limit = 64;  // kMaxBodyDepth
  const std::string deepest = std::string(limit, '[') + std::string(limit, ']');
  EXPECT_NO_THROW((void)parse_body(R"({"tools": )" + deepest + "}"));
  EXPECT_THROW((void)parse_body(R"({"tools": [)" + deepest + "]}"), RequestError);
}

TEST(RequestParse, CacheSettingsAcceptEveryPolicyAndNameABadOne) {
  for (const char* policy : {"lru", "lfu", "arc", "tinylfu"})
    EXPECT_EQ(
        parse_cache_settings(parse_body(std::string(R"({"policy": ")") + policy + "\"}")).policy,
        policy);
  try {
    (void)parse_cache_settings(parse_body(R"({"policy": "mru"})"));
    ADD_FAILURE() << "accepted mru";
  } catch (const RequestError& e) {
    EXPECT_EQ(e.field(), "policy");
    EXPECT_NE(std::string(e.what()).find("'mru' is not one of lru, lfu, arc, tinylfu"),
              std::string::npos)
        << e.what();
  }
}

TEST(RequestParse, CacheSettingsTakeAnAutoPinShareFromZeroToOne) {
  EXPECT_FALSE(parse_cache_settings(parse_body(R"({"policy": "lru"})")).auto_pin.has_value());
  EXPECT_EQ(parse_cache_settings(parse_body(R"({"auto_pin": 0.25})")).auto_pin, 0.25);
  EXPECT_EQ(parse_cache_settings(parse_body(R"({"auto_pin": 0})")).auto_pin, 0.0);
  for (const char* bad :
       {R"({"auto_pin": 1.5})", R"({"auto_pin": -0.1})", R"({"auto_pin": "25%"})"}) {
    try {
      (void)parse_cache_settings(parse_body(bad));
      ADD_FAILURE() << "accepted " << bad;
    } catch (const RequestError& e) {
      EXPECT_EQ(e.field(), "auto_pin") << bad;
    }
  }
}

TEST(RequestParse, SimulateTakesMoectlsOptionsAndNamesABadOne) {
  const auto plain = parse_simulate_request(parse_body(R"({"blocks": [4, 8]})"));
  EXPECT_EQ(plain.blocks, (std::vector<std::uint64_t>{4, 8}));
  EXPECT_EQ(plain.auto_pin_share, 0.0);
  EXPECT_EQ(plain.prefetch.horizons, 0);
  EXPECT_EQ(
      parse_simulate_request(parse_body(R"({"blocks": [4], "auto_pin": 0.5})")).auto_pin_share,
      0.5);
  const auto full = parse_simulate_request(parse_body(
      R"({"blocks": [16], "prefetch": 2, "predictor": "previous", "prefetch_width": 3,
          "reads_per_layer": 18446744073709551615})"));
  EXPECT_EQ(full.prefetch.horizons, 2);
  EXPECT_EQ(full.prefetch.predictor, moed::memtier::RoutingPredictor::Kind::previous);
  EXPECT_EQ(full.prefetch.width, 3);
  EXPECT_EQ(full.prefetch.reads_per_layer, 18446744073709551615u);
  const auto both =
      parse_simulate_request(parse_body(R"({"blocks": [4], "prefetch": 1, "auto_pin": 0.25})"));
  EXPECT_EQ(both.prefetch.horizons, 1);
  EXPECT_EQ(both.auto_pin_share, 0.25);
  const std::pair<const char*, const char*> bad[] = {
      {R"({"prefetch": 1})", "blocks"},
      {R"({"blocks": [-1]})", "blocks"},
      {R"({"blocks": [4], "prefetch": 3})", "prefetch"},
      {R"({"blocks": [4], "predictor": "oracle"})", "predictor"},
      {R"({"blocks": [4], "predictor": 1})", "predictor"},
      {R"({"blocks": [4], "auto_pin": 2})", "auto_pin"},
      {R"({"blocks": [4], "prefetch_width": -1})", "prefetch_width"},
      {R"({"blocks": [4], "reads_per_layer": 1.5})", "reads_per_layer"},
      {R"({"blocks": [4], "reads_per_layer": -1})", "reads_per_layer"},
  };
  for (const auto& [body, field] : bad) {
    try {
      (void)parse_simulate_request(parse_body(body));
      ADD_FAILURE() << "accepted " << body;
    } catch (const RequestError& e) {
      EXPECT_EQ(e.field(), field) << body << ": " << e.what();
    }
  }
}

std::string chat_rejected_field(const std::string& body) {
  try {
    (void)chat_context(parse_body(body), "<s>", "</s>");
  } catch (const RequestError& e) {
    return e.field();
  }
  return "";
}

// OpenAI's API lets an assistant turn that calls tools leave out its content or send null (its
// client library sends an answer with calls back so); the template then sees "", as llama.cpp and
// vLLM give it (Qwen3's first template cannot take null). Every other turn needs its content.
TEST(RequestParse, AnAssistantTurnCallingToolsMayLeaveOutItsContent) {
  const auto context = chat_context(parse_body(R"({"messages": [
      {"role": "user", "content": "weather?"},
      {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
        "function": {"name": "get_weather", "arguments": "{}"}}]},
      {"role": "tool", "tool_call_id": "c1", "content": "Sunny"}]})"),
                                    "<s>", "</s>");
  EXPECT_EQ(context["messages"][1]["content"], "");
  EXPECT_EQ(context["messages"][1]["tool_calls"][0]["function"]["name"], "get_weather");
  const auto null_content = chat_context(parse_body(R"({"messages": [
      {"role": "assistant", "content": null, "function_call": {"name": "f", "arguments": "{}"}},
      {"role": "user", "content": null}]})"),
                                         "<s>", "</s>");
  EXPECT_EQ(null_content["messages"][0]["content"], "");
  EXPECT_TRUE(null_content["messages"][1]["content"].is_null());  // not a calling turn
  EXPECT_EQ(chat_rejected_field(R"({"messages": [{"role": "assistant"}]})"), "messages[0].content");
  EXPECT_EQ(chat_rejected_field(R"({"messages": [{"role": "user", "tool_calls": []}]})"),
            "messages[0].content");
  EXPECT_EQ(chat_rejected_field(R"({"messages": [{"role": "assistant", "tool_calls": []}]})"),
            "messages[0].content");
  EXPECT_EQ(chat_rejected_field(R"({"messages": [{"role": "assistant", "tool_calls": null}]})"),
            "messages[0].content");
  EXPECT_EQ(chat_rejected_field(R"({"messages": [{"role": "tool", "tool_call_id": "c1"}]})"),
            "messages[0].content");
}

// OpenAI's sampling fields moed honours: penalties and logit_bias reach the request; top_p 0 is
// in range (it keeps the most likely token).
TEST(RequestParse, TakesPenaltiesLogitBiasAndTopPZero) {
  const auto g =
      parse_completion(parse_body(R"({"prompt": "Hi", "top_p": 0, "presence_penalty": -1.5,
                     "frequency_penalty": 2, "logit_bias": {"17": -100, "3": 2.5}})"),
                       kLimits, one_token_per_byte);
  EXPECT_FLOAT_EQ(g.top_p, 0.0f);
  EXPECT_FLOAT_EQ(g.presence_penalty, -1.5f);
  EXPECT_FLOAT_EQ(g.frequency_penalty, 2.0f);
  EXPECT_EQ(g.logit_bias, (std::vector<std::pair<std::int32_t, float>>{{17, -100.0f}, {3, 2.5f}}));
  EXPECT_EQ(rejected_field(R"({"prompt": "x", "logit_bias": [1]})"), "logit_bias");
  EXPECT_EQ(rejected_field(R"({"prompt": "x", "logit_bias": {"x1": 1}})"), "logit_bias.x1");
  EXPECT_EQ(rejected_field(R"({"prompt": "x", "logit_bias": {"": 1}})"), "logit_bias.");
  EXPECT_EQ(rejected_field(R"({"prompt": "x", "logit_bias": {"512": 1}})"), "logit_bias.512");
  EXPECT_EQ(rejected_field(R"({"prompt": "x", "logit_bias": {"-1": 1}})"), "logit_bias.-1");
  EXPECT_EQ(rejected_field(R"({"prompt": "x", "logit_bias": {"5": 101}})"), "logit_bias.5");
  EXPECT_EQ(rejected_field(R"({"prompt": "x", "logit_bias": {"5": "1"}})"), "logit_bias.5");
  EXPECT_EQ(rejected_field(R"({"prompt": "x", "logit_bias": {"5": 1, "05": 1}})"), "logit_bias.05");
  EXPECT_EQ(rejected_field(R"({"prompt": "x", "logit_bias": {"-0": 1}})"), "logit_bias.-0");
  EXPECT_EQ(rejected_field(R"({"prompt": "x", "frequency_penalty": -2.5})"), "frequency_penalty");
  EXPECT_EQ(rejected_field(R"({"prompt": "x", "top_p": 1.5})"), "top_p");
}

// What moed cannot do is refused, naming the field, rather than ignored: several choices, output
// to a schema whose root is not an object, insertion, a call forced where no tools are offered.
TEST(RequestParse, RefusesWhatItCannotDo) {
  EXPECT_EQ(rejected_field(R"({"prompt": "x", "n": 2})"), "n");
  EXPECT_EQ(rejected_field(R"({"prompt": "x", "best_of": 2})"), "best_of");
  EXPECT_EQ(rejected_field(R"({"prompt": "x", "best_of": 1, "suffix": ""})"), "");
  EXPECT_EQ(rejected_field(R"({"prompt": "x", "suffix": "}"})"), "suffix");
  EXPECT_EQ(rejected_field(R"({"prompt": "x", "response_format": {"type": "text"}})"), "");
  EXPECT_EQ(rejected_field(R"({"prompt": "x", "response_format": {"type": "json_object"}})"), "");
  EXPECT_EQ(rejected_field(R"({"prompt": "x", "response_format": {"type": "json_schema",
                                "json_schema": {"name": "a", "schema": {}}}})"),
            "response_format.json_schema.schema");
  EXPECT_EQ(rejected_field(R"({"prompt": "x", "response_format": "json"})"), "response_format");
  EXPECT_EQ(chat_rejected_field(R"({"messages": [{"role": "user", "content": "a"}],
                                    "tool_choice": "auto"})"),
            "");
  // In chat these come before the messages (and so before the template renders them).
  EXPECT_EQ(chat_rejected_field(R"({"messages": 3, "n": 2})"), "n");
  EXPECT_EQ(chat_rejected_field(R"({"messages": 3, "response_format": {"type": "json_schema"}})"),
            "response_format.json_schema");
  EXPECT_EQ(chat_rejected_field(R"({"messages": 3, "response_format": {"type": "xml"}})"),
            "response_format.type");
  EXPECT_EQ(chat_rejected_field(R"({"messages": [{"role": "user", "content": "a"}],
                                    "tool_choice": "required"})"),
            "tool_choice");
  EXPECT_EQ(chat_rejected_field(R"({"messages": [{"role": "user", "content": "a"}],
                                    "tool_choice": {"type": "function",
                                                    "function": {"name": "f"}}})"),
            "tool_choice");
}

// Tools reach the template unless tool_choice is "none"; OpenAI's older functions and
// function_call work alike, each function wrapped as a tool.
TEST(RequestParse, ToolsReachTheTemplateUnlessTheChoiceIsNone) {
  const std::string messages = R"("messages": [{"role": "user", "content": "a"}])";
  const std::string tool = R"({"type": "function", "function": {"name": "f"}})";
  auto context_of = [&](const std::string& rest) {
    return chat_context(parse_body("{" + messages + ", " + rest + "}"), "<s>", "</s>");
  };
  EXPECT_EQ(context_of(R"("tools": [)" + tool + "]")["tools"][0]["function"]["name"], "f");
  EXPECT_FALSE(
      context_of(R"("tools": [)" + tool + R"(], "tool_choice": "none")").contains("tools"));
  const auto legacy = context_of(R"("functions": [{"name": "g"}], "function_call": "auto")");
  EXPECT_EQ(legacy["tools"][0]["type"], "function");
  EXPECT_EQ(legacy["tools"][0]["function"]["name"], "g");
  EXPECT_FALSE(
      context_of(R"("functions": [{"name": "g"}], "function_call": "none")").contains("tools"));
  EXPECT_EQ(chat_rejected_field("{" + messages + R"(, "function_call": {"name": "g"}})"),
            "function_call");
  EXPECT_EQ(chat_rejected_field("{" + messages + R"(, "tool_choice": "required",
                                    "functions": [{"name": "g"}]})"),
            "tool_choice");
}

// tool_choice "required" forces a call to any tool offered, a named tool (or the older
// function_call naming a function) to that one; a name not offered, a choice without tools, or a
// name the call could not be written with are the field's fault.
TEST(RequestParse, ToolChoiceForcesACallToTheToolsItNames) {
  const std::string tools = R"("tools": [{"type": "function", "function": {"name": "get_weather"}},
                                         {"type": "function", "function": {"name": "get_time"}}])";
  auto forced = [&](const std::string& rest) {
    return parse_chat(parse_body("{" + tools + ", " + rest + "}"), {1, 2}, kLimits).forced_tools;
  };
  using Names = std::vector<std::string>;
  EXPECT_EQ(forced(R"("tool_choice": "required")"), (Names{"get_weather", "get_time"}));
  EXPECT_EQ(forced(R"("tool_choice": {"type": "function", "function": {"name": "get_time"}})"),
            (Names{"get_time"}));
  auto by_name = [&](const std::string& rest) {
    return parse_chat(parse_body("{" + tools + ", " + rest + "}"), {1, 2}, kLimits).forced_by_name;
  };
  EXPECT_FALSE(by_name(R"("tool_choice": "required")"));
  EXPECT_TRUE(by_name(R"("tool_choice": {"type": "function", "function": {"name": "get_time"}})"));
  EXPECT_EQ(forced(R"("tool_choice": "auto")"), Names{});
  EXPECT_EQ(forced(R"("tool_choice": null)"), Names{});
  EXPECT_EQ(
      parse_chat(parse_body(R"({"functions": [{"name": "g"}], "function_call": {"name": "g"}})"),
                 {1, 2}, kLimits)
          .forced_tools,
      Names{"g"});
  auto rejected = [&](const std::string& body) {
    try {
      (void)parse_chat(parse_body(body), {1, 2}, kLimits);
    } catch (const RequestError& e) {
      return e.field();
    }
    return std::string();
  };
  EXPECT_EQ(rejected("{" + tools +
                     R"(, "tool_choice": {"type": "function", "function": {"name": "f"}}})"),
            "tool_choice.function.name");
  EXPECT_EQ(rejected("{" + tools + R"(, "tool_choice": "sometimes"})"), "tool_choice");
  EXPECT_EQ(rejected("{" + tools + R"(, "tool_choice": {"type": "function"}})"), "tool_choice");
  EXPECT_EQ(rejected("{" + tools + R"(, "tool_choice": {"type": 5, "function": {"name": "f"}}})"),
            "tool_choice");
  EXPECT_EQ(rejected("{" + tools + R"(, "function_call": {"name": "get_time"}})"), "function_call");
  EXPECT_EQ(rejected(R"({"functions": [{"name": "g"}], "function_call": {"name": "h"}})"),
            "function_call.name");
  EXPECT_EQ(rejected(R"({"tools": [{"type": "function", "function": {"name": "say \"hi\""}}],
                         "tool_choice": "required"})"),
            "tools");
  EXPECT_EQ(rejected("{" + tools + R"(, "tool_choice": "required",
                                       "response_format": {"type": "json_object"}})"),
            "response_format");
}

// response_format json_schema: the schema compiled for the constraint; what moed cannot enforce
// is refused at the keyword when strict, left free otherwise; a tool's parameters are its
// arguments' schema, or any object where a tool that is not strict has parameters moed cannot
// hold a call to.
TEST(RequestParse, JsonSchemaFormatsAndToolParametersAreCompiled) {
  auto parsed = [](const std::string& format) {
    return parse_completion(parse_body(R"({"prompt": "Hi", "response_format": )" + format + "}"),
                            kLimits, one_token_per_byte);
  };
  const auto g = parsed(R"({"type": "json_schema", "json_schema": {"name": "answer_1",
      "strict": true, "schema": {"type": "object", "properties": {"a": {"type": "integer"}},
      "required": ["a"], "additionalProperties": false}}})");
  ASSERT_TRUE(g.json_schema);
  EXPECT_FALSE(g.json_object);
  EXPECT_TRUE(parsed(R"({"type": "json_schema", "json_schema": {"name": "a"}})").json_schema);
  EXPECT_TRUE(parsed(R"({"type": "json_schema", "json_schema": {"name": "a", "schema":
      {"type": "object", "properties": {"a": {"type": "array", "uniqueItems": true}}}}})")
                  .json_schema);
  auto rejected = [&](const std::string& format) {
    try {
      (void)parsed(format);
    } catch (const RequestError& e) {
      return e.field();
    }
    return std::string();
  };
  EXPECT_EQ(rejected(R"({"type": "json_schema", "json_schema": {"name": "a", "strict": true,
      "schema": {"type": "object", "properties": {"a": {"type": "array", "uniqueItems": true}}}}})"),
            "response_format.json_schema.schema/properties/a/uniqueItems");
  EXPECT_EQ(rejected(R"({"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}})"),
            "response_format.json_schema.name");
  EXPECT_EQ(rejected(R"({"type": "json_schema", "json_schema": {"schema": {}}})"),
            "response_format.json_schema.name");
  EXPECT_EQ(rejected(R"({"type": "json_schema", "json_schema": {"name": "a", "strict": 1}})"),
            "response_format.json_schema.strict");
  EXPECT_EQ(rejected(R"({"type": "json_schema", "json_schema": {"name": "a", "schema":
      {"type": "object", "properties": {"a": {"$ref": "#/$defs/B"}}}}})"),
            "response_format.json_schema.schema/properties/a/$ref");

  const std::string tools = R"("tools": [
      {"type": "function", "function": {"name": "f", "strict": true, "parameters":
          {"type": "object", "properties": {"n": {"type": "array", "uniqueItems": true}}}}},
      {"type": "function", "function": {"name": "g", "parameters":
          {"type": "object", "properties": {"n": {"type": "array", "uniqueItems": true}}}}},
      {"type": "function", "function": {"name": "h", "parameters": {"type": "string"}}}])";
  auto chat = [&](const std::string& choice) {
    return parse_chat(parse_body("{" + tools + R"(, "tool_choice": )" + choice + "}"), {1, 2},
                      kLimits);
  };
  EXPECT_THROW(chat(R"("required")"), RequestError);
  // Tools that are not functions are passed over, as when the names are read.
  EXPECT_EQ(parse_chat(parse_body(R"({"tools": ["x", {"type": "function"}, {"type": "function",
                "function": {"name": "f", "parameters": {"type": "object"}}}],
                "tool_choice": "required"})"),
                       {1, 2}, kLimits)
                .forced_tool_schemas.size(),
            1u);
  const auto forced = chat(R"({"type": "function", "function": {"name": "g"}})");
  ASSERT_EQ(forced.forced_tool_schemas.size(), 1u);
  EXPECT_TRUE(forced.forced_tool_schemas[0]);
  EXPECT_TRUE(chat(R"({"type": "function", "function": {"name": "h"}})").forced_tool_schemas[0]);
  try {
    (void)chat(R"({"type": "function", "function": {"name": "f"}})");
    ADD_FAILURE() << "a strict tool's uniqueItems is not enforced";
  } catch (const RequestError& e) {
    EXPECT_EQ(e.field(), "tools[0].function.parameters/properties/n/uniqueItems");
  }
}

TEST(RequestParse, TheDeveloperRoleIsTheSystems) {
  const auto context =
      chat_context(parse_body(R"({"messages": [{"role": "developer", "content": "Be brief."},
                                  {"role": "user", "content": "Hi"}]})"),
                   "<s>", "</s>");
  EXPECT_EQ(context["messages"][0]["role"], "system");
  EXPECT_EQ(context["messages"][1]["role"], "user");
}

// A prompt or limit past the context says so in OpenAI's code, which clients match to trim.
TEST(RequestParse, APromptPastTheContextIsContextLengthExceeded) {
  const std::vector<std::int32_t> whole(static_cast<std::size_t>(kLimits.context), 7);
  const std::vector<std::int32_t> near_the_end(static_cast<std::size_t>(kLimits.context) - 2, 7);
  for (const auto& [prompt, body, field] :
       {std::tuple{whole, "{}", "messages"},
        std::tuple{near_the_end, R"({"max_tokens": 3})", "max_tokens"}}) {
    try {
      (void)parse_chat(parse_body(body), prompt, kLimits);
      ADD_FAILURE() << body;
    } catch (const RequestError& e) {
      EXPECT_EQ(e.kind(), RequestError::Kind::context_length_exceeded) << e.what();
      EXPECT_EQ(e.field(), field);
    }
  }
}

}  // namespace
