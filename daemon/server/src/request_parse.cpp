#include "moed/server/request_parse.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdint>
#include <string>

#include "moed/memtier/policy.hpp"

namespace moed::server {
namespace {

// A chat request offers OpenAI's older "functions" (and "function_call") where it has no
// "tools".
bool offers_functions(const Body& body) {
  return !body.contains("tools") || body["tools"].is_null();
}

[[noreturn]] void bad_field(const std::string& field, const std::string& what) {
  throw RequestError(field, what);
}

double number_field(const Body& body, const char* field, double fallback, double lo, double hi,
                    bool lo_open) {
  if (!body.contains(field) || body[field].is_null()) return fallback;
  if (!body[field].is_number()) bad_field(field, "expected a number, got " + body[field].dump());
  const double v = body[field].get<double>();
  if (!(lo_open ? v > lo : v >= lo) || !(v <= hi))
    bad_field(field, body[field].dump() + " is outside " + (lo_open ? "(" : "[") +
                         std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return v;
}

std::int64_t integer_field(const Body& body, const char* field, std::int64_t fallback,
                           std::int64_t lo, std::int64_t hi) {
  if (!body.contains(field) || body[field].is_null()) return fallback;
  if (!body[field].is_number_integer())
    bad_field(field, "expected an integer, got " + body[field].dump());
  const auto v = body[field].get<std::int64_t>();
  if (v < lo || v > hi)
    bad_field(field, std::to_string(v) + " is outside [" + std::to_string(lo) + ", " +
                         std::to_string(hi) + "]");
  return v;
}

bool bool_field(const Body& body, const char* field, bool fallback) {
  if (!body.contains(field) || body[field].is_null()) return fallback;
  if (!body[field].is_boolean())
    bad_field(field, "expected true or false, got " + body[field].dump());
  return body[field].get<bool>();
}

// A schema compiled for constrained sampling (see CompiledSchema::compile for `strict`). One it
// cannot hold an answer to is a 400 at `field` (with the schema's own JSON Pointer), or, where
// `may_fall_back`, no schema.
std::shared_ptr<const CompiledSchema> compiled_schema(const Body& schema, bool strict,
                                                      const std::string& field,
                                                      bool may_fall_back) {
  try {
    return std::make_shared<const CompiledSchema>(CompiledSchema::compile(schema, strict));
  } catch (const SchemaError& e) {
    if (may_fall_back) return nullptr;
    bad_field(field + e.pointer, e.what());
  }
}

bool strict_flag(const Body& parent, const std::string& field) {
  if (!parent.contains("strict") || parent["strict"].is_null()) return false;
  if (!parent["strict"].is_boolean())
    bad_field(field + ".strict", "expected true or false, got " + parent["strict"].dump());
  return parent["strict"].get<bool>();
}

// response_format: "text" leaves the answer free, "json_object" makes it one JSON object,
// "json_schema" an instance of the schema given.
struct AnswerFormat {
  bool json_object = false;
  std::shared_ptr<const CompiledSchema> schema;
};
AnswerFormat answer_format(const Body& body) {
  if (!body.contains("response_format") || body["response_format"].is_null()) return {};
  const auto& format = body["response_format"];
  if (!format.is_object() || !format.contains("type") || !format["type"].is_string())
    bad_field("response_format", "expected an object such as {\"type\": \"json_object\"}");
  const auto type = format["type"].get<std::string>();
  if (type == "text") return {};
  if (type == "json_object") return {true, nullptr};
  if (type != "json_schema")
    bad_field("response_format.type", "'" + type +
                                          "' is not one of \"text\", \"json_object\" and "
                                          "\"json_schema\"");
  if (!format.contains("json_schema") || !format["json_schema"].is_object())
    bad_field("response_format.json_schema",
              "expected an object such as {\"name\": \"answer\", \"schema\": {...}}");
  const Body& spec = format["json_schema"];
  const Body* name = spec.contains("name") ? &spec["name"] : nullptr;
  const std::string name_text = name && name->is_string() ? name->get<std::string>() : "";
  if (name_text.empty() || name_text.size() > 64 ||
      !std::all_of(name_text.begin(), name_text.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
      }))
    bad_field("response_format.json_schema.name",
              "expected 1 to 64 letters, digits, '_' or '-' (as OpenAI's), got " +
                  (name ? name->dump() : std::string("none")));
  const bool strict = strict_flag(spec, "response_format.json_schema");
  if (!spec.contains("schema") || spec["schema"].is_null())
    return {false, std::make_shared<const CompiledSchema>(CompiledSchema::any_object())};
  return {false,
          compiled_schema(spec["schema"], strict, "response_format.json_schema.schema", false)};
}

// The tools a chat request's tool_choice (or function_call) forces a call to: every tool offered
// for "required", the one named; none for "auto", "none" or no choice.
std::vector<std::string> forced_tool_names(const Body& body) {
  const bool legacy = offers_functions(body);
  const std::string tools_field = legacy ? "functions" : "tools";
  const std::string choice_field = legacy ? "function_call" : "tool_choice";
  const std::string other_field = legacy ? "tool_choice" : "function_call";
  auto chooses = [&](const std::string& field) {
    return body.contains(field) && !body[field].is_null() && body[field] != "auto" &&
           body[field] != "none";
  };
  if (chooses(other_field))
    bad_field(other_field, legacy ? "forces a call, but the request offers no tools"
                                  : "belongs with OpenAI's older \"functions\"; with \"tools\", "
                                    "use tool_choice");
  if (!chooses(choice_field)) return {};
  const Body& choice = body[choice_field];
  std::vector<std::string> offered;
  if (body.contains(tools_field) && body[tools_field].is_array())
    for (const auto& tool : body[tools_field]) {
      const Body* function = legacy ? &tool : nullptr;
      if (!legacy && tool.is_object() && tool.contains("function")) function = &tool["function"];
      if (function && function->is_object() && function->contains("name") &&
          (*function)["name"].is_string())
        offered.push_back((*function)["name"].get<std::string>());
    }
  if (offered.empty())
    bad_field(choice_field, "forces a call, but the request offers no " + tools_field);
  std::vector<std::string> forced;
  if (!legacy && choice == "required") {
    forced = offered;
  } else {
    const Body* name = nullptr;
    if (legacy && choice.is_object() && choice.contains("name")) name = &choice["name"];
    if (!legacy && choice.is_object() && choice.contains("type") && choice["type"] == "function" &&
        choice.contains("function") && choice["function"].is_object() &&
        choice["function"].contains("name"))
      name = &choice["function"]["name"];
    if (!name || !name->is_string())
      bad_field(choice_field,
                legacy ? "expected \"auto\", \"none\" or {\"name\": ...}"
                       : "expected \"auto\", \"none\", \"required\" or {\"type\": \"function\", "
                         "\"function\": {\"name\": ...}}");
    const auto wanted = name->get<std::string>();
    if (std::find(offered.begin(), offered.end(), wanted) == offered.end())
      bad_field(choice_field + (legacy ? ".name" : ".function.name"),
                "'" + wanted + "' is not among the " + tools_field + " offered");
    forced = {wanted};
  }
  // The name is written into the call as it is (inside a JSON string, for most syntaxes).
  for (const auto& name : forced)
    if (name.empty() || name.size() > 64 || !std::all_of(name.begin(), name.end(), [](char c) {
          return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
        }))
      bad_field(tools_field,
                "to force a call to '" + name +
                    "', its name must be 1 to 64 letters, digits, '_', '-' or '.' (as OpenAI's)");
  return forced;
}

// The schema each forced tool's arguments follow: its parameters. A tool that is not strict and
// whose parameters moed cannot hold a call to takes any object, as before schemas were read.
std::vector<std::shared_ptr<const CompiledSchema>> forced_tool_schemas(
    const Body& body, const std::vector<std::string>& forced) {
  static const auto any_object =
      std::make_shared<const CompiledSchema>(CompiledSchema::any_object());
  const bool legacy = offers_functions(body);
  const std::string tools_field = legacy ? "functions" : "tools";
  std::vector<std::shared_ptr<const CompiledSchema>> schemas;
  for (const auto& name : forced) {
    std::shared_ptr<const CompiledSchema> schema;
    const Body& tools = body[tools_field];
    for (std::size_t i = 0; i < tools.size(); ++i) {
      const Body& tool = tools[i];
      const Body* function = legacy ? &tool : nullptr;
      if (!legacy && tool.is_object() && tool.contains("function")) function = &tool["function"];
      if (!function || !function->is_object() || !function->contains("name") ||
          (*function)["name"] != name)
        continue;
      const std::string field =
          tools_field + "[" + std::to_string(i) + "]" + (legacy ? "" : ".function");
      if (function->contains("parameters") && !(*function)["parameters"].is_null()) {
        const bool strict = strict_flag(*function, field);
        schema = compiled_schema((*function)["parameters"], strict, field + ".parameters", !strict);
      }
      break;
    }
    schemas.push_back(schema ? schema : any_object);
  }
  return schemas;
}

// What neither route does: several choices; and the answer's format, its schema compiled.
// Checked before a chat's template renders, so that its errors do not hide these.
AnswerFormat refuse_unsupported(const Body& body) {
  if (integer_field(body, "n", 1, 1, INT64_MAX) != 1) bad_field("n", "only 1 is supported");
  return answer_format(body);
}

// The fields /v1/completions and /v1/chat/completions share.
GenerationParams parse_generation(const Body& body, std::vector<std::int32_t> prompt,
                                  const char* prompt_field, const ModelLimits& limits,
                                  std::int64_t default_max_tokens) {
  if (body.contains("model") && !body["model"].is_null()) {
    if (!body["model"].is_string()) bad_field("model", "expected a string");
    if (body["model"].get<std::string>() != limits.model_id)
      throw RequestError("model",
                         "The model '" + body["model"].get<std::string>() +
                             "' does not exist (this daemon serves '" + limits.model_id + "')",
                         RequestError::Kind::unknown_model);
  }
  auto format = refuse_unsupported(body);

  GenerationParams g;
  g.json_object = format.json_object;
  g.json_schema = std::move(format.schema);
  g.prompt = std::move(prompt);
  if (g.prompt.empty()) bad_field(prompt_field, "is empty");
  const std::int64_t context = limits.context;
  const auto prompt_tokens = static_cast<std::int64_t>(g.prompt.size());
  if (prompt_tokens >= context)
    throw RequestError(prompt_field,
                       std::to_string(prompt_tokens) +
                           " tokens do not fit the model's context of " + std::to_string(context),
                       RequestError::Kind::context_length_exceeded);
  // Chat requests may name the limit max_completion_tokens (OpenAI's newer field).
  const char* max_field =
      body.contains("max_completion_tokens") && !body["max_completion_tokens"].is_null()
          ? "max_completion_tokens"
          : "max_tokens";
  g.max_tokens_given = body.contains(max_field) && !body[max_field].is_null();
  g.max_tokens = integer_field(body, max_field, default_max_tokens, 1, INT64_MAX);
  if (g.max_tokens_given && g.max_tokens > context - prompt_tokens)  // a sum could overflow
    throw RequestError(max_field,
                       std::to_string(g.max_tokens) + " plus the prompt's " +
                           std::to_string(prompt_tokens) +
                           " tokens exceed the model's context of " + std::to_string(context),
                       RequestError::Kind::context_length_exceeded);
  g.temperature = static_cast<float>(number_field(body, "temperature", 1.0, 0.0, 2.0, false));
  g.top_p = static_cast<float>(number_field(body, "top_p", 1.0, 0.0, 1.0, false));
  g.top_k = static_cast<std::int32_t>(integer_field(body, "top_k", 0, 0, limits.vocab_size));
  g.presence_penalty =
      static_cast<float>(number_field(body, "presence_penalty", 0.0, -2.0, 2.0, false));
  g.frequency_penalty =
      static_cast<float>(number_field(body, "frequency_penalty", 0.0, -2.0, 2.0, false));
  if (body.contains("logit_bias") && !body["logit_bias"].is_null()) {
    const auto& biases = body["logit_bias"];
    if (!biases.is_object())
      bad_field("logit_bias",
                "expected an object from token ids to biases, such as {\"50256\": -100}");
    for (const auto& [key, bias] : biases.items()) {
      const std::string at = "logit_bias." + key;
      std::int64_t id = -1;
      const auto [end, error] = std::from_chars(key.data(), key.data() + key.size(), id);
      // Written as the id itself: "05" or "-0" would bias a token twice or under another name.
      if (error != std::errc() || end != key.data() + key.size() || std::to_string(id) != key)
        bad_field(at, Body(key).dump() + " is not a token id");
      if (id < 0 || id >= limits.vocab_size)
        bad_field(at, "token id " + key + " is outside the vocabulary [0, " +
                          std::to_string(limits.vocab_size) + ")");
      if (!bias.is_number() || !(bias.get<double>() >= -100.0 && bias.get<double>() <= 100.0))
        bad_field(at, "expected a bias from -100 to 100, got " + bias.dump());
      g.logit_bias.emplace_back(static_cast<std::int32_t>(id), bias.get<float>());
    }
  }
  if (body.contains("seed") && !body["seed"].is_null())
    g.seed = static_cast<std::uint64_t>(integer_field(body, "seed", 0, INT64_MIN, INT64_MAX));
  if (body.contains("stop") && !body["stop"].is_null()) {
    const auto& stop = body["stop"];
    if (stop.is_string()) {
      g.stops.push_back(stop.get<std::string>());
    } else if (stop.is_array() && stop.size() <= 4) {
      for (const auto& s : stop) {
        if (!s.is_string()) bad_field("stop", "expected strings, got " + s.dump());
        g.stops.push_back(s.get<std::string>());
      }
    } else {
      bad_field("stop", "expected a string or up to 4 strings");
    }
    for (const auto& s : g.stops)
      if (s.empty()) bad_field("stop", "stop strings must not be empty");
  }
  g.stream = bool_field(body, "stream", false);
  if (body.contains("stream_options") && !body["stream_options"].is_null()) {
    const auto& options = body["stream_options"];
    if (!options.is_object())
      bad_field("stream_options", "expected an object such as {\"include_usage\": true}");
    // Without "stream" OpenAI refuses stream_options; vLLM too. Clients that set it on every
    // call (a wrapper's default) are better served ignoring it there.
    const Body include = options.contains("include_usage") ? options["include_usage"] : Body();
    if (!include.is_null() && !include.is_boolean())
      bad_field("stream_options.include_usage", "expected true or false, got " + include.dump());
    g.include_usage = g.stream && include.is_boolean() && include.get<bool>();
  }
  return g;
}

}  // namespace

RequestError::RequestError(std::string field, const std::string& why, Kind kind)
    : std::invalid_argument(field.empty() ? why : field + ": " + why),
      field_(std::move(field)),
      kind_(kind) {}

Body parse_body(std::string_view text) {
  // Writing a value out (error messages, templates' tojson) recurses once per level: a body of
  // nothing but brackets would overflow the stack. Real requests (tool schemas included) nest
  // a dozen levels at most.
  const auto limit_depth = [](int depth, Body::parse_event_t, Body&) {
    if (depth > kMaxBodyDepth)
      throw RequestError({},
                         "the body nests deeper than " + std::to_string(kMaxBodyDepth) + " levels");
    return true;
  };
  Body body;
  try {
    body = Body::parse(text, limit_depth);
  } catch (const Body::exception& e) {
    throw RequestError({}, std::string("the body is not valid JSON: ") + e.what());
  }
  if (!body.is_object()) throw RequestError({}, "the body must be a JSON object");
  return body;
}

GenerationParams parse_completion(const Body& body, const ModelLimits& limits,
                                  const Encoder& encode) {
  if (bool_field(body, "echo", false)) bad_field("echo", "echo is not supported");
  if (integer_field(body, "best_of", 1, 1, INT64_MAX) != 1)
    bad_field("best_of", "only 1 is supported");
  if (body.contains("suffix") && !body["suffix"].is_null() &&
      !(body["suffix"].is_string() && body["suffix"].get<std::string>().empty()))
    bad_field("suffix", "is not supported (no insertion: the completion follows the prompt)");
  if (!body.contains("prompt")) bad_field("prompt", "is required");
  const Body& prompt = body["prompt"];
  auto token_list = [&](const Body& list) {
    std::vector<std::int32_t> ids;
    for (const auto& t : list) {
      if (!t.is_number_integer())
        bad_field("prompt", "token lists must hold integers, got " + t.dump());
      const auto id = t.get<std::int64_t>();
      if (id < 0 || id >= limits.vocab_size)
        bad_field("prompt", "token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                                std::to_string(limits.vocab_size) + ")");
      ids.push_back(static_cast<std::int32_t>(id));
    }
    return ids;
  };
  std::vector<std::int32_t> ids;
  if (prompt.is_string()) {
    ids = encode(prompt.get<std::string>());
  } else if (prompt.is_array() && !prompt.empty() && prompt[0].is_number_integer()) {
    ids = token_list(prompt);
  } else if (prompt.is_array() && prompt.size() == 1 && prompt[0].is_string()) {
    ids = encode(prompt[0].get<std::string>());
  } else if (prompt.is_array() && prompt.size() == 1 && prompt[0].is_array()) {
    ids = token_list(prompt[0]);
  } else {
    bad_field("prompt", "expected a string or a list of token ids (one prompt per request)");
  }
  GenerationParams g =
      parse_generation(body, std::move(ids), "prompt", limits, limits.default_max_tokens);
  g.logprobs = body.contains("logprobs") && !body["logprobs"].is_null();
  g.top_logprobs = static_cast<int>(integer_field(body, "logprobs", 0, 0, 20));
  return g;
}

Body chat_context(const Body& body, const std::string& bos_token, const std::string& eos_token) {
  (void)refuse_unsupported(body);
  if (!body.contains("messages")) bad_field("messages", "is required");
  Body messages = body["messages"];
  if (!messages.is_array() || messages.empty())
    bad_field("messages", "expected a non-empty list of {\"role\", \"content\"} objects");
  for (std::size_t i = 0; i < messages.size(); ++i) {
    auto& m = messages[i];
    const std::string at = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) bad_field(at, "expected an object with role and content");
    if (!m.contains("role") || !m["role"].is_string())
      bad_field(at + ".role", "expected a string such as \"user\"");
    // OpenAI's newer name for the system role; chat templates know only "system".
    if (m["role"] == "developer") m["role"] = "system";
    // OpenAI's API lets an assistant turn that calls tools leave its content out or null (its
    // client library sends moed's own answer back so); templates then see "", as llama.cpp and
    // vLLM give them: Qwen3's first template tests '</think>' in the content, which null fails.
    const bool calls =
        m["role"] == "assistant" &&
        ((m.contains("tool_calls") && m["tool_calls"].is_array() && !m["tool_calls"].empty()) ||
         (m.contains("function_call") && m["function_call"].is_object()));
    if (!m.contains("content") && !calls) bad_field(at + ".content", "is required");
    if (calls && (!m.contains("content") || m["content"].is_null())) m["content"] = "";
    auto& content = m["content"];
    if (content.is_array()) {  // content parts: text only
      std::string text;
      for (std::size_t k = 0; k < content.size(); ++k) {
        const auto& part = content[k];
        const std::string part_at = at + ".content[" + std::to_string(k) + "]";
        if (!part.is_object() || !part.contains("type") || !part["type"].is_string())
          bad_field(part_at, "expected {\"type\": \"text\", \"text\": ...}");
        if (part["type"] != "text")
          bad_field(part_at + ".type", "'" + part["type"].get<std::string>() +
                                           "' is not supported (this model takes text only)");
        if (!part.contains("text") || !part["text"].is_string())
          bad_field(part_at + ".text", "expected a string");
        text += (k ? "\n" : "") + part["text"].get<std::string>();
      }
      content = text;
    } else if (!content.is_string() && !content.is_null()) {
      bad_field(at + ".content", "expected a string, a list of text parts or null");
    }
  }
  Body context = {{"messages", messages},
                  {"add_generation_prompt", true},
                  {"bos_token", bos_token},
                  {"eos_token", eos_token}};
  // The tools go to the template, and the calls the model writes in its template's syntax come
  // back as tool_calls (Service), which constrains the answer to one where tool_choice forces a
  // call; "none" keeps the tools from the template, as vLLM does. OpenAI's older functions /
  // function_call are the same with each function not yet wrapped as a tool.
  forced_tool_names(body);
  const bool legacy = offers_functions(body);
  const char* const tools_field = legacy ? "functions" : "tools";
  const char* const choice_field = legacy ? "function_call" : "tool_choice";
  const bool none = body.contains(choice_field) && body[choice_field] == "none";
  if (body.contains(tools_field) && !body[tools_field].is_null() && !none) {
    const Body& tools = body[tools_field];
    if (!tools.is_array()) bad_field(tools_field, "expected a list");
    if (legacy) {
      Body wrapped = Body::array();
      for (const auto& function : tools)
        wrapped.push_back({{"type", "function"}, {"function", function}});
      context["tools"] = std::move(wrapped);
    } else {
      context["tools"] = tools;
    }
  }
  return context;
}

