#include "blocked_pack.hpp"

#include <immintrin.h>

#include "transpose_avx512.hpp"

namespace moed::kernels::detail {
namespace {

constexpr std::int64_t kUnitBytes = 4;
constexpr std::int64_t kTileUnits = 16;  // one 512-bit register holds 16 units

// Walks 16 plain rows at a time along K so that reads stay 16 sequential streams; the packed
// weight is written with streaming stores, since it is read later by a matmul, not now, and
// write-allocating it would read every destination line first.
__attribute__((target("avx512f"))) void pack_avx512(const BlockedLayout& layout,
                                                    std::span<const std::byte* const> row_starts,
                                                    std::uint32_t* destination) {
  const std::int64_t k_blocks = layout.k_units / kTileUnits;
  const std::int64_t block_units = kTileUnits * layout.n_block;
  for (std::int64_t n_block = 0; n_block < layout.rows / layout.n_block; ++n_block) {
    for (std::int64_t group = 0; group < layout.n_block / kTileUnits; ++group) {
      const std::int64_t first_row = n_block * layout.n_block + group * kTileUnits;
      std::uint32_t* column = destination + n_block * k_blocks * block_units + group * kTileUnits;
      for (std::int64_t k_block = 0; k_block < k_blocks; ++k_block) {
        __m512i tile[kTileUnits];
        for (std::int64_t r = 0; r < kTileUnits; ++r)
          tile[r] = _mm512_loadu_si512(row_starts[static_cast<std::size_t>(first_row + r)] +
                                       k_block * kTileUnits * kUnitBytes);
        transpose_16x16(tile);
        std::uint32_t* out = column + k_block * block_units;
        for (std::int64_t k = 0; k < kTileUnits; ++k)
          _mm512_stream_si512(reinterpret_cast<__m512i*>(out + k * layout.n_block), tile[k]);
      }
    }
  }
  _mm_sfence();  // streaming stores are weakly ordered: publish them before the weight is handed on
}

}  // namespace

std::optional<BlockedLayout> blocked_layout(const dnnl::memory::desc& desc) {
  if (!__builtin_cpu_supports("avx512f")) return std::nullopt;
  const dnnl_memory_desc_t& d = desc.data;
  if (d.ndims != 2 || d.format_kind != dnnl_blocked || d.offset0 != 0 || d.extra.flags != 0)
    return std::nullopt;
  std::int64_t element_bytes = 0;
  if (d.data_type == dnnl_bf16) element_bytes = 2;
  if (d.data_type == dnnl_f32) element_bytes = 4;
  if (element_bytes == 0) return std::nullopt;
  const std::int64_t pair = kUnitBytes / element_bytes;  // K elements per unit
  const std::int64_t k = d.dims[0];
  const std::int64_t n = d.dims[1];
  if (d.padded_dims[0] != k || d.padded_dims[1] != n) return std::nullopt;

  const auto& blocking = d.format_desc.blocking;
  const int expected_blocks = pair == 2 ? 3 : 2;
  if (blocking.inner_nblks != expected_blocks) return std::nullopt;
  if (blocking.inner_idxs[0] != 0 || blocking.inner_blks[0] != kTileUnits) return std::nullopt;
  if (blocking.inner_idxs[1] != 1) return std::nullopt;
  const std::int64_t n_block = blocking.inner_blks[1];
  if (n_block % kTileUnits != 0) return std::nullopt;
  if (pair == 2 && (blocking.inner_idxs[2] != 0 || blocking.inner_blks[2] != 2))
    return std::nullopt;

  const std::int64_t k_block = kTileUnits * pair;
  if (k % k_block != 0 || n % n_block != 0) return std::nullopt;
  const std::int64_t block_elements = k_block * n_block;
  if (blocking.strides[0] != block_elements ||
      blocking.strides[1] != (k / k_block) * block_elements)
    return std::nullopt;
  return BlockedLayout{k / pair, n, n_block};
}

void pack_blocked(const BlockedLayout& layout, std::span<const std::byte* const> row_starts,
                  void* destination) {
  pack_avx512(layout, row_starts, static_cast<std::uint32_t*>(destination));
}

}  // namespace moed::kernels::detail
