#include "moed/kernels/bandwidth.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

namespace moed::kernels {

double measure_read_bandwidth(std::size_t bytes, int repeats) {
  // Integer sums vectorise without -ffast-math on any x86-64, so no ISA flag is needed.
  std::vector<std::uint64_t> buffer(bytes / sizeof(std::uint64_t));
  std::uint64_t* data = buffer.data();
  const auto count = static_cast<std::int64_t>(buffer.size());
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < count; ++i) data[i] = static_cast<std::uint64_t>(i & 7);

  double best = 0.0;
  volatile std::uint64_t sink = 0;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    std::uint64_t total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total)
    for (std::int64_t i = 0; i < count; ++i) total += data[i];
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    sink = sink + total;
    best = std::max(best, static_cast<double>(count) * sizeof(std::uint64_t) / seconds);
  }
  return best;
}

}  // namespace moed::kernels
