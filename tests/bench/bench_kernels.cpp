// Micro-benchmarks of the CPU kernels. Run: ctest -L perf, or build/tests/bench_kernels.
// Each GEMV reports bytes/s of weights streamed; compare with the probe's bandwidth line.
#include <benchmark/benchmark.h>

#include <vector>

#include "moed/kernels/bandwidth.hpp"
#include "moed/kernels/cpu_matmul.hpp"
#include "moed/kernels/cpu_ops.hpp"

using namespace moed::kernels;

namespace {

// Enough distinct copies that the weights cannot stay in the last-level cache.
constexpr int kWeightCopies = 16;

void BM_Bf16Gemv(benchmark::State& state) {
  const std::int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  std::vector<std::uint16_t> w(static_cast<std::size_t>(n * k), 0x3c00);
  CpuMatmul matmul;
  WeightPart part{w.data(), DType::bf16, n};
  std::vector<PackedWeight> copies;
  for (int i = 0; i < kWeightCopies; ++i) copies.push_back(matmul.pack(std::span(&part, 1), k));
  std::vector<float> x(static_cast<std::size_t>(m * k), 0.01f), y(static_cast<std::size_t>(m * n));
  int i = 0;
  for (auto _ : state) {
    matmul.multiply(x.data(), m, copies[i++ % kWeightCopies], y.data());
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(state.iterations() * n * k * 2);
}
BENCHMARK(BM_Bf16Gemv)
    ->Args({1, 5632, 1024})
    ->Args({1, 1024, 2816})
    ->Args({1, 32000, 1024})
    ->Args({16, 5632, 1024});

void BM_ReadBandwidth(benchmark::State& state) {
  ReadBandwidthProbe probe(1ull << 30);
  double best = 0;
  for (auto _ : state) best = std::max(best, probe.measure(1));
  state.counters["bytes_per_second"] = best;
}
BENCHMARK(BM_ReadBandwidth)->Iterations(5);

void BM_Attention(benchmark::State& state) {
  const std::int64_t context = state.range(0), heads = 8, kv_heads = 4, d = 128;
  std::vector<float> q(heads * d, 0.1f), k(kv_heads * context * d, 0.1f), v(k.size(), 0.1f),
      out(q.size());
  for (auto _ : state)
    attention(q.data(), k.data(), v.data(), out.data(),
              {1, heads, kv_heads, d, context, context - 1});
}
BENCHMARK(BM_Attention)->Arg(512)->Arg(4096);

}  // namespace

BENCHMARK_MAIN();
