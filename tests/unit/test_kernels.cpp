#include <gtest/gtest.h>
#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

#include "f8_widen.hpp"
#include "moed/kernels/bandwidth.hpp"
#include "moed/kernels/cpu_matmul.hpp"
#include "moed/kernels/cpu_ops.hpp"
#include "moed/kernels/cpu_threads.hpp"
#include "moed/kernels/dtype.hpp"
#include "moed/kernels/panel_matmul.hpp"
#include "random_data.hpp"
#include "stolen_ranges.hpp"
#include "team.hpp"

using namespace moed::kernels;

namespace {

// y = x W^T in double, W row-major [n, k].
std::vector<double> naive_matmul(const std::vector<float>& x, const std::vector<float>& w,
                                 std::int64_t m, std::int64_t n, std::int64_t k) {
  std::vector<double> y(static_cast<std::size_t>(m * n));
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (std::int64_t p = 0; p < k; ++p) acc += double(x[i * k + p]) * w[j * k + p];
      y[i * n + j] = acc;
    }
  return y;
}

double max_rel_error(const std::vector<float>& got, const std::vector<double>& want) {
  double max_diff = 0, max_ref = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    max_diff = std::max(max_diff, std::abs(got[i] - want[i]));
    max_ref = std::max(max_ref, std::abs(want[i]));
  }
  return max_diff / max_ref;
}

}  // namespace

TEST(DType, Bf16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
  // 1 + 2^-8 lies exactly between two bf16 values; ties go to the even mantissa (1.0).
  EXPECT_EQ(f32_to_bf16(1.0f + 1.0f / 256), 0x3f80);
  EXPECT_EQ(f32_to_bf16(1.0f + 3.0f / 256), 0x3f82);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
}

TEST(DType, F16Decodes) {
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0xc000), -2.0f);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_TRUE(std::isinf(f16_to_f32(0x7c00)));
}

// Every E4M3 code against the format's definition (OCP FP8, torch.float8_e4m3fn): bias 7,
// subnormals below exponent 1, S.1111.111 NaN, no infinities.
TEST(DType, F8E4m3DecodesEveryCode) {
  for (int code = 0; code < 256; ++code) {
    const int exponent = (code >> 3) & 0xf, mantissa = code & 7;
    const double sign = code & 0x80 ? -1.0 : 1.0;
    const float got = f8_e4m3_to_f32(static_cast<std::uint8_t>(code));
    if ((code & 0x7f) == 0x7f) {
      EXPECT_TRUE(std::isnan(got)) << code;
      continue;
    }
    const double want = exponent == 0
                            ? sign * mantissa / 8.0 * std::ldexp(1.0, -6)
                            : sign * (1.0 + mantissa / 8.0) * std::ldexp(1.0, exponent - 7);
    EXPECT_EQ(got, static_cast<float>(want)) << code;
  }
  EXPECT_EQ(f8_e4m3_to_f32(0x7e), 448.0f);
  EXPECT_EQ(f8_e4m3_to_f32(0x01), std::ldexp(1.0f, -9));
}

// Block scales over a grid whose edge blocks are partial, read from the part's first row on, in
// each scale dtype fine-grained FP8 files use; the values are the bf16 dequantization's.
TEST(DType, F8E4m3DequantizesPerBlockFromTheFirstRow) {
  const std::int64_t rows = 5, cols = 7, block_rows = 2, block_cols = 3;  // grid [3, 3]
  std::vector<std::uint8_t> codes(static_cast<std::size_t>(rows * cols));
  for (std::size_t i = 0; i < codes.size(); ++i)
    codes[i] = static_cast<std::uint8_t>(i * 37 % 0x7e);
  std::vector<float> scales(9);
  // Scales whose products with most codes are not bf16 values: the rounding shows.
  for (std::size_t i = 0; i < scales.size(); ++i) scales[i] = 0.0137f * static_cast<float>(i + 1);
  std::vector<std::uint16_t> bf16_scales;
  for (const float s : scales) bf16_scales.push_back(f32_to_bf16(s));
  for (const DType scale_type : {DType::f32, DType::bf16}) {
    const void* grid = scale_type == DType::f32 ? static_cast<const void*>(scales.data())
                                                : static_cast<const void*>(bf16_scales.data());
    std::vector<float> all(codes.size());
    dequantize_f8_e4m3(codes.data(), {grid, scale_type, block_rows, block_cols}, rows, cols,
                       all.data());
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t c = 0; c < cols; ++c) {
        const float scale = scales[static_cast<std::size_t>(r / block_rows * 3 + c / block_cols)];
        const std::size_t i = static_cast<std::size_t>(r * cols + c);
        const float scale_read = scale_type == DType::f32 ? scale : bf16_to_f32(f32_to_bf16(scale));
        EXPECT_EQ(all[i], bf16_to_f32(f32_to_bf16(f8_e4m3_to_f32(codes[i]) * scale_read)))
            << r << "," << c;
      }
    // Rows 3 and 4 alone: they still take the scales of grid rows 1 and 2.
    std::vector<float> tail(static_cast<std::size_t>(2 * cols));
    dequantize_f8_e4m3(codes.data() + 3 * cols, {grid, scale_type, block_rows, block_cols, 3}, 2,
                       cols, tail.data());
    EXPECT_TRUE(std::equal(tail.begin(), tail.end(), all.begin() + 3 * cols));
  }
  float out[7];
  EXPECT_THROW(dequantize_f8_e4m3(codes.data(), {}, 1, cols, out), std::invalid_argument);
  EXPECT_THROW(convert_to_f32(codes.data(), DType::f8_e4m3, out, 7), std::invalid_argument);
}

// Widening to bf16 (AVX-512 where the CPU has it) gives f32_to_bf16 of the f32 product for every
// code, at scales whose products round, overflow, go subnormal or are NaN, in blocks whose
// length is not a whole number of vectors, and over rows of more blocks than the widening reads
// scales for at a time (64), each block's scale its own.
TEST(DType, F8E4m3WidensToBf16AsTheRoundedProduct) {
  std::vector<std::uint8_t> codes(256 * 3);
  for (std::size_t i = 0; i < codes.size(); ++i) codes[i] = static_cast<std::uint8_t>(i * 7 % 256);
  const std::int64_t cols = static_cast<std::int64_t>(codes.size());
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> spread(0.5f, 2.0f);
  for (const std::int64_t block : {std::int64_t{37}, std::int64_t{5}})  // 21 and 154 blocks
    for (const float scale : {1.0f, 0.0137f, 3e36f, 1e-40f, -0.5f, NAN}) {
      std::vector<float> grid(static_cast<std::size_t>((cols + block - 1) / block));
      for (auto& g : grid) g = scale * spread(rng);
      std::vector<std::uint16_t> got(codes.size());
      f8_e4m3_to_bf16(codes.data(), {grid.data(), DType::f32, 1, block}, 1, cols, got.data());
      for (std::size_t i = 0; i < codes.size(); ++i)
        ASSERT_EQ(got[i], f32_to_bf16(f8_e4m3_to_f32(codes[i]) * grid[i / block]))
            << "code " << int(codes[i]) << " scale " << grid[i / block];
      // Both builds, whichever this CPU dispatches to.
      std::vector<std::uint16_t> scalar(codes.size()), vector(codes.size());
      detail::f8_e4m3_to_bf16_scalar(codes.data(), cols, grid.data(), block, scalar.data());
      EXPECT_EQ(scalar, got);
      if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
          __builtin_cpu_supports("avx512vl")) {
        for (const std::int64_t n : {cols, std::int64_t{15}, std::int64_t{33}, std::int64_t{80}}) {
          detail::f8_e4m3_to_bf16_avx512(codes.data(), n, grid.data(), block, vector.data());
          detail::f8_e4m3_to_bf16_scalar(codes.data(), n, grid.data(), block, scalar.data());
          EXPECT_TRUE(std::equal(scalar.begin(), scalar.begin() + n, vector.begin()))
              << n << " elements, blocks of " << block << ", scale " << scale;
        }
      }
    }
}

// An FP8 weight computes as the bf16 weight DeepSeek's fp8_cast_bf16 writes (each element times
// its block scale in f32, rounded to bf16), to the bit, stacked beside another FP8 part whose
// grid is its own, and in a batch.
// Shapes: K not a whole number of oneDNN's K blocks (packed by its reorder from a staged copy),
// and ones that oneDNN's blocked layout takes where its bf16 brgemm runs (kept as FP8 rows on
// an AVX512-BF16 CPU: one with a part boundary inside an N block, one over two of oneDNN's K
// blocks with scale blocks that straddle them, one whose K is not a whole number of 64-code
// chunks, one with a NaN code and one with scales so small that products are subnormal, both
// widened the careful way); where it does not (no AVX512-BF16), to FP8 panels on the AVX2 and
// AVX-512 paths (every shape; panel_matmul.hpp), and to bf16 panels from a staged copy on the
// generic one.
enum class Fp8Oddity { none, nan_code, subnormal_products };
struct Fp8Shape {
  std::int64_t k, first_rows, second_rows;
  std::int64_t block_rows = 64, block_cols = 64;
  Fp8Oddity oddity = Fp8Oddity::none;
};
class Fp8Matmul : public ::testing::TestWithParam<Fp8Shape> {};