GenerationParams parse_chat(const Body& body, std::vector<std::int32_t> prompt,
                            const ModelLimits& limits) {
  // OpenAI's chat has no default limit (completions' is 16): an answer runs to its end, here
  // to the daemon's default, whose KV is reserved whole.
  GenerationParams g =
      parse_generation(body, std::move(prompt), "messages", limits, limits.default_chat_max_tokens);
  g.chat = true;
  g.logprobs = bool_field(body, "logprobs", false);
  const bool parallel_tool_calls = bool_field(body, "parallel_tool_calls", true);
  g.calls_as = offers_functions(body) ? CallsAs::function_call
               : parallel_tool_calls  ? CallsAs::tool_calls
                                      : CallsAs::first_tool_call;
  g.top_logprobs = static_cast<int>(integer_field(body, "top_logprobs", 0, 0, 20));
  if (g.top_logprobs > 0 && !g.logprobs) bad_field("top_logprobs", "needs \"logprobs\": true");
  g.forced_tools = forced_tool_names(body);
  g.forced_tool_schemas = forced_tool_schemas(body, g.forced_tools);
  g.forced_by_name = !g.forced_tools.empty() &&
                     !(body.contains("tool_choice") && body["tool_choice"] == "required");
  if (!g.forced_tools.empty() && (g.json_object || g.json_schema))
    bad_field("response_format",
              "a JSON answer and a forced tool call exclude each other (the call's arguments are "
              "a JSON object already)");
  return g;
}

