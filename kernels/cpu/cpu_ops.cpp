#include "moed/kernels/cpu_ops.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <numeric>
#include <span>
#include <vector>

#include "attention_avx512.hpp"
#include "moed/kernels/cpu_threads.hpp"
#include "moed/kernels/dtype.hpp"
#include "team.hpp"

namespace moed::kernels {

// Hot loops are cloned per ISA and picked at run time, so the library runs on any x86-64 and
// still uses AVX-512 where it exists. Not under ThreadSanitizer: GCC instruments the resolver
// that picks a clone, and the dynamic loader runs it before the sanitizer's runtime has started
// (a crash at startup), so that build runs the baseline code.
#if defined(__SANITIZE_THREAD__)
#define MOED_ISA_CLONES
#else
#define MOED_ISA_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#endif

MOED_ISA_CLONES void rms_norm(const float* x, const float* weight, float* y, std::int64_t rows,
                              std::int64_t dim, float eps) {
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* in = x + r * dim;
    float* out = y + r * dim;
    // Eight partial sums rather than one chain of dependent adds, a few cycles each: the norm
    // runs on one thread between a decode step's parallel regions (17 a token on the bench
    // model, 3.1k cycles each for 1024 values before).
    constexpr std::int64_t kLanes = 8;
    double lanes[kLanes] = {};
    std::int64_t d = 0;
    for (; d + kLanes <= dim; d += kLanes)
      for (std::int64_t l = 0; l < kLanes; ++l)
        lanes[l] += static_cast<double>(in[d + l]) * in[d + l];
    double sum_sq = 0.0;
    for (const double lane : lanes) sum_sq += lane;
    for (; d < dim; ++d) sum_sq += static_cast<double>(in[d]) * in[d];
    const float scale =
        static_cast<float>(1.0 / std::sqrt(sum_sq / static_cast<double>(dim) + eps));
    for (std::int64_t i = 0; i < dim; ++i) out[i] = in[i] * scale * weight[i];
  }
}

void rope(float* x, const RopeShape& s, const std::int64_t* positions, const double* inv_freq,
          double scale) {
  const std::int64_t half = s.dim / 2;
  // Element indices of pair i: (i, i + half) or (2i, 2i + 1).
  const std::int64_t second = s.pairs == RopePairs::half ? half : 1;
  const std::int64_t step = s.pairs == RopePairs::half ? 1 : 2;
  // The last position's table, kept on this thread: a decode step rotates the queries and keys
  // of every layer at one position (16 calls a token on the bench model), and each call took
  // 64 double sin/cos pairs, about 1.4 us. Kept with the frequencies and scale it was made from.
  struct Angles {
    std::int64_t position = -1;  // none: positions are never negative
    double scale = 0;
    std::vector<double> inv_freq;
    std::vector<float> cos, sin;
  };
  thread_local Angles last;
  const std::span<const double> frequencies(inv_freq, static_cast<std::size_t>(half));
  const bool same_table = last.scale == scale && std::ranges::equal(last.inv_freq, frequencies);
  if (!same_table) {
    // The key last, so that an allocation that throws leaves no table that seems to match.
    last.position = -1;
    last.cos.resize(frequencies.size());
    last.sin.resize(frequencies.size());
    last.inv_freq.assign(frequencies.begin(), frequencies.end());
    last.scale = scale;
  }
  const std::vector<float>& cos_table = last.cos;
  const std::vector<float>& sin_table = last.sin;
  for (std::int64_t r = 0; r < s.rows; ++r) {
    if (positions[r] != last.position) {
      for (std::int64_t i = 0; i < half; ++i) {
        const double angle = static_cast<double>(positions[r]) * inv_freq[i];
        last.cos[i] = static_cast<float>(std::cos(angle) * scale);
        last.sin[i] = static_cast<float>(std::sin(angle) * scale);
      }
      last.position = positions[r];
    }
    for (std::int64_t h = 0; h < s.heads; ++h) {
      float* v = x + (r * s.heads + h) * s.stride + s.offset;
      for (std::int64_t i = 0; i < half; ++i) {
        float* first = v + i * step;
        const float a = first[0];
        const float b = first[second];
        first[0] = a * cos_table[i] - b * sin_table[i];
        first[second] = b * cos_table[i] + a * sin_table[i];
      }
    }
  }
}