TEST_P(Fp8Matmul, WeightsComputeAsTheirBf16Dequantization) {
  const auto [k, first_rows, second_rows, block_rows, block_cols, oddity] = GetParam();
  const std::int64_t grid_cols = (k + block_cols - 1) / block_cols;
  const std::int64_t part_rows[] = {first_rows, second_rows};
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> code(0, 0x7e);
  std::uniform_real_distribution<float> scale(1e-3f, 2e-2f);
  std::vector<std::vector<std::uint8_t>> codes;
  std::vector<std::vector<float>> grids;
  std::vector<WeightPart> parts;
  std::vector<std::uint16_t> dequantized;  // both parts' rows, as bf16
  for (const std::int64_t rows : part_rows) {
    auto& c = codes.emplace_back(static_cast<std::size_t>(rows * k));
    for (auto& v : c) v = static_cast<std::uint8_t>(code(rng) | (rng() & 1 ? 0x80 : 0));
    auto& g = grids.emplace_back(
        static_cast<std::size_t>((rows + block_rows - 1) / block_rows * grid_cols));
    for (auto& v : g) v = rng() & 1 ? -scale(rng) : scale(rng);
    g[g.size() / 2] = 0.0f;
    if (oddity == Fp8Oddity::nan_code) c[c.size() / 3] = 0xff;
    // A scale whose product with the code 11 is just under 2^-126: f32_to_bf16 rounds it up to
    // a normal bf16, which vdpbf16ps takes (it flushes subnormal inputs), where widening that
    // flushed subnormal products would lose it.
    if (oddity == Fp8Oddity::subnormal_products && parts.size() == 1)
      for (auto& v : g) v = std::ldexp(1.0f, -126) / 11.0f * (1.0f - std::ldexp(1.0f, -11));
    parts.push_back(
        {c.data(), DType::f8_e4m3, rows, {g.data(), DType::f32, block_rows, block_cols}});
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t j = 0; j < k; ++j)
        dequantized.push_back(
            f32_to_bf16(f8_e4m3_to_f32(c[static_cast<std::size_t>(r * k + j)]) *
                        g[static_cast<std::size_t>(r / block_rows * grid_cols + j / block_cols)]));
  }
  CpuMatmul matmul;
  const PackedWeight fp8 = matmul.pack(parts, k);
  EXPECT_EQ(fp8.bytes(), matmul.packed_bytes(parts, k));
  // Sizing needs the parts' block geometry alone.
  std::vector<WeightPart> sizing = parts;
  for (auto& part : sizing) part.data = part.scales.data = nullptr;
  EXPECT_EQ(fp8.bytes(), matmul.packed_bytes(sizing, k));
  const WeightPart bf16_part{dequantized.data(), DType::bf16, part_rows[0] + part_rows[1]};
  const PackedWeight bf16 = matmul.pack(std::span(&bf16_part, 1), k);
  const bool fp8_rows = matmul.keeps_fp8_rows(parts, k);
  if (fp8_rows) {
    // One byte a weight and a scale per column and column block.
    EXPECT_EQ(fp8.dtype(), DType::f8_e4m3);
    EXPECT_EQ(fp8.bytes(), static_cast<std::size_t>(fp8.rows() * (k + 4 * grid_cols)));
    EXPECT_EQ(matmul.implementation(1, fp8).ends_with("(careful widening)"),
              oddity != Fp8Oddity::none);
  } else if (matmul.keeps_fp8_panels(parts)) {
    // One byte a weight in panels of 64 columns, and their scales per block of columns.
    const std::int64_t panel_rows = (fp8.rows() + kPanelWidth - 1) / kPanelWidth * kPanelWidth;
    EXPECT_EQ(fp8.dtype(), DType::f8_e4m3);
    EXPECT_EQ(fp8.bytes(), static_cast<std::size_t>(panel_rows * (k + 4 * grid_cols)));
    EXPECT_TRUE(matmul.implementation(1, fp8).ends_with("f8_e4m3 panels"))
        << matmul.implementation(1, fp8);
  } else {
    EXPECT_EQ(fp8.dtype(), DType::bf16);
    ASSERT_EQ(fp8.bytes(), bf16.bytes());
    if (fp8.memory() && bf16.memory()) {  // oneDNN's layout (not panels): the same bytes
      EXPECT_EQ(
          std::memcmp(fp8.memory().get_data_handle(), bf16.memory().get_data_handle(), fp8.bytes()),
          0);
    }
  }
  // Decode rows (widened in registers), a prefill's (widened a K block at a time), each as the
  // bf16 weight gives them: compared as bits, a NaN code's NaN included.
  for (const std::int64_t m : {1, 2, 4, 5, 6, 7, 16, 40, 260}) {
    const auto x = moed::test::random_floats(static_cast<std::size_t>(m * k), 11);
    std::vector<float> ours(static_cast<std::size_t>(m * fp8.rows())), theirs(ours.size());
    matmul.multiply(x.data(), m, fp8, ours.data());
    matmul.multiply(x.data(), m, bf16, theirs.data());
    EXPECT_EQ(std::memcmp(ours.data(), theirs.data(), ours.size() * sizeof(float)), 0)
        << m << " rows";
  }
  if (fp8.dtype() ==
      DType::f8_e4m3) {  // a decode step's expert in one region (CpuMatmul::expert_ffns)
    ASSERT_EQ(fp8.rows() % 2, 0);
    const std::int64_t ffn = fp8.rows() / 2;
    const WeightPart down_bf16{dequantized.data(), DType::bf16, k};
    const PackedWeight down = matmul.pack(std::span(&down_bf16, 1), ffn);
    const auto x = moed::test::random_floats(static_cast<std::size_t>(k), 13);
    std::vector<float> ours(static_cast<std::size_t>(k)), theirs(ours.size());
    // A row through each bf16 weight first: moed computes bf16 rows in a region once a shape
    // has been checked against oneDNN.
    std::vector<float> scratch(static_cast<std::size_t>(std::max(k, bf16.rows())));
    matmul.multiply(x.data(), 1, bf16, scratch.data());
    matmul.multiply(x.data(), 1, down, scratch.data());
    const CpuMatmul::ExpertFfn ours_job{&fp8, &down, x.data(), ours.data()};
    const CpuMatmul::ExpertFfn theirs_job{&bf16, &down, x.data(), theirs.data()};
    // (Where the bf16 down is not in moed's rows, K = 288 rows not a whole number of N blocks,
    // there is nothing to compare with.)
    if (CpuMatmul::can_run_expert_ffns(std::span(&theirs_job, 1))) {
      ASSERT_TRUE(CpuMatmul::can_run_expert_ffns(std::span(&ours_job, 1)));
      CpuMatmul::expert_ffns(std::span(&ours_job, 1));
      CpuMatmul::expert_ffns(std::span(&theirs_job, 1));
      EXPECT_EQ(std::memcmp(ours.data(), theirs.data(), ours.size() * sizeof(float)), 0);
    }
  }
  // In a batch (MLA's per-head matrices), as the batch of its bf16 dequantization.
  const WeightPart first_bf16{dequantized.data(), DType::bf16, part_rows[0]};
  const PackedWeight batched = matmul.pack_batched(std::span(parts.data(), 1), k);
  const PackedWeight batched_bf16 = matmul.pack_batched(std::span(&first_bf16, 1), k);
  const auto x = moed::test::random_floats(static_cast<std::size_t>(k), 12);
  std::vector<float> ours(static_cast<std::size_t>(part_rows[0])), theirs(ours.size());
  matmul.multiply(x.data(), 1, batched, ours.data());
  matmul.multiply(x.data(), 1, batched_bf16, theirs.data());
  EXPECT_EQ(std::memcmp(ours.data(), theirs.data(), ours.size() * sizeof(float)), 0);
  // Its scale blocks run along its rows: it cannot be packed from a transposed copy.
  EXPECT_THROW(matmul.pack_batched(std::span(parts.data(), 1), k, {}, MatrixOrder::cols_first),
               std::invalid_argument);
  WeightPart unscaled = parts[0];
  unscaled.scales = {};
  EXPECT_THROW(matmul.pack(std::span(&unscaled, 1), k), std::invalid_argument);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, Fp8Matmul,
    ::testing::Values(Fp8Shape{200, 72, 40}, Fp8Shape{256, 64, 128}, Fp8Shape{256, 72, 56},
                      Fp8Shape{1088, 128, 64, 32, 48}, Fp8Shape{288, 64, 64, 64, 96},
                      Fp8Shape{1088, 64, 64, 64, 64, Fp8Oddity::nan_code},
                      Fp8Shape{256, 64, 64, 64, 64, Fp8Oddity::subnormal_products}));

class MatmulTest : public ::testing::TestWithParam<std::int64_t> {};

TEST_P(MatmulTest, F32MatchesNaive) {
  const std::int64_t m = GetParam(), n = 96, k = 80;
  auto x = moed::test::random_floats(static_cast<std::size_t>(m * k), 1);
  auto w = moed::test::random_floats(static_cast<std::size_t>(n * k), 2);
  CpuMatmul matmul;
  WeightPart part{w.data(), DType::f32, n};
  auto packed = matmul.pack(std::span(&part, 1), k);
  EXPECT_EQ(packed.rows(), n);
  EXPECT_EQ(packed.cols(), k);
  std::vector<float> y(static_cast<std::size_t>(m * n));
  matmul.multiply(x.data(), m, packed, y.data());
  EXPECT_LT(max_rel_error(y, naive_matmul(x, w, m, n, k)), 1e-5);
}

