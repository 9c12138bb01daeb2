// Micro-benchmarks of the CPU kernels, and of the host tier's bookkeeping. Run: ctest -L perf, or
// build/tests/bench_kernels. Each GEMV reports bytes/s of weights streamed; compare with the
// probe's bandwidth line.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "moed/kernels/bandwidth.hpp"
#include "moed/kernels/cpu_matmul.hpp"
#include "moed/kernels/cpu_ops.hpp"
#include "moed/kernels/panel_matmul.hpp"
#include "moed/kernels/quant.hpp"
#include "moed/kernels/quant_dot.hpp"
#include "moed/kernels/quant_tiles.hpp"
#include "moed/memtier/aligned_buffer.hpp"
#include "moed/memtier/host_tier.hpp"
#include "moed/memtier/policy.hpp"
#include "team.hpp"

using namespace moed::kernels;

namespace {

// Enough distinct copies that the weights cannot stay in the last-level cache.
constexpr int kWeightCopies = 16;

// Times m rows of x through kWeightCopies packed copies of `part` in turn; bytes/s of the
// weight's bytes as held.
void time_gemv(benchmark::State& state, const WeightPart& part, std::int64_t m, std::int64_t k) {
  CpuMatmul matmul;
  std::vector<PackedWeight> copies;
  for (int i = 0; i < kWeightCopies; ++i) copies.push_back(matmul.pack(std::span(&part, 1), k));
  std::vector<float> x(static_cast<std::size_t>(m * k), 0.01f),
      y(static_cast<std::size_t>(m * part.rows));
  int i = 0;
  for (auto _ : state) {
    matmul.multiply(x.data(), m, copies[i++ % kWeightCopies], y.data());
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(copies[0].bytes()));
  state.SetLabel(matmul.implementation(m, copies[0]));
}

void BM_Bf16Gemv(benchmark::State& state) {
  const std::int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  std::vector<std::uint16_t> w(static_cast<std::size_t>(n * k), 0x3c00);
  time_gemv(state, {w.data(), DType::bf16, n}, m, k);
}
BENCHMARK(BM_Bf16Gemv)
    ->Args({1, 5632, 1024})
    ->Args({1, 1024, 2816})
    ->Args({1, 32000, 1024})
    ->Args({16, 5632, 1024})
    ->Args({64, 5632, 1024});

// BM_Bf16Gemv's shapes in f8_e4m3 with [128, 128] block scales (DeepSeek's and Qwen's), as
// CpuMatmul holds them (one byte a weight: FP8 rows on an AVX512-BF16 CPU, FP8 panels where bf16
// goes to the panels). The time per iteration compares with BM_Bf16Gemv's directly.
void BM_Fp8Gemv(benchmark::State& state) {
  const std::int64_t m = state.range(0), n = state.range(1), k = state.range(2), block = 128;
  std::vector<std::uint8_t> codes(static_cast<std::size_t>(n * k));
  std::mt19937 rng(5);
  for (auto& c : codes) c = static_cast<std::uint8_t>(rng() % 0x7e);
  std::vector<float> scales(
      static_cast<std::size_t>(((n + block - 1) / block) * ((k + block - 1) / block)), 0.01f);
  time_gemv(state, {codes.data(), DType::f8_e4m3, n, {scales.data(), DType::f32, block, block}}, m,
            k);
}
BENCHMARK(BM_Fp8Gemv)
    ->Args({1, 5632, 1024})
    ->Args({1, 1024, 2816})
    ->Args({1, 32000, 1024})
    ->Args({4, 5632, 1024})
    ->Args({5, 5632, 1024})
    ->Args({16, 5632, 1024})
    ->Args({64, 5632, 1024});

// MLA's absorbed up-projections at DeepSeek's shapes: `heads` bf16 matrices [rows, cols], each
// applied to m rows (1: a decode step), one multiply per head (arg 0) or as one batched weight
// (arg 1), as the engine does. Bytes/s of weights; copies keep them out of the last-level cache.
void BM_MlaAbsorb(benchmark::State& state) {
  const bool batched = state.range(0) != 0;
  const std::int64_t heads = state.range(1), rows = state.range(2), cols = state.range(3);
  const std::int64_t m = state.range(4);
  std::vector<std::uint16_t> w(static_cast<std::size_t>(heads * rows * cols), 0x3c00);
  std::vector<WeightPart> matrices;
  for (std::int64_t h = 0; h < heads; ++h)
    matrices.push_back({w.data() + h * rows * cols, DType::bf16, rows});
  CpuMatmul matmul;
  std::vector<std::vector<PackedWeight>> copies(kWeightCopies);
  for (auto& copy : copies) {
    if (batched) {
      copy.push_back(matmul.pack_batched(matrices, cols));
    } else {
      for (const auto& matrix : matrices) copy.push_back(matmul.pack(std::span(&matrix, 1), cols));
    }
  }
  std::vector<float> x(static_cast<std::size_t>(heads * m * cols), 0.01f);
  std::vector<float> y(static_cast<std::size_t>(heads * m * rows));
  int i = 0;
  for (auto _ : state) {
    const auto& copy = copies[static_cast<std::size_t>(i++ % kWeightCopies)];
    for (std::size_t h = 0; h < copy.size(); ++h)
      matmul.multiply(x.data() + h * m * cols, m, copy[h], y.data() + h * m * rows);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(state.iterations() * heads * rows * cols * 2);
  state.SetLabel(batched ? "batched" : "per head");
}
BENCHMARK(BM_MlaAbsorb)
    ->ArgsProduct({{0, 1}, {16}, {512}, {128}, {1, 256}})
    ->ArgsProduct({{0, 1}, {16}, {128}, {512}, {1, 256}})
    ->ArgsProduct({{0, 1}, {128}, {512}, {128}, {1}});

// Packing those matrices, as a ring section does for every dense layer it loads: one pack per
// head into oneDNN's layout (arg 0), one batched pack into panels (arg 1), or the same from the
// matrices' transposes (arg 2: how kv_b holds the key part). Bytes/s of source.
void BM_PackMlaAbsorb(benchmark::State& state) {
  const std::int64_t how = state.range(0);
  const std::int64_t heads = state.range(1), rows = state.range(2), cols = state.range(3);
  std::vector<std::uint16_t> w(static_cast<std::size_t>(heads * rows * cols), 0x3c00);
  std::vector<WeightPart> matrices;
  for (std::int64_t h = 0; h < heads; ++h)
    matrices.push_back({w.data() + h * rows * cols, DType::bf16, rows});
  CpuMatmul matmul;
  for (auto _ : state) {
    if (how == 0) {
      for (const auto& matrix : matrices)
        benchmark::DoNotOptimize(matmul.pack(std::span(&matrix, 1), cols));
    } else {
      benchmark::DoNotOptimize(matmul.pack_batched(
          matrices, cols, {}, how == 2 ? MatrixOrder::cols_first : MatrixOrder::rows_first));
    }
  }
  state.SetBytesProcessed(state.iterations() * heads * rows * cols * 2);
  state.SetLabel(how == 0 ? "oneDNN per head" : how == 1 ? "panels" : "panels from transposes");
}
BENCHMARK(BM_PackMlaAbsorb)
    ->Args({0, 128, 512, 128})
    ->Args({1, 128, 512, 128})
    ->Args({2, 128, 512, 128})
    ->Args({0, 128, 128, 512})
    ->Args({1, 128, 128, 512});

// An expert's down projection, f32 [1024, 2816] (arg 0) or bf16 (arg 1), in moed's panels on
// each kernel path this CPU runs (arg 1: 0 generic, 1 AVX2, 2 AVX-512), over m rows (1: a decode
// step; 64: a prefill chunk), as CpuMatmul computes plain weights where oneDNN has no brgemm.
// Bytes/s of weights read once per call.
void BM_PanelMatmul(benchmark::State& state) {
  const DType dtype = state.range(0) == 0 ? DType::f32 : DType::bf16;
  const auto path = static_cast<PanelPath>(state.range(1));
  const std::int64_t m = state.range(2), rows = 1024, cols = 2816;
  if (path > best_panel_path()) {
    state.SkipWithError("this CPU cannot take the path");
    return;
  }
  std::vector<float> w(static_cast<std::size_t>(rows * cols), 0.01f);
  std::vector<std::uint16_t> w16(w.size(), 0x3c00);
  const void* source = dtype == DType::f32 ? static_cast<const void*>(w.data()) : w16.data();
  std::vector<std::vector<std::byte>> copies(
      kWeightCopies, std::vector<std::byte>(panel_bytes(dtype, rows, cols)));
  for (auto& copy : copies) pack_panels(source, dtype, rows, cols, copy.data());
  std::vector<float> x(static_cast<std::size_t>(m * cols), 0.01f);
  std::vector<float> y(static_cast<std::size_t>(m * rows));
  int i = 0;
  for (auto _ : state) {
    panel_matmul(dtype, copies[static_cast<std::size_t>(i++ % kWeightCopies)].data(), 1, rows, cols,
                 x.data(), m, y.data(), path);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(state.iterations() *
                          static_cast<std::int64_t>(panel_bytes(dtype, rows, cols)));
  state.SetLabel(std::string(dtype_name(dtype)) + " " + panel_path_name(path));
}
BENCHMARK(BM_PanelMatmul)->ArgsProduct({{0, 1}, {0, 1, 2}, {1, 64}})->UseRealTime();

// Packing that weight into panels from its rows, as CpuMatmul::pack does for a streamed expert
// where oneDNN has no brgemm for its dtype (arg 0: 0 f32, 1 bf16), on each path this CPU runs
// (arg 1: 0 element by element, 1 AVX2 transposes, 2 AVX-512 ones). Bytes/s of source.
void BM_PackPanels(benchmark::State& state) {
  const DType dtype = state.range(0) == 0 ? DType::f32 : DType::bf16;
  const auto path = static_cast<PanelPath>(state.range(1));
  if (path > best_panel_path()) {
    state.SkipWithError("this CPU cannot take the path");
    return;
  }
  const std::int64_t rows = 1024, cols = 2816;
  const std::size_t row_bytes = static_cast<std::size_t>(cols) * dtype_size(dtype);
  std::vector<std::byte> source(static_cast<std::size_t>(rows) * row_bytes, std::byte{1});
  std::vector<const std::byte*> starts;
  for (std::int64_t r = 0; r < rows; ++r) starts.push_back(source.data() + r * row_bytes);
  std::vector<std::byte> out(panel_bytes(dtype, rows, cols));
  for (auto _ : state) {
    pack_panels_rows(starts, dtype, cols, out.data(), path);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(source.size()));
  state.SetLabel(std::string(dtype_name(dtype)) + " " + panel_path_name(path));
}
BENCHMARK(BM_PackPanels)->ArgsProduct({{0, 1}, {0, 1, 2}})->UseRealTime();

// CpuMatmul::pack of a streamed bench-model expert's gate and up ([2 x 1024, 2816], as
// Mixtral's bench model has them) from the file's bytes, on one thread as a prefetch packs
// (arg 1: the threads): arg 0 = 0 bf16 as stored, 1 f8_e4m3 with [128, 128] block scales (FP8
// rows where the CPU has AVX512-BF16, else widened to bf16). Bytes/s of the file's bytes (one per
// FP8 weight, two per bf16 one).
void BM_PackExpert(benchmark::State& state) {
  const bool fp8 = state.range(0) == 1;
  const std::int64_t rows = 1024, cols = 2816, block = 128;
  const std::size_t elements = static_cast<std::size_t>(rows * cols);
  std::vector<std::uint8_t> codes(elements);
  std::mt19937 rng(3);
  for (auto& c : codes) c = static_cast<std::uint8_t>(rng() % 0x7e);
  std::vector<float> scales(static_cast<std::size_t>((rows / block) * ((cols + block - 1) / block)),
                            0.01f);
  std::vector<std::uint16_t> bf16(elements, 0x3c00);
  const BlockScales grid{scales.data(), DType::f32, block, block};
  const WeightPart parts[] = {fp8 ? WeightPart{codes.data(), DType::f8_e4m3, rows, grid}
                                  : WeightPart{bf16.data(), DType::bf16, rows},
                              fp8 ? WeightPart{codes.data(), DType::f8_e4m3, rows, grid}
                                  : WeightPart{bf16.data(), DType::bf16, rows}};
  const int threads = omp_get_max_threads();
  omp_set_num_threads(static_cast<int>(state.range(1)));
  CpuMatmul matmul;
  for (auto _ : state) benchmark::DoNotOptimize(matmul.pack(parts, cols).bytes());
  omp_set_num_threads(threads);
  state.SetBytesProcessed(state.iterations() * 2 * static_cast<std::int64_t>(elements) *
                          (fp8 ? 1 : 2));
  state.SetLabel(std::string(fp8 ? "f8_e4m3" : "bf16") + " " +
                 matmul.packing(2 * rows, cols, fp8 ? DType::f8_e4m3 : DType::bf16));
}
BENCHMARK(BM_PackExpert)->ArgsProduct({{0, 1}, {1, 2}})->UseRealTime();

void BM_ReadBandwidth(benchmark::State& state) {
  ReadBandwidthProbe probe(1ull << 30);
  double best = 0;
  for (auto _ : state) best = std::max(best, probe.measure(1));
  state.counters["bytes_per_second"] = best;
}
BENCHMARK(BM_ReadBandwidth)->Iterations(5);

// `fill`: 0.1 as an element of the cache (f32, or bf16's bits). An argument, not a template
// parameter: clang 16 (the fuzz build's and clang-tidy's) takes no float template parameters.
template <typename Element>
void attention_bench(benchmark::State& state, Element fill) {
  const std::int64_t context = state.range(0), heads = 8, kv_heads = 4, d = 128;
  std::vector<float> q(heads * d, 0.1f), out(q.size());
  std::vector<Element> k(kv_heads * context * d, fill), v(k.size(), fill);
  for (auto _ : state)
    attention(q.data(), k.data(), v.data(), out.data(),
              {1, heads, kv_heads, d, context, context - 1});
}
void BM_Attention(benchmark::State& state) {
  attention_bench(state, 0.1f);
}
BENCHMARK(BM_Attention)->Arg(512)->Arg(4096);
// The default KV cache, bf16.
void BM_AttentionBf16(benchmark::State& state) {
  attention_bench(state, std::uint16_t{0x3dcc});
}
BENCHMARK(BM_AttentionBf16)->Arg(128)->Arg(512)->Arg(4096);

// One decode row over a long bf16 cache that comes from memory (copies fill 512 MiB and rotate),
// in the shapes of real models: bytes/s of keys and values read, against the probe's line.
// Args: context, query heads, KV heads (head width 128), threads: 32/8 is Mixtral's, 32/4
// Qwen3-MoE's. The threads decide how many heads of a group run together.
void BM_AttentionLongContext(benchmark::State& state) {
  const std::int64_t context = state.range(0), heads = state.range(1), kv_heads = state.range(2);
  const int threads = static_cast<int>(state.range(3));
  constexpr std::int64_t d = 128;
  const std::size_t cache = static_cast<std::size_t>(kv_heads * context * d);
  const std::size_t copies = std::max<std::size_t>(2, (512ull << 20) / (4 * cache));
  std::vector<std::uint16_t> k(cache * copies), v(k.size());
  std::mt19937 rng(3);
  // bf16 values of magnitude [0.5, 1), either sign: the sign, exponent 0x7e, random mantissa.
  for (auto& e : k) e = static_cast<std::uint16_t>((rng() & 0x807f) | 0x3f00);
  for (auto& e : v) e = static_cast<std::uint16_t>((rng() & 0x807f) | 0x3f00);
  std::vector<float> q(static_cast<std::size_t>(heads * d), 0.01f), out(q.size());
  const int saved_threads = omp_get_max_threads();
  omp_set_num_threads(threads);
  std::size_t i = 0;
  for (auto _ : state) {
    const std::size_t copy = i++ % copies;
    attention(q.data(), &k[copy * cache], &v[copy * cache], out.data(),
              {1, heads, kv_heads, d, context, context - 1});
    benchmark::DoNotOptimize(out.data());
  }
  omp_set_num_threads(saved_threads);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * cache * 2 * 2));
  state.SetLabel(std::to_string(threads) + "t");
}
BENCHMARK(BM_AttentionLongContext)
    ->ArgsProduct({{4096, 8192, 16384}, {32}, {8, 4}, {2}})
    ->UseRealTime();

// Random quants with fp16 scales in [2^-8, 2^-4) in `bytes` of `type` blocks: the values do not
// change the work done.
// Skips a benchmark on a CPU without `isa` (the scalar path runs everywhere); true when skipped.
bool skipped_without(QuantIsa isa, benchmark::State& state) {
  if (best_quant_isa() >= isa) return false;
  state.SkipWithError("this CPU lacks the ISA");
  return true;
}

// The bench model's expert matrix (its down projection's 2816 x 1024).
constexpr std::int64_t kExpertRows = 2816, kExpertCols = 1024;

void fill_random_blocks(GgmlType type, std::uint8_t* weights, std::size_t bytes) {
  const auto traits = ggml_type_traits(type);
  std::mt19937 rng(1);
  for (std::size_t i = 0; i < bytes; ++i) weights[i] = static_cast<std::uint8_t>(rng());
  const std::size_t d_offset = type == GgmlType::q6_k   ? offsetof(BlockQ6_K, d)
                               : type == GgmlType::q3_k ? offsetof(BlockQ3_K, d)
                               : type == GgmlType::q2_k ? offsetof(BlockQ2_K, d)
                                                        : 0;
  for (std::size_t b = 0; b < bytes / traits.type_size; ++b) {
    const std::uint16_t half = static_cast<std::uint16_t>(0x1C00 + rng() % 0x1000);
    std::memcpy(&weights[b * traits.type_size + d_offset], &half, 2);
    if (type == GgmlType::q4_1 || type == GgmlType::q5_1 || type == GgmlType::q4_k ||
        type == GgmlType::q5_k || type == GgmlType::q2_k)
      std::memcpy(&weights[b * traits.type_size + d_offset + 2], &half, 2);
  }
}

// A 4096 x 4096 mat-vec on ggml-quantized weights (activations quantized per call): bytes/s of
// weight bytes, against the probe's bandwidth line. Args: ggml type id, ISA (0 scalar, 1 AVX2,
// 2 AVX-512 VNNI), threads. Copies fill 512 MiB so the weights come from memory.
void BM_QuantMatvec(benchmark::State& state) {
  const auto type = static_cast<GgmlType>(state.range(0));
  const auto isa = static_cast<QuantIsa>(state.range(1));
  const int threads = static_cast<int>(state.range(2));
  if (skipped_without(isa, state)) return;
  constexpr std::int64_t rows = 4096, cols = 4096;
  const auto traits = ggml_type_traits(type);
  const std::size_t bytes = ggml_row_bytes(type, cols) * rows;
  const std::size_t copies = std::max<std::size_t>(2, (512ull << 20) / bytes);
  std::vector<std::uint8_t> weights(bytes * copies);
  fill_random_blocks(type, weights.data(), bytes);
  // As the engine keeps them: repacked into row tiles, on transparent huge pages.
  const std::size_t stride = row_tile_bytes(type, rows, cols);
  moed::memtier::AlignedBuffer buffer(stride * copies);
  std::byte* packed = buffer.data();
  std::vector<const std::byte*> starts;
  for (std::int64_t r = 0; r < rows; ++r)
    starts.push_back(reinterpret_cast<const std::byte*>(weights.data()) +
                     r * ggml_row_bytes(type, cols));
  pack_row_tiles(type, starts, cols, packed);
  weights.clear();
  weights.shrink_to_fit();
  for (std::size_t c = 1; c < copies; ++c) std::memcpy(&packed[c * stride], packed, stride);
  std::vector<float> x(cols, 0.01f), y(rows);
  QuantizedActivations activations;
  const int saved_threads = omp_get_max_threads();
  omp_set_num_threads(threads);
  std::size_t i = 0;
  for (auto _ : state) {
    const std::size_t copy = i++ % copies;
    quantize_activations(x.data(), cols, activations, isa);
    row_tile_matmul(type, &packed[copy * stride], rows, cols, &activations, 1, y.data(), rows, isa);
    benchmark::DoNotOptimize(y.data());
  }
  omp_set_num_threads(saved_threads);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * stride));
  state.SetLabel(std::string(traits.name) + " tiles " + std::string(quant_isa_name(isa)) + " " +
                 std::to_string(threads) + "t");
}
void quant_matvec_args(benchmark::internal::Benchmark* bench) {
  for (const GgmlType type :
       {GgmlType::q8_0, GgmlType::q4_0, GgmlType::q4_1, GgmlType::q5_0, GgmlType::q5_1,
        GgmlType::q2_k, GgmlType::q4_k, GgmlType::q5_k, GgmlType::q6_k, GgmlType::iq4_xs,
        GgmlType::iq2_xxs, GgmlType::iq2_xs, GgmlType::iq2_s}) {
    const auto id = static_cast<std::int64_t>(type);
    for (std::int64_t isa = 0; isa < 3; ++isa) bench->Args({id, isa, 1});
    bench->Args({id, 2, 2});
  }
}
BENCHMARK(BM_QuantMatvec)->Apply(quant_matvec_args)->UseRealTime();