void rope_rotate_half(float* x, std::int64_t rows, std::int64_t heads, std::int64_t head_dim,
                      const std::int64_t* positions, double theta) {
  std::vector<double> inv_freq(static_cast<std::size_t>(head_dim / 2));
  for (std::size_t i = 0; i < inv_freq.size(); ++i)
    inv_freq[i] = 1.0 / std::pow(theta, static_cast<double>(2 * i) / static_cast<double>(head_dim));
  rope(x, {rows, heads, head_dim, 0, head_dim, RopePairs::half}, positions, inv_freq.data(), 1.0);
}

namespace {

MOED_ISA_CLONES void f32_dots(const float* w, std::int64_t first, std::int64_t last, std::int64_t k,
                              const float* x, float* y) {
  constexpr std::int64_t kLanes = 16;
  const std::int64_t whole = k / kLanes * kLanes;
  for (std::int64_t r = first; r < last; ++r) {
    const float* row = w + r * k;
    float lanes[kLanes] = {};
    for (std::int64_t d = 0; d < whole; d += kLanes)
      for (std::int64_t l = 0; l < kLanes; ++l) lanes[l] += row[d + l] * x[d + l];
    float dot = 0.0f;
    for (const float lane : lanes) dot += lane;
    for (std::int64_t d = whole; d < k; ++d) dot += row[d] * x[d];
    y[r] = dot;
  }
}

// Below this many multiply-adds a parallel region costs more than the work it would share (a
// decode row of any router; a prefill's rows of even a small one exceed it).
constexpr std::int64_t kF32RowsParallelWork = std::int64_t{1} << 20;
constexpr std::int64_t kF32RowsPerBlock = 16;

}  // namespace

void f32_rows(const float* w, std::int64_t n, std::int64_t k, const float* x, std::int64_t m,
              float* y) {
  if (m * n * k < kF32RowsParallelWork) {
    for (std::int64_t i = 0; i < m; ++i) f32_dots(w, 0, n, k, x + i * k, y + i * n);
    return;
  }
  // Blocks of rows, outside the ISA clones (a region inside one runs the baseline ISA).
  const std::int64_t blocks = (n + kF32RowsPerBlock - 1) / kF32RowsPerBlock;
  detail::run_team(m, [&](const detail::Team::Member& member) {
    const auto [first, last] = member.share(m * blocks);
    for (std::int64_t task = first; task < last; ++task) {
      const std::int64_t i = task / blocks;
      const std::int64_t b = task % blocks;
      f32_dots(w, kF32RowsPerBlock * b, std::min(n, kF32RowsPerBlock * (b + 1)), k, x + i * k,
               y + i * n);
    }
  });
}

void router_top_k(const float* logits, int n_experts, int k, int* ids, float* weights) {
  std::vector<float> probs(static_cast<std::size_t>(n_experts));
  softmax(logits, probs.data(), n_experts);
  std::vector<int> order(static_cast<std::size_t>(n_experts));
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int a, int b) {
    return probs[a] > probs[b] || (probs[a] == probs[b] && a < b);
  });
  float total = 0.0f;
  for (int i = 0; i < k; ++i) total += probs[order[i]];
  for (int i = 0; i < k; ++i) {
    ids[i] = order[i];
    weights[i] = probs[order[i]] / total;
  }
}

