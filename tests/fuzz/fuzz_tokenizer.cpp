// tokenizer.json loading, then encoding and decoding arbitrary bytes with what loaded:
// input = tokenizer.json, NUL, tokenizer_config.json, NUL, text. Loading and encoding may refuse
// with std::runtime_error; decoding ids inside the vocabulary must always succeed.

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "fuzz_input.hpp"
#include "moed/model/tokenizer.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto parts = moed::fuzz::split_parts(data, size, 3);
  std::optional<moed::model::Tokenizer> tokenizer;
  try {
    tokenizer.emplace(moed::model::Tokenizer::from_json(parts[0], parts[1]));
  } catch (const std::runtime_error&) {
    return 0;
  }
  const std::string_view text = parts[2];
  for (const bool special : {true, false}) {
    std::vector<std::int32_t> ids;
    try {
      ids = tokenizer->encode(text, special);
    } catch (const std::runtime_error&) {
      continue;
    }
    (void)tokenizer->decode(ids, true);
    (void)tokenizer->decode(ids, false);
  }
  // Any sequence of known ids decodes, as the sampler may pick any of them: read the text's
  // bytes as ids.
  const auto vocab = tokenizer->vocab_size();
  if (vocab > 0) {
    std::vector<std::int32_t> ids;
    for (std::size_t i = 0; i + 1 < text.size(); i += 2) {
      const auto raw = static_cast<std::uint16_t>(static_cast<std::uint8_t>(text[i]) |
                                                  static_cast<std::uint8_t>(text[i + 1]) << 8);
      ids.push_back(static_cast<std::int32_t>(raw % vocab));
    }
    (void)tokenizer->decode(ids, false);
    (void)tokenizer->decode(ids, true);
  }
  return 0;
}
