#include "moed/server/tool_calls.hpp"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <random>

namespace moed::server {
namespace {

using Json = nlohmann::ordered_json;  // arguments keep the model's key order

constexpr std::string_view kHermesOpen = "<tool_call>";
constexpr std::string_view kHermesClose = "</tool_call>";
constexpr std::string_view kMistralCalls = "[TOOL_CALLS]";
constexpr std::string_view kMistralArgs = "[ARGS]";
constexpr std::string_view kMistralCallId = "[CALL_ID]";
constexpr std::string_view kDeepSeekCallsBegin = "<｜tool▁calls▁begin｜>";
constexpr std::string_view kDeepSeekCallsEnd = "<｜tool▁calls▁end｜>";
constexpr std::string_view kDeepSeekCallBegin = "<｜tool▁call▁begin｜>";
constexpr std::string_view kDeepSeekCallEnd = "<｜tool▁call▁end｜>";
constexpr std::string_view kDeepSeekSep = "<｜tool▁sep｜>";

bool is_space(char c) {
  return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// Reads text left to right; each step consumes what it matched.
struct Cursor {
  std::string_view rest;
  void skip_space() {
    while (!rest.empty() && is_space(rest.front())) rest.remove_prefix(1);
  }
  bool take(std::string_view token) {
    if (!rest.starts_with(token)) return false;
    rest.remove_prefix(token.size());
    return true;
  }
  // The text up to `token`, consuming both; nullopt (nothing consumed) without it.
  std::optional<std::string_view> until(std::string_view token) {
    const std::size_t at = rest.find(token);
    if (at == std::string_view::npos) return std::nullopt;
    const std::string_view before = rest.substr(0, at);
    rest.remove_prefix(at + token.size());
    return before;
  }
  // One JSON object or array at the front (strings may hold brackets), consumed; nullopt when
  // there is none or it does not parse.
  std::optional<Json> json_value() {
    if (rest.empty() || (rest.front() != '{' && rest.front() != '[')) return std::nullopt;
    int depth = 0;
    bool in_string = false;
    for (std::size_t i = 0; i < rest.size(); ++i) {
      const char c = rest[i];
      if (in_string) {
        if (c == '\\')
          ++i;
        else if (c == '"')
          in_string = false;
      } else if (c == '"') {
        in_string = true;
      } else if (c == '{' || c == '[') {
        ++depth;
      } else if ((c == '}' || c == ']') && --depth == 0) {
        Json value = Json::parse(rest.substr(0, i + 1), nullptr, false);
        if (value.is_discarded()) return std::nullopt;
        rest.remove_prefix(i + 1);
        return value;
      }
    }
    return std::nullopt;
  }
};

std::optional<Json> parse_json(std::string_view text) {
  Json value = Json::parse(trim(text), nullptr, false);
  if (value.is_discarded()) return std::nullopt;
  return value;
}

// OpenAI's shape: "call_" and 24 letters or digits. Mistral's templates take only ids of 9 letters
// or digits (and raise an error on the next turn for any other), as vLLM's Mistral parser makes.
std::string call_id(ToolCallSyntax syntax) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  thread_local std::mt19937_64 random{std::random_device{}()};
  std::uniform_int_distribution<std::size_t> pick(0, sizeof kAlphabet - 2);
  const bool mistral = syntax == ToolCallSyntax::mistral;
  std::string id = mistral ? "" : "call_";
  for (int i = 0; i < (mistral ? 9 : 24); ++i) id += kAlphabet[pick(random)];
  return id;
}

// Text a name or id may be: UTF-8 (OpenAI's answer is JSON) without control characters.
bool clean_text(std::string_view text) {
  if (std::any_of(text.begin(), text.end(),
                  [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; }))
    return false;
  try {
    (void)Json(std::string(text)).dump();
  } catch (const Json::type_error&) {
    return false;
  }
  return true;
}

// A call from a name and its arguments, which OpenAI gives as JSON text: an object or array is
// written out; a string (some models quote the arguments) is kept where it is JSON itself, and
// written as a JSON string where not; null is no arguments.
std::optional<ToolCall> make_call(std::string_view name, const Json& arguments, std::string id,
                                  ToolCallSyntax syntax) {
  name = trim(name);
  if (name.empty() || !clean_text(name) || !clean_text(id)) return std::nullopt;
  ToolCall call{id.empty() ? call_id(syntax) : std::move(id), std::string(name), {}};
  if (arguments.is_null()) {
    call.arguments = "{}";
  } else if (arguments.is_string()) {
    const auto& text = arguments.get_ref<const std::string&>();
    call.arguments = Json::accept(text) ? text : arguments.dump();
  } else if (arguments.is_object() || arguments.is_array()) {
    call.arguments = arguments.dump();
  } else {
    return std::nullopt;
  }
  return call;
}

// {"name": ..., "arguments": ...} (Llama-style "parameters" too), and Mistral's optional "id".
std::optional<ToolCall> call_from_object(const Json& object, ToolCallSyntax syntax) {
  if (!object.is_object() || !object.contains("name") || !object["name"].is_string())
    return std::nullopt;
  const Json none;
  const Json& arguments = object.contains("arguments")    ? object["arguments"]
                          : object.contains("parameters") ? object["parameters"]
                                                          : none;
  std::string id;
  if (object.contains("id") && object["id"].is_string()) id = object["id"].get<std::string>();
  return make_call(object["name"].get<std::string>(), arguments, std::move(id), syntax);
}

// Calls, with the text between and after them as content (as vLLM's Hermes parser finds every
// tagged call and llama.cpp keeps the rest).
std::optional<ParsedCalls> parse_hermes(Cursor text) {
  ParsedCalls parsed;
  while (!text.rest.empty()) {
    if (!text.take(kHermesOpen)) {
      const std::size_t next = text.rest.find(kHermesOpen);
      parsed.content += text.rest.substr(0, next);
      text.rest.remove_prefix(next == std::string_view::npos ? text.rest.size() : next);
      continue;
    }
    // The object first, so that a string in it may hold the closing tag; then the text up to
    // the tag, for what does not read as an object.
    std::optional<Json> object;
    Cursor json_first = text;
    json_first.skip_space();
    if (auto value = json_first.json_value()) {
      json_first.skip_space();
      if (json_first.take(kHermesClose) || json_first.rest.empty()) {
        object = std::move(value);
        text = json_first;
      }
    }
    if (!object) {
      const auto body = text.until(kHermesClose);
      object = parse_json(body ? *body : text.rest);
      if (!body) text.rest = {};  // cut short by the end of generation
    }
    if (!object) return std::nullopt;
    auto call = call_from_object(*object, ToolCallSyntax::hermes);
    if (!call) return std::nullopt;
    parsed.calls.push_back(std::move(*call));
    text.skip_space();
  }
  return parsed;
}

std::optional<ParsedCalls> parse_mistral(Cursor text) {
  ParsedCalls parsed;
  while (text.take(kMistralCalls)) {
    text.skip_space();
    if (text.rest.starts_with('[')) {
      const auto list = text.json_value();
      if (!list || !list->is_array()) return std::nullopt;
      for (const auto& object : *list) {
        auto call = call_from_object(object, ToolCallSyntax::mistral);
        if (!call) return std::nullopt;
        parsed.calls.push_back(std::move(*call));
      }
    } else {
      const std::size_t name_end = text.rest.find('[');
      if (name_end == std::string_view::npos) return std::nullopt;
      const std::string_view name = text.rest.substr(0, name_end);
      text.rest.remove_prefix(name_end);
      std::string id;
      if (text.take(kMistralCallId)) {
        const std::size_t id_end = text.rest.find('[');
        if (id_end == std::string_view::npos) return std::nullopt;
        id = std::string(trim(text.rest.substr(0, id_end)));
        text.rest.remove_prefix(id_end);
      }
      if (!text.take(kMistralArgs)) return std::nullopt;
      text.skip_space();
      const auto arguments = text.json_value();
      if (!arguments) return std::nullopt;
      auto call = make_call(name, *arguments, std::move(id), ToolCallSyntax::mistral);
      if (!call) return std::nullopt;
      parsed.calls.push_back(std::move(*call));
    }
    text.skip_space();
  }
  parsed.content = text.rest;
  return parsed;
}

// A DeepSeek call after its opening marker, read arguments first, so that a string in them may
// hold the closing markers; nullopt (nothing consumed) where they are not a JSON object or
// array followed by the call's end.
std::optional<ToolCall> deepseek_call_json_first(Cursor& text) {
  Cursor call = text;
  const std::size_t call_end = call.rest.find(kDeepSeekCallEnd);
  const auto kind_or_name = call.until(kDeepSeekSep);
  if (!kind_or_name || kind_or_name->size() > call_end) return std::nullopt;
  const std::size_t line_end = call.rest.find('\n');
  if (trim(*kind_or_name) == "function" && line_end != std::string_view::npos) {
    Cursor fenced = call;
    const std::string_view name = fenced.rest.substr(0, line_end);
    fenced.rest.remove_prefix(line_end);
    fenced.skip_space();
    if (fenced.take("```json")) {
      fenced.skip_space();
      auto arguments = fenced.json_value();
      fenced.skip_space();
      if (arguments && fenced.take("```")) {
        fenced.skip_space();
        if (fenced.take(kDeepSeekCallEnd)) {
          text = fenced;
          return make_call(name, *arguments, {}, ToolCallSyntax::deepseek);
        }
      }
    }
  }
  call.skip_space();
  auto arguments = call.json_value();
  call.skip_space();
  if (!arguments || !call.take(kDeepSeekCallEnd)) return std::nullopt;
  text = call;
  return make_call(*kind_or_name, *arguments, {}, ToolCallSyntax::deepseek);
}

std::optional<ParsedCalls> parse_deepseek(Cursor text) {
  if (!text.take(kDeepSeekCallsBegin)) return std::nullopt;
  ParsedCalls parsed;
  for (text.skip_space(); !text.rest.empty(); text.skip_space()) {
    if (text.take(kDeepSeekCallsEnd)) {
      text.skip_space();
      parsed.content = text.rest;
      break;
    }
    if (!text.take(kDeepSeekCallBegin)) return std::nullopt;
    if (auto call = deepseek_call_json_first(text)) {
      parsed.calls.push_back(std::move(*call));
      continue;
    }
    const auto inner = text.until(kDeepSeekCallEnd);
    if (!inner) return std::nullopt;
    Cursor call_text{*inner};
    const auto kind_or_name = call_text.until(kDeepSeekSep);
    if (!kind_or_name) return std::nullopt;
    std::string_view name = *kind_or_name;
    std::string_view arguments = call_text.rest;
    // V3's: the call's type, the name on the separator's line, then the arguments in a ```json
    // fence; V3.1's: the name, then the arguments (a V3.1 tool may itself be named "function").
    const std::size_t line_end = call_text.rest.find('\n');
    if (trim(name) == "function" && line_end != std::string_view::npos &&
        trim(call_text.rest.substr(line_end)).starts_with("```json")) {
      name = call_text.rest.substr(0, line_end);
      call_text.rest.remove_prefix(line_end);
      call_text.skip_space();
      call_text.take("```json");
      const std::size_t fence_end = call_text.rest.rfind("```");
      if (fence_end == std::string_view::npos) return std::nullopt;
      if (!trim(call_text.rest.substr(fence_end + 3)).empty()) return std::nullopt;
      arguments = call_text.rest.substr(0, fence_end);
    }
    const auto value = parse_json(arguments);
    if (!value) return std::nullopt;
    auto call = make_call(name, *value, {}, ToolCallSyntax::deepseek);
    if (!call) return std::nullopt;
    parsed.calls.push_back(std::move(*call));
  }
  return parsed;
}

}  // namespace

ToolCallSyntax tool_call_syntax(std::string_view template_source) {
  // Qwen3-Coder's template shows calls inside <tool_call> as XML-like <function=NAME> blocks, not
  // JSON: no parser here reads them, so its calls stay text rather than fail as Hermes calls.
  if (template_source.find("<function=") != std::string_view::npos) return ToolCallSyntax::none;
  if (template_source.find(kDeepSeekCallsBegin) != std::string_view::npos)
    return ToolCallSyntax::deepseek;
  if (template_source.find(kMistralCalls) != std::string_view::npos) return ToolCallSyntax::mistral;
  if (template_source.find(kHermesOpen) != std::string_view::npos) return ToolCallSyntax::hermes;
  return ToolCallSyntax::none;
}

std::string_view to_string(ToolCallSyntax syntax) {
  switch (syntax) {
    case ToolCallSyntax::hermes:
      return "hermes";
    case ToolCallSyntax::mistral:
      return "mistral";
    case ToolCallSyntax::deepseek:
      return "deepseek";
    case ToolCallSyntax::none:
      break;
  }
  return "none";
}

std::string_view tool_calls_opening(ToolCallSyntax syntax) {
  switch (syntax) {
    case ToolCallSyntax::hermes:
      return kHermesOpen;
    case ToolCallSyntax::mistral:
      return kMistralCalls;
    case ToolCallSyntax::deepseek:
      return kDeepSeekCallsBegin;
    case ToolCallSyntax::none:
      break;
  }
  return {};
}

std::vector<std::string_view> tool_call_tokens(ToolCallSyntax syntax) {
  switch (syntax) {
    case ToolCallSyntax::hermes:
      return {kHermesOpen, kHermesClose};
    case ToolCallSyntax::mistral:
      return {kMistralCalls, kMistralArgs, kMistralCallId};
    case ToolCallSyntax::deepseek:
      return {kDeepSeekCallsBegin, kDeepSeekCallsEnd, kDeepSeekCallBegin, kDeepSeekCallEnd,
              kDeepSeekSep};
    case ToolCallSyntax::none:
      break;
  }
  return {};
}

std::optional<CallForm> call_form(ToolCallSyntax syntax, std::string_view template_source) {
  auto text = [](std::initializer_list<std::string_view> parts) {
    std::string joined;
    for (const auto part : parts) joined += part;
    return joined;
  };
  switch (syntax) {
    case ToolCallSyntax::hermes:
      // As Qwen's templates write a call.
      return CallForm{text({kHermesOpen, "\n{\"name\": \""}),
                      "\", \"arguments\": ", text({"}\n", kHermesClose})};
    case ToolCallSyntax::mistral:
      if (template_source.find(kMistralArgs) != std::string_view::npos)
        return CallForm{std::string(kMistralCalls), std::string(kMistralArgs), ""};
      return CallForm{text({kMistralCalls, " [{\"name\": \""}), "\", \"arguments\": ", "}]"};
    case ToolCallSyntax::deepseek:
      if (template_source.find("```json") != std::string_view::npos)
        return CallForm{text({kDeepSeekCallsBegin, kDeepSeekCallBegin, "function", kDeepSeekSep}),
                        "\n```json\n", text({"\n```", kDeepSeekCallEnd, kDeepSeekCallsEnd})};
      return CallForm{text({kDeepSeekCallsBegin, kDeepSeekCallBegin}), std::string(kDeepSeekSep),
                      text({kDeepSeekCallEnd, kDeepSeekCallsEnd})};
    case ToolCallSyntax::none:
      break;
  }
  return std::nullopt;
}

std::optional<ParsedCalls> parse_tool_calls(std::string_view calls, ToolCallSyntax syntax) {
  std::optional<ParsedCalls> parsed;
  switch (syntax) {
    case ToolCallSyntax::hermes:
      parsed = parse_hermes({calls});
      break;
    case ToolCallSyntax::mistral:
      parsed = parse_mistral({calls});
      break;
    case ToolCallSyntax::deepseek:
      parsed = parse_deepseek({calls});
      break;
    case ToolCallSyntax::none:
      break;
  }
  if (parsed && parsed->calls.empty()) return std::nullopt;
  return parsed;
}

nlohmann::json tool_call_fields(const std::vector<ToolCall>& calls, bool delta, CallsAs as) {
  if (calls.empty()) return nlohmann::json::object();
  if (as == CallsAs::function_call)
    return {{"function_call", {{"name", calls[0].name}, {"arguments", calls[0].arguments}}}};
  nlohmann::json list = nlohmann::json::array();
  const std::size_t given = as == CallsAs::first_tool_call ? 1 : calls.size();
  for (std::size_t i = 0; i < given; ++i) {
    nlohmann::json call{{"id", calls[i].id},
                        {"type", "function"},
                        {"function", {{"name", calls[i].name}, {"arguments", calls[i].arguments}}}};
    if (delta) call["index"] = i;
    list.push_back(std::move(call));
  }
  return {{"tool_calls", std::move(list)}};
}

}  // namespace moed::server
