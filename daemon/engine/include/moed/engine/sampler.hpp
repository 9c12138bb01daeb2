#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <span>
#include <stdexcept>
#include <utility>
#include <vector>

namespace moed::engine {

// What may come next in an output that must follow a format (JSON, say). The sampler draws only
// tokens it allows, from the model's distribution renormalized over them, and tells it each
// token drawn.
class TokenConstraint {
 public:
  virtual ~TokenConstraint() = default;
  virtual bool allows(std::int32_t id) const = 0;
  virtual void advance(std::int32_t id) = 0;
  // Sets the logits of the tokens it does not allow to -inf: allows() over the vocabulary,
  // which a constraint may do faster at once.
  virtual void mask(std::span<float> logits) const;
};

// No token can continue a constrained output: the request fails, not the others beside it.
class ConstraintDeadEnd : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct SamplingParams {
  float temperature = 0.0f;  // 0: greedy (argmax, ties to the lowest id)
  std::int32_t top_k = 0;    // 0: all tokens
  float top_p = 1.0f;        // nucleus mass kept, in [0, 1]; 0 keeps the most likely token
  std::uint64_t seed = 0;
  // OpenAI's penalties, on the tokens this sampler has drawn: a token's logit loses
  // presence_penalty once it has been drawn, and frequency_penalty for each time it was.
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  // Added to those tokens' logits before the draw (OpenAI's logit_bias); ids outside the
  // vocabulary are ignored.
  std::vector<std::pair<std::int32_t, float>> logit_bias{};
  // Applied after the bias and penalties, before temperature, top-k and top-p; one per request,
  // as it follows the tokens drawn.
  std::shared_ptr<TokenConstraint> constraint{};
};

struct SampledToken {
  std::int32_t id;
  float logprob;  // log-probability of id under the model's own distribution (before bias,
                  // penalties, temperature, top-k and top-p)
};

// Draws tokens from logits. The same seed and logits give the same tokens.
class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  SampledToken sample(const float* logits, std::int64_t vocab);

 private:
  bool adjusts_logits() const;
  // `logprob`: whether the drawn token's log-probability under these logits is wanted (NaN if
  // not, saving a pass over them).
  SampledToken draw(const float* logits, std::int64_t vocab, bool logprob);
  bool more_likely(std::int32_t a, std::int32_t b) const;
  // Draws among order_[0, candidates), of which the first `sorted` are sorted, most likely
  // first (top_p applied); sorts more of them only as far as the nucleus needs, and none
  // without a nucleus (the unsorted rest in id order).
  SampledToken pick(std::int64_t sorted, std::int64_t candidates, const float* logits,
                    double log_total);
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<float> probs_;
  std::vector<std::int32_t> order_;
  std::vector<float> adjusted_;      // the logits with bias, penalties and constraint
  std::vector<int> times_drawn_;     // per token id, for the penalties
  std::vector<std::int32_t> drawn_;  // the ids drawn at least once
};

}  // namespace moed::engine