// A 4096 x 4096 mat-vec from weights as stored in the file, as a block streamed from disk is
// used, on one thread (512 MiB of copies, so they come from memory): computed from the stored
// rows, or (as the disk tier does otherwise) repacked into row tiles and then multiplied.
// Bytes/s of stored bytes. Args: ggml type id (any with row tiles), 0 stored rows, 1
// repack + tiles; activation rows; ISA (1 AVX2, 2 AVX-512 VNNI; with AVX2, repacking goes row by
// row, as on a CPU without AVX-512).
void BM_StreamedMatvec(benchmark::State& state) {
  const auto type = static_cast<GgmlType>(state.range(0));
  const bool repack = state.range(1) == 1;
  const auto isa = static_cast<QuantIsa>(state.range(3));
  if (!computes_stored_rows(type, isa)) {
    state.SkipWithError("this CPU does not compute stored rows with this ISA");
    return;
  }
  constexpr std::int64_t rows = 4096, cols = 4096;
  const auto traits = ggml_type_traits(type);
  const std::size_t row_bytes = ggml_row_bytes(type, cols), bytes = row_bytes * rows;
  const std::size_t copies = std::max<std::size_t>(2, (512ull << 20) / bytes);
  moed::memtier::AlignedBuffer stored(bytes * copies);
  auto* weights = reinterpret_cast<std::uint8_t*>(stored.data());
  fill_random_blocks(type, weights, bytes);
  for (std::size_t c = 1; c < copies; ++c) std::memcpy(&weights[c * bytes], weights, bytes);
  moed::memtier::AlignedBuffer tiles(repack ? row_tile_bytes(type, rows, cols) : 0);
  const std::int64_t m = state.range(2);
  std::vector<float> x(cols, 0.01f), y(static_cast<std::size_t>(m * rows));
  std::vector<QuantizedActivations> activations(static_cast<std::size_t>(m));
  for (auto& row : activations) quantize_activations(x.data(), cols, row);
  const int saved_threads = omp_get_max_threads();
  omp_set_num_threads(1);
  std::vector<const std::byte*> starts(rows);
  std::size_t i = 0;
  for (auto _ : state) {
    const std::byte* copy = stored.data() + (i++ % copies) * bytes;
    if (repack) {
      for (std::int64_t r = 0; r < rows; ++r)
        starts[static_cast<std::size_t>(r)] = copy + r * static_cast<std::int64_t>(row_bytes);
      pack_row_tiles(type, starts, cols, tiles.data(), isa);
      row_tile_matmul(type, tiles.data(), rows, cols, activations.data(), m, y.data(), rows, isa);
    } else {
      stored_rows_matmul(type, copy, rows, cols, activations.data(), m, y.data(), rows, isa);
    }
    benchmark::DoNotOptimize(y.data());
  }
  omp_set_num_threads(saved_threads);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * bytes));
  state.SetLabel(std::string(traits.name) + (repack ? " repack + tiles" : " stored rows") +
                 " m=" + std::to_string(m) + " " + std::string(quant_isa_name(isa)));
}
BENCHMARK(BM_StreamedMatvec)
    ->ArgsProduct(
        {{static_cast<std::int64_t>(GgmlType::q2_k), static_cast<std::int64_t>(GgmlType::iq4_xs),
          static_cast<std::int64_t>(GgmlType::q4_k), static_cast<std::int64_t>(GgmlType::q5_k),
          static_cast<std::int64_t>(GgmlType::q6_k), static_cast<std::int64_t>(GgmlType::q8_0),
          static_cast<std::int64_t>(GgmlType::q4_0), static_cast<std::int64_t>(GgmlType::q4_1),
          static_cast<std::int64_t>(GgmlType::q5_0), static_cast<std::int64_t>(GgmlType::q5_1),
          static_cast<std::int64_t>(GgmlType::iq2_xxs), static_cast<std::int64_t>(GgmlType::iq2_xs),
          static_cast<std::int64_t>(GgmlType::iq2_s)},
         {0, 1},
         {1, 2, 4, 16},
         {1, 2}})
    ->UseRealTime();

