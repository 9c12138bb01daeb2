#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "moed/engine/sampler.hpp"
#include "moed/model/tokenizer.hpp"

namespace moed::server {

// A prefix of a JSON text (RFC 8259) whose value is an object, read byte by byte. Its state is a
// few words, so trying a token's bytes on a copy costs no allocation. Two limits keep a model
// from looping where JSON lets it: a run of whitespace holds at most one line break and 20
// spaces or tabs (as llama.cpp's JSON grammar), and containers nest at most 64 deep.
class JsonPrefix {
 public:
  static constexpr int kMaxDepth = 64;
  static constexpr int kMaxIndent = 20;
  // Whether `byte` may follow the bytes taken so far; if so, it is taken. After a false the
  // prefix is spent: try bytes on a copy.
  bool feed(unsigned char byte);
  // The top object has closed; nothing may follow.
  bool complete() const { return state_ == State::done; }
  // Inside a string, where any byte but '"', '\\' and control characters keeps it there.
  bool in_string() const { return state_ == State::string; }
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
  bool end_value();  // a value is complete: where next
  bool in_object() const { return (containers_ >> (depth_ - 1)) & 1u; }

  State state_ = State::start;
  bool string_is_key_ = false;
  std::uint8_t depth_ = 0;
  std::uint8_t hex_left_ = 0;
  std::uint8_t line_breaks_ = 0;  // in the current run of whitespace
  std::uint8_t indent_ = 0;
  const char* literal_rest_ = nullptr;  // the letters of the literal still to come
  std::uint64_t containers_ = 0;        // bit d: the container at depth d + 1 is an object
};

// The vocabulary as constraints see it, by id.
struct ConstraintVocabulary {
  ConstraintVocabulary(std::vector<std::string> token_bytes, std::vector<bool> end_tokens);
  std::vector<std::string> bytes;  // what the token adds to the text (empty: never in it)
  std::vector<bool> ends;          // ends generation (its bytes are none)
  // Whether the token can only be string content (no '"', '\\' or control byte): most of a
  // vocabulary, which need not be read byte by byte inside a string.
  std::vector<bool> plain;
};
// The model's vocabulary (vocab_size rows, which may run past the tokenizer's): each token's
// bytes (Tokenizer::token_bytes), none for special tokens, and the end-of-generation ids.
std::shared_ptr<const ConstraintVocabulary> constraint_vocabulary(
    const model::Tokenizer& tokenizer, std::int64_t vocab_size,
    std::span<const std::int64_t> end_ids);

// OpenAI's response_format {"type": "json_object"}: the output is one JSON object and then the
// end of generation.
class JsonObjectConstraint : public engine::TokenConstraint {
 public:
  explicit JsonObjectConstraint(std::shared_ptr<const ConstraintVocabulary> vocabulary);
  bool allows(std::int32_t id) const override;
  void advance(std::int32_t id) override;
  // An answer comes back to the same states (inside a string, after a value at a depth), so
  // the tokens each allows are kept for the last few.
  void mask(std::span<float> logits) const override;

 private:
  static constexpr std::size_t kCachedMasks = 16;
  // A bit per token: whether it may follow prefix_. Reads a token's bytes only where its first
  // two may come next, and none of a plain token's inside a string.
  void allowed_tokens(std::vector<std::uint64_t>& allowed) const;

  std::shared_ptr<const ConstraintVocabulary> vocabulary_;
  JsonPrefix prefix_;
  struct CachedMask {
    JsonPrefix prefix;
    std::vector<std::uint64_t> allowed;
  };
  mutable std::vector<CachedMask> masks_;
  mutable std::size_t next_evicted_ = 0;
};

}  // namespace moed::server
