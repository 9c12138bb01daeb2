#pragma once

#include "moed/model/model_spec.hpp"

namespace moed::engine {

// Chooses k of n_experts routed experts for one token from its router logits, with their mixing
// weights, as the family's transformers code does: softmax or sigmoid scores; an optional
// correction bias (DeepSeek-V3) that enters the choice but not the weights; an optional
// group-limited choice (only the best topk_group groups' experts); the top-k weights renormalised
// or not, then scaled. Ties go to the lower id. ids, weights: [k], best choice first.
void route(const model::RouterSpec& router, const float* logits, const float* bias, int n_experts,
           int k, int* ids, float* weights);

}  // namespace moed::engine
