// The tool-call parsers over any answer text a model may write: each syntax either finds calls
// whose arguments are JSON text, or leaves the text as content; none crashes or throws.

#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string_view>

#include "moed/server/tool_calls.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (const auto syntax :
       {moed::server::ToolCallSyntax::hermes, moed::server::ToolCallSyntax::mistral,
        moed::server::ToolCallSyntax::deepseek}) {
    const auto parsed = moed::server::parse_tool_calls(text, syntax);
    if (!parsed) continue;
    if (parsed->calls.empty() || parsed->content.size() > text.size()) std::abort();
    for (const auto& call : parsed->calls)
      if (call.name.empty() || call.id.empty() || !nlohmann::json::accept(call.arguments))
        std::abort();
    for (const auto as : {moed::server::CallsAs::tool_calls, moed::server::CallsAs::first_tool_call,
                          moed::server::CallsAs::function_call})
      (void)moed::server::tool_call_fields(parsed->calls, true, as).dump();
  }
  return 0;
}
