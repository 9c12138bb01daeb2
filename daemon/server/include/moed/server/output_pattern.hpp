#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "moed/server/json_prefix.hpp"
#include "moed/server/json_schema.hpp"

namespace moed::server {

// What a constrained answer must be, before the end of generation: literal texts, choices
// among names, JSON objects and instances of JSON Schemas, in order. A name may be a prefix of
// another, but the byte after a choice must not continue any of its names.
class OutputPattern {
 public:
  // A literal given as `tokens` must be written as exactly those (the tokenizer's own encoding of
  // it, as the model saw it in training, special marker tokens included); given as text alone,
  // as any tokens whose bytes spell it. No token crosses into a literal given as tokens.
  OutputPattern& literal(std::string text, std::vector<std::int32_t> tokens = {});
  OutputPattern& choice(const std::vector<std::string>& names);
  OutputPattern& json_object();
  // An instance of a schema: the only one given, or the one for the name the choice before
  // took (by the names' order).
  OutputPattern& json_schema(std::vector<std::shared_ptr<const CompiledSchema>> schemas);

 private:
  friend class PatternPrefix;
  struct Segment {
    enum class Kind : std::uint8_t { literal, choice, json_object, json_schema } kind;
    std::string text;                  // literal
    std::vector<std::int32_t> tokens;  // literal written as these tokens
    ByteTrie names;                    // choice
    std::vector<std::shared_ptr<const CompiledSchema>> schemas;
  };
  std::vector<Segment> segments_;
};

// A prefix of an answer that follows a pattern (which must outlive it), read byte by byte as
// JsonPrefix is.
class PatternPrefix {
 public:
  explicit PatternPrefix(const OutputPattern& pattern);
  bool feed(unsigned char byte);  // as JsonPrefix::feed
  bool complete() const { return segment_ == pattern_->segments_.size(); }
  bool in_string() const { return schema_ ? schema_->in_string() : in_json() && json_.in_string(); }
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
  void enter_segment();

  const OutputPattern* pattern_;
  std::size_t segment_ = 0;
  std::uint32_t position_ = 0;  // literal: bytes or tokens matched; choice: trie node
  std::int32_t chosen_ = 0;     // the name the last choice took
  JsonPrefix json_;
  std::optional<SchemaPrefix> schema_;  // in a json_schema segment
};

}  // namespace moed::server