namespace {

inline float widen(float x) {
  return x;
}
inline float widen(std::uint16_t x) {
  return bf16_to_f32(x);
}

// One query head against the first `visible` positions of its KV head: the scaled dot with
// each key, softmax, and the weighted sum of the values. Sixteen partial sums per dot, so the
// same code vectorises for every ISA (and adds in one order on each).
template <typename Element>
[[gnu::always_inline]] inline void attend_head(const float* q, const Element* keys,
                                               const Element* values, std::int64_t visible,
                                               std::int64_t head_dim, float scale, float* scores,
                                               float* out) {
  constexpr std::int64_t kLanes = 16;
  const std::int64_t whole = head_dim / kLanes * kLanes;
  float max_score = -INFINITY;
  for (std::int64_t t = 0; t < visible; ++t) {
    const Element* key = keys + t * head_dim;
    float lanes[kLanes] = {};
    for (std::int64_t d = 0; d < whole; d += kLanes)
      for (std::int64_t l = 0; l < kLanes; ++l) lanes[l] += q[d + l] * widen(key[d + l]);
    float dot = 0.0f;
    for (std::int64_t l = 0; l < kLanes; ++l) dot += lanes[l];
    for (std::int64_t d = whole; d < head_dim; ++d) dot += q[d] * widen(key[d]);
    scores[t] = dot * scale;
    max_score = std::max(max_score, scores[t]);
  }
  float total = 0.0f;
  for (std::int64_t t = 0; t < visible; ++t) {
    scores[t] = std::exp(scores[t] - max_score);
    total += scores[t];
  }
  for (std::int64_t t = 0; t < visible; ++t) scores[t] /= total;
  // The weighted sum of the values a slice of 32 dimensions at a time, its accumulators held in
  // registers over every position (with the whole head in memory, each position loaded and
  // stored them: 8 heads over 4096 positions took 528 against 400 us, 395 against 373 for a
  // bf16 cache). Each output still adds in position order.
  constexpr std::int64_t kSlice = 32;
  std::int64_t d0 = 0;
  for (; d0 + kSlice <= head_dim; d0 += kSlice) {
    float acc[kSlice] = {};
    for (std::int64_t t = 0; t < visible; ++t) {
      const Element* value = values + t * head_dim + d0;
      for (std::int64_t d = 0; d < kSlice; ++d) acc[d] += scores[t] * widen(value[d]);
    }
    std::copy(acc, acc + kSlice, out + d0);
  }
  std::fill(out + d0, out + head_dim, 0.0f);
  for (std::int64_t t = 0; t < visible; ++t)
    for (std::int64_t d = d0; d < head_dim; ++d)
      out[d] += scores[t] * widen(values[t * head_dim + d]);
}

MOED_ISA_CLONES void attend_head_of(const float* q, const float* keys, const float* values,
                                    std::int64_t visible, std::int64_t head_dim, float scale,
                                    float* scores, float* out) {
  attend_head(q, keys, values, visible, head_dim, scale, scores, out);
}

MOED_ISA_CLONES void attend_head_of(const float* q, const std::uint16_t* keys,
                                    const std::uint16_t* values, std::int64_t visible,
                                    std::int64_t head_dim, float scale, float* scores, float* out) {
  attend_head(q, keys, values, visible, head_dim, scale, scores, out);
}

// The parallel loop stays outside the ISA clones: GCC outlines an OpenMP region's body once,
// before cloning, so a region inside a target_clones function runs the baseline ISA (it did:
// SSE2 code only, 3-5x slower on bf16 caches).
template <typename Element>
void attention_over(const float* q, const Element* k, const Element* v, float* out,
                    const AttentionShape& s) {
  const std::int64_t group = s.heads / s.kv_heads;
  const float scale =
      s.scale > 0 ? static_cast<float>(s.scale) : 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  if (s.head_dim % 16 == 0 && detail::cpu_has_avx512_attention()) {
    // The heads that share a KV head go to one thread together, so each key and value is read
    // once for them; a group is split only where there are fewer (query, KV head) pairs than
    // threads (one decode row of MLA, whose heads all share one latent cache). The pairs go
    // round-robin, so a causal prefill's long rows do not all fall to the last thread.
    const std::int64_t pairs = s.n_query * s.kv_heads;
    const std::int64_t threads = compute_threads();
    const std::int64_t pieces =
        pairs >= threads ? 1 : std::min(group, (threads + pairs - 1) / pairs);
    const std::int64_t piece = (group + pieces - 1) / pieces;
    detail::run_team(s.n_query, [&](const detail::Team::Member& member) {
      // Kept per thread and grown, not zeroed, each call: an MLA prefill's group is 128 heads.
      thread_local std::vector<float> scores;
      const auto needed = static_cast<std::size_t>((s.first_position + s.n_query) *
                                                   std::min<std::int64_t>(piece, 8));
      if (scores.size() < needed) scores.resize(needed);
      for (std::int64_t task = member.self(); task < pairs * pieces; task += member.threads()) {
        const std::int64_t i = task / (s.kv_heads * pieces);
        const std::int64_t g = task / pieces % s.kv_heads;
        const std::int64_t p = task % pieces;
        const std::int64_t first_head = g * group + p * piece;
        const std::int64_t heads = std::min(piece, group - p * piece);
        if (heads <= 0) continue;
        const std::int64_t kv_offset = g * s.capacity * s.head_dim;
        const std::int64_t at = (i * s.heads + first_head) * s.head_dim;
        detail::attend_heads_avx512(q + at, k + kv_offset, v + kv_offset, s.first_position + i + 1,
                                    s.head_dim, static_cast<int>(heads), scale, scores.data(),
                                    out + at);
      }
    });
    return;
  }
#pragma omp parallel
  {
    std::vector<float> scores(static_cast<std::size_t>(s.first_position + s.n_query));
#pragma omp for collapse(2) schedule(static)
    for (std::int64_t i = 0; i < s.n_query; ++i) {
      for (std::int64_t h = 0; h < s.heads; ++h) {
        const std::int64_t kv_offset = (h / group) * s.capacity * s.head_dim;
        attend_head_of(q + (i * s.heads + h) * s.head_dim, k + kv_offset, v + kv_offset,
                       s.first_position + i + 1, s.head_dim, scale, scores.data(),
                       out + (i * s.heads + h) * s.head_dim);
      }
    }
  }
}

}  // namespace