TEST_P(MatmulTest, Bf16MatchesNaiveOnRoundedInputs) {
  const std::int64_t m = GetParam(), n = 64, k = 128;
  auto x = moed::test::random_floats(static_cast<std::size_t>(m * k), 3);
  auto w = moed::test::random_floats(static_cast<std::size_t>(n * k), 4);
  auto w16 = moed::test::to_bf16(w);
  CpuMatmul matmul;
  WeightPart part{w16.data(), DType::bf16, n};
  auto packed = matmul.pack(std::span(&part, 1), k);
  EXPECT_EQ(packed.dtype(), DType::bf16);
  std::vector<float> y(static_cast<std::size_t>(m * n));
  matmul.multiply(x.data(), m, packed, y.data());
  // oneDNN rounds activations to bf16 too, and the reference then sees the same rounded values;
  // moed's panels (where oneDNN has no bf16 brgemm) widen the weights and keep activations f32.
  const bool panels = CpuMatmul::plain_in_panels(DType::bf16);
  std::vector<float> xr(x.size()), wr(w.size());
  for (std::size_t i = 0; i < x.size(); ++i) xr[i] = panels ? x[i] : bf16_to_f32(f32_to_bf16(x[i]));
  for (std::size_t i = 0; i < w.size(); ++i) wr[i] = bf16_to_f32(w16[i]);
  EXPECT_LT(max_rel_error(y, naive_matmul(xr, wr, m, n, k)), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(BatchSizes, MatmulTest, ::testing::Values(1, 3, 17, 64));

// Stacked parts are packed from where their rows lie where moed's packer knows the layout (row
// counts in whole blocks), and copied together first where not; either way the products equal
// those of the weight concatenated beforehand, bit for bit.
struct StackedShape {
  DType dtype;
  std::int64_t k, rows_a, rows_b;
};
class StackedParts : public ::testing::TestWithParam<StackedShape> {};

TEST_P(StackedParts, EqualOneConcatenatedWeight) {
  const auto [dtype, k, rows_a, rows_b] = GetParam();
  auto a = moed::test::random_floats(static_cast<std::size_t>(rows_a * k), 5);
  auto b = moed::test::random_floats(static_cast<std::size_t>(rows_b * k), 6);
  std::vector<float> both(a);
  both.insert(both.end(), b.begin(), b.end());
  std::vector<std::uint16_t> a16(a.size()), b16(b.size()), both16(both.size());
  for (std::size_t i = 0; i < a.size(); ++i) a16[i] = f32_to_bf16(a[i]);
  for (std::size_t i = 0; i < b.size(); ++i) b16[i] = f32_to_bf16(b[i]);
  for (std::size_t i = 0; i < both.size(); ++i) both16[i] = f32_to_bf16(both[i]);
  const bool bf16 = dtype == DType::bf16;
  CpuMatmul matmul;
  WeightPart parts[] = {{bf16 ? static_cast<const void*>(a16.data()) : a.data(), dtype, rows_a},
                        {bf16 ? static_cast<const void*>(b16.data()) : b.data(), dtype, rows_b}};
  WeightPart whole{bf16 ? static_cast<const void*>(both16.data()) : both.data(), dtype,
                   rows_a + rows_b};
  auto stacked = matmul.pack(parts, k);
  auto single = matmul.pack(std::span(&whole, 1), k);
  auto x = moed::test::random_floats(static_cast<std::size_t>(2 * k), 7);
  std::vector<float> y1(static_cast<std::size_t>(2 * (rows_a + rows_b))), y2(y1.size());
  matmul.multiply(x.data(), 2, stacked, y1.data());
  matmul.multiply(x.data(), 2, single, y2.data());
  EXPECT_EQ(y1, y2);
}

INSTANTIATE_TEST_SUITE_P(Shapes, StackedParts,
                         ::testing::Values(StackedShape{DType::f32, 32, 16, 48},
                                           StackedShape{DType::f32, 64, 128, 128},
                                           StackedShape{DType::bf16, 64, 128, 128},
                                           StackedShape{DType::bf16, 24, 40, 40},
                                           StackedShape{DType::bf16, 256, 192, 192}));

// pack() writes exactly the bytes oneDNN's own reorder writes for the layout its matmul chose,
// whichever packer runs: moed's transpose where it knows the layout (aligned shapes on AVX-512),
// oneDNN's reorder elsewhere (padding).
struct PackShape {
  DType dtype;
  std::int64_t k;
  std::vector<std::int64_t> part_rows;
  bool moed_packer;  // where the CPU has AVX-512 brgemm
};
void PrintTo(const PackShape& shape, std::ostream* out) {
  *out << dtype_name(shape.dtype) << " k=" << shape.k << " rows=";
  for (auto rows : shape.part_rows) *out << rows << ' ';
}
class PackBytes : public ::testing::TestWithParam<PackShape> {};

TEST_P(PackBytes, EqualOneDnnReorder) {
  const auto& [dtype, k, part_rows, moed_packer] = GetParam();
  const std::size_t source_bytes = dtype_size(dtype);
  std::vector<std::vector<unsigned char>> sources;
  std::vector<WeightPart> parts;
  std::int64_t rows = 0;
  for (std::size_t p = 0; p < part_rows.size(); ++p) {
    const auto values = moed::test::random_floats(static_cast<std::size_t>(part_rows[p] * k),
                                                  static_cast<unsigned>(11 + p));
    auto& bytes = sources.emplace_back(values.size() * source_bytes);
    for (std::size_t i = 0; i < values.size(); ++i) {
      if (dtype == DType::f32) {
        std::memcpy(&bytes[i * 4], &values[i], 4);
      } else {
        const std::uint16_t half =
            dtype == DType::bf16 ? f32_to_bf16(values[i])
                                 : std::bit_cast<std::uint16_t>(static_cast<_Float16>(values[i]));
        std::memcpy(&bytes[i * 2], &half, 2);
      }
    }
    parts.push_back({bytes.data(), dtype, part_rows[p]});
    rows += part_rows[p];
  }
  CpuMatmul matmul;
  const auto packed = matmul.pack(parts, k);
  // The reference: the parts concatenated in the compute dtype, then oneDNN's reorder (or, where
  // oneDNN has no brgemm for the dtype, moed's panels).
  const DType compute = CpuMatmul::compute_dtype(dtype);
  std::vector<unsigned char> plain;
  for (std::size_t p = 0; p < parts.size(); ++p) {
    if (compute == dtype) {
      plain.insert(plain.end(), sources[p].begin(), sources[p].end());
      continue;
    }
    std::vector<float> wide(static_cast<std::size_t>(part_rows[p] * k));
    convert_to_f32(sources[p].data(), dtype, wide.data(), wide.size());
    const auto* begin = reinterpret_cast<const unsigned char*>(wide.data());
    plain.insert(plain.end(), begin, begin + wide.size() * sizeof(float));
  }
  if (CpuMatmul::plain_in_panels(compute)) {
    EXPECT_TRUE(matmul.packing(rows, k, dtype).starts_with("moed panels"));
    EXPECT_FALSE(packed.memory());
    ASSERT_EQ(packed.bytes(), matmul.packed_bytes(parts, k));
    std::vector<std::byte> panels(panel_bytes(compute, rows, k));
    ASSERT_EQ(packed.bytes(), panels.size());
    pack_panels(plain.data(), compute, rows, k, panels.data());
    std::vector<float> x(static_cast<std::size_t>(k), 0.5f), ours(static_cast<std::size_t>(rows)),
        theirs(ours.size());
    matmul.multiply(x.data(), 1, packed, ours.data());
    panel_matmul(compute, panels.data(), 1, rows, k, x.data(), 1, theirs.data());
    EXPECT_EQ(ours, theirs);
    return;
  }
  // oneDNN's choice for a prefill-sized batch (moed may compute a decode row itself).
  const bool avx512_brgemm = matmul.implementation(64, packed).starts_with("brg:avx512_core");
  EXPECT_EQ(matmul.packing(rows, k, dtype) == "moed avx512 transpose",
            moed_packer && avx512_brgemm);
  const auto& layout = packed.memory().get_desc();
  const dnnl::engine cpu(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(cpu);
  dnnl::memory plain_memory({{k, rows}, layout.data_type(), dnnl::memory::format_tag::ba}, cpu,
                            plain.data());
  dnnl::memory reference(layout, cpu);
  dnnl::reorder(plain_memory, reference).execute(stream, plain_memory, reference);
  stream.wait();
  ASSERT_EQ(packed.bytes(), layout.get_size());
  EXPECT_EQ(
      std::memcmp(packed.memory().get_data_handle(), reference.get_data_handle(), packed.bytes()),
      0);
}

INSTANTIATE_TEST_SUITE_P(Shapes, PackBytes,
                         ::testing::Values(PackShape{DType::bf16, 64, {128}, true},
                                           PackShape{DType::bf16, 256, {192, 192}, true},
                                           PackShape{DType::bf16, 1024, {64, 128, 64}, true},
                                           PackShape{DType::f32, 32, {64}, true},
                                           PackShape{DType::f32, 96, {80, 48}, true},
                                           PackShape{DType::f16, 64, {128}, true},
                                           PackShape{DType::bf16, 70, {100}, false},
                                           PackShape{DType::bf16, 24, {40, 40}, false},
                                           PackShape{DType::f32, 20, {50}, false}));

// A few rows of a bf16 weight (decode) are computed by moed from oneDNN's layout with oneDNN's
// arithmetic, where this CPU has AVX512-BF16 and a check on the weight's shape agrees: the rows
// equal oneDNN's own primitive's at every row count moed takes, bit for bit, and the rows of a
// larger batch (which oneDNN computes). K covers one block, a block and a part (768 = 512 + 256),
// two blocks of 512 (1024), and blocks of 1024 beyond (1408, 2816); N one N block (of 32 or 64,
// as oneDNN picks for the thread count), several, and a width oneDNN pads (96: oneDNN alone).
struct Bf16RowsShape {
  std::int64_t n, k;
};
class Bf16Rows : public ::testing::TestWithParam<Bf16RowsShape> {};

TEST_P(Bf16Rows, DecodeRowsEqualOneDnnsAndTheRowsOfABatch) {
  const auto [n, k] = GetParam();
  const auto w16 = moed::test::to_bf16(
      moed::test::random_floats(static_cast<std::size_t>(n * k), static_cast<unsigned>(n + k)));
  CpuMatmul matmul;
  const WeightPart part{w16.data(), DType::bf16, n};
  const PackedWeight packed = matmul.pack(std::span(&part, 1), k);
  const std::int64_t batch = 9;
  const bool moed_expected = __builtin_cpu_supports("avx512bf16") && n % 64 == 0 &&
                             matmul.implementation(batch, packed) == "brg:avx512_core_bf16";
  EXPECT_EQ(matmul.implementation(1, packed) == "moed avx512_bf16 rows in oneDNN's layout",
            moed_expected);
  const auto x = moed::test::random_floats(static_cast<std::size_t>(batch * k), 5);
  std::vector<float> all(static_cast<std::size_t>(batch * n));
  matmul.multiply(x.data(), batch, packed, all.data());

  const dnnl::engine cpu(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(cpu);
  std::vector<std::uint16_t> x16(x.size());
  convert_f32_to_bf16(x.data(), x16.data(), x16.size());
  for (std::int64_t m = 1; m <= 4; ++m) {
    std::vector<float> ours(static_cast<std::size_t>(m * n)), theirs(ours.size());
    matmul.multiply(x.data(), m, packed, ours.data());
    if (CpuMatmul::plain_in_panels(DType::bf16)) {  // no oneDNN to compare with: the batch's rows
      for (std::size_t i = 0; i < ours.size(); ++i)
        ASSERT_EQ(std::bit_cast<std::uint32_t>(ours[i]), std::bit_cast<std::uint32_t>(all[i]))
            << m << " rows against " << batch << " in panels, output " << i;
      continue;
    }
    const dnnl::memory::desc src({m, k}, dnnl::memory::data_type::bf16,
                                 dnnl::memory::format_tag::ab);
    const dnnl::memory::desc dst({m, n}, dnnl::memory::data_type::f32,
                                 dnnl::memory::format_tag::ab);
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, packed.memory().get_desc(), dst),
                                          cpu);
    dnnl::memory src_memory(src, cpu, x16.data()), dst_memory(dst, cpu, theirs.data());
    dnnl::matmul(pd).execute(stream, {{DNNL_ARG_SRC, src_memory},
                                      {DNNL_ARG_WEIGHTS, packed.memory()},
                                      {DNNL_ARG_DST, dst_memory}});
    stream.wait();
    for (std::size_t i = 0; i < ours.size(); ++i) {
      ASSERT_EQ(std::bit_cast<std::uint32_t>(ours[i]), std::bit_cast<std::uint32_t>(theirs[i]))
          << m << " rows against oneDNN's, output " << i << " (" << matmul.implementation(m, packed)
          << ")";
      ASSERT_EQ(std::bit_cast<std::uint32_t>(ours[i]), std::bit_cast<std::uint32_t>(all[i]))
          << m << " rows against " << batch << ", output " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, Bf16Rows,
                         ::testing::Values(Bf16RowsShape{64, 512}, Bf16RowsShape{192, 768},
                                           Bf16RowsShape{128, 1024}, Bf16RowsShape{64, 1408},
                                           Bf16RowsShape{1024, 2816}, Bf16RowsShape{96, 1024}),
                         [](const auto& info) {
                           return "n" + std::to_string(info.param.n) + "_k" +
                                  std::to_string(info.param.k);
                         });

// Plain weights go to oneDNN's brgemm where it has one for their dtype, to moed's panels
// otherwise: with no ISA cap of the user's on a CPU with AVX512-BF16, both dtypes go to oneDNN;
// with oneDNN capped at AVX2 (what it does on a CPU with AVX2 alone), both to the panels (f32
// not where the panels themselves are capped to their generic C++), and at AVX512_CORE or on an
// AVX-512 CPU without AVX512-BF16, bf16 alone.
TEST(Matmul, PlainWeightsGoToOneDnnsBrgemmOrToPanels) {
  const char* cap = std::getenv("ONEDNN_MAX_CPU_ISA");
  if (std::getenv("DNNL_MAX_CPU_ISA") != nullptr) GTEST_SKIP() << "DNNL_MAX_CPU_ISA is set";
  const std::string isa = cap ? cap : "";
  if (isa.empty() && __builtin_cpu_supports("avx512bf16")) {
    EXPECT_FALSE(CpuMatmul::plain_in_panels(DType::f32));
    EXPECT_FALSE(CpuMatmul::plain_in_panels(DType::bf16));
  } else if (isa == "AVX2") {
    EXPECT_EQ(CpuMatmul::plain_in_panels(DType::f32), best_panel_path() != PanelPath::generic);
    EXPECT_TRUE(CpuMatmul::plain_in_panels(DType::bf16));
  } else if ((isa == "AVX512_CORE" || isa.empty()) && __builtin_cpu_supports("avx512f")) {
    EXPECT_FALSE(CpuMatmul::plain_in_panels(DType::f32));
    EXPECT_TRUE(CpuMatmul::plain_in_panels(DType::bf16));
  } else {
    GTEST_SKIP() << "no expectation for ONEDNN_MAX_CPU_ISA=" << isa << " on this CPU";
  }
  EXPECT_FALSE(CpuMatmul::plain_in_panels(DType::q8_0));
}

// On an AMX CPU oneDNN would compute a batch of more than 4 bf16 rows with AMX tiles, which
// round otherwise than its path for fewer rows (the Bf16Rows test above then fails); CpuMatmul
// keeps it off AMX unless the user chose an ISA. On a CPU without AMX this holds trivially.
TEST(Matmul, Bf16BatchesStayOffAmx) {
  if (std::getenv("ONEDNN_MAX_CPU_ISA") != nullptr || std::getenv("DNNL_MAX_CPU_ISA") != nullptr)
    GTEST_SKIP() << "the user's oneDNN ISA setting is kept";
  const std::int64_t n = 64, k = 512;
  const auto w16 =
      moed::test::to_bf16(moed::test::random_floats(static_cast<std::size_t>(n * k), 3));
  CpuMatmul matmul;
  const WeightPart part{w16.data(), DType::bf16, n};
  const PackedWeight packed = matmul.pack(std::span(&part, 1), k);
  for (const std::int64_t m : {5, 16, 64, 512})
    EXPECT_EQ(matmul.implementation(m, packed).find("amx"), std::string::npos)
        << m << " rows: " << matmul.implementation(m, packed);
}

TEST(Matmul, F16WeightsComputeInF32) {
  const std::int64_t n = 8, k = 16;
  std::vector<std::uint16_t> w(static_cast<std::size_t>(n * k), 0x3c00);  // f16 1.0
  CpuMatmul matmul;
  WeightPart part{w.data(), DType::f16, n};
  auto packed = matmul.pack(std::span(&part, 1), k);
  EXPECT_EQ(packed.dtype(), DType::f32);
  std::vector<float> x(static_cast<std::size_t>(k), 0.5f), y(static_cast<std::size_t>(n));
  matmul.multiply(x.data(), 1, packed, y.data());
  for (float v : y) EXPECT_FLOAT_EQ(v, 8.0f);
}

TEST(Matmul, WidensMixedDtypesToF32AndRejectsEmptyWeights) {
  // An f32 part over a bf16 part: computed in f32, the bf16 rows widened exactly.
  const std::vector<float> top = {1, 2, 3, 4, 5, 6, 7, 8};
  const std::vector<std::uint16_t> bottom = {f32_to_bf16(0.5f), f32_to_bf16(-1.0f),
                                             f32_to_bf16(2.0f), f32_to_bf16(0.25f)};
  const WeightPart parts[] = {{top.data(), DType::f32, 2}, {bottom.data(), DType::bf16, 1}};
  CpuMatmul matmul;
  const PackedWeight packed = matmul.pack(parts, 4);
  EXPECT_EQ(packed.dtype(), DType::f32);
  const std::vector<float> x = {1, 1, 2, -1};
  std::vector<float> y(3);
  matmul.multiply(x.data(), 1, packed, y.data());
  EXPECT_EQ(y, (std::vector<float>{5, 17, 3.25f}));
  EXPECT_THROW(matmul.pack({}, 4), std::invalid_argument);
  float out = 0;
  EXPECT_THROW(matmul.multiply(x.data(), 1, PackedWeight{}, &out), std::invalid_argument);
}

// MLA's per-head up-projections: a batch of small matrices in moed's panels, each applied to its
// own rows in f32 (bf16 weights widened exactly). Shapes cover a partial last panel and more
// rows than one block of six.
struct BatchedShape {
  DType dtype;
  std::int64_t batch, rows, cols, m;
};
class BatchedMatmul : public ::testing::TestWithParam<BatchedShape> {};

TEST_P(BatchedMatmul, EachMatrixMatchesNaiveAndRowsEqualSoloRows) {
  const auto [dtype, batch, rows, cols, m] = GetParam();
  auto w = moed::test::random_floats(static_cast<std::size_t>(batch * rows * cols), 7);
  const auto w16 = moed::test::to_bf16(w);
  if (dtype == DType::bf16)
    for (std::size_t i = 0; i < w.size(); ++i) w[i] = bf16_to_f32(w16[i]);
  std::vector<WeightPart> matrices;
  for (std::int64_t b = 0; b < batch; ++b) {
    const std::size_t first = static_cast<std::size_t>(b * rows * cols);
    matrices.push_back(
        {dtype == DType::bf16 ? static_cast<const void*>(w16.data() + first) : w.data() + first,
         dtype, rows});
  }
  CpuMatmul matmul;
  const PackedWeight packed = matmul.pack_batched(matrices, cols);
  EXPECT_EQ(packed.batch(), batch);
  EXPECT_EQ(packed.rows(), rows);
  EXPECT_EQ(packed.cols(), cols);
  EXPECT_EQ(packed.dtype(), dtype);
  EXPECT_EQ(packed.bytes(), matmul.packed_bytes(batch, rows, cols, dtype));
  EXPECT_EQ(matmul.implementation(m, packed).find("moed"), 0u);

  const auto x = moed::test::random_floats(static_cast<std::size_t>(batch * m * cols), 8);
  std::vector<float> y(static_cast<std::size_t>(batch * m * rows));
  matmul.multiply(x.data(), m, packed, y.data());
  for (std::int64_t b = 0; b < batch; ++b) {
    const std::vector<float> xb(x.begin() + b * m * cols, x.begin() + (b + 1) * m * cols);
    const std::vector<float> wb(w.begin() + b * rows * cols, w.begin() + (b + 1) * rows * cols);
    const std::vector<float> yb(y.begin() + b * m * rows, y.begin() + (b + 1) * m * rows);
    EXPECT_LT(max_rel_error(yb, naive_matmul(xb, wb, m, rows, cols)), 1e-5) << "matrix " << b;
  }
  // Row i of every matrix alone gives the same bits as within the m rows.
  for (std::int64_t i = 0; i < m; ++i) {
    std::vector<float> solo_x, solo_y(static_cast<std::size_t>(batch * rows));
    for (std::int64_t b = 0; b < batch; ++b)
      solo_x.insert(solo_x.end(), x.begin() + (b * m + i) * cols,
                    x.begin() + (b * m + i + 1) * cols);
    matmul.multiply(solo_x.data(), 1, packed, solo_y.data());
    for (std::int64_t b = 0; b < batch; ++b)
      for (std::int64_t j = 0; j < rows; ++j)
        ASSERT_EQ(solo_y[static_cast<std::size_t>(b * rows + j)],
                  y[static_cast<std::size_t>((b * m + i) * rows + j)])
            << "matrix " << b << " row " << i << " output " << j;
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, BatchedMatmul,
                         ::testing::Values(BatchedShape{DType::f32, 3, 70, 33, 5},
                                           BatchedShape{DType::bf16, 1, 96, 64, 3},
                                           BatchedShape{DType::bf16, 16, 512, 128, 1},
                                           BatchedShape{DType::bf16, 4, 128, 512, 6},
                                           BatchedShape{DType::f32, 2, 64, 1, 9}));

// m from 1 to 13 takes every row-block kernel, alone and after full blocks; 17 and 25 rows go to
// OpenMP rather than moed's Team, 259 rows past one chunk of a thread's sums; 100 rows leave a
// last panel of 36 lanes; 700 inputs span more than one run of a panel's rows, whose sums must
// carry over exactly. Each path at 1, 2 and 3 threads.
TEST(BatchedMatmul, EveryPathGivesTheSameBits) {
  const std::int64_t batch = 2, rows = 100;
  std::vector<std::int64_t> row_counts = {17, 25, 259};
  for (std::int64_t m = 1; m <= 13; ++m) row_counts.push_back(m);
  const int saved_threads = compute_threads();
  for (const std::int64_t cols : {40, 700})
    for (const std::int64_t m : row_counts)
      for (const DType dtype : {DType::f32, DType::bf16}) {
        const auto w = moed::test::random_floats(static_cast<std::size_t>(batch * rows * cols), 9);
        const auto w16 = moed::test::to_bf16(w);
        const std::size_t matrix_bytes = panel_bytes(dtype, rows, cols);
        std::vector<std::byte> panels(batch * matrix_bytes);
        for (std::int64_t b = 0; b < batch; ++b) {
          const std::size_t first = static_cast<std::size_t>(b * rows * cols);
          pack_panels(dtype == DType::bf16 ? static_cast<const void*>(w16.data() + first)
                                           : w.data() + first,
                      dtype, rows, cols, panels.data() + b * matrix_bytes);
        }
        const auto x = moed::test::random_floats(static_cast<std::size_t>(batch * m * cols), 10);
        std::vector<float> generic(static_cast<std::size_t>(batch * m * rows));
        panel_matmul(dtype, panels.data(), batch, rows, cols, x.data(), m, generic.data(),
                     PanelPath::generic);
        // Each output is one fused multiply-add chain over the inputs in order.
        for (std::int64_t b = 0; b < batch; ++b)
          for (std::int64_t i = 0; i < m; ++i)
            for (std::int64_t j = 0; j < rows; ++j) {
              float chain = 0;
              for (std::int64_t k = 0; k < cols; ++k) {
                const auto at = static_cast<std::size_t>((b * rows + j) * cols + k);
                chain = std::fma(x[static_cast<std::size_t>((b * m + i) * cols + k)],
                                 dtype == DType::bf16 ? bf16_to_f32(w16[at]) : w[at], chain);
              }
              ASSERT_EQ(generic[static_cast<std::size_t>((b * m + i) * rows + j)], chain)
                  << dtype_name(dtype) << " m " << m << " cols " << cols;
            }
        for (const PanelPath path : kPanelPaths)
          for (const int threads : {1, 2, 3}) {
            if (path > best_panel_path()) continue;
            set_compute_threads(threads);
            std::vector<float> fast(generic.size());
            panel_matmul(dtype, panels.data(), batch, rows, cols, x.data(), m, fast.data(), path);
            EXPECT_EQ(fast, generic) << dtype_name(dtype) << " " << panel_path_name(path) << " m "
                                     << m << ", " << threads << " threads";
          }
        set_compute_threads(saved_threads);
      }
}

// MOED_MAX_PANEL_ISA takes the paths' own names (the daemon refuses any other at start).
TEST(Panels, PathsAreNamedAsTheyPrint) {
  for (const PanelPath path : kPanelPaths) EXPECT_EQ(panel_path_named(panel_path_name(path)), path);
  EXPECT_EQ(panel_path_named("sse"), std::nullopt);
  EXPECT_EQ(panel_path_named("AVX2"), std::nullopt);
  EXPECT_EQ(panel_path_names(), "generic, avx2, avx512");
}

// Panels by their definition: row r is lane r % 64 of panel r / 64, each panel [cols][64], lanes
// past the last row zero. Shapes take the register transposes (whole panels, cols a multiple of
// 16 or 8) and the element-by-element rest; rows given one by one, from scattered places, give
// the same bytes on every path.
TEST(Panels, PackedBytesFollowTheLayout) {
  for (const DType dtype : {DType::f32, DType::bf16})
    for (const auto& [rows, cols] : std::vector<std::pair<std::int64_t, std::int64_t>>{
             {64, 16}, {128, 704}, {100, 48}, {130, 40}, {64, 24}, {1, 33}, {192, 7}}) {
      const std::size_t element = dtype_size(dtype);
      std::vector<std::uint8_t> matrix(static_cast<std::size_t>(rows * cols) * element);
      std::mt19937 rng(static_cast<std::uint32_t>(rows * 1000 + cols));
      for (auto& byte : matrix) byte = static_cast<std::uint8_t>(rng());
      std::vector<std::byte> panels(panel_bytes(dtype, rows, cols), std::byte{0xAB});
      pack_panels(matrix.data(), dtype, rows, cols, panels.data());
      const std::int64_t padded_rows = (rows + kPanelWidth - 1) / kPanelWidth * kPanelWidth;
      for (std::int64_t r = 0; r < padded_rows; ++r)
        for (std::int64_t k = 0; k < cols; ++k) {
          const std::size_t at = static_cast<std::size_t>((r / kPanelWidth) * kPanelWidth * cols +
                                                          k * kPanelWidth + r % kPanelWidth) *
                                 element;
          std::vector<std::uint8_t> expected(element, 0);
          if (r < rows)
            std::memcpy(expected.data(),
                        matrix.data() + static_cast<std::size_t>(r * cols + k) * element, element);
          ASSERT_EQ(std::memcmp(panels.data() + at, expected.data(), element), 0)
              << dtype_name(dtype) << " [" << rows << ", " << cols << "] row " << r << " column "
              << k;
        }
      // Each row in a buffer of its own.
      std::vector<std::vector<std::uint8_t>> scattered;
      std::vector<const std::byte*> starts;
      for (std::int64_t r = 0; r < rows; ++r)
        scattered.emplace_back(
            matrix.begin() + static_cast<std::ptrdiff_t>(r * cols * element),
            matrix.begin() + static_cast<std::ptrdiff_t>((r + 1) * cols * element));
      for (const auto& row : scattered)
        starts.push_back(reinterpret_cast<const std::byte*>(row.data()));
      for (const PanelPath path : kPanelPaths) {
        if (path > best_panel_path()) continue;
        std::vector<std::byte> from_rows(panels.size(), std::byte{0xCD});
        pack_panels_rows(starts, dtype, cols, from_rows.data(), path);
        EXPECT_EQ(from_rows, panels) << dtype_name(dtype) << " [" << rows << ", " << cols
                                     << "] on the " << panel_path_name(path) << " path";
      }
    }
  EXPECT_THROW(pack_panels_rows({}, DType::q8_0, 32, nullptr), std::invalid_argument);
}

// f16 matrices are widened to f32 panels, as pack() widens f16 weights.
TEST(BatchedMatmul, F16MatricesComputeInF32) {
  const std::int64_t batch = 2, rows = 8, cols = 16;
  std::vector<std::uint16_t> w(static_cast<std::size_t>(batch * rows * cols), 0x3c00);  // 1.0
  std::fill(w.begin() + rows * cols, w.end(), std::uint16_t{0xc000});                   // -2.0
  const WeightPart matrices[] = {{w.data(), DType::f16, rows},
                                 {w.data() + rows * cols, DType::f16, rows}};
  CpuMatmul matmul;
  const PackedWeight packed = matmul.pack_batched(matrices, cols);
  EXPECT_EQ(packed.dtype(), DType::f32);
  EXPECT_EQ(packed.bytes(), matmul.packed_bytes(batch, rows, cols, DType::f16));
  std::vector<float> x(static_cast<std::size_t>(batch * cols), 0.5f);
  std::vector<float> y(static_cast<std::size_t>(batch * rows));
  matmul.multiply(x.data(), 1, packed, y.data());
  for (std::int64_t j = 0; j < rows; ++j) {
    EXPECT_EQ(y[static_cast<std::size_t>(j)], 8.0f);
    EXPECT_EQ(y[static_cast<std::size_t>(rows + j)], -16.0f);
  }
}

// DeepSeek's kv_b holds the key part transposed: packed as it lies, a matrix gives the same
// panels, hence the same bits, as packed from its rows.
TEST(BatchedMatmul, TransposedMatricesPackAsTheirRows) {
  const std::int64_t batch = 3, rows = 70, cols = 24, m = 2;
  const auto w = moed::test::random_floats(static_cast<std::size_t>(batch * rows * cols), 11);
  std::vector<float> wt(w.size());
  for (std::int64_t b = 0; b < batch; ++b)
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t c = 0; c < cols; ++c)
        wt[static_cast<std::size_t>((b * cols + c) * rows + r)] =
            w[static_cast<std::size_t>((b * rows + r) * cols + c)];
  const auto w16 = moed::test::to_bf16(w);
  const auto wt16 = moed::test::to_bf16(wt);
  const auto x = moed::test::random_floats(static_cast<std::size_t>(batch * m * cols), 12);
  CpuMatmul matmul;
  for (const DType dtype : {DType::f32, DType::bf16}) {
    const bool bf16 = dtype == DType::bf16;
    const void* plain = bf16 ? static_cast<const void*>(w16.data()) : w.data();
    const void* transposed = bf16 ? static_cast<const void*>(wt16.data()) : wt.data();
    const std::size_t matrix_bytes = static_cast<std::size_t>(rows * cols) * dtype_size(dtype);
    std::vector<WeightPart> by_rows, by_cols;
    for (std::int64_t b = 0; b < batch; ++b) {
      by_rows.push_back({static_cast<const std::byte*>(plain) + b * matrix_bytes, dtype, rows});
      by_cols.push_back(
          {static_cast<const std::byte*>(transposed) + b * matrix_bytes, dtype, rows});
    }
    std::vector<float> want(static_cast<std::size_t>(batch * m * rows)), got(want.size());
    matmul.multiply(x.data(), m, matmul.pack_batched(by_rows, cols), want.data());
    matmul.multiply(x.data(), m, matmul.pack_batched(by_cols, cols, {}, MatrixOrder::cols_first),
                    got.data());
    EXPECT_EQ(got, want) << dtype_name(dtype);
  }
  std::vector<std::uint8_t> q8(34 * 2, 0);
  const WeightPart quantized[] = {{q8.data(), DType::q8_0, 2}, {q8.data(), DType::q8_0, 2}};
  EXPECT_THROW(matmul.pack_batched(quantized, 32, {}, MatrixOrder::cols_first),
               std::invalid_argument);
}

TEST(BatchedMatmul, RejectsMatricesOfDifferentShapesOrDtypes) {
  const std::vector<float> a(8, 1.0f), b(4, 1.0f);
  const std::vector<std::uint16_t> c(8, 0x3f80);
  CpuMatmul matmul;
  const WeightPart rows_differ[] = {{a.data(), DType::f32, 2}, {b.data(), DType::f32, 1}};
  EXPECT_THROW(matmul.pack_batched(rows_differ, 4), std::invalid_argument);
  const WeightPart dtypes_differ[] = {{a.data(), DType::f32, 2}, {c.data(), DType::bf16, 2}};
  EXPECT_THROW(matmul.pack_batched(dtypes_differ, 4), std::invalid_argument);
  EXPECT_THROW(matmul.pack_batched({}, 4), std::invalid_argument);
  EXPECT_THROW(panel_bytes(DType::q8_0, 2, 32), std::invalid_argument);
}

TEST(Ops, RmsNormMatchesFormula) {
  const std::int64_t rows = 3, dim = 43;  // five blocks of eight lanes and a tail
  auto x = moed::test::random_floats(static_cast<std::size_t>(rows * dim), 8);
  auto w = moed::test::random_floats(static_cast<std::size_t>(dim), 9);
  std::vector<float> y(x.size());
  rms_norm(x.data(), w.data(), y.data(), rows, dim, 1e-5f);
  for (std::int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (std::int64_t i = 0; i < dim; ++i) ss += double(x[r * dim + i]) * x[r * dim + i];
    const double scale = 1.0 / std::sqrt(ss / dim + 1e-5);
    for (std::int64_t i = 0; i < dim; ++i)
      EXPECT_NEAR(y[r * dim + i], x[r * dim + i] * scale * w[i], 1e-5);
  }
}

TEST(Ops, RopeRotatesHalvesAsHuggingFace) {
  const std::int64_t heads = 2, d = 8;
  auto x = moed::test::random_floats(static_cast<std::size_t>(2 * heads * d), 10);
  auto original = x;
  const std::int64_t positions[] = {0, 5};
  rope_rotate_half(x.data(), 2, heads, d, positions, 10000.0);
  for (std::int64_t i = 0; i < heads * d; ++i) EXPECT_FLOAT_EQ(x[i], original[i]);  // position 0
  for (std::int64_t h = 0; h < heads; ++h)
    for (std::int64_t i = 0; i < d / 2; ++i) {
      const double angle = 5.0 / std::pow(10000.0, 2.0 * i / d);
      const float a = original[(heads + h) * d + i], b = original[(heads + h) * d + i + d / 2];
      EXPECT_NEAR(x[(heads + h) * d + i], a * std::cos(angle) - b * std::sin(angle), 1e-5);
      EXPECT_NEAR(x[(heads + h) * d + i + d / 2], b * std::cos(angle) + a * std::sin(angle), 1e-5);
    }
}

// rope keeps the last position's table on its thread: a call at the same position with other
// frequencies or another scale must not reuse it.
TEST(Ops, RopeAtOnePositionFollowsEachCallsFrequenciesAndScale) {
  const std::int64_t heads = 2, d = 8;
  const std::vector<double> slow = {1.0, 0.1, 0.01, 0.001}, fast = {2.0, 0.7, 0.3, 0.05};
  struct Call {
    const std::vector<double>* inv_freq;
    std::int64_t position;
    double scale;
  };
  for (const Call call : {Call{&slow, 7, 1.0}, Call{&fast, 7, 1.0}, Call{&fast, 7, 0.5},
                          Call{&slow, 9, 1.0}, Call{&slow, 7, 1.0}}) {
    auto x = moed::test::random_floats(static_cast<std::size_t>(heads * d), 11);
    const auto original = x;
    rope(x.data(), {1, heads, d, 0, d, RopePairs::half}, &call.position, call.inv_freq->data(),
         call.scale);
    for (std::int64_t h = 0; h < heads; ++h)
      for (std::int64_t i = 0; i < d / 2; ++i) {
        const double angle = static_cast<double>(call.position) * (*call.inv_freq)[i];
        const double c = std::cos(angle) * call.scale, s = std::sin(angle) * call.scale;
        const float a = original[h * d + i], b = original[h * d + i + d / 2];
        EXPECT_NEAR(x[h * d + i], a * c - b * s, 1e-5) << "position " << call.position;
        EXPECT_NEAR(x[h * d + i + d / 2], b * c + a * s, 1e-5) << "position " << call.position;
      }
  }
}

TEST(Ops, SiluMul) {
  const std::vector<float> gate_up = {1.0f, -2.0f, 3.0f, 4.0f};  // one row, ffn 2
  std::vector<float> out(2);
  silu_mul(gate_up.data(), out.data(), 1, 2);
  EXPECT_NEAR(out[0], 1.0 / (1 + std::exp(-1.0)) * 3.0, 1e-6);
  EXPECT_NEAR(out[1], -2.0 / (1 + std::exp(2.0)) * 4.0, 1e-6);
}

// The vectorised exp keeps SiLU within a few float roundings of the exact value across the
// range, including where exp(-g) would overflow a float; below g = -87.3 it gives 0 where the
// exact value is under 1e-36 (the absolute floor). A short row runs on the scalar tail alone.
TEST(Ops, SiluMulStaysWithinFloatRounding) {
  // One row: gates, then the up values.
  const auto check = [](const std::vector<float>& gate_up) {
    const std::int64_t ffn = static_cast<std::int64_t>(gate_up.size()) / 2;
    std::vector<float> out(static_cast<std::size_t>(ffn));
    silu_mul(gate_up.data(), out.data(), 1, ffn);
    for (std::int64_t j = 0; j < ffn; ++j) {
      const double g = gate_up[j];
      const double want = g / (1.0 + std::exp(-g)) * gate_up[ffn + j];
      EXPECT_NEAR(out[j], want, 4e-7 * std::abs(want) + 1e-30) << "gate " << g;
    }
  };
  constexpr std::int64_t ffn = 1003;
  std::vector<float> wide(2 * ffn);
  for (std::int64_t j = 0; j < ffn; ++j) {
    wide[j] = static_cast<float>(-120.0 + 240.0 * j / (ffn - 1));
    wide[ffn + j] = static_cast<float>(0.5 + (j % 7) * 0.25);
  }
  check(wide);
  check(
      {-3.0f, -1.5f, -0.25f, 0.0f, 0.5f, 1.75f, 3.0f, 1.0f, 2.0f, -1.0f, 1.0f, 3.0f, -2.0f, 0.5f});
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> special = {inf, -inf, std::nanf(""), 0.0f, 2.0f, 2.0f, 2.0f, 2.0f};
  std::vector<float> special_out(4);
  silu_mul(special.data(), special_out.data(), 1, 4);
  EXPECT_EQ(special_out[0], inf);
  EXPECT_TRUE(std::isnan(special_out[1]));  // -inf * 0, as -inf / (1 + exp(inf)) is
  EXPECT_TRUE(std::isnan(special_out[2]));
  EXPECT_EQ(special_out[3], 0.0f);
}

TEST(Ops, RouterTopKRenormalisesAndBreaksTiesLow) {
  const float logits[] = {0.0f, 2.0f, 1.0f, 2.0f};
  int ids[2];
  float weights[2];
  router_top_k(logits, 4, 2, ids, weights);
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(ids[1], 3);
  EXPECT_FLOAT_EQ(weights[0], 0.5f);
  EXPECT_FLOAT_EQ(weights[1], 0.5f);
  const float skewed[] = {3.0f, 0.0f, 1.0f};
  router_top_k(skewed, 3, 2, ids, weights);
  EXPECT_EQ(ids[0], 0);
  EXPECT_EQ(ids[1], 2);
  EXPECT_NEAR(weights[0], std::exp(3.0) / (std::exp(3.0) + std::exp(1.0)), 1e-6);
}

namespace {

// Attention in double, from its definition: out[i, h] = softmax_t(q[i, h] . k[g, t] / sqrt(d))
// weighting v[g, t], over the positions t <= first + i, with g the KV head of h.
std::vector<double> naive_attention(const std::vector<float>& q, const std::vector<float>& k,
                                    const std::vector<float>& v, const AttentionShape& s) {
  const std::int64_t d = s.head_dim;
  std::vector<double> out(q.size());
  for (std::int64_t i = 0; i < s.n_query; ++i)
    for (std::int64_t h = 0; h < s.heads; ++h) {
      const std::int64_t g = h / (s.heads / s.kv_heads), visible = s.first_position + i + 1;
      std::vector<double> p(static_cast<std::size_t>(visible));
      double mx = -1e300, total = 0;
      for (std::int64_t t = 0; t < visible; ++t) {
        double dot = 0;
        for (std::int64_t c = 0; c < d; ++c)
          dot += double(q[(i * s.heads + h) * d + c]) * k[(g * s.capacity + t) * d + c];
        p[t] = dot / std::sqrt(double(d));
        mx = std::max(mx, p[t]);
      }
      for (auto& x : p) total += (x = std::exp(x - mx));
      for (std::int64_t c = 0; c < d; ++c)
        for (std::int64_t t = 0; t < visible; ++t)
          out[(i * s.heads + h) * d + c] += p[t] / total * v[(g * s.capacity + t) * d + c];
    }
  return out;
}

}  // namespace

TEST(Ops, AttentionMatchesNaiveWithGroupsAndOffset) {
  const std::int64_t heads = 4, kv_heads = 2, d = 16, capacity = 12, first = 5, nq = 3;
  auto q = moed::test::random_floats(static_cast<std::size_t>(nq * heads * d), 11);
  auto k = moed::test::random_floats(static_cast<std::size_t>(kv_heads * capacity * d), 12);
  auto v = moed::test::random_floats(static_cast<std::size_t>(kv_heads * capacity * d), 13);
  std::vector<float> out(q.size());
  const AttentionShape shape{nq, heads, kv_heads, d, capacity, first};
  attention(q.data(), k.data(), v.data(), out.data(), shape);
  const auto want = naive_attention(q, k, v, shape);
  for (std::size_t i = 0; i < out.size(); ++i) EXPECT_NEAR(out[i], want[i], 1e-5) << i;
}

// One decode row of a cache that every head shares (MLA's shape) is split over two threads, a
// group of 6 heads run in blocks of 2 and 1 per thread; inside a batch the group runs whole, in
// blocks of 4 and 2. Either way each head's output is bit for bit the same, as batched rows must
// equal solo ones. Head widths 48 and 40 take the AVX-512 path (where the CPU has it) and the
// portable one.
TEST(Ops, AttentionOfAHeadIsTheSameSoloAndInABatch) {
  const int saved_threads = compute_threads();
  set_compute_threads(2);
  // {heads, head width}: a group of 8 runs as one block of 8 in a batch and as 4 + 4 solo, and
  // its 128-wide value sums take four passes of two slices.
  const std::int64_t shapes[][2] = {{6, 48}, {6, 40}, {8, 128}};
  for (const auto& [heads, d] : shapes) {
    const std::int64_t kv_heads = 1, capacity = 40, first = 30, nq = 4;
    const auto q = moed::test::random_floats(static_cast<std::size_t>(nq * heads * d), 31);
    const auto k = moed::test::random_floats(static_cast<std::size_t>(capacity * d), 32);
    const auto v = moed::test::random_floats(static_cast<std::size_t>(capacity * d), 33);
    std::vector<float> batched(q.size());
    const AttentionShape batch{nq, heads, kv_heads, d, capacity, first};
    attention(q.data(), k.data(), v.data(), batched.data(), batch);
    const auto want = naive_attention(q, k, v, batch);
    for (std::size_t i = 0; i < batched.size(); ++i)
      EXPECT_NEAR(batched[i], want[i], 1e-5) << "d " << d << " at " << i;
    const std::int64_t row = nq - 1;
    const std::vector<float> last(q.begin() + row * heads * d, q.end());
    std::vector<float> solo(last.size());
    attention(last.data(), k.data(), v.data(), solo.data(),
              {1, heads, kv_heads, d, capacity, first + row});
    for (std::size_t i = 0; i < solo.size(); ++i)
      EXPECT_EQ(std::bit_cast<std::uint32_t>(solo[i]),
                std::bit_cast<std::uint32_t>(batched[row * heads * d + i]))
          << "d " << d << " at " << i;
  }
  set_compute_threads(saved_threads);
}

// Where a KV head's values outgrow L2 (1 MiB) the value sums run a chunk of positions at a time,
// keeping their partial sums between chunks. On one thread a group's heads run together: several
// passes of slices per chunk (8 heads of 128 on one KV head; 8 heads over MLA's 576-wide rows,
// read as keys and values both), one pass (4 heads), a last slice group cut short (2 heads of
// 576: 4 passes of 8 slices and one of 4) and a last chunk cut short; in f32 and bf16. The result
// is still the definition's.
TEST(Ops, AttentionOverALongCacheMatchesNaive) {
  const int saved_threads = compute_threads();
  set_compute_threads(1);
  // {heads, KV heads, head width, positions, keys read as values}: f32 values of 128 take 2048
  // positions to fill 1 MiB.
  const std::int64_t shapes[][5] = {
      {8, 1, 128, 2100, 0}, {4, 2, 128, 2090, 0}, {8, 1, 576, 500, 1}, {2, 1, 576, 500, 0}};
  for (const auto& [heads, kv_heads, d, capacity, shared] : shapes) {
    const std::int64_t first = capacity - 2, nq = 2;
    const auto q = moed::test::random_floats(static_cast<std::size_t>(nq * heads * d), 51);
    const auto k = moed::test::random_floats(static_cast<std::size_t>(kv_heads * capacity * d), 52);
    const auto v = shared != 0 ? k
                               : moed::test::random_floats(
                                     static_cast<std::size_t>(kv_heads * capacity * d), 53);
    std::vector<float> out(q.size());
    const AttentionShape shape{nq, heads, kv_heads, d, capacity, first};
    attention(q.data(), k.data(), shared != 0 ? k.data() : v.data(), out.data(), shape);
    const auto want = naive_attention(q, k, v, shape);
    for (std::size_t i = 0; i < out.size(); ++i)
      EXPECT_NEAR(out[i], want[i], 1e-5) << "d " << d << " positions " << capacity << " at " << i;
  }
  // A bf16 cache of 128-wide heads passes 1 MiB of values at 4096 positions.
  const std::int64_t heads = 8, kv_heads = 1, d = 128, capacity = 4200, first = capacity - 1;
  const auto q = moed::test::random_floats(static_cast<std::size_t>(heads * d), 54);
  const auto k = moed::test::to_bf16(
      moed::test::random_floats(static_cast<std::size_t>(kv_heads * capacity * d), 55));
  const auto v = moed::test::to_bf16(
      moed::test::random_floats(static_cast<std::size_t>(kv_heads * capacity * d), 56));
  std::vector<float> k_wide(k.size()), v_wide(v.size()), out(q.size());
  for (std::size_t i = 0; i < k.size(); ++i) k_wide[i] = bf16_to_f32(k[i]);
  for (std::size_t i = 0; i < v.size(); ++i) v_wide[i] = bf16_to_f32(v[i]);
  const AttentionShape shape{1, heads, kv_heads, d, capacity, first};
  attention(q.data(), k.data(), v.data(), out.data(), shape);
  const auto want = naive_attention(q, k_wide, v_wide, shape);
  for (std::size_t i = 0; i < out.size(); ++i)
    EXPECT_NEAR(out[i], want[i], 1e-5) << "bf16 at " << i;
  set_compute_threads(saved_threads);
}

// A NaN key (not the first position) makes the outputs of the heads that read it NaN, on every
// path, rather than being given weight 0 and hidden.
TEST(Ops, AttentionOverANanKeyIsNan) {
  for (const std::int64_t d : {32, 40}) {
    const std::int64_t heads = 4, kv_heads = 2, capacity = 8, first = 5;
    const auto q = moed::test::random_floats(static_cast<std::size_t>(heads * d), 41);
    auto k = moed::test::random_floats(static_cast<std::size_t>(kv_heads * capacity * d), 42);
    const auto v = moed::test::random_floats(static_cast<std::size_t>(kv_heads * capacity * d), 43);
    k[static_cast<std::size_t>(3 * d + 1)] = std::nanf("");  // KV head 0, position 3
    std::vector<float> out(q.size());
    attention(q.data(), k.data(), v.data(), out.data(), {1, heads, kv_heads, d, capacity, first});
    for (std::int64_t i = 0; i < heads * d; ++i)
      EXPECT_EQ(std::isnan(out[static_cast<std::size_t>(i)]), i < 2 * d)
          << "d " << d << " at " << i;
  }
}

// A bf16 KV cache is read as its f32 widening: the f32 kernel's result over keys and values
// rounded to bf16, up to the summation order the compiler picks for each version.
TEST(Ops, AttentionOverABf16CacheEqualsF32OverTheRoundedValues) {
  const std::int64_t heads = 8, kv_heads = 2, d = 64, capacity = 40, first = 30, nq = 4;
  auto q = moed::test::random_floats(static_cast<std::size_t>(nq * heads * d), 21);
  const auto k = moed::test::to_bf16(
      moed::test::random_floats(static_cast<std::size_t>(kv_heads * capacity * d), 22));
  const auto v = moed::test::to_bf16(
      moed::test::random_floats(static_cast<std::size_t>(kv_heads * capacity * d), 23));
  std::vector<float> k_wide(k.size()), v_wide(v.size());
  for (std::size_t i = 0; i < k.size(); ++i) k_wide[i] = bf16_to_f32(k[i]);
  for (std::size_t i = 0; i < v.size(); ++i) v_wide[i] = bf16_to_f32(v[i]);
  std::vector<float> from_bf16(q.size()), from_f32(q.size());
  const AttentionShape shape{nq, heads, kv_heads, d, capacity, first};
  attention(q.data(), k.data(), v.data(), from_bf16.data(), shape);
  attention(q.data(), k_wide.data(), v_wide.data(), from_f32.data(), shape);
  for (std::size_t i = 0; i < q.size(); ++i) EXPECT_NEAR(from_bf16[i], from_f32[i], 1e-6) << i;
}

// f32_rows against double sums, on a small router and on one large enough to share out over the
// threads (widths not a multiple of 16, a row count not a multiple of the blocks); a batch's row
// equals the row computed alone, and every thread count gives the same bits.
TEST(Ops, F32RowsMatchNaiveAndRowsOfABatchEqualTheRowAlone) {
  const int saved_threads = compute_threads();
  const std::int64_t shapes[][2] = {{8, 37}, {100, 10487}};
  for (const auto& [n, k] : shapes) {
    const std::int64_t m = 5;
    const auto w = moed::test::random_floats(static_cast<std::size_t>(n * k), 51);
    const auto x = moed::test::random_floats(static_cast<std::size_t>(m * k), 52);
    std::vector<float> first;
    for (const int threads : {1, 2, 3}) {
      set_compute_threads(threads);
      std::vector<float> y(static_cast<std::size_t>(m * n));
      f32_rows(w.data(), n, k, x.data(), m, y.data());
      std::vector<float> alone(static_cast<std::size_t>(n));
      f32_rows(w.data(), n, k, x.data() + 3 * k, 1, alone.data());
      for (std::int64_t r = 0; r < n; ++r) {
        EXPECT_EQ(std::bit_cast<std::uint32_t>(alone[static_cast<std::size_t>(r)]),
                  std::bit_cast<std::uint32_t>(y[static_cast<std::size_t>(3 * n + r)]))
            << n << "x" << k << " row " << r;
      }
      for (std::int64_t i = 0; i < m; ++i)
        for (std::int64_t r = 0; r < n; ++r) {
          double want = 0;
          for (std::int64_t c = 0; c < k; ++c)
            want += double(w[static_cast<std::size_t>(r * k + c)]) *
                    x[static_cast<std::size_t>(i * k + c)];
          EXPECT_NEAR(y[static_cast<std::size_t>(i * n + r)], want, 1e-4 * std::sqrt(double(k)));
        }
      if (first.empty())
        first = y;
      else
        EXPECT_EQ(first, y) << threads << " threads";
    }
  }
  set_compute_threads(saved_threads);
}

TEST(Ops, SoftmaxSumsToOneAndReturnsLogSumExp) {
  const float logits[] = {1000.0f, 1001.0f, 999.0f};
  float probs[3];
  const double lse = softmax(logits, probs, 3);
  EXPECT_NEAR(probs[0] + probs[1] + probs[2], 1.0, 1e-6);
  EXPECT_NEAR(lse, 1001.0 + std::log(1 + std::exp(-1.0) + std::exp(-2.0)), 1e-4);
}

TEST(Ops, ExpAndSumIsWithinTwoUlpOfExpAndLogSumExpOfItsReference) {
  // Every float argument from -87.3 to 0 in steps of about 1/1024, some scaled, plus the
  // arguments that vanish (-inf, and below float's normal range).
  std::vector<float> x;
  for (float v = -87.3f; v <= 0.0f; v += 0.000977f) x.push_back(v);
  x.push_back(0.0f);
  const auto n = static_cast<std::int64_t>(x.size());
  for (const float scale : {1.0f, 0.5f}) {
    std::vector<float> out(x.size());
    const double sum = exp_and_sum(x.data(), n, 0.0f, scale, out.data());
    double reference = 0.0;
    for (std::int64_t i = 0; i < n; ++i) {
      const double want = std::exp(static_cast<double>(x[i] * scale));
      const auto nearest = static_cast<float>(want);
      const float ulp = std::nextafter(nearest, INFINITY) - nearest;
      EXPECT_LE(std::abs(out[i] - want), 2.0 * ulp) << x[i] << " scaled by " << scale;
      reference += want;
    }
    EXPECT_NEAR(sum, reference, reference * 1e-7);
    EXPECT_EQ(exp_and_sum(x.data(), n, 0.0f, scale, nullptr), sum);
  }
  const float vanishing[] = {-INFINITY, -87.4f, -200.0f, -1e30f, NAN};
  float out[5];
  EXPECT_EQ(exp_and_sum(vanishing, 5, 0.0f, 1.0f, out), 0.0);
  for (const float e : out) EXPECT_EQ(e, 0.0f);
  const float minus_zero = -0.0f;
  EXPECT_EQ(exp_and_sum(&minus_zero, 1, 0.0f, 1.0f, out), 1.0);

  const std::vector<float> logits = moed::test::random_floats(32000, 11, 6.0f);
  double total = 0.0;
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  for (const float l : logits) total += std::exp(static_cast<double>(l - max_logit));
  EXPECT_NEAR(log_sum_exp(logits.data(), 32000), std::log(total) + max_logit, 1e-6);
  const float masked[] = {NAN, -INFINITY, 2.0f, -INFINITY};
  EXPECT_NEAR(log_sum_exp(masked, 4), 2.0, 1e-7);
  EXPECT_EQ(argmax(masked, 4), 2);
}

TEST(Bandwidth, ProbeReadsTheWholeBufferOnEveryThreadCount) {
  // measure() checks each pass's sum; a rate is then bytes over a positive time.
  for (const int threads : {1, 2, 3}) {
    set_compute_threads(threads);
    ReadBandwidthProbe probe((64 << 20) + 4096);  // not a multiple of the threads' shares
    const double bytes_per_s = probe.measure(2);
    EXPECT_TRUE(std::isfinite(bytes_per_s) && bytes_per_s > 0) << bytes_per_s;
  }
  set_compute_threads(physical_core_count());
}

// Uneven ranges (one empty, one of a single unit) drained by three threads, the owner of the
// longest one slowed: every unit runs exactly once, and the others take units of the slow
// owner's range (from its back) rather than wait for it.
TEST(StolenRanges, EveryUnitRunsOnceAndASlowOwnersUnitsAreTaken) {
  const std::uint32_t sizes[] = {400, 0, 1, 37, 150};
  moed::kernels::detail::StolenRanges ranges(std::size(sizes));
  std::vector<std::vector<std::atomic<int>>> runs;
  std::vector<std::vector<std::atomic<int>>> by;
  for (std::size_t i = 0; i < std::size(sizes); ++i) {
    ranges.assign(i, 0, sizes[i]);
    runs.emplace_back(sizes[i]);
    by.emplace_back(sizes[i]);
  }
  int team = 0;
#pragma omp parallel num_threads(3)
  {
    const int self = omp_get_thread_num();
#pragma omp single
    team = omp_get_num_threads();
    ranges.drain(self, omp_get_num_threads(), 4, 1,
                 [&](std::size_t i, std::uint32_t first, std::uint32_t last) {
                   for (std::uint32_t u = first; u < last; ++u) {
                     ++runs[i][u];
                     by[i][u] = self;
                     if (self == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
                   }
                 });
  }
  for (std::size_t i = 0; i < std::size(sizes); ++i)
    for (std::uint32_t u = 0; u < sizes[i]; ++u) EXPECT_EQ(runs[i][u], 1) << i << " " << u;
  int taken = 0;
  for (std::uint32_t u = 0; u < sizes[0]; ++u) taken += by[0][u] != 0;
  if (team > 1) {
    EXPECT_GT(taken, 0);
  }
}

// Regions of 3, then 2, then 3 threads again on the Team: each member runs the body once, with
// its own index, and a barrier lets every member see what all wrote before it (many rounds, so
// that a barrier passed early shows as a stale slot). The caller is member 0.
TEST(Team, EachMemberRunsOnceAndBarriersOrderTheirWrites) {
  using moed::kernels::detail::Team;
  const auto caller = std::this_thread::get_id();
  for (const int threads : {3, 2, 3}) {
    constexpr int kRounds = 200;
    std::vector<int> slots(static_cast<std::size_t>(threads), -1);
    std::vector<std::atomic<int>> runs(static_cast<std::size_t>(threads));
    std::atomic<int> stale = 0;
    std::atomic<bool> zero_on_caller = false;
    struct Context {
      int threads;
      std::vector<int>* slots;
      std::vector<std::atomic<int>>* runs;
      std::atomic<int>* stale;
      std::atomic<bool>* zero_on_caller;
      std::thread::id caller;
    } context{threads, &slots, &runs, &stale, &zero_on_caller, caller};
    const auto body = [](const void* raw, const Team::Member& member) {
      const auto& c = *static_cast<const Context*>(raw);
      const auto self = static_cast<std::size_t>(member.self());
      ++(*c.runs)[self];
      if (member.self() == 0) c.zero_on_caller->store(std::this_thread::get_id() == c.caller);
      for (int round = 0; round < kRounds; ++round) {
        (*c.slots)[self] = round;
        member.barrier();
        for (int other = 0; other < member.threads(); ++other)
          if ((*c.slots)[static_cast<std::size_t>(other)] != round) ++*c.stale;
        member.barrier();
      }
    };
    ASSERT_TRUE(Team::instance().try_run(threads, body, &context));
    for (int t = 0; t < threads; ++t) EXPECT_EQ(runs[static_cast<std::size_t>(t)], 1) << t;
    EXPECT_EQ(stale, 0) << threads << " threads";
    EXPECT_TRUE(zero_on_caller);
  }
}

// A worker's exception reaches the caller once every member is done, and the team serves the
// next region.
TEST(Team, RethrowsAWorkersException) {
  using moed::kernels::detail::Team;
  std::atomic<int> finished = 0;
  const auto throwing = [](const void* raw, const Team::Member& member) {
    if (member.self() == 1) throw std::runtime_error("member 1 failed");
    ++*static_cast<std::atomic<int>*>(const_cast<void*>(raw));
  };
  try {
    Team::instance().try_run(2, throwing, &finished);
    ADD_FAILURE() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "member 1 failed");
  }
  EXPECT_EQ(finished, 1);
  const auto counting = [](const void* raw, const Team::Member&) {
    ++*static_cast<std::atomic<int>*>(const_cast<void*>(raw));
  };
  ASSERT_TRUE(Team::instance().try_run(2, counting, &finished));
  EXPECT_EQ(finished, 3);
}

// A region asked for inside a region, on the caller or on a worker, runs on that thread alone
// (the team is busy with the outer one; a team per member would be threads squared).
TEST(Team, ARegionInsideARegionRunsOnItsCallerAlone) {
  using moed::kernels::detail::Team;
  struct Seen {
    std::atomic<int> inner_runs{0};
    std::atomic<int> wrong{0};
  } seen;
  const auto outer = [](const void* raw, const Team::Member&) {
    const auto inner = [](const void* raw_seen, const Team::Member& member) {
      auto& s = *static_cast<Seen*>(const_cast<void*>(raw_seen));
      ++s.inner_runs;
      if (member.self() != 0 || member.threads() != 1) ++s.wrong;
      member.barrier();
    };
    auto& s = *static_cast<Seen*>(const_cast<void*>(raw));
    if (!Team::instance().try_run(2, inner, &s)) ++s.wrong;
  };
  ASSERT_TRUE(Team::instance().try_run(2, outer, &seen));
  EXPECT_EQ(seen.inner_runs, 2);
  EXPECT_EQ(seen.wrong, 0);
}

// run_team runs on OpenMP where the Team is held by another thread's region, and for more than
// kTeamRowsAtMost rows; every member gets its own index and static share, and the OpenMP
// barrier orders writes.
TEST(Team, RunTeamRunsOnOpenMpWhileTheTeamIsHeldAndForManyRows) {
  using moed::kernels::detail::kTeamRowsAtMost;
  using moed::kernels::detail::run_team;
  using moed::kernels::detail::Team;
  const int saved_threads = compute_threads();
  set_compute_threads(2);
  const auto check = [](std::int64_t rows, bool want_openmp) {
    std::atomic<int> mask = 0;
    std::atomic<int> in_openmp = 0;
    std::atomic<int> stale = 0;
    int slots[2] = {-1, -1};
    std::pair<std::int64_t, std::int64_t> shares[2];
    run_team(rows, [&](const Team::Member& member) {
      shares[member.self()] = member.share(7);
      mask |= 1 << member.self();
      in_openmp += omp_in_parallel();
      slots[member.self()] = member.self();
      member.barrier();
      if (slots[1 - member.self()] != 1 - member.self()) ++stale;
    });
    EXPECT_EQ(mask, 3) << rows;
    EXPECT_EQ(in_openmp, want_openmp ? 2 : 0) << rows;
    EXPECT_EQ(stale, 0) << rows;
    // The static shares of 7 units: contiguous, in member order, covering them all.
    EXPECT_EQ(shares[0].first, 0);
    EXPECT_EQ(shares[0].second, shares[1].first);
    EXPECT_EQ(shares[1].second, 7);
    EXPECT_EQ(shares[0].second, 3);
  };
  check(1, false);
  check(kTeamRowsAtMost + 1, true);

  std::atomic<bool> holding = false;
  std::atomic<bool> release = false;
  std::thread holder([&] {
    const auto hold = [](const void* raw, const Team::Member& member) {
      auto& flags =
          *static_cast<std::pair<std::atomic<bool>*, std::atomic<bool>*>*>(const_cast<void*>(raw));
      if (member.self() != 0) return;
      flags.first->store(true);
      while (!flags.second->load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    };
    std::pair<std::atomic<bool>*, std::atomic<bool>*> flags{&holding, &release};
    EXPECT_TRUE(Team::instance().try_run(2, hold, &flags));
  });
  while (!holding) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  check(1, true);
  release = true;
  holder.join();
  set_compute_threads(saved_threads);
}

TEST(Threads, WaitWithTeamAwakeRunsTheWaitOnceOnTheCallerAndRethrows) {
  const int saved_threads = compute_threads();
  for (const int threads : {1, 2}) {
    set_compute_threads(threads);
    int calls = 0;
    std::thread::id waited_on;
    wait_with_team_awake(
        [&] {
          ++calls;
          waited_on = std::this_thread::get_id();
        },
        std::chrono::milliseconds(20), 1);
    EXPECT_EQ(calls, 1) << threads;
    EXPECT_EQ(waited_on, std::this_thread::get_id()) << threads;
    EXPECT_THROW(wait_with_team_awake([] { throw std::runtime_error("read failed"); },
                                      std::chrono::milliseconds(20), 1),
                 std::runtime_error)
        << threads;
  }
  set_compute_threads(saved_threads);
}

// A prefill step's wait keeps libgomp's team awake, the one its regions use: the same contract
// through the OpenMP region (kept out of scripts/tsan.sh, which cannot see libgomp's handoffs).
TEST(Threads, WaitWithTeamAwakeForAPrefillStepRunsOnOpenMp) {
  const int saved_threads = compute_threads();
  set_compute_threads(2);
  int calls = 0;
  std::thread::id waited_on;
  std::atomic<int> in_openmp_region = 0;
  wait_with_team_awake(
      [&] {
        ++calls;
        waited_on = std::this_thread::get_id();
        in_openmp_region = omp_in_parallel();
      },
      std::chrono::milliseconds(20), 512);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(waited_on, std::this_thread::get_id());
  EXPECT_EQ(in_openmp_region, 1);
  EXPECT_THROW(wait_with_team_awake([] { throw std::runtime_error("read failed"); },
                                    std::chrono::milliseconds(20), 512),
               std::runtime_error);
  set_compute_threads(saved_threads);
}

// Past its limit a spinning thread sleeps until the wait ends (and is woken then: the call
// returns), rather than holding a core for the whole wait.
TEST(Threads, WaitWithTeamAwakeSpinsNoLongerThanItsLimit) {
  const int saved_threads = compute_threads();
  set_compute_threads(2);
  const auto cpu_seconds = [] {
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
           1e-6 * static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
  };
  const double before = cpu_seconds();
  wait_with_team_awake([] { std::this_thread::sleep_for(std::chrono::milliseconds(400)); },
                       std::chrono::milliseconds(10), 1);
  // Spinning through the wait would take about 0.4 s of CPU; the limit, about 0.01.
  EXPECT_LT(cpu_seconds() - before, 0.2);
  set_compute_threads(saved_threads);
}