CacheSettings parse_cache_settings(const Body& body) {
  if (body.contains("gpu_budget"))
    bad_field("gpu_budget",
              "this daemon has no GPU tier: it computes on the CPU from host RAM and disk");
  CacheSettings settings;
  if (body.contains("host_budget")) {
    if (!body["host_budget"].is_string())
      bad_field("host_budget", "expected a size such as \"2GiB\" or \"25%\"");
    settings.host_budget = body["host_budget"].get<std::string>();
  }
  if (body.contains("policy")) {
    if (!body["policy"].is_string())
      bad_field("policy", "expected one of " + memtier::policy_list());
    settings.policy = body["policy"].get<std::string>();
    if (std::ranges::find(memtier::policy_names(), settings.policy) ==
        memtier::policy_names().end())
      bad_field("policy", "'" + settings.policy + "' is not one of " + memtier::policy_list());
  }
  if (body.contains("auto_pin")) {
    const auto& share = body["auto_pin"];
    if (!share.is_number() || share.get<double>() < 0 || share.get<double>() > 1)
      bad_field("auto_pin", "expected a share of the host budget from 0 (off) to 1, e.g. 0.25");
    settings.auto_pin = share.get<double>();
  }
  return settings;
}

ExpertRef parse_expert_ref(const Body& body, const ModelLimits& limits) {
  const auto layer = integer_field(body, "layer", -1, 0, limits.num_layers - 1);
  const auto expert = integer_field(body, "expert", -1, 0, limits.num_experts - 1);
  if (layer < 0 || expert < 0) bad_field(layer < 0 ? "layer" : "expert", "is required");
  return {static_cast<std::int32_t>(layer), static_cast<std::int32_t>(expert)};
}

