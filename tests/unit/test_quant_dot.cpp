// The quantized dot products: every SIMD path gives the scalar path's float bit for bit (integer
// block sums, one fixed float order), and the scalar path is the f32 dot of the dequantized
// weights with the dequantized activations, within float rounding; the f32 dot with the
// original activations differs by no more than the activation quantization error allows.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numeric>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "moed/kernels/cpu_matmul.hpp"
#include "moed/kernels/cpu_ops.hpp"
#include "moed/kernels/cpu_threads.hpp"
#include "moed/kernels/dtype.hpp"
#include "moed/kernels/quant.hpp"
#include "moed/kernels/quant_dot.hpp"
#include "moed/kernels/quant_tiles.hpp"
#include "random_data.hpp"
#include "row_tile_units.hpp"

using namespace moed::kernels;

namespace {

const GgmlType kFormats[] = {GgmlType::q8_0, GgmlType::q4_0,  GgmlType::q4_1, GgmlType::q5_0,
                             GgmlType::q5_1, GgmlType::q2_k,  GgmlType::q4_k, GgmlType::q5_k,
                             GgmlType::q6_k, GgmlType::iq4_xs};

// The formats with 256-element super-blocks, which meet Q8_K activations.
bool is_k_quant(GgmlType type) {
  return ggml_type_traits(type).block_size == 256;
}

// Byte offsets of the fp16 fields (d, m, dmin) of each format's block (IQ1_M has none: set_half).
std::vector<int> half_fields(GgmlType type) {
  switch (type) {
    case GgmlType::q4_1:
    case GgmlType::q5_1:
    case GgmlType::q4_k:
    case GgmlType::q5_k:
      return {0, 2};
    case GgmlType::q6_k:
      return {static_cast<int>(offsetof(BlockQ6_K, d))};
    case GgmlType::q3_k:
      return {static_cast<int>(offsetof(BlockQ3_K, d))};
    case GgmlType::q2_k:
      return {static_cast<int>(offsetof(BlockQ2_K, d)),
              static_cast<int>(offsetof(BlockQ2_K, dmin))};
    case GgmlType::iq1_m:
      return {};
    default:
      return {0};
  }
}

// Sets the fp16 scales of the block at `block` to `half` (IQ1_M's d lies in the top nibbles of its
// four scale words).
void set_half(GgmlType type, std::uint8_t* block, std::uint16_t half) {
  if (type == GgmlType::iq1_m) {
    for (int w = 0; w < 4; ++w) {
      std::uint8_t& top = block[offsetof(BlockIQ1_M, scales) + 2 * static_cast<std::size_t>(w) + 1];
      top = static_cast<std::uint8_t>((top & 0x0F) | ((half >> (4 * w)) & 0xF) << 4);
    }
    return;
  }
  for (int field : half_fields(type)) std::memcpy(block + field, &half, 2);
}

// Random blocks: every bit pattern of the quants is a valid encoding; the fp16 scales are drawn
// from [2^-8, 2^-4) so sums stay finite. Signs vary so mins and maxima are both exercised.
std::vector<std::uint8_t> random_weights(GgmlType type, std::int64_t rows, std::int64_t cols,
                                         std::mt19937& rng) {
  const auto traits = ggml_type_traits(type);
  const std::int64_t blocks = rows * cols / traits.block_size;
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(blocks * traits.type_size));
  for (auto& byte : bytes) byte = static_cast<std::uint8_t>(rng());
  for (std::int64_t b = 0; b < blocks; ++b) {
    for (int field : half_fields(type)) {
      const auto half = static_cast<std::uint16_t>(0x1C00 + rng() % 0x1000);
      std::memcpy(bytes.data() + b * traits.type_size + field, &half, 2);
    }
    if (type == GgmlType::iq1_m)
      set_half(type, bytes.data() + b * traits.type_size,
               static_cast<std::uint16_t>(0x1C00 + rng() % 0x1000));
  }
  return bytes;
}

std::vector<float> random_activations(std::int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<std::size_t>(n));
  for (auto& v : x) v = normal(rng);
  x[3] = 0.0f;
  return x;
}

// The activations as the dot sees them.
std::vector<float> dequantized(GgmlType type, const QuantizedActivations& a) {
  std::vector<float> x(static_cast<std::size_t>(a.n));
  const bool k = is_k_quant(type);
  for (std::int64_t i = 0; i < a.n; ++i)
    x[i] = k ? a.q8_k[i / 256].d * a.q8_k[i / 256].qs[i % 256]
             : f16_to_f32(a.q8_0[i / 32].d) * a.q8_0[i / 32].qs[i % 32];
  return x;
}

std::vector<QuantIsa> simd_paths() {
  std::vector<QuantIsa> paths;
  if (best_quant_isa() != QuantIsa::scalar) paths.push_back(QuantIsa::avx2);
  if (best_quant_isa() == QuantIsa::avx512_vnni) paths.push_back(QuantIsa::avx512_vnni);
  return paths;
}

// One activation row against rows x cols weights as CpuMatmul computes them: from row tiles.
void matvec_as_packed(GgmlType type, const std::uint8_t* weights, std::int64_t rows,
                      std::int64_t cols, const float* x, float* y) {
  std::vector<std::byte> tiles(row_tile_bytes(type, rows, cols));
  std::vector<const std::byte*> starts;
  for (std::int64_t r = 0; r < rows; ++r)
    starts.push_back(reinterpret_cast<const std::byte*>(weights) + r * ggml_row_bytes(type, cols));
  pack_row_tiles(type, starts, cols, tiles.data());
  QuantizedActivations a;
  quantize_activations(x, cols, a);
  row_tile_matmul(type, tiles.data(), rows, cols, &a, 1, y, rows);
}

}  // namespace

TEST(QuantDot, SimdPathsEqualScalarExactly) {
  if (simd_paths().empty()) GTEST_SKIP() << "this CPU has no AVX2";
  std::mt19937 rng(5);
  // 4096: long rows; 32 * 19: a tail after the groups of eight blocks; 256 * 3: few super-blocks.
  for (const GgmlType type : kFormats)
    for (const std::int64_t n : {4096, 32 * 19, 256 * 3, 256 * 67}) {
      if (n % ggml_type_traits(type).block_size != 0) continue;
      const auto w = random_weights(type, 1, n, rng);
      const auto x = random_activations(n, rng);
      QuantizedActivations a;
      quantize_activations(x.data(), n, a);
      const float scalar = vec_dot(type, w.data(), a, QuantIsa::scalar);
      for (const QuantIsa isa : simd_paths()) {
        const float simd = vec_dot(type, w.data(), a, isa);
        EXPECT_EQ(std::memcmp(&simd, &scalar, 4), 0)
            << ggml_type_name(type) << " n=" << n << " " << quant_isa_name(isa) << ": " << simd
            << " vs scalar " << scalar;
      }
    }
}

