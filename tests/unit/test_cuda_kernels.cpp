#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <vector>

#include "moed/kernels/cpu_ops.hpp"
#include "moed/kernels/cuda_ops.hpp"
#include "moed/kernels/dtype.hpp"
#include "random_data.hpp"

namespace {

namespace cuda = moed::kernels::cuda;
using moed::kernels::bf16_to_f32;
using moed::kernels::f32_to_bf16;

// A device copy of a host vector, freed on destruction.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(const std::vector<T>& host) : size_(host.size()) {
    if (cudaMalloc(&data_, bytes()) != cudaSuccess) throw std::runtime_error("cudaMalloc");
    cudaMemcpy(data_, host.data(), bytes(), cudaMemcpyHostToDevice);
  }
  explicit DeviceArray(std::size_t size) : DeviceArray(std::vector<T>(size)) {}
  ~DeviceArray() { cudaFree(data_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  T* get() { return data_; }
  std::vector<T> host() const {
    std::vector<T> out(size_);
    EXPECT_EQ(cudaMemcpy(out.data(), data_, bytes(), cudaMemcpyDeviceToHost), cudaSuccess);
    return out;
  }

 private:
  std::size_t bytes() const { return size_ * sizeof(T); }
  T* data_ = nullptr;
  std::size_t size_;
};

using moed::test::random_floats;

std::vector<std::uint16_t> random_bf16(std::size_t n, unsigned seed, float scale) {
  return moed::test::to_bf16(random_floats(n, seed, scale));
}

float round_bf16(float v) {
  return bf16_to_f32(f32_to_bf16(v));
}

// Relative to the largest reference magnitude, as the golden-logit checks measure.
void expect_close(const std::vector<float>& got, const std::vector<float>& want, double tolerance,
                  const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double largest = 1e-30, worst = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    largest = std::max(largest, std::abs(double(want[i])));
    worst = std::max(worst, std::abs(double(got[i]) - want[i]));
  }
  EXPECT_LE(worst / largest, tolerance) << what << ": max |diff| " << worst << " of " << largest;
}

}  // namespace

// GPU tests run wherever a device exists and skip, saying why, where none does; with
// MOED_REQUIRE_GPU=1 (scripts/gpu-bundle.sh's run command) a missing device fails instead.
class CudaDevice : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (cuda::device_count(&why) > 0) return;
    if (std::getenv("MOED_REQUIRE_GPU")) FAIL() << "MOED_REQUIRE_GPU is set but: " << why;
    GTEST_SKIP() << "no CUDA device: " << why;
  }
};

TEST(CudaKernels, DeviceCountNeverThrows) {
  std::string why;
  const int count = cuda::device_count(&why);
  EXPECT_GE(count, 0);
  if (count == 0) {
    EXPECT_FALSE(why.empty());
  }
}

TEST_F(CudaDevice, RmsNormMatchesCpu) {
  const std::int64_t rows = 5, dim = 1000;
  const auto x = random_floats(rows * dim, 1), w = random_floats(dim, 2);
  std::vector<float> want(x.size());
  moed::kernels::rms_norm(x.data(), w.data(), want.data(), rows, dim, 1e-5f);
  DeviceArray<float> dx(x), dw(w), dy(x.size());
  cuda::rms_norm(dx.get(), dw.get(), dy.get(), rows, dim, 1e-5f);
  expect_close(dy.host(), want, 1e-5, "rms_norm");
}

TEST_F(CudaDevice, RopeMatchesCpu) {
  const std::int64_t rows = 3, heads = 4, head_dim = 64;
  auto x = random_floats(rows * heads * head_dim, 3);
  const std::vector<std::int64_t> positions = {0, 17, 4095};
  DeviceArray<float> dx(x);
  DeviceArray<std::int64_t> dpos(positions);
  moed::kernels::rope_rotate_half(x.data(), rows, heads, head_dim, positions.data(), 1e6);
  cuda::rope_rotate_half(dx.get(), rows, heads, head_dim, dpos.get(), 1e6);
  expect_close(dx.host(), x, 1e-5, "rope");
}

TEST_F(CudaDevice, SiluMulMatchesCpu) {
  const std::int64_t rows = 7, ffn = 300;
  const auto gate_up = random_floats(rows * 2 * ffn, 4);
  std::vector<float> want(rows * ffn);
  moed::kernels::silu_mul(gate_up.data(), want.data(), rows, ffn);
  DeviceArray<float> dg(gate_up), dout(want.size());
  cuda::silu_mul(dg.get(), dout.get(), rows, ffn);
  expect_close(dout.host(), want, 1e-6, "silu_mul");
}

TEST_F(CudaDevice, RouterTopKMatchesCpu) {
  for (const auto& [n_experts, k] : {std::pair{8, 2}, std::pair{64, 6}, std::pair{160, 8}}) {
    const std::int64_t rows = 9;
    const auto logits = random_floats(rows * n_experts, 5, 2.0f);
    DeviceArray<float> dl(logits), dw(rows * k);
    DeviceArray<int> di(rows * k);
    cuda::router_top_k(dl.get(), rows, n_experts, k, di.get(), dw.get());
    const auto ids = di.host();
    const auto weights = dw.host();
    for (std::int64_t r = 0; r < rows; ++r) {
      std::vector<int> want_ids(k);
      std::vector<float> want_weights(k);
      moed::kernels::router_top_k(logits.data() + r * n_experts, n_experts, k, want_ids.data(),
                                  want_weights.data());
      for (int i = 0; i < k; ++i) {
        EXPECT_EQ(ids[r * k + i], want_ids[i]) << "row " << r << " pick " << i;
        EXPECT_NEAR(weights[r * k + i], want_weights[i], 1e-5);
      }
    }
  }
  EXPECT_THROW(cuda::router_top_k(nullptr, 1, 2000, 2, nullptr, nullptr), std::invalid_argument);
}

