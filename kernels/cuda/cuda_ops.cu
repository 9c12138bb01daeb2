#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cfloat>
#include <stdexcept>
#include <string>

#include "moed/kernels/cuda_ops.hpp"

namespace moed::kernels::cuda {
namespace {

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess)
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorName(status) + ": " +
                             cudaGetErrorString(status));
}

void check(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string(what) + ": cuBLAS status " + std::to_string(status));
}

void check_launch(const char* kernel) {
  check(cudaGetLastError(), kernel);
}

unsigned blocks_for(std::int64_t n, int threads) {
  return static_cast<unsigned>((n + threads - 1) / threads);
}

const __nv_bfloat16* as_bf16(const std::uint16_t* p) {
  return reinterpret_cast<const __nv_bfloat16*>(p);
}
__nv_bfloat16* as_bf16(std::uint16_t* p) {
  return reinterpret_cast<__nv_bfloat16*>(p);
}

__device__ float silu(float g) {
  return g / (1.0f + expf(-g));
}

// One block per row; the block reduces the sum of squares in double, as the CPU kernel does.
constexpr int kThreadsPerRow = 256;

__global__ void rms_norm_kernel(const float* x, const float* weight, float* y, long long dim,
                                float eps) {
  __shared__ double partial[kThreadsPerRow];
  const float* in = x + blockIdx.x * dim;
  float* out = y + blockIdx.x * dim;
  double sum = 0.0;
  for (long long i = threadIdx.x; i < dim; i += blockDim.x) sum += double(in[i]) * in[i];
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  const float scale = float(1.0 / sqrt(partial[0] / double(dim) + eps));
  for (long long i = threadIdx.x; i < dim; i += blockDim.x) out[i] = in[i] * scale * weight[i];
}

// One thread per (row, head, i < half); angles in double as the CPU table.
__global__ void rope_kernel(float* x, long long rows, long long heads, long long head_dim,
                            const long long* positions, double theta) {
  const long long half = head_dim / 2;
  const long long index = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x;
  if (index >= rows * heads * half) return;
  const long long i = index % half;
  const long long rh = index / half;
  const long long r = rh / heads;
  const double inv_freq = 1.0 / pow(theta, double(2 * i) / double(head_dim));
  const double angle = double(positions[r]) * inv_freq;
  const float c = float(cos(angle)), s = float(sin(angle));
  float* v = x + rh * head_dim;
  const float a = v[i], b = v[i + half];
  v[i] = a * c - b * s;
  v[i + half] = b * c + a * s;
}

__global__ void silu_mul_kernel(const float* gate_up, float* out, long long rows, long long ffn) {
  const long long index = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x;
  if (index >= rows * ffn) return;
  const long long r = index / ffn, j = index % ffn;
  out[index] = silu(gate_up[r * 2 * ffn + j]) * gate_up[r * 2 * ffn + ffn + j];
}

// The fused SwiGLU of the expert FFN: writes the bf16 input of the down projection directly.
__global__ void silu_mul_bf16_kernel(const float* gate_up, __nv_bfloat16* out, long long rows,
                                     long long ffn) {
  const long long index = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x;
  if (index >= rows * ffn) return;
  const long long r = index / ffn, j = index % ffn;
  out[index] = __float2bfloat16_rn(silu(gate_up[r * 2 * ffn + j]) * gate_up[r * 2 * ffn + ffn + j]);
}

// One block per row, one thread per expert; selection is k rounds of an argmax reduction.
constexpr int kMaxExperts = 1024;