TEST(QuantDot, MatchesTheFloatDotWithinTheQuantizationError) {
  std::mt19937 rng(9);
  const std::int64_t n = 2048;
  for (const GgmlType type : kFormats)
    for (int trial = 0; trial < 4; ++trial) {
      const auto w = random_weights(type, 1, n, rng);
      const auto x = random_activations(n, rng);
      std::vector<float> wf(n);
      dequantize_row(type, w.data(), wf.data(), n);
      QuantizedActivations a;
      quantize_activations(x.data(), n, a);
      const auto xq = dequantized(type, a);
      double exact = 0, with_quantized = 0, magnitude = 0, activation_error = 0;
      for (std::int64_t i = 0; i < n; ++i) {
        exact += static_cast<double>(wf[i]) * x[i];
        with_quantized += static_cast<double>(wf[i]) * xq[i];
        magnitude += std::fabs(static_cast<double>(wf[i]) * xq[i]);
        activation_error += std::fabs(static_cast<double>(wf[i])) * std::fabs(x[i] - xq[i]);
      }
      const float dot = vec_dot(type, w.data(), a, QuantIsa::scalar);
      // The kernel is w . xq in float: a few roundings of the per-block scales and sums.
      EXPECT_NEAR(dot, with_quantized, 1e-5 * magnitude) << ggml_type_name(type);
      // Against the f32 activations: no more than the activation rounding can move it, and that
      // rounding is half a step (the Q8_0 scale also rounds to fp16: 2^-11 of 127 steps).
      EXPECT_LE(std::fabs(dot - exact), activation_error + 1e-5 * magnitude)
          << ggml_type_name(type);
      const bool k = is_k_quant(type);
      for (std::int64_t i = 0; i < n; ++i) {
        const float step = k ? a.q8_k[i / 256].d : f16_to_f32(a.q8_0[i / 32].d);
        ASSERT_LE(std::fabs(x[i] - xq[i]), step * (k ? 0.5f : 0.5f + 127.0f / 2048.0f) + 1e-6f)
            << "element " << i;
      }
    }
}

TEST(QuantDot, MatvecIsOneDotPerRow) {
  std::mt19937 rng(3);
  const std::int64_t rows = 37, cols = 512;
  for (const GgmlType type : {GgmlType::q4_k, GgmlType::q8_0, GgmlType::q5_1}) {
    const auto w = random_weights(type, rows, cols, rng);
    const auto x = random_activations(cols, rng);
    std::vector<float> y(rows);
    quant_matvec(type, w.data(), rows, cols, x.data(), y.data());
    QuantizedActivations a;
    quantize_activations(x.data(), cols, a);
    const std::uint64_t row_bytes = ggml_row_bytes(type, cols);
    for (std::int64_t r = 0; r < rows; ++r)
      EXPECT_EQ(y[r], vec_dot(type, w.data() + r * row_bytes, a))
          << ggml_type_name(type) << " row " << r;
  }
}

TEST(QuantDot, CpuMatmulKeepsQuantizedPartsAndEveryRowEqualsItsMatvec) {
  std::mt19937 rng(4);
  const std::int64_t cols = 512, m = 5;
  for (const GgmlType type :
       {GgmlType::q4_k, GgmlType::q8_0, GgmlType::q6_k, GgmlType::q4_1, GgmlType::iq2_s}) {
    const DType dtype = *dtype_of(type);
    // Two parts stacked along the output dimension, as gate over up.
    const auto top = random_weights(type, 24, cols, rng);
    const auto bottom = random_weights(type, 13, cols, rng);
    const WeightPart parts[] = {{top.data(), dtype, 24}, {bottom.data(), dtype, 13}};
    CpuMatmul matmul;
    const PackedWeight packed = matmul.pack(parts, cols);
    EXPECT_EQ(packed.dtype(), dtype);
    EXPECT_EQ(packed.rows(), 37);
    std::vector<std::uint8_t> stacked(top);
    stacked.insert(stacked.end(), bottom.begin(), bottom.end());
    // Repacked into row tiles: 37 rows pad to 48.
    EXPECT_EQ(packed.bytes(), row_tile_bytes(type, 37, cols));
    EXPECT_EQ(packed.bytes(), matmul.packed_bytes(37, cols, dtype));

    std::vector<float> x;
    for (std::int64_t i = 0; i < m; ++i) {
      const auto row = random_activations(cols, rng);
      x.insert(x.end(), row.begin(), row.end());
    }
    std::vector<float> y(static_cast<std::size_t>(m * 37));
    matmul.multiply(x.data(), m, packed, y.data());
    for (std::int64_t i = 0; i < m; ++i) {
      std::vector<float> alone(37);
      matvec_as_packed(type, stacked.data(), 37, cols, x.data() + i * cols, alone.data());
      for (std::int64_t r = 0; r < 37; ++r)
        ASSERT_EQ(y[static_cast<std::size_t>(i * 37 + r)], alone[static_cast<std::size_t>(r)])
            << ggml_type_name(type) << " row " << i << " output " << r;
    }
  }
}

// A token's experts in one parallel region: each job's output equals multiply, silu_mul and
// multiply on its own, bit for bit, whatever the thread count and job count (an odd count
// leaves one thread a job more), quantized and bf16 jobs together where moed computes bf16 rows
// (AVX512-BF16) or panels (no bf16 brgemm in oneDNN: the ctest entry with oneDNN capped at AVX2),
// and f32 jobs where they are in panels; f32 weights in oneDNN's layout are not taken.
TEST(QuantDot, ExpertFfnsEqualTheirMultipliesOneByOne) {
  std::mt19937 rng(6);
  const std::int64_t hidden = 256, ffn = 256;
  CpuMatmul matmul;
  struct Expert {
    PackedWeight gate_up, down;
  };
  std::vector<Expert> experts;
  // gate, up, down; the last gate_up is two segments of different formats, whose row tiles the
  // threads share as one run.
  const GgmlType types[][3] = {{GgmlType::q4_k, GgmlType::q4_k, GgmlType::q6_k},
                               {GgmlType::q8_0, GgmlType::q8_0, GgmlType::q8_0},
                               {GgmlType::q5_1, GgmlType::q5_1, GgmlType::q4_0},
                               {GgmlType::q4_k, GgmlType::q5_k, GgmlType::q8_0}};
  for (const auto& [gate_type, up_type, down_type] : types) {
    const auto gate = random_weights(gate_type, ffn, hidden, rng);
    const auto up = random_weights(up_type, ffn, hidden, rng);
    const auto down = random_weights(down_type, hidden, ffn, rng);
    const WeightPart gate_up[] = {{gate.data(), *dtype_of(gate_type), ffn},
                                  {up.data(), *dtype_of(up_type), ffn}};
    const WeightPart down_part[] = {{down.data(), *dtype_of(down_type), hidden}};
    experts.push_back({matmul.pack(gate_up, hidden), matmul.pack(down_part, ffn)});
  }
  const auto bf16_gate_up = moed::test::to_bf16(random_activations(2 * ffn * hidden, rng));
  const auto bf16_down = moed::test::to_bf16(random_activations(hidden * ffn, rng));
  const WeightPart bf16_gate_up_part[] = {{bf16_gate_up.data(), DType::bf16, 2 * ffn}};
  const WeightPart bf16_down_part[] = {{bf16_down.data(), DType::bf16, hidden}};
  Expert bf16_expert{matmul.pack(bf16_gate_up_part, hidden), matmul.pack(bf16_down_part, ffn)};
  const std::string bf16_implementation = matmul.implementation(1, bf16_expert.gate_up);
  if (bf16_implementation.ends_with("bf16 rows in oneDNN's layout") ||
      bf16_implementation.ends_with("bf16 panels"))
    experts.insert(experts.begin() + 1, std::move(bf16_expert));
  const auto f32_gate_up = random_activations(2 * ffn * hidden, rng);
  const auto f32_down = random_activations(hidden * ffn, rng);
  const WeightPart f32_gate_up_part[] = {{f32_gate_up.data(), DType::f32, 2 * ffn}};
  const WeightPart f32_down_part[] = {{f32_down.data(), DType::f32, hidden}};
  Expert f32_expert{matmul.pack(f32_gate_up_part, hidden), matmul.pack(f32_down_part, ffn)};
  const bool f32_in_panels = matmul.implementation(1, f32_expert.down).ends_with("f32 panels");
  EXPECT_EQ(f32_in_panels, CpuMatmul::plain_in_panels(DType::f32));
  if (f32_in_panels) experts.push_back(std::move(f32_expert));
  const auto x = random_activations(hidden, rng);
  const int saved_threads = compute_threads();
  for (const int threads : {1, 2, 3}) {
    set_compute_threads(threads);
    // One by one, at this thread count (which also checks the bf16 shapes for it).
    std::vector<std::vector<float>> expected;
    for (const auto& expert : experts) {
      std::vector<float> projected(2 * ffn), activated(ffn), out(hidden);
      matmul.multiply(x.data(), 1, expert.gate_up, projected.data());
      silu_mul(projected.data(), activated.data(), 1, ffn);
      matmul.multiply(activated.data(), 1, expert.down, out.data());
      expected.push_back(out);
    }
    for (std::size_t count = 1; count <= experts.size(); ++count) {
      std::vector<std::vector<float>> outs(count, std::vector<float>(hidden, -1.0f));
      std::vector<CpuMatmul::ExpertFfn> jobs;
      for (std::size_t j = 0; j < count; ++j)
        jobs.push_back({&experts[j].gate_up, &experts[j].down, x.data(), outs[j].data()});
      ASSERT_TRUE(CpuMatmul::can_run_expert_ffns(jobs));
      CpuMatmul::expert_ffns(jobs);
      for (std::size_t j = 0; j < count; ++j)
        EXPECT_EQ(outs[j], expected[j]) << threads << " threads, " << count << " jobs, job " << j;
    }
  }
  set_compute_threads(saved_threads);

  if (f32_in_panels) return;
  std::vector<float> out(hidden);
  const CpuMatmul::ExpertFfn with_plain[] = {
      {&experts[0].gate_up, &f32_expert.down, x.data(), out.data()}};
  EXPECT_FALSE(CpuMatmul::can_run_expert_ffns(with_plain));
  EXPECT_THROW(CpuMatmul::expert_ffns(with_plain), std::invalid_argument);
}

