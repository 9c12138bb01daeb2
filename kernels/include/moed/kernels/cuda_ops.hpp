#pragma once

#include <cstdint>
#include <string>

#include "moed/kernels/cpu_ops.hpp"

// CUDA kernels mirroring the CPU contracts in cpu_ops.hpp. Built only with MOED_CUDA. Every
// pointer is device memory; bf16 tensors are their bit patterns (std::uint16_t), as on the CPU
// side, so this header needs no CUDA headers. Activations are f32; weights bf16. Launches run
// on the default stream unless a Blas bound to a stream is given; every launch is checked and a
// failure throws std::runtime_error naming the kernel and the CUDA error.
namespace moed::kernels::cuda {

// Number of usable CUDA devices; 0 (with the driver's reason in `why`) when there is none, e.g.
// cudaErrorInsufficientDriver on a machine without a GPU. Never throws.
int device_count(std::string* why = nullptr);

// kernels::rms_norm on the device.
void rms_norm(const float* x, const float* weight, float* y, std::int64_t rows, std::int64_t dim,
              float eps);

// kernels::rope_rotate_half on the device; positions: [rows].
void rope_rotate_half(float* x, std::int64_t rows, std::int64_t heads, std::int64_t head_dim,
                      const std::int64_t* positions, double theta);

// kernels::silu_mul on the device.
void silu_mul(const float* gate_up, float* out, std::int64_t rows, std::int64_t ffn);

// kernels::router_top_k for each of `rows` rows: logits [rows, n_experts] -> ids, weights
// [rows, k] (descending weight, ties to the lower id). n_experts <= 1024.
void router_top_k(const float* logits, std::int64_t rows, int n_experts, int k, int* ids,
                  float* weights);

// kernels::attention on the device (causal grouped-query attention over a KV cache).
void attention(const float* q, const float* k, const float* v, float* out,
               const AttentionShape& shape);

// out[r] = table[ids[r]] as f32: the embedding lookup. table: bf16 [vocab, dim].
void embedding(const std::uint16_t* table, const std::int32_t* ids, std::int64_t rows,
               std::int64_t dim, float* out);

// f32 -> bf16 (round to nearest even, as the CPU conversion).
void to_bf16(const float* x, std::uint16_t* y, std::int64_t n);

// A cuBLAS handle, optionally bound to a stream (a cudaStream_t passed as void*).
class Blas {
 public:
  explicit Blas(void* stream = nullptr);
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;

  // y[rows, n] (f32) = x[rows, k] (bf16) * w[n, k]^T (bf16, the Hugging Face [out, in] layout),
  // accumulated in f32: the dense projections and the LM head.
  void matmul_bf16(const std::uint16_t* x, std::int64_t rows, const std::uint16_t* w,
                   std::int64_t n, std::int64_t k, float* y);
  void* stream() const { return stream_; }

 private:
  void* handle_ = nullptr;
  void* stream_ = nullptr;
};

// One expert's SwiGLU FFN over the tokens routed to it, combined into the layer output:
//   for each i < n: out[rows[i]] += weights[i] * w2 · (silu(w1 · x[rows[i]]) * (w3 · x[rows[i]]))
// w13: bf16 [2*ffn, hidden] (w1 rows, then w3 rows; the CPU engine's fused layout); w2: bf16
// [hidden, ffn]. The gather, the fused SwiGLU and the weighted combine are our kernels; the two
// products are cuBLAS. `workspace` holds expert_ffn_workspace_bytes(n, hidden, ffn) bytes.
// Experts of one layer run one after another on the Blas's stream, so the combine needs no
// atomics: a token appears at most once per expert.
std::size_t expert_ffn_workspace_bytes(std::int64_t n, std::int64_t hidden, std::int64_t ffn);
void expert_ffn(Blas& blas, const float* x, const std::int32_t* rows, const float* weights,
                std::int64_t n, std::int64_t hidden, std::int64_t ffn, const std::uint16_t* w13,
                const std::uint16_t* w2, void* workspace, float* out);

}  // namespace moed::kernels::cuda
