#pragma once

#include <cstdint>
#include <oneapi/dnnl/dnnl.hpp>
#include <optional>
#include <span>

namespace moed::kernels::detail {

// Packs row-major weights into the blocked layout oneDNN's AVX-512 brgemm matmul chooses for
// them, byte for byte what dnnl::reorder writes. oneDNN 2.6 reorders into these layouts at about
// a third of memory speed (3 GB/s per core on the bench model's experts), which made packing the
// slowest stage of streaming an expert from disk; a 16x16 register transpose per tile runs near
// memcpy speed.
//
// The layouts it knows: a {K, N} weight ("ba" when plain) in N blocks of `n_block` (a multiple
// of 16), each holding K blocks of 16 units by n_block, where a unit is the 4 bytes that lie
// together: a pair of bf16 along K (oneDNN's BA16a64b2a) or one f32 (BA16a64b). No padding.
struct BlockedLayout {
  std::int64_t k_units;  // 4-byte units per row of the plain weight: K * element size / 4
  std::int64_t rows;     // N
  std::int64_t n_block;  // rows per N block
};

// The layout `desc` (a packed matmul weight) has, if this CPU and this packer handle it.
std::optional<BlockedLayout> blocked_layout(const dnnl::memory::desc& desc);

// row_starts[n] points at row n of the plain weight (any alignment); `destination` is 64-byte
// aligned and holds desc.get_size() bytes.
void pack_blocked(const BlockedLayout& layout, std::span<const std::byte* const> row_starts,
                  void* destination);

}  // namespace moed::kernels::detail