TEST(QuantDot, StoredRowsWeightsGiveThePackedWeightsResults) {
  std::mt19937 rng(8);
  const std::int64_t hidden = 512, ffn = 256 * 3;
  const auto gate = random_weights(GgmlType::q4_k, ffn, hidden, rng);
  const auto up = random_weights(GgmlType::q4_k, ffn, hidden, rng);
  const auto down = random_weights(GgmlType::q6_k, hidden, ffn, rng);
  // As the disk tier reads an expert: its three matrices in one buffer, not next to each other.
  const std::size_t gap = 4096 - 96;
  auto block =
      std::shared_ptr<std::byte>(new std::byte[3 * gap + gate.size() + up.size() + down.size()],
                                 std::default_delete<std::byte[]>());
  std::byte* at = block.get() + gap;
  std::memcpy(at, gate.data(), gate.size());
  std::byte* up_at = at + gate.size() + gap;
  std::memcpy(up_at, up.data(), up.size());
  std::byte* down_at = up_at + up.size() + gap;
  std::memcpy(down_at, down.data(), down.size());
  const WeightPart packed_gate_up[] = {{gate.data(), DType::q4_k, ffn},
                                       {up.data(), DType::q4_k, ffn}};
  const WeightPart packed_down[] = {{down.data(), DType::q6_k, hidden}};
  const WeightPart stored_gate_up[] = {{at, DType::q4_k, ffn}, {up_at, DType::q4_k, ffn}};
  const WeightPart stored_down[] = {{down_at, DType::q6_k, hidden}};
  const WeightPart bf16_part[] = {{gate.data(), DType::bf16, 1}};
  EXPECT_FALSE(CpuMatmul::computes_stored_rows(bf16_part));
  const bool here = best_quant_isa() != QuantIsa::scalar;
  EXPECT_EQ(CpuMatmul::computes_stored_rows(stored_gate_up), here);
  if (!here) {
    EXPECT_THROW(CpuMatmul::stored_rows(stored_gate_up, hidden, block), std::invalid_argument);
    GTEST_SKIP() << "stored rows are computed on AVX2 and AVX-512 VNNI only";
  }
  CpuMatmul matmul;
  const PackedWeight tiles_gate_up = matmul.pack(packed_gate_up, hidden);
  const PackedWeight tiles_down = matmul.pack(packed_down, ffn);
  const PackedWeight rows_gate_up = CpuMatmul::stored_rows(stored_gate_up, hidden, block);
  const PackedWeight rows_down = CpuMatmul::stored_rows(stored_down, ffn, block);
  EXPECT_EQ(rows_gate_up.bytes(), gate.size() + up.size());
  EXPECT_NE(matmul.implementation(1, rows_gate_up).find("q4_K stored rows"), std::string::npos);
  for (const std::int64_t m : {1, 3, 6}) {
    const auto x = random_activations(m * hidden, rng);
    std::vector<float> tiled(static_cast<std::size_t>(m * 2 * ffn)), stored(tiled.size());
    matmul.multiply(x.data(), m, tiles_gate_up, tiled.data());
    matmul.multiply(x.data(), m, rows_gate_up, stored.data());
    EXPECT_EQ(stored, tiled) << "m=" << m;
  }
  const auto x = random_activations(hidden, rng);
  const int saved_threads = compute_threads();
  for (const int threads : {1, 2}) {
    set_compute_threads(threads);
    std::vector<float> tiled(hidden), stored(hidden), mixed(hidden);
    // Beside a tiled expert, as a layer's cached and streamed experts run together.
    const CpuMatmul::ExpertFfn jobs[] = {{&tiles_gate_up, &tiles_down, x.data(), tiled.data()},
                                         {&rows_gate_up, &rows_down, x.data(), stored.data()},
                                         {&rows_gate_up, &tiles_down, x.data(), mixed.data()}};
    ASSERT_TRUE(CpuMatmul::can_run_expert_ffns(jobs));
    CpuMatmul::expert_ffns(jobs);
    EXPECT_EQ(stored, tiled) << threads << " threads";
    EXPECT_EQ(mixed, tiled) << threads << " threads";
  }
  set_compute_threads(saved_threads);
}

// A batched quantized weight (llama.cpp's per-head attn_k_b in q8_0) applies each matrix to its
// own rows, each product equal to that matrix packed and multiplied alone.
// Also in the formats rewritten with a scale (rewrite_scale): MLA's per-head matrices of a GGUF
// file are batched, and attn_v_b's rows (kv_lora_rank wide) can hold IQ blocks.
TEST(QuantDot, CpuMatmulBatchedAppliesEachMatrixToItsOwnRows) {
  std::mt19937 rng(8);
  for (const auto& [type, cols] : {std::pair(GgmlType::q8_0, std::int64_t{64}),
                                   std::pair(GgmlType::iq3_xxs, std::int64_t{256}),
                                   std::pair(GgmlType::iq1_s, std::int64_t{256}),
                                   std::pair(GgmlType::iq1_m, std::int64_t{256}),
                                   std::pair(GgmlType::iq2_xs, std::int64_t{256})}) {
    SCOPED_TRACE(ggml_type_name(type));
    const DType dtype = *dtype_of(type);
    const std::int64_t batch = 3, rows = 24, m = 2;
    std::vector<std::vector<std::uint8_t>> weights;
    std::vector<WeightPart> matrices;
    for (std::int64_t b = 0; b < batch; ++b) {
      weights.push_back(random_weights(type, rows, cols, rng));
      matrices.push_back({weights.back().data(), dtype, rows});
    }
    CpuMatmul matmul;
    const PackedWeight packed = matmul.pack_batched(matrices, cols);
    EXPECT_EQ(packed.batch(), batch);
    EXPECT_EQ(packed.bytes(), matmul.packed_bytes(batch, rows, cols, dtype));
    std::vector<float> x;
    for (std::int64_t i = 0; i < batch * m; ++i) {
      const auto row = random_activations(cols, rng);
      x.insert(x.end(), row.begin(), row.end());
    }
    std::vector<float> y(static_cast<std::size_t>(batch * m * rows));
    matmul.multiply(x.data(), m, packed, y.data());
    for (std::int64_t b = 0; b < batch; ++b) {
      const PackedWeight alone = matmul.pack(std::span(&matrices[b], 1), cols);
      std::vector<float> want(static_cast<std::size_t>(m * rows));
      matmul.multiply(x.data() + b * m * cols, m, alone, want.data());
      for (std::int64_t j = 0; j < m * rows; ++j)
        ASSERT_EQ(y[static_cast<std::size_t>(b * m * rows + j)], want[static_cast<std::size_t>(j)])
            << "matrix " << b << " output " << j;
    }
  }
}

