#define PCRE2_CODE_UNIT_WIDTH 8
#include "unicode_regex.hpp"

#include <pcre2.h>
#include <unicode/normalizer2.h>
#include <unicode/unistr.h>

#include <limits>
#include <stdexcept>

#include "moed/model/tokenizer.hpp"

namespace moed::model {

struct UnicodeRegex::Compiled {
  pcre2_code* code = nullptr;
  ~Compiled() { pcre2_code_free(code); }
};

UnicodeRegex::UnicodeRegex(const std::string& pattern)
    : pattern_(pattern), compiled_(std::make_unique<Compiled>()) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  compiled_->code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                    PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error, &offset, nullptr);
  if (!compiled_->code) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof message);
    throw std::invalid_argument("regex '" + pattern + "' at offset " + std::to_string(offset) +
                                ": " + reinterpret_cast<const char*>(message));
  }
  // JIT is a speed-up only; the interpreter gives the same matches where it is unavailable.
  pcre2_jit_compile(compiled_->code, PCRE2_JIT_COMPLETE);
}

UnicodeRegex::~UnicodeRegex() = default;

std::vector<std::pair<std::size_t, std::size_t>> UnicodeRegex::find_all(
    std::string_view text) const {
  std::vector<std::pair<std::size_t, std::size_t>> matches;
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> data(
      pcre2_match_data_create_from_pattern(compiled_->code, nullptr), &pcre2_match_data_free);
  if (text.empty()) return matches;
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  std::size_t at = 0;
  while (at <= text.size()) {
    const int rc = pcre2_match(compiled_->code, subject, text.size(), at, 0, data.get(), nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      // A match or backtracking limit: this text is too much for the pattern, the text's fault.
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof message);
      throw UnencodableText("tokenizer: split regex '" + pattern_ + "' gave up at byte " +
                            std::to_string(at) +
                            " of the text: " + reinterpret_cast<const char*>(message));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data.get());
    const std::size_t begin = ovector[0], end = ovector[1];
    if (end > begin) {
      matches.emplace_back(begin, end);
      at = end;
      continue;
    }
    // An empty match: step over one character (a UTF-8 lead byte and its continuations).
    at = begin + 1;
    while (at < text.size() && (static_cast<unsigned char>(text[at]) & 0xc0) == 0x80) ++at;
  }
  return matches;
}

std::string normalize_unicode(std::string_view text, std::string_view form) {
  // ICU names the data "nfc" (canonical) or "nfkc" (compatibility); D forms decompose it.
  const bool compatibility = form.starts_with("NFK");
  const bool decompose = form.ends_with("D");
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* normalizer =
      icu::Normalizer2::getInstance(nullptr, compatibility ? "nfkc" : "nfc",
                                    decompose ? UNORM2_DECOMPOSE : UNORM2_COMPOSE, status);
  if (U_FAILURE(status))
    throw std::runtime_error("ICU normalizer unavailable: " + std::string(u_errorName(status)));
  if (text.size() > static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()))
    throw UnencodableText("tokenizer: a text of " + std::to_string(text.size()) +
                          " bytes is too long for the Unicode normalizer (2 GiB at most)");
  const auto source = icu::UnicodeString::fromUTF8(
      icu::StringPiece(text.data(), static_cast<std::int32_t>(text.size())));
  const icu::UnicodeString normalized = normalizer->normalize(source, status);
  if (U_FAILURE(status))
    throw std::runtime_error("ICU normalization failed: " + std::string(u_errorName(status)));
  std::string out;
  normalized.toUTF8String(out);
  return out;
}

}  // namespace moed::model
