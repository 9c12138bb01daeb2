#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "moed/engine/sampler.hpp"
#include "moed/model/tokenizer.hpp"
#include "moed/server/output_pattern.hpp"

namespace moed::server {

// The vocabulary as constraints see it, by id.
struct ConstraintVocabulary {
  ConstraintVocabulary(std::vector<std::string> token_bytes, std::vector<bool> end_tokens);
  std::vector<std::string> bytes;  // what the token adds to the text (empty: never in it)
  std::vector<bool> ends;          // ends generation (its bytes are none)
  // Whether the token can only be string content (whole UTF-8 characters, no '"', '\\' or
  // control byte): most of a vocabulary, which need not be read byte by byte inside a string.
  std::vector<bool> plain;
};
// The model's vocabulary (vocab_size rows, which may run past the tokenizer's): each token's
// bytes (Tokenizer::token_bytes), none for special tokens (a pattern writes the ones it needs as
// tokens), and the end-of-generation ids.
std::shared_ptr<const ConstraintVocabulary> constraint_vocabulary(
    const model::Tokenizer& tokenizer, std::int64_t vocab_size,
    std::span<const std::int64_t> end_ids);

// Constrains an answer to a pattern, then the end of generation: OpenAI's response_format
// {"type": "json_object"} is one JSON object, {"type": "json_schema"} an instance of a schema; a
// forced tool call is its syntax's text around a name and a JSON object of arguments (an
// instance of the tool's parameters).
class PatternConstraint : public engine::TokenConstraint {
 public:
  PatternConstraint(std::shared_ptr<const ConstraintVocabulary> vocabulary,
                    std::shared_ptr<const OutputPattern> pattern);
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
  std::shared_ptr<const OutputPattern> pattern_;
  PatternPrefix prefix_;
  struct CachedMask {
    PatternPrefix prefix;
    std::vector<std::uint64_t> allowed;
  };
  mutable std::vector<CachedMask> masks_;
  mutable std::size_t next_evicted_ = 0;
};

// response_format {"type": "json_object"}.
std::shared_ptr<PatternConstraint> json_object_constraint(
    std::shared_ptr<const ConstraintVocabulary> vocabulary);
// response_format {"type": "json_schema"}.
std::shared_ptr<PatternConstraint> json_schema_constraint(
    std::shared_ptr<const ConstraintVocabulary> vocabulary,
    std::shared_ptr<const CompiledSchema> schema);

}  // namespace moed::server
