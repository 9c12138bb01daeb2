#include <cuda_runtime.h>

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

}  // namespace

void rms_norm(const float* x, const float* weight, float* y, std::int64_t rows, std::int64_t dim,
              float eps) {
  if (rows <= 0) return;
  rms_norm_kernel<<<static_cast<unsigned>(rows), kThreadsPerRow>>>(x, weight, y, dim, eps);
  check(cudaGetLastError(), "rms_norm launch");
}

}  // namespace moed::kernels::cuda
