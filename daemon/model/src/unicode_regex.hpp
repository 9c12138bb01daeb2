#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace moed::model {

// A Unicode regular expression as tokenizer.json's Split pre-tokenizers and GPT-2's ByteLevel
// split use them (\p{L}, \p{N}, lookahead), run by PCRE2 with UTF and UCP: \s, \d and \w follow
// Unicode properties, not the C locale. Input need not be valid UTF-8 (invalid bytes never
// match a character class).
class UnicodeRegex {
 public:
  // Throws std::invalid_argument naming the pattern and the offset PCRE2 rejected.
  explicit UnicodeRegex(const std::string& pattern);
  ~UnicodeRegex();
  UnicodeRegex(const UnicodeRegex&) = delete;
  UnicodeRegex& operator=(const UnicodeRegex&) = delete;

  // The [begin, end) byte ranges of successive non-overlapping leftmost matches; an empty match
  // advances the search by one character.
  std::vector<std::pair<std::size_t, std::size_t>> find_all(std::string_view text) const;
  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  struct Compiled;
  std::unique_ptr<Compiled> compiled_;
};

// A Unicode normalization form by its tokenizer.json name (NFC, NFD, NFKC or NFKD), applied by
// ICU. Invalid UTF-8 is replaced by U+FFFD first, as ICU reads it.
std::string normalize_unicode(std::string_view text, std::string_view form);

}  // namespace moed::model
