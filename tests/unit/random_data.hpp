#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "moed/kernels/dtype.hpp"

// Reproducible random inputs for kernel tests (CPU and CUDA compare on the same data).
namespace moed::test {

inline std::vector<float> random_floats(std::size_t n, unsigned seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> out(n);
  for (auto& v : out) v = dist(rng);
  return out;
}

inline std::vector<std::uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<std::uint16_t> out(v.size());
  kernels::convert_f32_to_bf16(v.data(), out.data(), v.size());
  return out;
}

}  // namespace moed::test
