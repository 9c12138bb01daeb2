#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace moed::server {

// How a model family writes tool calls in its answer: the syntax its chat template renders the
// calls of earlier assistant turns in, which the model was trained to write.
enum class ToolCallSyntax {
  none,     // calls stay in the answer's text
  hermes,   // Qwen2.5, Qwen3 and other Hermes-style templates:
            // <tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>, one per call
  mistral,  // [TOOL_CALLS] [{"name": ..., "arguments": {...}}, ...], or since Mistral's v11
            // tokenizer [TOOL_CALLS]name[ARGS]{...}, one per call
  deepseek,  // DeepSeek-V3: <｜tool▁calls▁begin｜> then per call <｜tool▁call▁begin｜>function
             // <｜tool▁sep｜>name\n```json\n{...}\n```<｜tool▁call▁end｜> (V3.1 and later:
             // name<｜tool▁sep｜>{...}), then <｜tool▁calls▁end｜>
};

// The syntax a chat template's source shows (none when it renders no calls in a known one, as
// Qwen3-Coder's XML-like <function=...> calls).
ToolCallSyntax tool_call_syntax(std::string_view template_source);
std::string_view to_string(ToolCallSyntax syntax);

// The text that opens an answer's calls ("" for none): what comes before it is content.
std::string_view tool_calls_opening(ToolCallSyntax syntax);

// The syntax's marker tokens, which tokenizers may mark special (Mistral's [TOOL_CALLS] is a
// control token) and decoding would then drop: they are kept in the answer's text, as
// llama-server keeps a format's "preserved tokens".
std::vector<std::string_view> tool_call_tokens(ToolCallSyntax syntax);

// How the syntax writes one call around its name and its arguments (a JSON object), and then
// ends the answer's calls: the text a call that tool_choice forces must be.
struct CallForm {
  std::string before_name;
  std::string before_arguments;
  std::string after_arguments;
};
// nullopt for none. The template's source tells the variants apart: Mistral's v11
// name[ARGS]{...} from its JSON list, DeepSeek-V3's fenced JSON from V3.1's plain arguments.
std::optional<CallForm> call_form(ToolCallSyntax syntax, std::string_view template_source);

struct ToolCall {
  std::string id;  // the model's where it writes one (Mistral), else "call_" and 24 chars
  std::string name;
  std::string arguments;  // a JSON value's text, as OpenAI's function.arguments
};

// What the answer's text from tool_calls_opening(syntax) on holds: its calls, and the text
// around them (between and after the calls), which stays content.
struct ParsedCalls {
  std::vector<ToolCall> calls;
  std::string content;
};

// The calls in `calls`, the answer's text from tool_calls_opening(syntax) on. nullopt when it
// holds no call, or one that does not parse: the text then stays the answer's content, as vLLM
// and llama-server leave calls they cannot parse. A Hermes call cut short by the end of
// generation before its closing tag is taken when its JSON is whole.
std::optional<ParsedCalls> parse_tool_calls(std::string_view calls, ToolCallSyntax syntax);

// How an answer gives the calls back: every call in "tool_calls"; only the first, where the
// request said "parallel_tool_calls": false (the model may still write several, since nothing
// constrains its sampling); or, where the request offered OpenAI's older functions, the first as
// "function_call".
enum class CallsAs { tool_calls, first_tool_call, function_call };

// The fields OpenAI's chat API gives calls in, to add to an answer's message (or to a stream's
// delta, where each call also has its index).
nlohmann::json tool_call_fields(const std::vector<ToolCall>& calls, bool delta, CallsAs as);

}  // namespace moed::server