TEST_F(CudaDevice, AttentionMatchesCpu) {
  // Prefill of 5 rows after 300 cached positions (more than one tile of keys), GQA 8/2.
  moed::kernels::AttentionShape shape{5, 8, 2, 128, 512, 300};
  const auto q = random_floats(shape.n_query * shape.heads * shape.head_dim, 6);
  const auto k = random_floats(shape.kv_heads * shape.capacity * shape.head_dim, 7);
  const auto v = random_floats(shape.kv_heads * shape.capacity * shape.head_dim, 8);
  std::vector<float> want(q.size());
  moed::kernels::attention(q.data(), k.data(), v.data(), want.data(), shape);
  DeviceArray<float> dq(q), dk(k), dv(v), dout(q.size());
  cuda::attention(dq.get(), dk.get(), dv.get(), dout.get(), shape);
  expect_close(dout.host(), want, 1e-5, "attention");
}

TEST_F(CudaDevice, EmbeddingAndBf16Conversion) {
  const std::int64_t vocab = 100, dim = 48;
  const auto table = random_bf16(vocab * dim, 9, 1.0f);
  const std::vector<std::int32_t> ids = {0, 99, 42, 42};
  DeviceArray<std::uint16_t> dtable(table);
  DeviceArray<std::int32_t> dids(ids);
  DeviceArray<float> dout(ids.size() * dim);
  cuda::embedding(dtable.get(), dids.get(), static_cast<std::int64_t>(ids.size()), dim, dout.get());
  const auto out = dout.host();
  for (std::size_t r = 0; r < ids.size(); ++r)
    for (std::int64_t d = 0; d < dim; ++d)
      EXPECT_EQ(out[r * dim + d], bf16_to_f32(table[ids[r] * dim + d]));
  const auto x = random_floats(1000, 10);
  DeviceArray<float> dx(x);
  DeviceArray<std::uint16_t> dbits(x.size());
  cuda::to_bf16(dx.get(), dbits.get(), static_cast<std::int64_t>(x.size()));
  const auto bits = dbits.host();
  for (std::size_t i = 0; i < x.size(); ++i) EXPECT_EQ(bits[i], f32_to_bf16(x[i])) << i;
}

TEST_F(CudaDevice, Bf16MatmulMatchesCpu) {
  const std::int64_t rows = 6, n = 200, k = 320;
  const auto x = random_bf16(rows * k, 11, 1.0f), w = random_bf16(n * k, 12, 0.05f);
  std::vector<float> want(rows * n);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t j = 0; j < n; ++j) {
      double sum = 0;
      for (std::int64_t i = 0; i < k; ++i)
        sum += double(bf16_to_f32(x[r * k + i])) * bf16_to_f32(w[j * k + i]);
      want[r * n + j] = static_cast<float>(sum);
    }
  DeviceArray<std::uint16_t> dx(x), dw(w);
  DeviceArray<float> dy(want.size());
  cuda::Blas blas;
  blas.matmul_bf16(dx.get(), rows, dw.get(), n, k, dy.get());
  expect_close(dy.host(), want, 1e-4, "bf16 matmul (f32 accumulation)");
}

TEST_F(CudaDevice, ExpertFfnMatchesCpuWithinBf16Tolerance) {
  const std::int64_t tokens = 10, hidden = 256, ffn = 384;
  const auto x = random_floats(tokens * hidden, 13);
  const auto w13 = random_bf16(2 * ffn * hidden, 14, 0.05f),
             w2 = random_bf16(hidden * ffn, 15, 0.05f);
  const std::vector<std::int32_t> rows = {1, 4, 5, 9};  // the tokens routed to this expert
  const std::vector<float> weights = {0.7f, 0.2f, 0.55f, 0.31f};
  auto base = random_floats(tokens * hidden, 16);  // the layer output other experts wrote
  // The CPU reference: bf16 inputs to each product (as the CPU bf16 engine), f32 elsewhere.
  std::vector<float> want = base;
  for (std::size_t t = 0; t < rows.size(); ++t) {
    std::vector<float> gate_up(2 * ffn), h(ffn);
    for (std::int64_t j = 0; j < 2 * ffn; ++j) {
      double sum = 0;
      for (std::int64_t i = 0; i < hidden; ++i)
        sum += double(round_bf16(x[rows[t] * hidden + i])) * bf16_to_f32(w13[j * hidden + i]);
      gate_up[j] = static_cast<float>(sum);
    }
    moed::kernels::silu_mul(gate_up.data(), h.data(), 1, ffn);
    for (std::int64_t d = 0; d < hidden; ++d) {
      double sum = 0;
      for (std::int64_t j = 0; j < ffn; ++j)
        sum += double(round_bf16(h[j])) * bf16_to_f32(w2[d * ffn + j]);
      want[rows[t] * hidden + d] += weights[t] * static_cast<float>(sum);
    }
  }
  DeviceArray<float> dx(x), dweights(weights), dout(base);
  DeviceArray<std::uint16_t> dw13(w13), dw2(w2);
  DeviceArray<std::int32_t> drows(rows);
  DeviceArray<unsigned char> workspace(cuda::expert_ffn_workspace_bytes(4, hidden, ffn));
  cuda::Blas blas;
  cuda::expert_ffn(blas, dx.get(), drows.get(), dweights.get(), 4, hidden, ffn, dw13.get(),
                   dw2.get(), workspace.get(), dout.get());
  expect_close(dout.host(), want, 1e-2, "expert FFN (bf16 tolerance)");
}