void attention(const float* q, const float* k, const float* v, float* out,
               const AttentionShape& s) {
  attention_over(q, k, v, out, s);
}

void attention(const float* q, const std::uint16_t* k, const std::uint16_t* v, float* out,
               const AttentionShape& s) {
  attention_over(q, k, v, out, s);
}

MOED_ISA_CLONES void add_in_place(float* y, const float* x, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) y[i] += x[i];
}

namespace {

// exp(x) for x <= 0 in float arithmetic, without branches, so that a loop over it vectorises on
// every ISA (Cephes' expf: x = n ln2 + r with |r| <= ln2 / 2, a degree-6 polynomial in r, and
// 2^n put into the exponent bits). 0 below -87.3, where float's exp leaves the normal range,
// and for NaN: a logit of -inf or NaN weighs nothing.
[[gnu::always_inline]] inline float exp_nonpositive(float x) {
  constexpr float kLowest = -87.3f;
  const float in_range = x < kLowest ? kLowest : x;
  // Rounded to the nearest integer by adding and taking away 1.5 * 2^23, which every ISA
  // vectorises (floor does not on baseline x86-64).
  constexpr float kRound = 12582912.0f;
  const float rounded = in_range * 1.44269504088896341f + kRound;
  const float n = rounded - kRound;
  const float r = (in_range - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  // n from the bits of `rounded` rather than a float-to-int conversion, which a NaN would make
  // undefined.
  const std::int32_t whole =
      std::bit_cast<std::int32_t>(rounded) - std::bit_cast<std::int32_t>(kRound);
  const float two_to_n = std::bit_cast<float>((whole + 127) << 23);
  const float value = y * two_to_n;
  return x >= kLowest ? value : 0.0f;
}

template <bool kWrite>
[[gnu::always_inline]] inline double exp_sum(const float* x, std::int64_t n, float shift,
                                             float scale, float* out) {
  // Sixteen partial sums, so the same code vectorises for every ISA and adds in one order.
  constexpr std::int64_t kLanes = 16;
  double lanes[kLanes] = {};
  std::int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (std::int64_t l = 0; l < kLanes; ++l) {
      const float e = exp_nonpositive((x[i + l] - shift) * scale);
      if constexpr (kWrite) out[i + l] = e;
      lanes[l] += e;
    }
  double total = 0.0;
  for (; i < n; ++i) {
    const float e = exp_nonpositive((x[i] - shift) * scale);
    if constexpr (kWrite) out[i] = e;
    total += e;
  }
  for (const double lane : lanes) total += lane;
  return total;
}

}  // namespace

// SiLU(g) = g * sigmoid(g), with sigmoid from exp(-|g|) <= 1 so that nothing overflows:
// 1 / (1 + e) for g >= 0, e / (1 + e) below. Branch-free, so the loop vectorises: one scalar
// expf per element (libm's) took 21 us of each MoE layer's expert region at Mixtral's width.
MOED_ISA_CLONES void silu_mul(const float* gate_up, float* out, std::int64_t rows,
                              std::int64_t ffn) {
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* gate = gate_up + r * 2 * ffn;
    const float* up = gate + ffn;
    float* o = out + r * ffn;
    for (std::int64_t j = 0; j < ffn; ++j) {
      const float g = gate[j];
      const float e = exp_nonpositive(-std::fabs(g));
      const float sigmoid = (g >= 0.0f ? 1.0f : e) / (1.0f + e);
      o[j] = g * sigmoid * up[j];
    }
  }
}