SimulateRequest parse_simulate_request(const Body& body) {
  if (!body.contains("blocks") || !body["blocks"].is_array())
    bad_field("blocks", "expected a list of cache sizes in expert blocks");
  SimulateRequest request;
  for (const auto& b : body["blocks"]) {
    if (!b.is_number_unsigned())
      bad_field("blocks", "expected non-negative integers, got " + b.dump());
    request.blocks.push_back(b.get<std::uint64_t>());
  }
  request.auto_pin_share = number_field(body, "auto_pin", 0, 0, 1, false);
  request.prefetch.horizons =
      static_cast<int>(integer_field(body, "prefetch", 0, 0, memtier::kPrefetchHorizons));
  if (body.contains("predictor") && !body["predictor"].is_null()) {
    if (!body["predictor"].is_string())
      bad_field("predictor", "expected \"transition\" or \"previous\"");
    try {
      request.prefetch.predictor = memtier::predictor_kind(body["predictor"].get<std::string>());
    } catch (const std::invalid_argument& e) {
      bad_field("predictor", e.what());
    }
  }
  request.prefetch.width =
      static_cast<int>(integer_field(body, "prefetch_width", 0, 0, std::int64_t{1} << 20));
  if (body.contains("reads_per_layer") && !body["reads_per_layer"].is_null()) {
    if (!body["reads_per_layer"].is_number_unsigned())
      bad_field("reads_per_layer",
                "expected a non-negative integer, got " + body["reads_per_layer"].dump());
    request.prefetch.reads_per_layer = body["reads_per_layer"].get<std::uint64_t>();
  }
  return request;
}

}  // namespace moed::server