TEST(QuantDot, CpuMatmulStacksPartsOfDifferentFormats) {
  std::mt19937 rng(5);
  const std::int64_t cols = 256, m = 3;
  // llama-quantize's q4_K_M: attn_q and attn_k in q4_K, attn_v in q8_0 or q6_K.
  const auto q = random_weights(GgmlType::q4_k, 16, cols, rng);
  const auto v = random_weights(GgmlType::q8_0, 8, cols, rng);
  const auto k = random_weights(GgmlType::q4_k, 8, cols, rng);
  const WeightPart parts[] = {
      {q.data(), DType::q4_k, 16}, {v.data(), DType::q8_0, 8}, {k.data(), DType::q4_k, 8}};
  CpuMatmul matmul;
  const PackedWeight packed = matmul.pack(parts, cols);
  EXPECT_EQ(packed.bytes(), row_tile_bytes(GgmlType::q4_k, 16, cols) +
                                row_tile_bytes(GgmlType::q8_0, 8, cols) +
                                row_tile_bytes(GgmlType::q4_k, 8, cols));
  EXPECT_EQ(packed.bytes(), matmul.packed_bytes(parts, cols));
  std::vector<float> x;
  for (std::int64_t i = 0; i < m; ++i) {
    const auto row = random_activations(cols, rng);
    x.insert(x.end(), row.begin(), row.end());
  }
  std::vector<float> y(static_cast<std::size_t>(m * 32));
  matmul.multiply(x.data(), m, packed, y.data());
  for (std::int64_t i = 0; i < m; ++i) {
    std::vector<float> want(32);
    matvec_as_packed(GgmlType::q4_k, q.data(), 16, cols, x.data() + i * cols, want.data());
    matvec_as_packed(GgmlType::q8_0, v.data(), 8, cols, x.data() + i * cols, want.data() + 16);
    matvec_as_packed(GgmlType::q4_k, k.data(), 8, cols, x.data() + i * cols, want.data() + 24);
    for (int r = 0; r < 32; ++r) ASSERT_EQ(y[static_cast<std::size_t>(i * 32 + r)], want[r]) << r;
  }

  // A quantized part beside an f32 one: the stack is dequantized and computed in f32.
  std::vector<float> plain(static_cast<std::size_t>(4 * cols));
  for (auto& value : plain) value = std::normal_distribution<float>(0, 1)(rng);
  const WeightPart mixed[] = {{q.data(), DType::q4_k, 16}, {plain.data(), DType::f32, 4}};
  const PackedWeight widened = matmul.pack(mixed, cols);
  EXPECT_EQ(widened.dtype(), DType::f32);
  std::vector<float> dense(static_cast<std::size_t>(20 * cols));
  dequantize_row(GgmlType::q4_k, q.data(), dense.data(), 16 * cols);
  std::copy(plain.begin(), plain.end(), dense.begin() + 16 * cols);
  std::vector<float> got(20);
  matmul.multiply(x.data(), 1, widened, got.data());
  for (int r = 0; r < 20; ++r) {
    double want = 0, scale = 0;
    for (std::int64_t c = 0; c < cols; ++c) {
      want += static_cast<double>(dense[r * cols + c]) * x[c];
      scale += std::fabs(static_cast<double>(dense[r * cols + c]) * x[c]);
    }
    EXPECT_NEAR(got[r], want, 1e-5 * scale) << r;
  }
}

TEST(QuantDot, RefusesWhatItCannotCompute) {
  QuantizedActivations a;
  std::vector<float> x(96, 1.0f);
  quantize_activations(x.data(), 96, a);
  std::vector<std::uint8_t> w(1024);
  try {
    vec_dot(GgmlType::q4_k, w.data(), a);
    ADD_FAILURE() << "q4_K on 96 activations was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("q4_K needs activations in whole Q8_K blocks"),
              std::string::npos)
        << e.what();
  }
  try {
    vec_dot(GgmlType::iq2_xxs, w.data(), a);
    ADD_FAILURE() << "iq2_xxs was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("iq2_xxs has no quantized dot product"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(quantize_activations(x.data(), 40, a), std::invalid_argument);
}

// ctest runs this file once more with MOED_MAX_QUANT_ISA=avx2 (tests/CMakeLists.txt).
TEST(QuantDot, TheEnvironmentCapsTheBestPath) {
  for (const QuantIsa isa : {QuantIsa::scalar, QuantIsa::avx2, QuantIsa::avx512_vnni})
    EXPECT_EQ(quant_isa_named(quant_isa_name(isa)), isa);
  EXPECT_EQ(quant_isa_named("avx512"), std::nullopt);
  EXPECT_EQ(quant_isa_named(""), std::nullopt);
  const char* cap = std::getenv(kMaxQuantIsaVariable);
  const auto named = cap != nullptr ? quant_isa_named(cap) : std::nullopt;
  EXPECT_EQ(best_quant_isa(), usable_quant_isa(named.value_or(QuantIsa::avx512_vnni)));
}

