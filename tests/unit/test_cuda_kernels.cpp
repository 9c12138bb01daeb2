#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "moed/kernels/cpu_ops.hpp"
#include "moed/kernels/cuda_ops.hpp"

namespace {}  // namespace

// GPU tests run wherever a device exists and skip, saying why, where none does.
class CudaDevice : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (moed::kernels::cuda::device_count(&why) == 0) GTEST_SKIP() << "no CUDA device: " << why;
  }
};

TEST(CudaKernels, DeviceCountNeverThrows) {
  std::string why;
  const int count = moed::kernels::cuda::device_count(&why);
  EXPECT_GE(count, 0);
  if (count == 0) {
    EXPECT_FALSE(why.empty());
  }
}

TEST_F(CudaDevice, RmsNormMatchesCpu) {
  const std::int64_t rows = 5, dim = 1000;
  std::mt19937 rng(1);
  std::normal_distribution<float> dist;
  std::vector<float> x(rows * dim), w(dim), want(x.size()), got(x.size());
  for (auto& v : x) v = dist(rng);
  for (auto& v : w) v = dist(rng);
  moed::kernels::rms_norm(x.data(), w.data(), want.data(), rows, dim, 1e-5f);
  float *dx, *dw, *dy;
  ASSERT_EQ(cudaMalloc(&dx, x.size() * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dw, w.size() * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dy, x.size() * 4), cudaSuccess);
  cudaMemcpy(dx, x.data(), x.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(dw, w.data(), w.size() * 4, cudaMemcpyHostToDevice);
  moed::kernels::cuda::rms_norm(dx, dw, dy, rows, dim, 1e-5f);
  ASSERT_EQ(cudaMemcpy(got.data(), dy, got.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  for (std::size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[i], 1e-4 * (1 + std::abs(want[i])));
  cudaFree(dx);
  cudaFree(dw);
  cudaFree(dy);
}
