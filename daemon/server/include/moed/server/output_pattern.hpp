#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace moed::server {

// A prefix of a JSON text (RFC 8259) whose value is an object, read byte by byte. Its state is a
// few words, so trying a token's bytes on a copy costs no allocation. Strings are UTF-8 and their
// \u escapes pair surrogates, as parsers require. Limits keep a model from looping where JSON
// lets it, and numbers within a double: a run of whitespace holds at most one line break and 20
// spaces or tabs (as llama.cpp's JSON grammar), containers nest at most 64 deep, a number has at
// most 20 integer digits and 2 exponent digits.
class JsonPrefix {
 public:
  static constexpr int kMaxDepth = 64;
  static constexpr int kMaxIndent = 20;
  static constexpr int kMaxIntegerDigits = 20;
  static constexpr int kMaxExponentDigits = 2;
  // Whether `byte` may follow the bytes taken so far; if so, it is taken. After a false the
  // prefix is spent: try bytes on a copy.
  bool feed(unsigned char byte);
  // The top object has closed; nothing may follow.
  bool complete() const { return state_ == State::done; }
  // Inside a string, where any UTF-8 text without '"', '\\' and control characters keeps it.
  bool in_string() const {
    return state_ == State::string && utf8_left_ == 0 && !low_surrogate_due_;
  }
  bool operator==(const JsonPrefix&) const = default;

 private:
  enum class State : std::uint8_t {
    start,         // before the top object: '{'
    value,         // after ':', or ',' in an array
    array_first,   // after '[': a value or ']'
    object_first,  // after '{': a key or '}'
    key,           // after ',' in an object: a key
    colon,         // after a key
    after_value,   // after a value in a container: ',' or its closing
    string,
    escape,         // after '\' in a string
    unicode,        // in the four hex digits of \u
    minus,          // after a number's '-'
    zero,           // a number's leading 0
    integer,        // a number's integer digits after the first nonzero one
    dot,            // after the '.'
    fraction,       // after a fraction digit
    exponent,       // after 'e' or 'E'
    exponent_sign,  // after the exponent's sign
    exponent_digits,
    literal,  // inside true, false or null
    done,
  };
  bool whitespace(unsigned char byte);
  bool begin_value(unsigned char byte);
  bool open(bool object);
  bool close();
  bool end_value();  // a value is complete: where next
  bool string_byte(unsigned char byte);
  bool unicode_digit(unsigned char byte);
  bool in_object() const { return (containers_ >> (depth_ - 1)) & 1u; }

  State state_ = State::start;
  bool string_is_key_ = false;
  std::uint8_t depth_ = 0;
  std::uint8_t hex_left_ = 0;
  bool escape_starts_with_d_ = false;  // the \u escape being read: its first digit is d or D
  bool escape_is_high_surrogate_ = false;
  bool low_surrogate_due_ = false;  // a \u escape of a low surrogate must come next
  std::uint8_t utf8_left_ = 0;      // continuation bytes the character being read still needs
  unsigned char utf8_low_ = 0x80;   // the range of the next one
  unsigned char utf8_high_ = 0xbf;
  std::uint8_t digits_ = 0;       // in the number part being read (integer or exponent)
  std::uint8_t line_breaks_ = 0;  // in the current run of whitespace
  std::uint8_t indent_ = 0;
  const char* literal_rest_ = nullptr;  // the letters of the literal still to come
  std::uint64_t containers_ = 0;        // bit d: the container at depth d + 1 is an object
};

// What a constrained answer must be, before the end of generation: literal texts, choices
// among names and JSON objects, in order. A name may be a prefix of another, but the byte after
// a choice must not continue any of its names.
class OutputPattern {
 public:
  // A literal given as `tokens` must be written as exactly those (the tokenizer's own encoding of
  // it, as the model saw it in training, special marker tokens included); given as text alone,
  // as any tokens whose bytes spell it. No token crosses into a literal given as tokens.
  OutputPattern& literal(std::string text, std::vector<std::int32_t> tokens = {});
  OutputPattern& choice(const std::vector<std::string>& names);
  OutputPattern& json_object();

 private:
  friend class PatternPrefix;
  struct TrieNode {
    std::vector<std::pair<unsigned char, std::uint32_t>> children;
    bool ends_name = false;
  };
  struct Segment {
    enum class Kind : std::uint8_t { literal, choice, json_object } kind;
    std::string text;                  // literal
    std::vector<std::int32_t> tokens;  // literal written as these tokens
    std::vector<TrieNode> names;       // choice: a trie, the root first
  };
  std::vector<Segment> segments_;
};

// A prefix of an answer that follows a pattern (which must outlive it), read byte by byte as
// JsonPrefix is.
class PatternPrefix {
 public:
  explicit PatternPrefix(const OutputPattern& pattern) : pattern_(&pattern) {}
  bool feed(unsigned char byte);  // as JsonPrefix::feed
  bool complete() const { return segment_ == pattern_->segments_.size(); }
  bool in_string() const { return in_json() && json_.in_string(); }
  // The token a literal given as tokens wants next, or -1 where bytes are read.
  std::int32_t forced_token() const;
  // Where a name is whole but may go on into a longer one, the token of a literal given as
  // tokens after it may come as well as the longer name's bytes: that token, or -1.
  std::int32_t token_after_name() const;
  // Takes the token forced_token() or token_after_name() gives.
  void take_literal_token();
  bool operator==(const PatternPrefix&) const = default;

 private:
  bool in_json() const {
    return !complete() &&
           pattern_->segments_[segment_].kind == OutputPattern::Segment::Kind::json_object;
  }
  void next_segment();

  const OutputPattern* pattern_;
  std::size_t segment_ = 0;
  std::uint32_t position_ = 0;  // literal: bytes or tokens matched; choice: trie node
  JsonPrefix json_;
};

}  // namespace moed::server
