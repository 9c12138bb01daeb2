#pragma once

#include <cstdint>

namespace moed::kernels {

// Row-wise RMSNorm: y = x / sqrt(mean(x^2) + eps) * weight. x, y: f32 [rows, dim]; may alias.
void rms_norm(const float* x, const float* weight, float* y, std::int64_t rows, std::int64_t dim,
              float eps);

// Rotary embedding as Hugging Face applies it (rotate_half: element i pairs with i + d/2), in
// place on x: f32 [rows, heads, head_dim]; positions: [rows].
void rope_rotate_half(float* x, std::int64_t rows, std::int64_t heads, std::int64_t head_dim,
                      const std::int64_t* positions, double theta);

// Which elements rotate together: i with i + dim/2 (NeoX, rotate_half), or 2i with 2i + 1 (GPT-J,
// DeepSeek's complex multiplication).
enum class RopePairs { half, adjacent };
struct RopeShape {
  std::int64_t rows, heads;
  std::int64_t stride;  // elements from one head to the next
  std::int64_t offset;  // first rotated element within a head
  std::int64_t dim;     // rotated elements per head
  RopePairs pairs;
};
// Rotary embedding with given frequencies: x f32 [rows, heads, stride] in place, pair i turned by
// positions[row] * inv_freq[i] ([dim / 2] frequencies); cos and sin are multiplied by `scale`
// (YaRN's attention factor, 1 otherwise).
void rope(float* x, const RopeShape& shape, const std::int64_t* positions, const double* inv_freq,
          double scale);

// out[r, j] = silu(gate_up[r, j]) * gate_up[r, ffn + j]. gate_up: f32 [rows, 2*ffn].
void silu_mul(const float* gate_up, float* out, std::int64_t rows, std::int64_t ffn);

// Mixtral routing: softmax over all experts, then the top k, renormalised to sum to 1.
// Ties go to the lower expert id. ids/weights: [k], in descending weight order.
void router_top_k(const float* logits, int n_experts, int k, int* ids, float* weights);

// Causal grouped-query attention over a KV cache.
//   q:   f32 [n_query, heads, head_dim], rows at positions first_position + i
//   k,v: f32 [kv_heads, capacity, head_dim], valid for positions [0, first_position + n_query)
//   out: f32 [n_query, heads, head_dim]
struct AttentionShape {
  std::int64_t n_query, heads, kv_heads, head_dim, capacity, first_position;
  double scale = 0;  // of q.k; 0 means 1/sqrt(head_dim)
};
void attention(const float* q, const float* k, const float* v, float* out,
               const AttentionShape& shape);
// The same over a bf16 cache (k, v: bf16 bits in that layout), widened to f32 as it is read and
// summed in f32 as the f32 version does (equal to it over the rounded values up to rounding).
void attention(const float* q, const std::uint16_t* k, const std::uint16_t* v, float* out,
               const AttentionShape& shape);

// y[i * n + r] = dot(w row r, x row i) for an f32 weight w [n, k] row-major and m rows of x [m, k]:
// sixteen partial sums over k, then added in order, the same for every m and thread count (so a
// batched row equals the row alone; as with the other ISA clones here, an AVX-512 CPU may fuse
// the multiply-adds where an AVX2 one does not). For routers (n is the expert count): where
// oneDNN's f32 matmul took 18 us for one row of the bench model's 8 x 1024 router, mostly its
// call and its parallel region, this takes a few; the work spreads over the OpenMP threads only
// where there is enough of it (a prefill's rows).
void f32_rows(const float* w, std::int64_t n, std::int64_t k, const float* x, std::int64_t m,
              float* y);

// y += x (n elements).
void add_in_place(float* y, const float* x, std::int64_t n);

// The sum of exp(scale * (x[i] - shift)) over n values, each also written to out[i] unless out
// is null. For arguments <= 0 (shift at least the largest x, scale > 0): each exp in float,
// within 2 ulp (0 below -87.3, and for NaN), summed in double; vectorised, for a vocabulary's
// logits.
double exp_and_sum(const float* x, std::int64_t n, float shift, float scale, float* out);

// The index of the largest of n values (n >= 1), the first of equals, NaN passed over; 0 when
// none is above -inf.
std::int64_t argmax(const float* x, std::int64_t n);

// log(sum(exp(x))) of n logits, computed stably (one pass for the max, one exp_and_sum; NaN
// weighs nothing); the max itself when it is not finite.
double log_sum_exp(const float* logits, std::int64_t n);
// The same from the largest logit, already found (logits[argmax(logits, n)]).
double log_sum_exp(const float* logits, std::int64_t n, float max_logit);

// Softmax of n logits into probabilities, numerically stable, in double with the library's exp
// (for a router's scores); returns log(sum(exp(x))).
double softmax(const float* logits, float* probs, std::int64_t n);

}  // namespace moed::kernels
