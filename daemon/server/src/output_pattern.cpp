#include "moed/server/output_pattern.hpp"

#include <algorithm>

namespace moed::server {

OutputPattern& OutputPattern::literal(std::string text, std::vector<std::int32_t> tokens) {
  if (!text.empty())
    segments_.push_back({Segment::Kind::literal, std::move(text), std::move(tokens), {}, {}});
  return *this;
}

OutputPattern& OutputPattern::choice(const std::vector<std::string>& names) {
  Segment segment{Segment::Kind::choice, {}, {}, {}, {}};
  for (std::size_t i = 0; i < names.size(); ++i)
    segment.names.insert(names[i], static_cast<std::int32_t>(i));
  segments_.push_back(std::move(segment));
  return *this;
}

OutputPattern& OutputPattern::json_object() {
  segments_.push_back({Segment::Kind::json_object, {}, {}, {}, {}});
  return *this;
}

OutputPattern& OutputPattern::json_schema(
    std::vector<std::shared_ptr<const CompiledSchema>> schemas) {
  segments_.push_back({Segment::Kind::json_schema, {}, {}, {}, std::move(schemas)});
  return *this;
}

PatternPrefix::PatternPrefix(const OutputPattern& pattern) : pattern_(&pattern) {
  enter_segment();
}

void PatternPrefix::next_segment() {
  const auto& left = pattern_->segments_[segment_];
  if (left.kind == OutputPattern::Segment::Kind::choice) chosen_ = left.names.name_at(position_);
  ++segment_;
  position_ = 0;
  json_ = JsonPrefix();
  schema_.reset();
  enter_segment();
}

void PatternPrefix::enter_segment() {
  if (complete()) return;
  const auto& schemas = pattern_->segments_[segment_].schemas;
  if (!schemas.empty())
    schema_.emplace(*schemas[schemas.size() == 1 ? 0 : static_cast<std::size_t>(chosen_)]);
}

bool PatternPrefix::feed(unsigned char c) {
  using Kind = OutputPattern::Segment::Kind;
  while (!complete()) {
    const auto& segment = pattern_->segments_[segment_];
    switch (segment.kind) {
      case Kind::literal:
        if (!segment.tokens.empty() || static_cast<unsigned char>(segment.text[position_]) != c)
          return false;
        if (++position_ == segment.text.size()) next_segment();
        return true;
      case Kind::choice: {
        if (const std::uint32_t child = segment.names.child(position_, c); child != 0) {
          position_ = child;
          // A whole name that no longer one goes on from: the next segment starts, so that a
          // literal given as tokens may.
          if (segment.names.is_leaf(position_)) next_segment();
          return true;
        }
        if (segment.names.name_at(position_) < 0) return false;
        next_segment();  // the name is whole: the byte is the next segment's
        continue;
      }
      case Kind::json_object:
        if (!json_.feed(c)) return false;
        if (json_.complete()) next_segment();
        return true;
      case Kind::json_schema:
        if (!schema_->feed(c)) return false;
        if (schema_->complete()) next_segment();
        return true;
    }
  }
  return false;
}

std::int32_t PatternPrefix::forced_token() const {
  if (complete()) return -1;
  const auto& tokens = pattern_->segments_[segment_].tokens;
  return tokens.empty() ? -1 : tokens[position_];
}

std::int32_t PatternPrefix::token_after_name() const {
  if (complete() || segment_ + 1 == pattern_->segments_.size()) return -1;
  const auto& segment = pattern_->segments_[segment_];
  const auto& next = pattern_->segments_[segment_ + 1];
  if (segment.kind != OutputPattern::Segment::Kind::choice ||
      segment.names.name_at(position_) < 0 || next.tokens.empty())
    return -1;
  return next.tokens[0];
}

void PatternPrefix::take_literal_token() {
  if (pattern_->segments_[segment_].kind == OutputPattern::Segment::Kind::choice) next_segment();
  if (++position_ == pattern_->segments_[segment_].tokens.size()) next_segment();
}

}  // namespace moed::server