TEST(QuantDot, EveryIsaQuantizesActivationsAlike) {
  std::mt19937 rng(23);
  auto x = random_activations(256 * 5, rng);
  // Block 1: max |x| near 1e-4, so the fp16 scale is subnormal.
  for (int i = 32; i < 64; ++i) x[i] *= 1e-4f;
  // Block 2: the scale 0.0625 and its inverse 16 are exact, so these land exactly halfway.
  for (int i = 64; i < 96; ++i) x[i] = (static_cast<float>(i - 80) + 0.5f) * 0.0625f;
  x[95] = 127 * 0.0625f;
  // Block 3: max |x| so small that 127 / max |x| overflows: the block quantizes to zeros.
  for (int i = 96; i < 128; ++i) x[i] = 0.0f;
  x[97] = 1e-37f;
  // Blocks 4 and 5: a NaN and an infinity.
  x[128 + 5] = std::numeric_limits<float>::quiet_NaN();
  x[160 + 9] = std::numeric_limits<float>::infinity();
  QuantizedActivations scalar;
  quantize_activations(x.data(), 256 * 5, scalar, QuantIsa::scalar);
  for (int i = 0; i < 32; ++i) {
    const int k = i - 16;  // x = (k + 0.5) / 16 rounds to the even neighbour
    if (i != 31) {
      EXPECT_EQ(scalar.q8_0[2].qs[i], k % 2 == 0 ? k : k + 1) << i;
    }
    EXPECT_EQ(scalar.q8_0[3].qs[i], 0) << i;
    EXPECT_EQ(scalar.q8_0[5].qs[i], 0) << i;
  }
  EXPECT_LT(scalar.q8_0[1].d & 0x7c00, 0x0400);  // subnormal half
  EXPECT_EQ(scalar.q8_0[4].d, 0x7e00);           // NaN: the dot product will be NaN
  EXPECT_EQ(scalar.q8_0[5].d, 0x7c00);           // infinite scale, zero quants
  EXPECT_TRUE(std::isnan(scalar.q8_k[0].d));
  // The row-tile kernels' per-block forms: the stored fp16 scale as a float (bit for bit, NaN
  // included) and -128 times the quants' sum.
  ASSERT_EQ(scalar.q8_0_scales.size(), scalar.q8_0.size());
  ASSERT_EQ(scalar.q8_0_offset.size(), scalar.q8_0.size());
  for (std::size_t b = 0; b < scalar.q8_0.size(); ++b) {
    const float scale = f16_to_f32(scalar.q8_0[b].d);
    EXPECT_EQ(std::memcmp(&scalar.q8_0_scales[b], &scale, sizeof scale), 0) << "block " << b;
    EXPECT_EQ(scalar.q8_0_offset[b], -128 * scalar.q8_0_sums[b]) << "block " << b;
  }
  ASSERT_EQ(scalar.q8_k_sums32.size(), scalar.q8_k.size() * 8);
  ASSERT_EQ(scalar.q8_k_offsets16.size(), scalar.q8_k.size() * 16);
  for (std::size_t b = 0; b < scalar.q8_k.size(); ++b) {
    const std::int8_t* qs = scalar.q8_k[b].qs;
    for (int j = 0; j < 8; ++j) {
      const int low = std::accumulate(qs + 32 * j, qs + 32 * j + 16, 0);
      const int high = std::accumulate(qs + 32 * j + 16, qs + 32 * j + 32, 0);
      EXPECT_EQ(scalar.q8_k_sums32[8 * b + j], low + high) << "block " << b << " sub " << j;
      EXPECT_EQ(scalar.q8_k_offsets16[16 * b + 2 * j], 32 * low) << "block " << b << " sub " << j;
      EXPECT_EQ(scalar.q8_k_offsets16[16 * b + 2 * j + 1], 32 * high) << "block " << b;
    }
  }
  for (const QuantIsa isa : simd_paths()) {
    QuantizedActivations simd;
    quantize_activations(x.data(), 256 * 5, simd, isa);
    ASSERT_EQ(simd.q8_0.size(), scalar.q8_0.size());
    for (std::size_t b = 0; b < scalar.q8_0.size(); ++b)
      EXPECT_EQ(std::memcmp(&simd.q8_0[b], &scalar.q8_0[b], sizeof(BlockQ8_0)), 0)
          << quant_isa_name(isa) << " block " << b;
    EXPECT_EQ(simd.q8_0_sums, scalar.q8_0_sums);
    EXPECT_EQ(simd.q8_0_offset, scalar.q8_0_offset);
    EXPECT_EQ(simd.q8_k_sums32, scalar.q8_k_sums32);
    EXPECT_EQ(simd.q8_k_offsets16, scalar.q8_k_offsets16);
    ASSERT_EQ(simd.q8_0_scales.size(), scalar.q8_0_scales.size());
    EXPECT_EQ(std::memcmp(simd.q8_0_scales.data(), scalar.q8_0_scales.data(),
                          scalar.q8_0_scales.size() * sizeof(float)),
              0)
        << quant_isa_name(isa);
    ASSERT_EQ(simd.q8_1_sums.size(), scalar.q8_1_sums.size());
    EXPECT_EQ(std::memcmp(simd.q8_1_sums.data(), scalar.q8_1_sums.data(),
                          scalar.q8_1_sums.size() * sizeof(float)),
              0)
        << quant_isa_name(isa);
    ASSERT_EQ(simd.q8_k.size(), 5u);
    EXPECT_EQ(std::memcmp(simd.q8_k.data(), scalar.q8_k.data(), sizeof(BlockQ8_K) * 5), 0)
        << quant_isa_name(isa);
  }
}

TEST(QuantDot, ActivationScaleRoundsToHalf) {
  // max |x| = 127 * 0.0625: the scale 0.0625 is exact in fp16 and every value lands on a step.
  std::vector<float> x(32, 0.0f);
  x[0] = 127 * 0.0625f;
  x[1] = -3 * 0.0625f;
  x[2] = 0.0625f * 2.5f;  // halfway: rounds to even, 2
  QuantizedActivations a;
  quantize_activations(x.data(), 32, a);
  EXPECT_EQ(a.q8_0[0].d, 0x2C00);  // 0.0625
  EXPECT_EQ(a.q8_0[0].qs[0], 127);
  EXPECT_EQ(a.q8_0[0].qs[1], -3);
  EXPECT_EQ(a.q8_0[0].qs[2], 2);
  EXPECT_EQ(a.q8_0_sums[0], 126);
  EXPECT_TRUE(a.q8_k.empty());
}

TEST(QuantDot, MinsMultiplyGgmlsQ8_1Sum) {
  // ggml dots q4_1 / q5_1 with Q8_1 blocks, whose s is the unrounded scale times the quants' sum,
  // stored in fp16: the min term is m * s, not m * (fp16 scale) * sum.
  std::vector<float> x(32);
  for (int i = 0; i < 32; ++i) x[i] = 0.37f * static_cast<float>(i) - 3.1f;
  QuantizedActivations a;
  quantize_activations(x.data(), 32, a, QuantIsa::scalar);
  const float amax = x[31];
  std::int32_t sum = 0;
  for (int i = 0; i < 32; ++i) {
    EXPECT_EQ(a.q8_0[0].qs[i], static_cast<int>(std::nearbyint(x[i] * (127.0f / amax)))) << i;
    sum += a.q8_0[0].qs[i];
  }
  // (amax / 127) * sum = 84.29316 is 84.3125 in fp16 (steps of 1/16 there); the fp16 scale
  // times the sum would be 84.30908.
  ASSERT_EQ(sum, 1279);
  EXPECT_EQ(a.q8_1_sums[0], 84.3125f);
  EXPECT_NEAR(f16_to_f32(a.q8_0[0].d) * static_cast<float>(sum), 84.30908f, 1e-4f);

  BlockQ4_1 w{};
  w.d = 0x3800;  // 0.5
  w.m = 0xC200;  // -3
  for (int j = 0; j < 16; ++j) w.qs[j] = static_cast<std::uint8_t>(j | ((15 - j) << 4));
  double products = 0;
  for (int j = 0; j < 16; ++j) products += j * a.q8_0[0].qs[j] + (15 - j) * a.q8_0[0].qs[j + 16];
  const double expected =
      0.5 * f16_to_f32(a.q8_0[0].d) * products - 3.0 * static_cast<double>(a.q8_1_sums[0]);
  for (const QuantIsa isa : {QuantIsa::scalar, QuantIsa::avx2, QuantIsa::avx512_vnni}) {
    QuantizedActivations b;
    quantize_activations(x.data(), 32, b, isa);
    EXPECT_EQ(b.q8_1_sums, a.q8_1_sums) << quant_isa_name(isa);
    EXPECT_NEAR(vec_dot(GgmlType::q4_1, &w, b, isa), expected, 1e-5) << quant_isa_name(isa);
  }
}

