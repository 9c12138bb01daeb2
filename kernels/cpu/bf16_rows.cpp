#include "bf16_rows.hpp"

#include <map>
#include <mutex>

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
  const std::int64_t blocks = n / n_block;
  const auto* packed = static_cast<const std::uint16_t*>(weights);
#pragma omp parallel for schedule(static)
  for (std::int64_t b = 0; b < blocks; ++b)
    bf16_rows_block_avx512(k, n, n_block, packed, b, x, m, y);
}

}  // namespace moed::kernels::detail
