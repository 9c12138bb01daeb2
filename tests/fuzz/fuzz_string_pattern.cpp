// JSON Schema patterns and strings read against them. The input is a pattern, a 0 byte and a
// string's JSON spelling (without quotes). The compiler refuses a pattern with PatternError or
// compiles it, never worse, within its limits; the automaton reads any bytes without fault, and
// every state a string's bytes reach has a way on: a byte that may come next, or the end.

#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "fuzz_input.hpp"
#include "moed/server/string_pattern.hpp"

namespace {

using moed::server::PatternError;
using moed::server::StringPattern;

bool has_a_way_on(const StringPattern& pattern, std::uint32_t state, std::uint32_t characters) {
  if (pattern.may_end(state, characters)) return true;
  for (int byte = 0; byte < 256; ++byte) {
    bool completes = false;
    if (pattern.next(state, characters, static_cast<unsigned char>(byte), completes) !=
        StringPattern::kDead)
      return true;
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto parts = moed::fuzz::split_parts(data, size, 2);
  // Length bounds from the spelling's first bytes, so that they meet the pattern's lengths.
  std::uint32_t min = 0, max = StringPattern::kUnbounded;
  std::string_view spelled = parts[1];
  if (spelled.size() >= 2) {
    min = static_cast<unsigned char>(spelled[0]) % 8;
    if (spelled[1] & 1) max = min + static_cast<unsigned char>(spelled[1]) / 16;
    spelled.remove_prefix(2);
  }
  std::uint64_t budget = StringPattern::kMaxWork / 16;  // many inputs a second
  std::optional<StringPattern> pattern;
  try {
    pattern = StringPattern::compile(parts[0], min, max, budget);
  } catch (const PatternError& error) {
    if (error.offset != PatternError::kWhole && error.offset > parts[0].size()) std::abort();
    return 0;
  }
  if (!pattern->satisfiable()) return 0;
  std::uint32_t state = pattern->start(), characters = 0;
  for (const char c : spelled) {
    if (!has_a_way_on(*pattern, state, characters)) std::abort();
    bool completes = false;
    const std::uint32_t next =
        pattern->next(state, characters, static_cast<unsigned char>(c), completes);
    if (next == StringPattern::kDead) return 0;
    if (next >= pattern->states()) std::abort();
    state = next;
    characters += completes ? 1 : 0;
    if (max != StringPattern::kUnbounded && characters > max) std::abort();
  }
  if (!has_a_way_on(*pattern, state, characters)) std::abort();
  return 0;
}