namespace {

const GgmlType kTiledFormats[] = {
    GgmlType::q8_0,    GgmlType::q4_0,   GgmlType::q4_1, GgmlType::q5_0, GgmlType::q5_1,
    GgmlType::q2_k,    GgmlType::q4_k,   GgmlType::q5_k, GgmlType::q6_k, GgmlType::iq4_xs,
    GgmlType::iq2_xxs, GgmlType::iq2_xs, GgmlType::iq2_s};

bool is_iq2(GgmlType type) {
  return type == GgmlType::iq2_xxs || type == GgmlType::iq2_xs || type == GgmlType::iq2_s;
}

// iq4_xs's and the IQ2 formats' tiles are packed row by row on every path.
bool packs_in_registers_with_simd(GgmlType type) {
  return type != GgmlType::iq4_xs && !is_iq2(type);
}

struct Tiled {
  std::vector<std::uint8_t> stored;
  std::vector<std::byte> tiles;
};

Tiled random_tiled(GgmlType type, std::int64_t rows, std::int64_t cols, std::mt19937& rng) {
  Tiled w{random_weights(type, rows, cols, rng), {}};
  w.tiles.resize(row_tile_bytes(type, rows, cols));
  std::vector<const std::byte*> starts;
  for (std::int64_t r = 0; r < rows; ++r)
    starts.push_back(reinterpret_cast<const std::byte*>(w.stored.data()) +
                     r * ggml_row_bytes(type, cols));
  pack_row_tiles(type, starts, cols, w.tiles.data());
  return w;
}

std::vector<QuantizedActivations> random_rows(std::int64_t m, std::int64_t cols,
                                              std::mt19937& rng) {
  std::vector<QuantizedActivations> rows(static_cast<std::size_t>(m));
  for (auto& row : rows) quantize_activations(random_activations(cols, rng).data(), cols, row);
  return rows;
}

}  // namespace

TEST(QuantTiles, EveryPathAndBatchSizeGivesTheScalarSoloResultBitForBit) {
  std::mt19937 rng(21);
  // 37 rows: two whole tiles and a padded one, in one tile group; 150: two whole groups and one
  // of two tiles.
  for (const std::int64_t rows : {37, 150})
    for (const GgmlType type : kTiledFormats)
      for (const std::int64_t cols : {512, 256 * 11}) {
        const Tiled w = random_tiled(type, rows, cols, rng);
        const auto x = random_rows(9, cols, rng);
        std::vector<float> solo(static_cast<std::size_t>(9 * rows));
        for (std::int64_t i = 0; i < 9; ++i)
          row_tile_matmul(type, w.tiles.data(), rows, cols, &x[i], 1, solo.data() + i * rows, rows,
                          QuantIsa::scalar);
        std::vector<QuantIsa> paths = simd_paths();
        paths.push_back(QuantIsa::scalar);
        for (const QuantIsa isa : paths)
          for (const std::int64_t m : {1, 2, 3, 5, 9}) {
            std::vector<float> y(static_cast<std::size_t>(m * rows), -1.0f);
            row_tile_matmul(type, w.tiles.data(), rows, cols, x.data(), m, y.data(), rows, isa);
            ASSERT_EQ(std::memcmp(y.data(), solo.data(), y.size() * sizeof(float)), 0)
                << ggml_type_name(type) << " rows=" << rows << " cols=" << cols << " "
                << quant_isa_name(isa) << " m=" << m;
          }
      }
}

TEST(QuantTiles, StoredRowsGiveTheRowTilesResultBitForBit) {
  // Asked for by name, a path runs wherever the CPU has it (MOED_MAX_QUANT_ISA caps only the
  // default, so under it simd_paths() may list fewer).
  for (const GgmlType type : kTiledFormats)
    for (const QuantIsa isa : {QuantIsa::scalar, QuantIsa::avx2, QuantIsa::avx512_vnni})
      EXPECT_EQ(computes_stored_rows(type, isa),
                isa != QuantIsa::scalar && usable_quant_isa(isa) == isa)
          << ggml_type_name(type) << " " << quant_isa_name(isa);
  const std::vector<QuantIsa> paths = simd_paths();
  EXPECT_FALSE(computes_stored_rows(GgmlType::tq2_0));
  if (paths.empty()) GTEST_SKIP() << "stored rows are computed on AVX2 and AVX-512 VNNI only";
  std::mt19937 rng(29);
  // 1 and 37: a lone row and an odd middle one (computed as a pair of itself); 150: whole groups
  // and a short one, spread over the threads. The 32-element formats go eight blocks at a time:
  // 416 columns are eight and five more.
  for (const GgmlType type : kTiledFormats)
    for (const std::int64_t rows : {1, 37, 150})
      for (const std::int64_t cols : {256, 256 * 11, 416}) {
        if (cols % ggml_type_traits(type).block_size != 0) continue;
        const Tiled w = random_tiled(type, rows, cols, rng);
        for (const std::int64_t m : {1, 2, 5}) {
          const auto x = random_rows(m, cols, rng);
          std::vector<float> tiled(static_cast<std::size_t>(m * rows));
          row_tile_matmul(type, w.tiles.data(), rows, cols, x.data(), m, tiled.data(), rows,
                          QuantIsa::scalar);
          for (const QuantIsa isa : paths) {
            std::vector<float> stored(tiled.size(), -1.0f);
            stored_rows_matmul(type, reinterpret_cast<const std::byte*>(w.stored.data()), rows,
                               cols, x.data(), m, stored.data(), rows, isa);
            ASSERT_EQ(std::memcmp(stored.data(), tiled.data(), tiled.size() * sizeof(float)), 0)
                << ggml_type_name(type) << " rows=" << rows << " cols=" << cols << " m=" << m << " "
                << quant_isa_name(isa);
          }
        }
      }
  // The engine's entry, asked for the scalar path (a CPU without AVX2, where nothing is stored):
  // it repacks the groups instead of running a SIMD kernel, with the same result.
  const Tiled w = random_tiled(GgmlType::q4_k, 37, 256, rng);
  const auto x = random_rows(1, 256, rng);
  std::vector<float> tiled(37), stored(37, -1.0f);
  row_tile_matmul(GgmlType::q4_k, w.tiles.data(), 37, 256, x.data(), 1, tiled.data(), 37,
                  QuantIsa::scalar);
  moed::kernels::detail::stored_rows_on_this_thread(
      GgmlType::q4_k, reinterpret_cast<const std::byte*>(w.stored.data()), 37, 256, x.data(), 1,
      stored.data(), 37, QuantIsa::scalar, 0, row_tile_groups(37));
  EXPECT_EQ(std::memcmp(stored.data(), tiled.data(), tiled.size() * sizeof(float)), 0);

  float y = 0;
  std::vector<std::byte> row(ggml_row_bytes(GgmlType::tq2_0, 256));
  EXPECT_THROW(stored_rows_matmul(GgmlType::tq2_0, row.data(), 1, 256, x.data(), 1, &y, 1),
               std::invalid_argument);
  row.resize(ggml_row_bytes(GgmlType::q4_k, 256));
  EXPECT_THROW(
      stored_rows_matmul(GgmlType::q4_k, row.data(), 1, 256, x.data(), 1, &y, 1, QuantIsa::scalar),
      std::invalid_argument);
}