__global__ void router_kernel(const float* logits, int n_experts, int k, int* ids, float* weights) {
  __shared__ float probs[kMaxExperts];
  __shared__ float best_value[kMaxExperts];
  __shared__ int best_id[kMaxExperts];
  __shared__ float total;
  const float* row = logits + static_cast<long long>(blockIdx.x) * n_experts;
  const int e = threadIdx.x;
  // Softmax (max, then sum of exps), as kernels::softmax.
  best_value[e] = e < n_experts ? row[e] : -FLT_MAX;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (e < stride) best_value[e] = fmaxf(best_value[e], best_value[e + stride]);
    __syncthreads();
  }
  const float max_logit = best_value[0];
  __syncthreads();
  probs[e] = e < n_experts ? expf(row[e] - max_logit) : 0.0f;
  best_value[e] = probs[e];
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (e < stride) best_value[e] += best_value[e + stride];
    __syncthreads();
  }
  const float sum = best_value[0];
  __syncthreads();
  if (e < n_experts) probs[e] /= sum;
  if (e == 0) total = 0.0f;
  __syncthreads();
  for (int pick = 0; pick < k; ++pick) {
    best_value[e] = e < n_experts ? probs[e] : -1.0f;
    best_id[e] = e;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
      if (e < stride) {
        const float other = best_value[e + stride];
        const int other_id = best_id[e + stride];
        if (other > best_value[e] || (other == best_value[e] && other_id < best_id[e])) {
          best_value[e] = other;
          best_id[e] = other_id;
        }
      }
      __syncthreads();
    }
    if (e == 0) {
      ids[blockIdx.x * k + pick] = best_id[0];
      weights[blockIdx.x * k + pick] = best_value[0];
      total += best_value[0];
      probs[best_id[0]] = -1.0f;  // taken
    }
    __syncthreads();
  }
  if (e < k) weights[blockIdx.x * k + e] /= total;
}

// Decode-style attention: one block per (query row, head). Keys are scored a tile at a time
// (one key per thread), with a running max and sum (online softmax); each thread accumulates
// the output dimensions d = threadIdx.x, threadIdx.x + blockDim.x, ...
constexpr int kAttentionThreads = 128;
constexpr int kMaxHeadDim = 256;

__global__ void attention_kernel(const float* q, const float* k, const float* v, float* out,
                                 AttentionShape s) {
  __shared__ float query[kMaxHeadDim];
  __shared__ float tile[kAttentionThreads];
  __shared__ float reduce[kAttentionThreads];
  const long long i = blockIdx.x / s.heads, h = blockIdx.x % s.heads;
  const long long group = s.heads / s.kv_heads;
  const long long visible = s.first_position + i + 1;
  const float scale = s.scale > 0 ? float(s.scale) : rsqrtf(float(s.head_dim));
  const float* qv = q + (i * s.heads + h) * s.head_dim;
  const float* keys = k + (h / group) * s.capacity * s.head_dim;
  const float* values = v + (h / group) * s.capacity * s.head_dim;
  for (long long d = threadIdx.x; d < s.head_dim; d += blockDim.x) query[d] = qv[d];
  __syncthreads();
  float acc[kMaxHeadDim / kAttentionThreads] = {};
  float running_max = -FLT_MAX, running_sum = 0.0f;
  for (long long start = 0; start < visible; start += blockDim.x) {
    const long long j = start + threadIdx.x;
    float score = -FLT_MAX;
    if (j < visible) {
      score = 0.0f;
      for (long long d = 0; d < s.head_dim; ++d) score += query[d] * keys[j * s.head_dim + d];
      score *= scale;
    }
    reduce[threadIdx.x] = score;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
      if (threadIdx.x < stride)
        reduce[threadIdx.x] = fmaxf(reduce[threadIdx.x], reduce[threadIdx.x + stride]);
      __syncthreads();
    }
    const float new_max = fmaxf(running_max, reduce[0]);
    __syncthreads();
    const float p = j < visible ? expf(score - new_max) : 0.0f;
    tile[threadIdx.x] = p;
    reduce[threadIdx.x] = p;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
      if (threadIdx.x < stride) reduce[threadIdx.x] += reduce[threadIdx.x + stride];
      __syncthreads();
    }
    const float correction = expf(running_max - new_max);
    running_sum = running_sum * correction + reduce[0];
    running_max = new_max;
    const long long count = min(static_cast<long long>(blockDim.x), visible - start);
    for (int slot = 0; slot * blockDim.x + threadIdx.x < s.head_dim; ++slot) {
      const long long d = slot * blockDim.x + threadIdx.x;
      float sum = acc[slot] * correction;
      for (long long t = 0; t < count; ++t) sum += tile[t] * values[(start + t) * s.head_dim + d];
      acc[slot] = sum;
    }
    __syncthreads();
  }
  float* o = out + (i * s.heads + h) * s.head_dim;
  for (int slot = 0; slot * blockDim.x + threadIdx.x < s.head_dim; ++slot)
    o[slot * blockDim.x + threadIdx.x] = acc[slot] / running_sum;
}

