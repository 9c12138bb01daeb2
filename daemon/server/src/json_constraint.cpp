#include "moed/server/json_constraint.hpp"

#include <algorithm>
#include <array>
#include <limits>

namespace moed::server {
ConstraintVocabulary::ConstraintVocabulary(std::vector<std::string> token_bytes,
                                           std::vector<bool> end_tokens)
    : bytes(std::move(token_bytes)), ends(std::move(end_tokens)), plain(bytes.size()) {
  ends.resize(bytes.size());
  for (std::size_t id = 0; id < bytes.size(); ++id) {
    if (ends[id]) bytes[id].clear();
    // A string's own reading of the token, from a string's start, says it all.
    JsonPrefix in_string;
    for (const char c : std::string_view("{\"")) in_string.feed(static_cast<unsigned char>(c));
    plain[id] = !bytes[id].empty() && std::all_of(bytes[id].begin(), bytes[id].end(), [&](char c) {
      return c != '"' && c != '\\' && in_string.feed(static_cast<unsigned char>(c));
    }) && in_string.in_string();
  }
}

std::shared_ptr<const ConstraintVocabulary> constraint_vocabulary(
    const model::Tokenizer& tokenizer, std::int64_t vocab_size,
    std::span<const std::int64_t> end_ids) {
  std::vector<std::string> bytes(static_cast<std::size_t>(vocab_size));
  std::vector<bool> ends(static_cast<std::size_t>(vocab_size));
  const std::int64_t named = std::min(vocab_size, tokenizer.vocab_size());
  for (std::int32_t id = 0; id < named; ++id)
    if (!tokenizer.is_special(id)) bytes[static_cast<std::size_t>(id)] = tokenizer.token_bytes(id);
  for (const std::int64_t id : end_ids)
    if (id >= 0 && id < vocab_size) ends[static_cast<std::size_t>(id)] = true;
  return std::make_shared<const ConstraintVocabulary>(std::move(bytes), std::move(ends));
}

PatternConstraint::PatternConstraint(std::shared_ptr<const ConstraintVocabulary> vocabulary,
                                     std::shared_ptr<const OutputPattern> pattern)
    : vocabulary_(std::move(vocabulary)), pattern_(std::move(pattern)), prefix_(*pattern_) {}

bool PatternConstraint::allows(std::int32_t id) const {
  if (id < 0 || static_cast<std::size_t>(id) >= vocabulary_->bytes.size()) return false;
  if (prefix_.complete()) return vocabulary_->ends[static_cast<std::size_t>(id)];
  if (const std::int32_t forced = prefix_.forced_token(); forced >= 0) return id == forced;
  if (id == prefix_.token_after_name()) return true;
  const std::string& bytes = vocabulary_->bytes[static_cast<std::size_t>(id)];
  if (bytes.empty()) return false;
  PatternPrefix trial = prefix_;
  return std::all_of(bytes.begin(), bytes.end(),
                     [&](char c) { return trial.feed(static_cast<unsigned char>(c)); });
}

void PatternConstraint::advance(std::int32_t id) {
  if (prefix_.complete()) return;
  if (prefix_.forced_token() >= 0 || id == prefix_.token_after_name()) {
    prefix_.take_literal_token();
    return;
  }
  for (const char c : vocabulary_->bytes[static_cast<std::size_t>(id)])
    prefix_.feed(static_cast<unsigned char>(c));
}

void PatternConstraint::mask(std::span<float> logits) const {
  if (const std::int32_t forced = prefix_.forced_token(); forced >= 0) {
    for (std::size_t id = 0; id < logits.size(); ++id)
      if (id != static_cast<std::size_t>(forced))
        logits[id] = -std::numeric_limits<float>::infinity();
    return;
  }
  auto cached = std::find_if(masks_.begin(), masks_.end(),
                             [&](const CachedMask& m) { return m.prefix == prefix_; });
  if (cached == masks_.end()) {
    if (masks_.size() < kCachedMasks) {
      masks_.push_back({prefix_, {}});
      cached = masks_.end() - 1;
    } else {
      cached = masks_.begin() + static_cast<std::ptrdiff_t>(next_evicted_);
      next_evicted_ = (next_evicted_ + 1) % kCachedMasks;
      cached->prefix = prefix_;
    }
    allowed_tokens(cached->allowed);
  }
  const auto& allowed = cached->allowed;
  for (std::size_t id = 0; id < logits.size(); ++id)
    if (id >= vocabulary_->bytes.size() || !((allowed[id / 64] >> (id % 64)) & 1u))
      logits[id] = -std::numeric_limits<float>::infinity();
}

void PatternConstraint::allowed_tokens(std::vector<std::uint64_t>& allowed) const {
  const auto& bytes = vocabulary_->bytes;
  allowed.assign((bytes.size() + 63) / 64, 0);
  auto allow = [&](std::size_t id) { allowed[id / 64] |= std::uint64_t{1} << (id % 64); };
  if (prefix_.complete()) {
    for (std::size_t id = 0; id < bytes.size(); ++id)
      if (vocabulary_->ends[id]) allow(id);
    return;
  }
  // Most tokens are settled by their first two bytes, looked up in tables made for this state
  // (the second only for the first bytes that may come, when a token needs it).
  struct AfterFirstByte {
    bool taken = false;
    bool tabled = false;
    PatternPrefix prefix;
    std::array<bool, 256> may_follow{};
  };
  std::vector<AfterFirstByte> after(256, {false, false, prefix_, {}});
  for (int byte = 0; byte < 256; ++byte) {
    auto& a = after[static_cast<std::size_t>(byte)];
    a.taken = a.prefix.feed(static_cast<unsigned char>(byte));
  }
  if (const std::int32_t after_name = prefix_.token_after_name(); after_name >= 0)
    allow(static_cast<std::size_t>(after_name));
  const bool in_string = prefix_.in_string();
  // One prefix to try tokens on: assigning to it reuses its memory.
  PatternPrefix trial = prefix_;
  for (std::size_t id = 0; id < bytes.size(); ++id) {
    const std::string& token = bytes[id];
    if (token.empty()) continue;
    auto& a = after[static_cast<unsigned char>(token[0])];
    if (!a.taken) continue;
    if (token.size() == 1 || (in_string && vocabulary_->plain[id])) {
      allow(id);
      continue;
    }
    if (!a.tabled) {
      for (int byte = 0; byte < 256; ++byte) {
        trial = a.prefix;
        a.may_follow[static_cast<std::size_t>(byte)] = trial.feed(static_cast<unsigned char>(byte));
      }
      a.tabled = true;
    }
    if (!a.may_follow[static_cast<unsigned char>(token[1])]) continue;
    trial = a.prefix;
    if (std::all_of(token.begin() + 1, token.end(),
                    [&](char c) { return trial.feed(static_cast<unsigned char>(c)); }))
      allow(id);
  }
}

std::shared_ptr<PatternConstraint> json_object_constraint(
    std::shared_ptr<const ConstraintVocabulary> vocabulary) {
  static const auto pattern = std::make_shared<const OutputPattern>(OutputPattern().json_object());
  return std::make_shared<PatternConstraint>(std::move(vocabulary), pattern);
}

std::shared_ptr<PatternConstraint> json_schema_constraint(
    std::shared_ptr<const ConstraintVocabulary> vocabulary,
    std::shared_ptr<const CompiledSchema> schema) {
  auto pattern = std::make_shared<OutputPattern>();
  pattern->json_schema({std::move(schema)});
  return std::make_shared<PatternConstraint>(std::move(vocabulary), std::move(pattern));
}

}  // namespace moed::server