// Repacking an expert matrix (2816 x 1024) into row tiles on one thread, as the disk tier does
// for every block it reads: bytes/s of stored bytes. Args: ggml type id, ISA (1 AVX2: row by row,
// as a CPU without AVX-512 VBMI packs; 2 AVX-512 VNNI: through registers where the CPU has VBMI).
void BM_PackRowTiles(benchmark::State& state) {
  const auto type = static_cast<GgmlType>(state.range(0));
  const auto isa = static_cast<QuantIsa>(state.range(1));
  if (skipped_without(isa, state)) return;
  constexpr std::int64_t rows = kExpertRows, cols = kExpertCols;
  const std::size_t row_bytes = ggml_row_bytes(type, cols);
  std::vector<std::uint8_t> stored(row_bytes * rows);
  std::mt19937 rng(2);
  for (auto& byte : stored) byte = static_cast<std::uint8_t>(rng());
  std::vector<const std::byte*> starts;
  for (std::int64_t r = 0; r < rows; ++r)
    starts.push_back(reinterpret_cast<const std::byte*>(stored.data()) + r * row_bytes);
  std::vector<std::byte> tiles(row_tile_bytes(type, rows, cols));
  const int saved_threads = omp_get_max_threads();
  omp_set_num_threads(1);
  for (auto _ : state) {
    pack_row_tiles(type, starts, cols, tiles.data(), isa);
    benchmark::DoNotOptimize(tiles.data());
  }
  omp_set_num_threads(saved_threads);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * stored.size()));
  state.SetLabel(std::string(ggml_type_name(type)) +
                 (packs_tiles_in_registers(type, isa) ? " in registers" : " row by row"));
}
void pack_row_tiles_args(benchmark::internal::Benchmark* bench) {
  for (const GgmlType type :
       {GgmlType::q8_0, GgmlType::q4_0, GgmlType::q4_1, GgmlType::q5_0, GgmlType::q5_1,
        GgmlType::q2_k, GgmlType::q3_k, GgmlType::q4_k, GgmlType::q5_k, GgmlType::q6_k,
        GgmlType::iq4_xs, GgmlType::iq3_s, GgmlType::iq3_xxs, GgmlType::iq1_s, GgmlType::iq1_m,
        GgmlType::iq2_xxs, GgmlType::iq2_xs, GgmlType::iq2_s})
    for (std::int64_t isa = 0; isa < 3; ++isa) bench->Args({static_cast<std::int64_t>(type), isa});
}
BENCHMARK(BM_PackRowTiles)->Apply(pack_row_tiles_args);