__global__ void embedding_kernel(const __nv_bfloat16* table, const int* ids, long long rows,
                                 long long dim, float* out) {
  const long long index = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x;
  if (index >= rows * dim) return;
  const long long r = index / dim, d = index % dim;
  out[index] = __bfloat162float(table[static_cast<long long>(ids[r]) * dim + d]);
}

__global__ void to_bf16_kernel(const float* x, __nv_bfloat16* y, long long n) {
  const long long index = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x;
  if (index < n) y[index] = __float2bfloat16_rn(x[index]);
}

// Gathers the rows routed to an expert, converting them to bf16 for cuBLAS.
__global__ void gather_bf16_kernel(const float* x, const int* rows, long long n, long long dim,
                                   __nv_bfloat16* out) {
  const long long index = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x;
  if (index >= n * dim) return;
  const long long i = index / dim, d = index % dim;
  out[index] = __float2bfloat16_rn(x[static_cast<long long>(rows[i]) * dim + d]);
}

// The weighted combine: out[rows[i]] += weights[i] * y[i].
__global__ void combine_kernel(const float* y, const int* rows, const float* weights, long long n,
                               long long dim, float* out) {
  const long long index = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x;
  if (index >= n * dim) return;
  const long long i = index / dim, d = index % dim;
  out[static_cast<long long>(rows[i]) * dim + d] += weights[i] * y[index];
}

constexpr int kThreads = 256;

cudaStream_t stream_of(const Blas& blas) {
  return static_cast<cudaStream_t>(blas.stream());
}

std::size_t align_up(std::size_t n) {
  return (n + 255) & ~std::size_t{255};
}

}  // namespace

void rms_norm(const float* x, const float* weight, float* y, std::int64_t rows, std::int64_t dim,
              float eps) {
  if (rows <= 0) return;
  rms_norm_kernel<<<static_cast<unsigned>(rows), kThreadsPerRow>>>(x, weight, y, dim, eps);
  check_launch("rms_norm launch");
}

void rope_rotate_half(float* x, std::int64_t rows, std::int64_t heads, std::int64_t head_dim,
                      const std::int64_t* positions, double theta) {
  const std::int64_t n = rows * heads * (head_dim / 2);
  if (n <= 0) return;
  rope_kernel<<<blocks_for(n, kThreads), kThreads>>>(
      x, rows, heads, head_dim, reinterpret_cast<const long long*>(positions), theta);
  check_launch("rope_rotate_half launch");
}

void silu_mul(const float* gate_up, float* out, std::int64_t rows, std::int64_t ffn) {
  if (rows * ffn <= 0) return;
  silu_mul_kernel<<<blocks_for(rows * ffn, kThreads), kThreads>>>(gate_up, out, rows, ffn);
  check_launch("silu_mul launch");
}

void router_top_k(const float* logits, std::int64_t rows, int n_experts, int k, int* ids,
                  float* weights) {
  if (n_experts < 1 || n_experts > kMaxExperts || k < 1 || k > n_experts)
    throw std::invalid_argument("router_top_k: need 1 <= k <= n_experts <= 1024, got k=" +
                                std::to_string(k) + ", n_experts=" + std::to_string(n_experts));
  if (rows <= 0) return;
  int threads = 32;
  while (threads < n_experts) threads *= 2;
  router_kernel<<<static_cast<unsigned>(rows), threads>>>(logits, n_experts, k, ids, weights);
  check_launch("router_top_k launch");
}

void attention(const float* q, const float* k, const float* v, float* out,
               const AttentionShape& shape) {
  if (shape.head_dim > kMaxHeadDim || shape.kv_heads <= 0 || shape.heads % shape.kv_heads != 0)
    throw std::invalid_argument("attention: need head_dim <= 256 and heads a multiple of kv_heads");
  if (shape.n_query <= 0) return;
  attention_kernel<<<static_cast<unsigned>(shape.n_query * shape.heads), kAttentionThreads>>>(
      q, k, v, out, shape);
  check_launch("attention launch");
}

