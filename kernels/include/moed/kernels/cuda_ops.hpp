#pragma once

#include <cstdint>
#include <string>

// CUDA kernels mirror the CPU contracts in cpu_ops.hpp. Built only with MOED_CUDA.
namespace moed::kernels::cuda {

// Number of usable CUDA devices; 0 (with the driver's reason in `why`) when there is none, e.g.
// cudaErrorInsufficientDriver on a machine without a GPU. Never throws.
int device_count(std::string* why = nullptr);

// Same contract as kernels::rms_norm; x, weight, y are device pointers. Throws std::runtime_error
// naming the CUDA error on a failed launch.
void rms_norm(const float* x, const float* weight, float* y, std::int64_t rows, std::int64_t dim,
              float eps);

}  // namespace moed::kernels::cuda
