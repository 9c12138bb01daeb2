#include "moed/engine/sampler.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>

#include "moed/kernels/cpu_ops.hpp"

namespace moed::engine {

void TokenConstraint::mask(std::span<float> logits) const {
  for (std::size_t id = 0; id < logits.size(); ++id)
    if (!allows(static_cast<std::int32_t>(id)))
      logits[id] = -std::numeric_limits<float>::infinity();
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {
  if (!(params.temperature >= 0.0f) || !std::isfinite(params.temperature))
    throw std::invalid_argument("temperature must be a finite number >= 0");
  if (!(params.top_p >= 0.0f && params.top_p <= 1.0f))
    throw std::invalid_argument("top_p must be in [0, 1]");
  if (params.top_k < 0) throw std::invalid_argument("top_k must be >= 0");
  if (!std::isfinite(params.presence_penalty) || !std::isfinite(params.frequency_penalty))
    throw std::invalid_argument("penalties must be finite numbers");
  for (const auto& [id, bias] : params.logit_bias)
    if (!std::isfinite(bias))
      throw std::invalid_argument("the bias of token " + std::to_string(id) + " is not finite");
}

bool Sampler::adjusts_logits() const {
  return !params_.logit_bias.empty() || params_.presence_penalty != 0.0f ||
         params_.frequency_penalty != 0.0f;
}

SampledToken Sampler::sample(const float* logits, std::int64_t vocab) {
  const auto& constraint = params_.constraint;
  if (!adjusts_logits() && !constraint) return draw(logits, vocab, true);
  adjusted_.assign(logits, logits + vocab);
  for (const auto& [id, bias] : params_.logit_bias)
    if (id >= 0 && id < vocab) adjusted_[static_cast<std::size_t>(id)] += bias;
  for (const std::int32_t id : drawn_)
    adjusted_[static_cast<std::size_t>(id)] -=
        params_.presence_penalty +
        static_cast<float>(times_drawn_[static_cast<std::size_t>(id)]) * params_.frequency_penalty;
  if (constraint) {
    // Greedy needs only the most likely allowed token: where the most likely of all is allowed,
    // as it mostly is, the other tokens need not be asked.
    const bool greedy = params_.temperature == 0.0f;
    const auto best = static_cast<std::int32_t>(kernels::argmax(adjusted_.data(), vocab));
    if (!greedy || !constraint->allows(best))
      constraint->mask(std::span(adjusted_).first(static_cast<std::size_t>(vocab)));
  }
  SampledToken token = draw(adjusted_.data(), vocab, false);
  if (constraint) {
    if (!constraint->allows(token.id))
      throw ConstraintDeadEnd("no token can continue the output in the format asked for");
    constraint->advance(token.id);
  }
  const float max_logit = logits[kernels::argmax(logits, vocab)];
  token.logprob = std::isfinite(max_logit)
                      ? static_cast<float>(static_cast<double>(logits[token.id]) -
                                           kernels::log_sum_exp(logits, vocab, max_logit))
                      : NAN;
  if (params_.presence_penalty != 0.0f || params_.frequency_penalty != 0.0f) {
    times_drawn_.resize(static_cast<std::size_t>(vocab));
    if (times_drawn_[static_cast<std::size_t>(token.id)]++ == 0) drawn_.push_back(token.id);
  }
  return token;
}

SampledToken Sampler::draw(const float* logits, std::int64_t vocab, bool logprob) {
  const auto best = static_cast<std::int32_t>(kernels::argmax(logits, vocab));
  const float max_logit = logits[best];
  const float inverse_temperature = 1.0f / params_.temperature;
  if (!std::isfinite(max_logit)) return {best, NAN};
  if (!std::isfinite(inverse_temperature))
    return {best, logprob ? static_cast<float>(static_cast<double>(max_logit) -
                                               kernels::log_sum_exp(logits, vocab, max_logit))
                          : NAN};
  // One pass of exp over the vocabulary (a serial step of every token: for 32000 logits it took
  // 0.8 ms in double with the library's exp, a sixth of a Q4_K_M decode step). A NaN logit
  // weighs nothing.
  probs_.resize(static_cast<std::size_t>(vocab));
  const double scaled_total =
      kernels::exp_and_sum(logits, vocab, max_logit, inverse_temperature, probs_.data());
  const double log_total = !logprob ? NAN
                           : params_.temperature == 1.0f
                               ? std::log(scaled_total) + max_logit
                               : kernels::log_sum_exp(logits, vocab, max_logit);
  const auto inverse_total = static_cast<float>(1.0 / scaled_total);
  for (auto& p : probs_) p *= inverse_total;

  order_.resize(static_cast<std::size_t>(vocab));
  std::iota(order_.begin(), order_.end(), 0);
  if (params_.top_k > 0) {
    const std::int64_t keep = std::min<std::int64_t>(params_.top_k, vocab);
    std::partial_sort(order_.begin(), order_.begin() + keep, order_.end(),
                      [&](std::int32_t a, std::int32_t b) { return more_likely(a, b); });
    return pick(keep, keep, logits, log_total);
  }
  // No top-k: the tokens are sorted only as far as the nucleus reaches, and not at all without
  // a nucleus (sorting all 32000 took 4.4 ms a token, as long as a Q4_K_M decode step).
  return pick(0, vocab, logits, log_total);
}

bool Sampler::more_likely(std::int32_t a, std::int32_t b) const {
  return probs_[a] > probs_[b] || (probs_[a] == probs_[b] && a < b);
}

SampledToken Sampler::pick(std::int64_t sorted, std::int64_t candidates, const float* logits,
                           double log_total) {
  std::int64_t keep = candidates;
  double total = 0.0;
  if (params_.top_p < 1.0f) {
    // order_[0, sorted) holds the most likely candidates, best first. sort_more() extends it by
    // the next band: the candidates at least a sixteenth as likely as the band before (the
    // first: as the most likely; at last, all of them), so it is always a prefix of the fully
    // sorted order, and the nucleus is cut from it as from a full sort.
    float floor = -1.0f;
    auto sort_more = [&] {
      if (floor < 0.0f)
        for (std::int64_t i = sorted; i < candidates; ++i)
          floor = std::max(floor, probs_[order_[i]]);
      floor = floor > 1e-30f ? floor / 16.0f : 0.0f;
      const auto band_end = std::partition(order_.begin() + sorted, order_.begin() + candidates,
                                           [&](std::int32_t id) { return probs_[id] >= floor; });
      std::sort(order_.begin() + sorted, band_end,
                [&](std::int32_t a, std::int32_t b) { return more_likely(a, b); });
      sorted = band_end - order_.begin();
    };
    std::int64_t i = 0;  // the most likely is always kept (top_p 0 keeps only it)
    while (i < candidates && (i == 0 || total < params_.top_p)) {
      while (i == sorted) sort_more();
      total += probs_[order_[i++]];
    }
    keep = i;
  } else {
    for (std::int64_t i = 0; i < candidates; ++i) total += probs_[order_[i]];
  }
  // The kept candidates in order_'s order: most likely first where sorted (top-k, nucleus),
  // else in id order, which gives each its probability as well as any order does, where the
  // most likely first would sort as far as the draw (all of a flat distribution).
  auto chosen = [&](std::int32_t id) {
    return SampledToken{id, static_cast<float>(static_cast<double>(logits[id]) - log_total)};
  };
  std::uniform_real_distribution<double> uniform(0.0, total);
  const double target = uniform(rng_);
  double running = 0.0;
  // A token of no weight (masked by a constraint, or a NaN logit) is never chosen, not even
  // for a draw of exactly 0.
  for (std::int64_t i = 0; i < keep; ++i) {
    running += probs_[order_[i]];
    if (running >= target && probs_[order_[i]] > 0.0f) return chosen(order_[i]);
  }
  return chosen(order_[keep - 1]);
}

}  // namespace moed::engine
