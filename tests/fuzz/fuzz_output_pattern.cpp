// The constraints' automata over any bytes a model may write. JsonPrefix: what it takes whole
// is a JSON object nlohmann parses (so a constrained answer always parses), and a prefix it
// takes always has a byte that may come next (so a constrained answer never dead-ends).
// PatternPrefix, for a forced call's shape: the same of its prefixes.

#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string_view>

#include "fuzz_input.hpp"
#include "moed/server/output_pattern.hpp"

using moed::fuzz::require_a_next_byte;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  moed::server::JsonPrefix json;
  std::size_t taken = 0;
  while (taken < text.size() && json.feed(static_cast<unsigned char>(text[taken]))) ++taken;
  if (taken == text.size() && json.complete()) {
    const auto value = nlohmann::json::parse(text, nullptr, false);
    if (value.is_discarded() || !value.is_object()) std::abort();
  }
  require_a_next_byte(json);

  static const auto pattern = [] {
    moed::server::OutputPattern p;
    p.literal("<c>")
        .choice({"get", "get_weather", "now"})
        .literal("\":")
        .json_object()
        .literal("</c>");
    return p;
  }();
  moed::server::PatternPrefix call(pattern);
  for (std::size_t i = 0; i < text.size() && call.feed(static_cast<unsigned char>(text[i])); ++i) {
  }
  require_a_next_byte(call);
  return 0;
}
