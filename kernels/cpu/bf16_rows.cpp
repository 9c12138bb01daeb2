#include "bf16_rows.hpp"

#include <map>
#include <mutex>

#include "stolen_ranges.hpp"

namespace moed::kernels::detail {
namespace {

std::mutex verdicts_mutex;
std::map<Bf16RowsShape, bool> verdicts;

}  // namespace

std::int64_t onednn_bf16_k_block(std::int64_t k) {
  return k <= 1024 ? 512 : 1024;
}

bool cpu_has_bf16_dot() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
  return has;
}

Bf16RowsVerdict bf16_rows_verdict(const Bf16RowsShape& shape) {
  std::lock_guard lock(verdicts_mutex);
  const auto it = verdicts.find(shape);
  if (it == verdicts.end()) return Bf16RowsVerdict::unchecked;
  return it->second ? Bf16RowsVerdict::equal : Bf16RowsVerdict::differ;
}

void record_bf16_rows_verdict(const Bf16RowsShape& shape, bool equal) {
  std::lock_guard lock(verdicts_mutex);
  verdicts[shape] = equal;
}

void bf16_rows(std::int64_t k, std::int64_t n, std::int64_t n_block, const void* weights,
               const std::uint16_t* x, std::int64_t m, float* y) {
  const auto blocks = static_cast<std::uint32_t>(n / n_block);
  const auto* packed = static_cast<const std::uint16_t*>(weights);
  // Contiguous runs per thread, their ends taken by whichever thread finishes first.
  over_stolen_ranges(blocks, m, 1, 1, [&](std::uint32_t first, std::uint32_t last) {
    for (std::uint32_t b = first; b < last; ++b)
      bf16_rows_block_avx512(k, n, n_block, packed, b, x, m, y);
  });
}

}  // namespace moed::kernels::detail