MOED_ISA_CLONES double exp_and_sum(const float* x, std::int64_t n, float shift, float scale,
                                   float* out) {
  return out ? exp_sum<true>(x, n, shift, scale, out) : exp_sum<false>(x, n, shift, scale, out);
}

MOED_ISA_CLONES std::int64_t argmax(const float* x, std::int64_t n) {
  // The largest value in sixteen lanes (vectorised; a NaN never compares larger), then the
  // first place that holds it.
  constexpr std::int64_t kLanes = 16;
  float lanes[kLanes];
  std::fill(lanes, lanes + kLanes, -INFINITY);
  std::int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (std::int64_t l = 0; l < kLanes; ++l) lanes[l] = x[i + l] > lanes[l] ? x[i + l] : lanes[l];
  float largest = -INFINITY;
  for (; i < n; ++i) largest = x[i] > largest ? x[i] : largest;
  for (const float lane : lanes) largest = lane > largest ? lane : largest;
  if (largest == -INFINITY) return 0;
  return std::find(x, x + n, largest) - x;
}

double log_sum_exp(const float* logits, std::int64_t n) {
  return log_sum_exp(logits, n, logits[argmax(logits, n)]);
}

double log_sum_exp(const float* logits, std::int64_t n, float max_logit) {
  if (!std::isfinite(max_logit)) return max_logit;
  return std::log(exp_and_sum(logits, n, max_logit, 1.0f, nullptr)) + max_logit;
}

double softmax(const float* logits, float* probs, std::int64_t n) {
  // In double with the library's exp, as the routers were checked against the reference: a
  // router's few scores weigh every expert's output, and cost nothing next to a vocabulary.
  const float max_logit = *std::max_element(logits, logits + n);
  double total = 0.0;
  for (std::int64_t i = 0; i < n; ++i)
    total += std::exp(static_cast<double>(logits[i] - max_logit));
  const double lse = std::log(total) + max_logit;
  for (std::int64_t i = 0; i < n; ++i)
    probs[i] = static_cast<float>(std::exp(static_cast<double>(logits[i]) - lse));
  return lse;
}

namespace detail {

bool cpu_has_avx512_attention() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl");
  return has;
}

}  // namespace detail

}  // namespace moed::kernels
