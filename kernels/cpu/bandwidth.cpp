#include "moed/kernels/bandwidth.hpp"

#include <immintrin.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>

namespace moed::kernels {
namespace {

// A plain integer loop tops out at ~60% of what wide loads reach here, which would flatter every
// ratio against this bound; so the widest vector loads the CPU has are used, chosen at run time.
__attribute__((target("avx512f"))) float sum_avx512(const float* data, std::int64_t count) {
  float total = 0.0f;
#pragma omp parallel reduction(+ : total)
  {
    __m512 a = _mm512_set1_ps(0.0f), b = a, c = a, d = a;
#pragma omp for schedule(static)
    for (std::int64_t i = 0; i < count; i += 64) {
      a = _mm512_add_ps(a, _mm512_load_ps(data + i));
      b = _mm512_add_ps(b, _mm512_load_ps(data + i + 16));
      c = _mm512_add_ps(c, _mm512_load_ps(data + i + 32));
      d = _mm512_add_ps(d, _mm512_load_ps(data + i + 48));
    }
    alignas(64) float lanes[16];
    _mm512_store_ps(lanes, _mm512_add_ps(_mm512_add_ps(a, b), _mm512_add_ps(c, d)));
    for (float lane : lanes) total += lane;
  }
  return total;
}

__attribute__((target("avx2"))) float sum_avx2(const float* data, std::int64_t count) {
  float total = 0.0f;
#pragma omp parallel reduction(+ : total)
  {
    __m256 a = _mm256_setzero_ps(), b = a, c = a, d = a;
#pragma omp for schedule(static)
    for (std::int64_t i = 0; i < count; i += 64) {
      for (int j = 0; j < 64; j += 32) {
        a = _mm256_add_ps(a, _mm256_load_ps(data + i + j));
        b = _mm256_add_ps(b, _mm256_load_ps(data + i + j + 8));
        c = _mm256_add_ps(c, _mm256_load_ps(data + i + j + 16));
        d = _mm256_add_ps(d, _mm256_load_ps(data + i + j + 24));
      }
    }
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, _mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d)));
    for (float lane : lanes) total += lane;
  }
  return total;
}

float sum_sse(const float* data, std::int64_t count) {
  float total = 0.0f;
#pragma omp parallel reduction(+ : total)
  {
    __m128 a = _mm_setzero_ps(), b = a, c = a, d = a;
#pragma omp for schedule(static)
    for (std::int64_t i = 0; i < count; i += 16) {
      a = _mm_add_ps(a, _mm_load_ps(data + i));
      b = _mm_add_ps(b, _mm_load_ps(data + i + 4));
      c = _mm_add_ps(c, _mm_load_ps(data + i + 8));
      d = _mm_add_ps(d, _mm_load_ps(data + i + 12));
    }
    alignas(16) float lanes[4];
    _mm_store_ps(lanes, _mm_add_ps(_mm_add_ps(a, b), _mm_add_ps(c, d)));
    for (float lane : lanes) total += lane;
  }
  return total;
}

void free_aligned(float* p) {
  std::free(p);
}

}  // namespace

ReadBandwidthProbe::ReadBandwidthProbe(std::size_t bytes)
    : buffer_(nullptr, free_aligned),
      count_(static_cast<std::int64_t>(bytes / sizeof(float) / 64 * 64)) {
  // On transparent huge pages, as moed keeps its weights: alternated with passes over 4 KiB
  // pages on the development VM, these read as much or more (up to a quarter more in some
  // minutes: 80 against 60 GB/s), so a 4 KiB probe partly measured the TLB and flattered every
  // ratio against this bound. Advised before the first touch, so that the faults allocate huge
  // pages.
  constexpr std::size_t kHugePage = std::size_t{2} << 20;
  const std::size_t size =
      (static_cast<std::size_t>(count_) * sizeof(float) + kHugePage - 1) / kHugePage * kHugePage;
  buffer_.reset(static_cast<float*>(std::aligned_alloc(kHugePage, size)));
  if (!buffer_) throw std::bad_alloc();
  madvise(buffer_.get(), size, MADV_HUGEPAGE);  // without THP the pages stay 4 KiB
  float* data = buffer_.get();
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < count_; ++i) data[i] = 1.0f;
}

double ReadBandwidthProbe::measure(int repeats) {
  auto* sum = __builtin_cpu_supports("avx512f") ? sum_avx512
              : __builtin_cpu_supports("avx2")  ? sum_avx2
                                                : sum_sse;
  // The buffer holds ones, so a pass that read every element sums to the count; the check also
  // keeps the compiler from dropping the loads. Ones keep each vector lane's float sum exact
  // (below 2^24) for buffers up to 4 GiB even on one thread; 0..7 repeating overflowed float's
  // exact integers on one thread with 1 GiB and failed the check.
  const double expected = static_cast<double>(count_);
  double best = 0.0;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    const float total = sum(buffer_.get(), count_);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (std::abs(static_cast<double>(total) - expected) > 1e-5 * expected)
      throw std::logic_error("bandwidth probe: a pass summed " + std::to_string(total) +
                             " instead of " + std::to_string(expected) + ": it skipped data");
    best = std::max(best, static_cast<double>(count_) * sizeof(float) / seconds);
  }
  return best;
}

}  // namespace moed::kernels