// Rewriting an expert matrix (2816 x 1024) of a format without kernels of its own into its
// row-tile format's blocks on one thread, as a streamed expert is before it is computed as stored
// rows (CpuMatmul::rewritten_rows): bytes/s of stored bytes. Args: ggml type id, ISA (0 scalar,
// 1 AVX2).
void BM_RewriteBlocks(benchmark::State& state) {
  const auto type = static_cast<GgmlType>(state.range(0));
  const auto isa = static_cast<QuantIsa>(state.range(1));
  if (skipped_without(isa, state)) return;
  constexpr std::int64_t rows = kExpertRows, cols = kExpertCols;
  const auto traits = ggml_type_traits(type);
  const std::int64_t blocks = rows * cols / static_cast<std::int64_t>(traits.block_size);
  std::vector<std::uint8_t> stored(static_cast<std::size_t>(blocks) * traits.type_size);
  fill_random_blocks(type, stored.data(), stored.size());
  std::vector<std::byte> rewritten(ggml_row_bytes(row_tile_format(type), cols) * rows);
  for (auto _ : state) {
    rewrite_blocks(type, reinterpret_cast<const std::byte*>(stored.data()), rewritten.data(),
                   blocks, isa);
    benchmark::DoNotOptimize(rewritten.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * stored.size()));
  state.SetLabel(std::string(traits.name) + " as " +
                 std::string(ggml_type_name(row_tile_format(type))) + " " +
                 std::string(quant_isa_name(isa)));
}
BENCHMARK(BM_RewriteBlocks)
    ->ArgsProduct(
        {{static_cast<std::int64_t>(GgmlType::q3_k), static_cast<std::int64_t>(GgmlType::iq3_s),
          static_cast<std::int64_t>(GgmlType::iq3_xxs), static_cast<std::int64_t>(GgmlType::iq1_s),
          static_cast<std::int64_t>(GgmlType::iq1_m), static_cast<std::int64_t>(GgmlType::iq4_nl)},
         {0, 1}});

}  // namespace

