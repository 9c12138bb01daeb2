#pragma once

// What the row-tile SIMD translation units (quant_tiles_avx2.cpp, quant_tiles_avx512.cpp,
// quant_tiles_pack_avx2.cpp, quant_tiles_pack_avx512.cpp, stored_rows_avx2.cpp,
// stored_rows_avx512.cpp) share with quant_tiles.cpp: the byte offsets of quant_tiles.hpp's
// layouts and the per-ISA entries.

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "moed/kernels/quant.hpp"
#include "moed/kernels/quant_dot.hpp"
#include "moed/kernels/quant_tiles.hpp"

namespace moed::kernels::qtile {

// q8_0, per 32-element block: fp16 d[16], then 8 lines of 64 biased quants.
inline constexpr std::int64_t kQ8_0TileQuants = 2 * kTileRows;
inline constexpr std::int64_t kQ8_0TileBlockBytes = kQ8_0TileQuants + 8 * 64;
// q4_K, per 256-element block: fp16 d[16], dmin[16], u8 scale[8][16], min[8][16], 32 lines.
inline constexpr std::int64_t kQ4_KTileDmin = 2 * kTileRows;
inline constexpr std::int64_t kQ4_KTileScales = 4 * kTileRows;
inline constexpr std::int64_t kQ4_KTileMins = kQ4_KTileScales + 8 * kTileRows;
inline constexpr std::int64_t kQ4_KTileQuants = kQ4_KTileMins + 8 * kTileRows;
inline constexpr std::int64_t kQ4_KTileBlockBytes = kQ4_KTileQuants + 32 * 64;
// q5_K: q4_K's block followed by 8 lines of fifth bits, one per sub-block.
inline constexpr std::int64_t kQ5_KTileHigh = kQ4_KTileBlockBytes;
inline constexpr std::int64_t kQ5_KTileBlockBytes = kQ5_KTileHigh + 8 * 64;
// q6_K, per 256-element block: fp16 d[16], i8 scale[16][16], 32 low lines, 16 high lines.
inline constexpr std::int64_t kQ6_KTileScales = 2 * kTileRows;
inline constexpr std::int64_t kQ6_KTileLow = kQ6_KTileScales + 16 * kTileRows;
inline constexpr std::int64_t kQ6_KTileHigh = kQ6_KTileLow + 32 * 64;
inline constexpr std::int64_t kQ6_KTileBlockBytes = kQ6_KTileHigh + 16 * 64;

// q2_K, per 256-element block: fp16 d[16], dmin[16], u8 scale-and-min[16][16] (the stored byte:
// scale in the low nibble, min in the high), 16 lines of 2-bit quants.
inline constexpr std::int64_t kQ2_KTileDmin = 2 * kTileRows;
inline constexpr std::int64_t kQ2_KTileScales = 4 * kTileRows;
inline constexpr std::int64_t kQ2_KTileQuants = kQ2_KTileScales + 16 * kTileRows;
inline constexpr std::int64_t kQ2_KTileBlockBytes = kQ2_KTileQuants + 16 * 64;

// IQ4_NL's codebook plus 128: its values as q8_0's tiles store their quants, biased, for the
// iq4_xs kernels that look them up in registers and take them as q8_0's.
inline constexpr std::array<std::uint8_t, 16> kIq4NlBiased = [] {
  std::array<std::uint8_t, 16> biased{};
  for (int i = 0; i < 16; ++i) biased[i] = static_cast<std::uint8_t>(kIq4NlValues[i] + 128);
  return biased;
}();

// iq4_xs, per 256-element block: fp16 d[16], i8 scale[8][16] (minus its 32), 32 lines of nibbles.
inline constexpr std::int64_t kIQ4_XSTileScales = 2 * kTileRows;
inline constexpr std::int64_t kIQ4_XSTileQuants = kIQ4_XSTileScales + 8 * kTileRows;
inline constexpr std::int64_t kIQ4_XSTileBlockBytes = kIQ4_XSTileQuants + 32 * 64;

// iq2_xxs, iq2_xs and iq2_s, per 256-element block: fp16 d[16], i8 scale[16][16] (2 * scale + 1,
// per 16 elements), 32 lines of nibbles as iq4_xs's, each an index into kIq2Values.
inline constexpr std::int64_t kIQ2TileScales = 2 * kTileRows;
inline constexpr std::int64_t kIQ2TileQuants = kIQ2TileScales + 16 * kTileRows;
inline constexpr std::int64_t kIQ2TileBlockBytes = kIQ2TileQuants + 32 * 64;
// An IQ2 element's signed magnitude by its tile nibble: the grid level (8, 25, 43: the
// magnitude's bits 4 and 5) in bits 0-1, the sign in bit 3.
inline constexpr std::array<std::int8_t, 16> kIq2Values = {8,  25,  43,  0, 0, 0, 0, 0,
                                                           -8, -25, -43, 0, 0, 0, 0, 0};
// kIq2Values plus 128, taken as q8_0's biased quants (as kIq4NlBiased).
inline constexpr std::array<std::uint8_t, 16> kIq2Biased = [] {
  std::array<std::uint8_t, 16> biased{};
  for (int i = 0; i < 16; ++i) biased[i] = static_cast<std::uint8_t>(kIq2Values[i] + 128);
  return biased;
}();
// An IQ2 tile's products are d * (2 * scale + 1) times the sums of the magnitudes' products, an
// eighth of the values' (quant.hpp): d is taken times this, exactly (a power of two).
inline constexpr float kIq2Step = 0.125f;

// q4_0, q4_1, q5_0 and q5_1 (ggml's legacy formats), per 32-element block: fp16 d[16], fp16
// m[16] (q4_1, q5_1), 4 lines of nibbles, and for q5_0 / q5_1 one line of fifth bits.
constexpr bool legacy_has_min(GgmlType type) {
  return type == GgmlType::q4_1 || type == GgmlType::q5_1;
}
constexpr bool legacy_has_fifth_bits(GgmlType type) {
  return type == GgmlType::q5_0 || type == GgmlType::q5_1;
}
// Where a stored legacy block keeps its fields after d (at 0): m and qh are 0 when absent.
struct LegacyFields {
  std::size_t m, qh, qs;
};
constexpr LegacyFields legacy_fields(GgmlType type) {
  switch (type) {
    case GgmlType::q4_1:
      return {offsetof(BlockQ4_1, m), 0, offsetof(BlockQ4_1, qs)};
    case GgmlType::q5_0:
      return {0, offsetof(BlockQ5_0, qh), offsetof(BlockQ5_0, qs)};
    case GgmlType::q5_1:
      return {offsetof(BlockQ5_1, m), offsetof(BlockQ5_1, qh), offsetof(BlockQ5_1, qs)};
    default:
      return {0, 0, offsetof(BlockQ4_0, qs)};
  }
}
inline constexpr std::int64_t kLegacyTileMins = 2 * kTileRows;
constexpr std::int64_t legacy_tile_quants(GgmlType type) {
  return (legacy_has_min(type) ? 4 : 2) * kTileRows;
}
constexpr std::int64_t legacy_tile_high(GgmlType type) {
  return legacy_tile_quants(type) + 4 * 64;
}
constexpr std::int64_t legacy_tile_block_bytes(GgmlType type) {
  return legacy_tile_high(type) + (legacy_has_fifth_bits(type) ? 64 : 0);
}

// Activation rows one call takes (it shares each weight line among them).
int rows_per_call_avx2();
int rows_per_call_avx512();

// One tile group of a matrix in quant_tiles.hpp's layout, and which of its tiles to compute.
struct TileGroup {
  const std::byte* start;    // the group's first byte
  std::int64_t tiles;        // tiles in the group: kGroupTiles, or fewer in a matrix's last
  std::int64_t blocks;       // blocks per tile
  std::int64_t chunk;        // blocks per chunk (the last chunk may have fewer)
  std::int64_t block_bytes;  // bytes per block of one tile
  std::int64_t begin, end;   // the tiles computed, [begin, end) of the group's
  // Whether the q8_0 kernel asks for the bytes ahead (quant_tiles_simd.inc; the other formats
  // always ask): where prefetches_q8_0_tiles(), in a group's single pass over the activations.
  bool q8_0_prefetch;
};

// Bytes from a group's start to tile k's run of the chunk that starts at block c.
inline std::int64_t run_offset(const TileGroup& group, std::int64_t c, std::int64_t k) {
  const std::int64_t run_blocks = group.chunk < group.blocks - c ? group.chunk : group.blocks - c;
  return (c * group.tiles + k * run_blocks) * group.block_bytes;
}

// Calls run(at, first, blocks, slot, resume) for the computed tiles' runs in the group's order:
// chunk by chunk, tile by tile; `slot` is k - begin, and `resume` is false on a tile's first run.
template <typename Run>
void for_each_run(const TileGroup& group, const Run& run) {
  for (std::int64_t c = 0; c < group.blocks; c += group.chunk) {
    const std::int64_t run_blocks = group.chunk < group.blocks - c ? group.chunk : group.blocks - c;
    for (std::int64_t k = group.begin; k < group.end; ++k)
      run(group.start + (c * group.tiles + k * run_blocks) * group.block_bytes, c, run_blocks,
          k - group.begin, c > 0);
  }
}

// For i < count (count <= that ISA's rows per call) and tiles k in [group.begin, group.end):
// out[64 (k - begin) + 16 i + r] = dot(row r of tile k, *x[i]) over the tile's blocks, chunk by
// chunk.
void group_dot_avx2(GgmlType type, const TileGroup& group, const QuantizedActivations* const* x,
                    int count, float* out);
void group_dot_avx512(GgmlType type, const TileGroup& group, const QuantizedActivations* const* x,
                      int count, float* out);

// Packs one block of a full tile (rows[r]: row r's stored block) into `out`, byte for byte as the
// scalar packer does; the first needs AVX-512 F, BW, VL and VBMI, the second AVX2. `stream`:
// non-temporal stores, for tiles not read again while they are in cache.
using TileBlockPacker = void (*)(GgmlType type, const std::uint8_t* const* rows, std::byte* out,
                                 bool stream);
void pack_tile_block_avx512(GgmlType type, const std::uint8_t* const* rows, std::byte* out,
                            bool stream);
void pack_tile_block_avx2(GgmlType type, const std::uint8_t* const* rows, std::byte* out,
                          bool stream);

// y[i * y_stride + r] = dot(row r, x[i]) for r < n_rows and i < m, from rows in any format with
// row tiles as stored (row r at rows + r * row bytes); the first needs AVX2 and F16C, the second
// AVX-512 F, BW, VL and VNNI.
void stored_rows_avx2(GgmlType type, const std::byte* rows, std::int64_t n_rows,
                      std::int64_t blocks, const QuantizedActivations* x, std::int64_t m, float* y,
                      std::int64_t y_stride);
void stored_rows_avx512(GgmlType type, const std::byte* rows, std::int64_t n_rows,
                        std::int64_t blocks, const QuantizedActivations* x, std::int64_t m,
                        float* y, std::int64_t y_stride);

// rewrite_blocks' Q3_K path built with AVX2 (rewrite_blocks.inc).
void rewrite_q3_k_avx2(const std::byte* src, std::byte* dst, std::int64_t blocks);

// Blocks of a grid format (IQ3_S, IQ3_XXS, IQ1_S, IQ1_M) as Q6_K blocks under the same d
// (rewrite_blocks): quants_of(block, q) writes a block's 256 quants as Q6_K's (32 plus the signed
// magnitude), scale_of(block, i) gives Q6_K's scale of elements 16i..16i + 15 and d_of(block) the
// half d. Each instruction set's file
// brings its own lambdas, so each builds its own instance with its flags (a function pointer's
// type would name one instance in both, and the linker would keep either). For the same reason
// this calls no inline function of quant.hpp, nor may the AVX2 file's lambdas: the generic file's
// do, and the linker keeps one copy of each inline function for every file.
template <class Block, class QuantsOf, class ScaleOf, class DOf>
void rewrite_as_q6_k_blocks(const std::byte* src, std::byte* dst, std::int64_t blocks,
                            QuantsOf quants_of, ScaleOf scale_of, DOf d_of) {
  for (std::int64_t b = 0; b < blocks; ++b) {
    Block in;
    std::memcpy(&in, src + b * static_cast<std::int64_t>(sizeof in), sizeof in);
    auto* out =
        reinterpret_cast<std::uint8_t*>(dst) + b * static_cast<std::int64_t>(sizeof(BlockQ6_K));
    std::uint8_t q[kQK];
    quants_of(in, q);
    // Element 128 * half + 32 * g + l: its low nibble in ql[64 * half + l] (g 0, 2) or
    // ql[64 * half + 32 + l] (g 1, 3), low then high; its top two bits in qh[32 * half + l] at
    // bit 2g.
    for (int half = 0; half < 2; ++half) {
      const std::uint8_t* h = q + 128 * half;
      std::uint8_t* ql = out + offsetof(BlockQ6_K, ql) + 64 * half;
      std::uint8_t* qh = out + offsetof(BlockQ6_K, qh) + 32 * half;
      for (int l = 0; l < 32; ++l) {
        ql[l] = static_cast<std::uint8_t>((h[l] & 0xF) | (h[l + 64] & 0xF) << 4);
        ql[l + 32] = static_cast<std::uint8_t>((h[l + 32] & 0xF) | (h[l + 96] & 0xF) << 4);
        qh[l] = static_cast<std::uint8_t>(h[l] >> 4 | (h[l + 32] >> 4) << 2 |
                                          (h[l + 64] >> 4) << 4 | (h[l + 96] >> 4) << 6);
      }
    }
    for (int i = 0; i < kQK / 16; ++i)
      out[offsetof(BlockQ6_K, scales) + static_cast<std::size_t>(i)] =
          static_cast<std::uint8_t>(scale_of(in, i));
    const std::uint16_t d = d_of(in);
    std::memcpy(out + offsetof(BlockQ6_K, d), &d, sizeof d);
  }
}
// IQ3_S's blocks as Q6_K's of the same values: its signed grid magnitudes (-15..15) are Q6_K
// quants less 32, and its per-32 scale multipliers 1 + 2 * scale (1..31) Q6_K's signed per-16
// scales under the same d, so each product keeps its float order.
template <class QuantsOf>
void rewrite_iq3_s_blocks(const std::byte* src, std::byte* dst, std::int64_t blocks,
                          QuantsOf quants_of) {
  // Q6_K scale i (16 elements) is iq3s_scale of sub-block i / 2: 1 + 2 times its nibble.
  rewrite_as_q6_k_blocks<BlockIQ3_S>(
      src, dst, blocks, quants_of,
      [](const BlockIQ3_S& in, int i) {
        return 1 + 2 * ((in.scales[i / 4] >> (4 * (i / 2 % 2))) & 0xF);
      },
      [](const BlockIQ3_S& in) { return in.d; });
}
// rewrite_blocks' IQ3_S path with AVX2 (rewrite_blocks_avx2.cpp).
void rewrite_iq3_s_avx2(const std::byte* src, std::byte* dst, std::int64_t blocks);
// rewrite_blocks' IQ3_XXS path with AVX2 (rewrite_blocks_avx2.cpp).
void rewrite_iq3_xxs_avx2(const std::byte* src, std::byte* dst, std::int64_t blocks);

}  // namespace moed::kernels::qtile
