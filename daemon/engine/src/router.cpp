#include "moed/engine/router.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "moed/kernels/cpu_ops.hpp"

namespace moed::engine {
namespace {

// The first `count` indices of `values` by descending value, ties to the lower index.
std::vector<int> best(const std::vector<float>& values, int count) {
  std::vector<int> order(values.size());
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + count, order.end(), [&](int a, int b) {
    return values[a] > values[b] || (values[a] == values[b] && a < b);
  });
  order.resize(static_cast<std::size_t>(count));
  return order;
}

}  // namespace

void route(const model::RouterSpec& router, const float* logits, const float* bias, int n_experts,
           int k, int* ids, float* weights) {
  std::vector<float> scores(static_cast<std::size_t>(n_experts));
  if (router.scoring == model::Scoring::softmax) {
    kernels::softmax(logits, scores.data(), n_experts);
  } else {
    for (int e = 0; e < n_experts; ++e)
      scores[e] = static_cast<float>(1.0 / (1.0 + std::exp(-static_cast<double>(logits[e]))));
  }
  std::vector<float> choice = scores;
  if (bias)
    for (int e = 0; e < n_experts; ++e) choice[e] += bias[e];
  if (router.n_group > 1) {
    const auto groups = static_cast<int>(router.n_group);
    const int per_group = n_experts / groups;
    std::vector<float> group_scores(static_cast<std::size_t>(groups));
    for (int g = 0; g < groups; ++g) {
      const std::vector<float> members(choice.begin() + g * per_group,
                                       choice.begin() + (g + 1) * per_group);
      const auto top = best(members, router.group_top2_sum ? 2 : 1);
      group_scores[g] = router.group_top2_sum ? members[top[0]] + members[top[1]] : members[top[0]];
    }
    const auto kept = best(group_scores, static_cast<int>(router.topk_group));
    for (int g = 0; g < groups; ++g)
      if (std::find(kept.begin(), kept.end(), g) == kept.end())
        std::fill(choice.begin() + g * per_group, choice.begin() + (g + 1) * per_group,
                  router.masked_group_score);
  }
  const auto chosen = best(choice, k);
  float total = 0.0f;
  for (int i = 0; i < k; ++i) total += scores[chosen[i]];
  // llama.cpp clamps the sum at 2^-14; DeepSeek-V3 guards it with 1e-20; softmax top-k sums are
  // never 0.
  const float denominator = router.clamp_weight_sum                     ? std::max(total, 0x1p-14f)
                            : router.scoring == model::Scoring::sigmoid ? total + 1e-20f
                                                                        : total;
  for (int i = 0; i < k; ++i) {
    ids[i] = chosen[i];
    float w = scores[chosen[i]];
    if (router.normalize) w /= denominator;
    weights[i] = static_cast<float>(w * router.scaling);
  }
}

}  // namespace moed::engine