// Opening a region on two threads, crossing one barrier in it and closing it: the Team against
// libgomp (with the daemon's OMP_WAIT_POLICY=active and GOMP_SPINCOUNT=10000 set by the caller).
// Arg: 0 Team, 1 OpenMP.
void BM_RegionAndBarrier(benchmark::State& state) {
  const bool openmp = state.range(0) == 1;
  const int saved_threads = omp_get_max_threads();
  omp_set_num_threads(2);
  for (auto _ : state) {
    if (openmp) {
#pragma omp parallel
      {
#pragma omp barrier
      }
    } else {
      moed::kernels::detail::run_team(
          1, [](const moed::kernels::detail::Team::Member& member) { member.barrier(); });
    }
  }
  omp_set_num_threads(saved_threads);
  state.SetLabel(openmp ? "libgomp, 2 threads" : "Team, 2 threads");
}
BENCHMARK(BM_RegionAndBarrier)->Arg(0)->Arg(1)->UseRealTime();

namespace {

class UnitPayload final : public moed::memtier::BlockPayload {
 public:
  std::uint64_t bytes() const override { return 1; }
};

}  // namespace

// The host tier's work per expert request at DeepSeek-V3's shape (58 MoE layers of 256 experts,
// 8 a token: 464 requests a token) with 4000 experts cached: a lookup, and on a miss the
// admission a demand load makes. Routing favours low expert ids (the smaller of two uniform
// draws), so the policy both hits and evicts. Arg: index into policy_names().
void BM_HostTierRequest(benchmark::State& state) {
  using moed::memtier::BlockId;
  const std::string policy =
      moed::memtier::policy_names().at(static_cast<std::size_t>(state.range(0)));
  constexpr int kLayers = 58, kExperts = 256, kPerToken = 8, kTokens = 512;
  std::mt19937 random(7);
  std::vector<BlockId> requests;
  for (int token = 0; token < kTokens; ++token)
    for (int layer = 0; layer < kLayers; ++layer) {
      std::vector<int> chosen;
      while (chosen.size() < kPerToken) {
        const int expert = static_cast<int>(std::min(random() % kExperts, random() % kExperts));
        if (std::find(chosen.begin(), chosen.end(), expert) == chosen.end())
          chosen.push_back(expert);
      }
      for (const int expert : chosen) requests.push_back(BlockId::routed(layer, expert));
    }
  moed::memtier::HostTier tier(4000, moed::memtier::make_policy(policy));
  std::size_t next = 0;
  for (auto _ : state) {
    const BlockId block = requests[next];
    next = next + 1 == requests.size() ? 0 : next + 1;
    // A payload of its own, as a load makes: the tier evicts only blocks no one else holds.
    if (!tier.lookup(block))
      tier.admit(block, std::make_shared<UnitPayload>(),
                 moed::memtier::HostTier::Admission::filtered);
  }
  const auto counters = tier.counters();
  state.SetItemsProcessed(state.iterations());
  state.SetLabel(policy + ", " +
                 std::to_string(100 * counters.hits /
                                std::max<std::uint64_t>(1, counters.hits + counters.misses)) +
                 "% hits");
}
BENCHMARK(BM_HostTierRequest)
    ->DenseRange(0, static_cast<int>(moed::memtier::policy_names().size()) - 1);

BENCHMARK_MAIN();
