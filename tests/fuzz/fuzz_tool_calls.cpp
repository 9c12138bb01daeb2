// The tool-call parsers over any answer text a model may write: each syntax either finds calls
// whose arguments are JSON text, or leaves the text as content; neither crashes nor throws.

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
    const auto calls = moed::server::parse_tool_calls(text, syntax);
    if (!calls) continue;
    if (calls->empty()) std::abort();
    for (const auto& call : *calls)
      if (call.name.empty() || call.id.empty()) std::abort();
    (void)moed::server::tool_call_fields(*calls, true, false).dump();
  }
  return 0;
}
