#include "moed/engine/sampler.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>

#include "moed/kernels/cpu_ops.hpp"

namespace moed::engine {

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {
  if (!(params.temperature >= 0.0f) || !std::isfinite(params.temperature))
    throw std::invalid_argument("temperature must be a finite number >= 0");
  if (!(params.top_p > 0.0f && params.top_p <= 1.0f))
    throw std::invalid_argument("top_p must be in (0, 1]");
  if (params.top_k < 0) throw std::invalid_argument("top_k must be >= 0");
}

SampledToken Sampler::sample(const float* logits, std::int64_t vocab) {
  const double log_total = kernels::log_sum_exp(logits, vocab);
  auto logprob = [&](std::int32_t id) {
    return static_cast<float>(static_cast<double>(logits[id]) - log_total);
  };
  if (params_.temperature == 0.0f) {
    const auto best = static_cast<std::int32_t>(std::max_element(logits, logits + vocab) - logits);
    return {best, logprob(best)};
  }
  probs_.resize(static_cast<std::size_t>(vocab));
  std::vector<float> scaled(logits, logits + vocab);
  for (auto& v : scaled) v /= params_.temperature;
  kernels::softmax(scaled.data(), probs_.data(), vocab);

  order_.resize(static_cast<std::size_t>(vocab));
  std::iota(order_.begin(), order_.end(), 0);
  std::int64_t keep = params_.top_k > 0 ? std::min<std::int64_t>(params_.top_k, vocab) : vocab;
  auto by_prob = [&](std::int32_t a, std::int32_t b) {
    return probs_[a] > probs_[b] || (probs_[a] == probs_[b] && a < b);
  };
  std::partial_sort(order_.begin(), order_.begin() + keep, order_.end(), by_prob);
  if (params_.top_p < 1.0f) {
    double mass = 0.0;
    std::int64_t i = 0;
    while (i < keep) {
      mass += probs_[order_[i]];
      ++i;
      if (mass >= params_.top_p) break;
    }
    keep = i;
  }
  double total = 0.0;
  for (std::int64_t i = 0; i < keep; ++i) total += probs_[order_[i]];
  std::uniform_real_distribution<double> uniform(0.0, total);
  const double target = uniform(rng_);
  double running = 0.0;
  for (std::int64_t i = 0; i < keep; ++i) {
    running += probs_[order_[i]];
    if (running >= target) return {order_[i], logprob(order_[i])};
  }
  return {order_[keep - 1], logprob(order_[keep - 1])};
}

}  // namespace moed::engine
