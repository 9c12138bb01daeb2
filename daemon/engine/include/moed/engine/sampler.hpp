#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace moed::engine {

struct SamplingParams {
  float temperature = 0.0f;  // 0: greedy (argmax, ties to the lowest id)
  std::int32_t top_k = 0;    // 0: all tokens
  float top_p = 1.0f;        // nucleus mass kept, in (0, 1]
  std::uint64_t seed = 0;
};

struct SampledToken {
  std::int32_t id;
  float logprob;  // log-probability of id under the unmodified distribution
};

// Draws tokens from logits. The same seed and logits give the same tokens.
class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  SampledToken sample(const float* logits, std::int64_t vocab);

 private:
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
};

}  // namespace moed::engine