void embedding(const std::uint16_t* table, const std::int32_t* ids, std::int64_t rows,
               std::int64_t dim, float* out) {
  if (rows * dim <= 0) return;
  embedding_kernel<<<blocks_for(rows * dim, kThreads), kThreads>>>(as_bf16(table), ids, rows, dim,
                                                                   out);
  check_launch("embedding launch");
}

void to_bf16(const float* x, std::uint16_t* y, std::int64_t n) {
  if (n <= 0) return;
  to_bf16_kernel<<<blocks_for(n, kThreads), kThreads>>>(x, as_bf16(y), n);
  check_launch("to_bf16 launch");
}

Blas::Blas(void* stream) : stream_(stream) {
  cublasHandle_t handle = nullptr;
  check(cublasCreate(&handle), "cublasCreate");
  handle_ = handle;
  check(cublasSetStream(handle, static_cast<cudaStream_t>(stream)), "cublasSetStream");
}

Blas::~Blas() {
  cublasDestroy(static_cast<cublasHandle_t>(handle_));
}

void Blas::matmul_bf16(const std::uint16_t* x, std::int64_t rows, const std::uint16_t* w,
                       std::int64_t n, std::int64_t k, float* y) {
  if (rows <= 0) return;
  // Row-major y[rows, n] is column-major y^T [n, rows] = w (column-major [k, n])^T * x^T.
  const float one = 1.0f, zero = 0.0f;
  check(cublasGemmEx(static_cast<cublasHandle_t>(handle_), CUBLAS_OP_T, CUBLAS_OP_N,
                     static_cast<int>(n), static_cast<int>(rows), static_cast<int>(k), &one, w,
                     CUDA_R_16BF, static_cast<int>(k), x, CUDA_R_16BF, static_cast<int>(k), &zero,
                     y, CUDA_R_32F, static_cast<int>(n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
        "cublasGemmEx (bf16 matmul)");
}

std::size_t expert_ffn_workspace_bytes(std::int64_t n, std::int64_t hidden, std::int64_t ffn) {
  const auto rows = static_cast<std::size_t>(n);
  return align_up(rows * static_cast<std::size_t>(hidden) * 2) +   // x in bf16
         align_up(rows * static_cast<std::size_t>(2 * ffn) * 4) +  // gate|up in f32
         align_up(rows * static_cast<std::size_t>(ffn) * 2) +      // SwiGLU out in bf16
         align_up(rows * static_cast<std::size_t>(hidden) * 4);    // down projection in f32
}

void expert_ffn(Blas& blas, const float* x, const std::int32_t* rows, const float* weights,
                std::int64_t n, std::int64_t hidden, std::int64_t ffn, const std::uint16_t* w13,
                const std::uint16_t* w2, void* workspace, float* out) {
  if (n <= 0) return;
  auto* base = static_cast<unsigned char*>(workspace);
  auto* xb = reinterpret_cast<__nv_bfloat16*>(base);
  base += align_up(static_cast<std::size_t>(n * hidden) * 2);
  auto* gate_up = reinterpret_cast<float*>(base);
  base += align_up(static_cast<std::size_t>(n * 2 * ffn) * 4);
  auto* h = reinterpret_cast<__nv_bfloat16*>(base);
  base += align_up(static_cast<std::size_t>(n * ffn) * 2);
  auto* y = reinterpret_cast<float*>(base);
  const cudaStream_t stream = stream_of(blas);
  gather_bf16_kernel<<<blocks_for(n * hidden, kThreads), kThreads, 0, stream>>>(x, rows, n, hidden,
                                                                                xb);
  check_launch("expert_ffn gather launch");
  blas.matmul_bf16(reinterpret_cast<const std::uint16_t*>(xb), n, w13, 2 * ffn, hidden, gate_up);
  silu_mul_bf16_kernel<<<blocks_for(n * ffn, kThreads), kThreads, 0, stream>>>(gate_up, h, n, ffn);
  check_launch("expert_ffn swiglu launch");
  blas.matmul_bf16(reinterpret_cast<const std::uint16_t*>(h), n, w2, hidden, ffn, y);
  combine_kernel<<<blocks_for(n * hidden, kThreads), kThreads, 0, stream>>>(y, rows, weights, n,
                                                                            hidden, out);
  check_launch("expert_ffn combine launch");
}

}  // namespace moed::kernels::cuda