TEST(QuantTiles, EveryPackingPathWritesTheSameBytes) {
  std::mt19937 rng(23);
  for (const GgmlType type : kTiledFormats)
    for (const std::int64_t rows : {1, 16, 17, 37, 48})
      for (const std::int64_t cols : {256, 256 * 11})
        for (const int fill : {-1, 0x00, 0xFF}) {  // -1: random bytes, scales included
          const std::int64_t row_bytes = ggml_row_bytes(type, cols);
          std::vector<std::uint8_t> stored(static_cast<std::size_t>(rows * row_bytes));
          for (auto& byte : stored)
            byte = static_cast<std::uint8_t>(fill < 0 ? rng() : static_cast<unsigned>(fill));
          std::vector<const std::byte*> starts;
          for (std::int64_t r = 0; r < rows; ++r)
            starts.push_back(reinterpret_cast<const std::byte*>(stored.data()) + r * row_bytes);
          const auto bytes = row_tile_bytes(type, rows, cols);
          // The register paths (AVX2, and AVX-512 where the CPU has VBMI) must be the ones
          // tested wherever this CPU can run them.
          EXPECT_EQ(packs_tiles_in_registers(type),
                    packs_in_registers_with_simd(type) && best_quant_isa() != QuantIsa::scalar)
              << ggml_type_name(type);
          EXPECT_FALSE(packs_tiles_in_registers(type, QuantIsa::scalar));
          std::vector<std::byte> scalar(bytes, std::byte{0x5A});
          pack_row_tiles(type, starts, cols, scalar.data(), QuantIsa::scalar);
          for (const QuantIsa isa : simd_paths()) {
            std::vector<std::byte> packed(bytes, std::byte{0xA5});
            pack_row_tiles(type, starts, cols, packed.data(), isa);
            const auto differs = std::mismatch(packed.begin(), packed.end(), scalar.begin());
            ASSERT_TRUE(differs.first == packed.end())
                << ggml_type_name(type) << " rows=" << rows << " cols=" << cols << " fill=" << fill
                << " " << quant_isa_name(isa) << ": byte " << (differs.first - packed.begin())
                << " of " << bytes;
          }
        }
}

// Threads share a product by tile groups: every split of the groups into two ranges must give
// the whole range's bytes, for decode (one row) and prefill (more rows than one call takes,
// computed tile by tile).
TEST(QuantTiles, AnySplitOfTheGroupsGivesTheWholeRangesBytes) {
  std::mt19937 rng(24);
  const std::int64_t rows = 150, cols = 1024;
  const std::int64_t groups = row_tile_groups(rows);
  for (const GgmlType type : {GgmlType::q8_0, GgmlType::q4_k, GgmlType::q6_k, GgmlType::q5_0}) {
    const Tiled w = random_tiled(type, rows, cols, rng);
    const auto x = random_rows(5, cols, rng);
    for (const QuantIsa isa : {best_quant_isa(), QuantIsa::scalar})
      for (const std::int64_t m : {1, 5}) {
        std::vector<float> whole(static_cast<std::size_t>(m * rows), -1.0f);
        detail::row_tiles_on_this_thread(type, w.tiles.data(), rows, cols, x.data(), m,
                                         whole.data(), rows, isa, 0, groups);
        for (std::int64_t split = 1; split < groups; ++split) {
          std::vector<float> y(whole.size(), -2.0f);
          detail::row_tiles_on_this_thread(type, w.tiles.data(), rows, cols, x.data(), m, y.data(),
                                           rows, isa, 0, split);
          detail::row_tiles_on_this_thread(type, w.tiles.data(), rows, cols, x.data(), m, y.data(),
                                           rows, isa, split, groups);
          ASSERT_EQ(std::memcmp(y.data(), whole.data(), y.size() * sizeof(float)), 0)
              << ggml_type_name(type) << " " << quant_isa_name(isa) << " m=" << m
              << " split=" << split;
        }
      }
  }
}

TEST(QuantTiles, MatchTheDequantizedDotAndTheRowKernel) {
  std::mt19937 rng(22);
  // 150 rows: two whole tile groups and one of two tiles, the last padded; 1024 columns: chunks
  // of every format, the last one shorter.
  const std::int64_t rows = 150, cols = 1024;
  for (const GgmlType type : kTiledFormats) {
    const Tiled w = random_tiled(type, rows, cols, rng);
    const auto x = random_rows(3, cols, rng);
    std::vector<float> y(static_cast<std::size_t>(3 * rows));
    row_tile_matmul(type, w.tiles.data(), rows, cols, x.data(), 3, y.data(), rows);
    std::vector<float> wf(static_cast<std::size_t>(cols));
    for (std::int64_t i = 0; i < 3; ++i) {
      const auto xq = dequantized(type, x[i]);
      for (std::int64_t r = 0; r < rows; ++r) {
        const std::uint8_t* row = w.stored.data() + r * ggml_row_bytes(type, cols);
        dequantize_row(type, row, wf.data(), cols);
        double want = 0, magnitude = 0;
        for (std::int64_t c = 0; c < cols; ++c) {
          want += static_cast<double>(wf[c]) * xq[c];
          magnitude += std::fabs(static_cast<double>(wf[c]) * xq[c]);
        }
        const float got = y[static_cast<std::size_t>(i * rows + r)];
        EXPECT_NEAR(got, want, 1e-5 * magnitude) << ggml_type_name(type) << " row " << r;
        if (quant_dot_supported(type)) {
          EXPECT_NEAR(got, vec_dot(type, row, x[i]), 1e-5 * magnitude)
              << ggml_type_name(type) << " row " << r;
        }
      }
    }
  }
}

// q3_K, iq3_s, iq3_xxs and iq4_nl have no kernels of their own: their blocks are rewritten as
// q6_K's and q8_0's of the same values (row_tile_format; iq3_xxs's of twice them, rewrite_scale),
// and computed as those.
TEST(QuantTiles, RewrittenFormatsAreComputedAsTheBlocksOfTheSameValues) {
  std::mt19937 rng(23);
  // 150 rows: three tile groups, the last of two tiles, so several threads rewrite rows.
  const std::int64_t rows = 150, cols = 1024;
  std::vector<QuantIsa> paths = simd_paths();
  paths.push_back(QuantIsa::scalar);
  for (const auto& [type, tiles_type] :
       {std::pair(GgmlType::q3_k, GgmlType::q6_k), std::pair(GgmlType::iq3_s, GgmlType::q6_k),
        std::pair(GgmlType::iq3_xxs, GgmlType::q6_k), std::pair(GgmlType::iq1_s, GgmlType::q6_k),
        std::pair(GgmlType::iq1_m, GgmlType::q6_k), std::pair(GgmlType::iq4_nl, GgmlType::q8_0)}) {
    SCOPED_TRACE(ggml_type_name(type));
    EXPECT_EQ(row_tile_format(type), tiles_type);
    const float scale = rewrite_scale(type);
    EXPECT_EQ(scale, type == GgmlType::iq3_xxs                            ? 0.5f
                     : type == GgmlType::iq1_s || type == GgmlType::iq1_m ? 0.125f
                                                                          : 1.0f);
    auto stored = random_weights(type, rows, cols, rng);
    // Subnormal halves with their last bit set, which could not be halved exactly (iq3_xxs).
    const std::size_t block_bytes = ggml_type_traits(type).type_size;
    const std::uint16_t subnormal_odd[] = {0x0001, 0x0155};
    for (std::size_t i = 0; i < 2; ++i)  // blocks 1 and 5
      set_half(type, stored.data() + (1 + 4 * i) * block_bytes, subnormal_odd[i]);
    const std::size_t stored_row = ggml_row_bytes(type, cols);
    const std::size_t tile_row = ggml_row_bytes(tiles_type, cols);
    const std::int64_t blocks = cols / ggml_type_traits(type).block_size;
    std::vector<std::byte> rewritten_bytes(static_cast<std::size_t>(rows) * tile_row);
    std::vector<std::byte> on_path(tile_row);
    std::vector<const std::byte*> starts, rewritten_starts;
    std::vector<float> values(static_cast<std::size_t>(cols)), rewritten_values(values.size());
    for (std::int64_t r = 0; r < rows; ++r) {
      const auto* row = reinterpret_cast<const std::byte*>(stored.data()) + r * stored_row;
      std::byte* rewritten = rewritten_bytes.data() + r * tile_row;
      rewrite_blocks(type, row, rewritten, blocks, QuantIsa::scalar);
      for (const QuantIsa isa : paths) {
        rewrite_blocks(type, row, on_path.data(), blocks, isa);
        ASSERT_EQ(std::memcmp(on_path.data(), rewritten, tile_row), 0)
            << quant_isa_name(isa) << " row " << r;
      }
      starts.push_back(row);
      rewritten_starts.push_back(rewritten);
      // The same values (times the scale): dequantize_row's for each format, each checked by
      // hand in test_quant.
      dequantize_row(type, row, values.data(), cols);
      dequantize_row(tiles_type, rewritten, rewritten_values.data(), cols);
      for (float& value : rewritten_values) value *= scale;
      ASSERT_EQ(std::memcmp(values.data(), rewritten_values.data(), values.size() * sizeof(float)),
                0)
          << "row " << r;
    }
    ASSERT_EQ(row_tile_bytes(type, rows, cols), row_tile_bytes(tiles_type, rows, cols));
    std::vector<std::byte> tiles(row_tile_bytes(type, rows, cols)), want_tiles(tiles.size());
    for (const QuantIsa isa : paths) {
      pack_row_tiles(type, starts, cols, tiles.data(), isa);
      pack_row_tiles(tiles_type, rewritten_starts, cols, want_tiles.data(), isa);
      ASSERT_EQ(std::memcmp(tiles.data(), want_tiles.data(), tiles.size()), 0)
          << quant_isa_name(isa);
    }

    // The product against the stored format's values.
    const auto x = random_rows(2, cols, rng);
    std::vector<float> y(static_cast<std::size_t>(2 * rows));
    row_tile_matmul(tiles_type, tiles.data(), rows, cols, x.data(), 2, y.data(), rows);
    for (std::int64_t i = 0; i < 2; ++i) {
      const auto xq = dequantized(tiles_type, x[i]);
      for (std::int64_t r = 0; r < rows; ++r) {
        dequantize_row(type, starts[static_cast<std::size_t>(r)], values.data(), cols);
        double want = 0, magnitude = 0;
        for (std::int64_t c = 0; c < cols; ++c) {
          want += static_cast<double>(values[c]) * xq[c];
          magnitude += std::fabs(static_cast<double>(values[c]) * xq[c]);
        }
        EXPECT_NEAR(y[static_cast<std::size_t>(i * rows + r)] * scale, want, 1e-5 * magnitude) << r;
      }
    }

    // In CpuMatmul beside a part in the tiles' own format (llama-quantize's Q3_K_M gives attn_v
    // q6_K): the rewritten run is a segment of that format, its rows' results those of the
    // rewritten rows. 136 of them: three tile groups, so a scale applies beyond the first.
    const std::int64_t first = 136, total = first + 8;
    const DType dtype = *dtype_of(type), tiles_dtype = *dtype_of(tiles_type);
    const auto v = random_weights(tiles_type, 8, cols, rng);
    const WeightPart parts[] = {{stored.data(), dtype, first}, {v.data(), tiles_dtype, 8}};
    CpuMatmul matmul;
    const PackedWeight packed = matmul.pack(parts, cols);
    EXPECT_EQ(packed.bytes(),
              row_tile_bytes(tiles_type, first, cols) + row_tile_bytes(tiles_type, 8, cols));
    EXPECT_EQ(packed.bytes(), matmul.packed_bytes(parts, cols));
    EXPECT_EQ(matmul.packing(first, cols, dtype),
              "ggml " + std::string(ggml_type_name(type)) + " blocks as " +
                  std::string(ggml_type_name(tiles_type)) + " in 16-row tiles");
    EXPECT_NE(matmul.implementation(1, packed).find(std::string(ggml_type_name(tiles_type)) +
                                                    " row tiles"),
              std::string::npos);
    EXPECT_FALSE(CpuMatmul::computes_stored_rows(std::span(parts, 1)));
    const auto activations = random_activations(cols, rng);
    std::vector<float> got(total), want(total);
    matmul.multiply(activations.data(), 1, packed, got.data());
    matvec_as_packed(tiles_type, reinterpret_cast<const std::uint8_t*>(rewritten_bytes.data()),
                     first, cols, activations.data(), want.data());
    for (std::int64_t r = 0; r < first; ++r) want[r] *= scale;
    matvec_as_packed(tiles_type, v.data(), 8, cols, activations.data(), want.data() + first);
    for (std::int64_t r = 0; r < total; ++r) EXPECT_EQ(got[r], want[r]) << r;

    // Streamed, the same parts are rewritten row by row (the other part copied) and computed as
    // stored where this CPU computes the tiles' format so: the packed weight's results bit for
    // bit, for a decode row and a prefill's several.
    const WeightPart with_f32[] = {parts[0], {activations.data(), DType::f32, 1}};
    EXPECT_FALSE(CpuMatmul::computes_rewritten_rows(with_f32));
    if (!computes_stored_rows(tiles_type)) continue;  // no stored-row kernels on this CPU
    ASSERT_TRUE(CpuMatmul::computes_rewritten_rows(parts));
    const PackedWeight rewritten = CpuMatmul::rewritten_rows(parts, cols, {});
    EXPECT_EQ(rewritten.bytes(), CpuMatmul::rewritten_rows_bytes(parts, cols));
    EXPECT_EQ(rewritten.bytes(), total * tile_row);
    for (const std::int64_t m : {1, 3}) {
      std::vector<float> xs(static_cast<std::size_t>(m * cols));
      for (std::int64_t i = 0; i < m; ++i)
        std::copy(activations.begin(), activations.end(), xs.begin() + i * cols);
      std::vector<float> ys(static_cast<std::size_t>(m * total));
      matmul.multiply(xs.data(), m, rewritten, ys.data());
      for (std::int64_t i = 0; i < m; ++i)
        for (std::int64_t r = 0; r < total; ++r)
          EXPECT_EQ(ys[i * total + r], got[r]) << "m " << m << " row " << r;
    }
  }
}

TEST(QuantTiles, RefuseFormatsWidthsAndActivationsThatDoNotFit) {
  std::vector<std::byte> tiles(4096);
  const std::byte* row = tiles.data();
  auto message = [](auto&& call) {
    try {
      call();
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(
      message([&] { pack_row_tiles(GgmlType::tq2_0, std::span(&row, 1), 256, tiles.data()); }),
      "pack_row_tiles: ggml type tq2_0 has no row-tile layout");
  EXPECT_EQ(message([&] { row_tile_bytes(GgmlType::q4_k, 1, 96); }),
            "row_tile_bytes: 96 columns are not whole q4_K blocks");
  EXPECT_EQ(message([&] { pack_row_tiles(GgmlType::q3_k, std::span(&row, 1), 96, tiles.data()); }),
            "pack_row_tiles: 96 columns are not whole q3_K blocks");
  EXPECT_EQ(message([&] { rewrite_blocks(GgmlType::q4_k, row, tiles.data(), 1); }),
            "rewrite_blocks: ggml type q4_K is computed as it is");
  QuantizedActivations a;
  std::vector<float> x(96, 1.0f);
  quantize_activations(x.data(), 96, a);
  float y[16];
  EXPECT_EQ(message([&] { row_tile_matmul(GgmlType::q8_0, tiles.data(), 1, 64, &a, 1, y, 1); }),
            "row_tile_matmul: activation row 0 has 96 elements, the weight 64");
}
