#include "moed/kernels/quant_tiles.hpp"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "moed/kernels/dtype.hpp"
#include "quant_tiles_internal.hpp"
#include "row_tile_units.hpp"

namespace moed::kernels {
namespace {

using namespace qtile;

bool is_iq2(GgmlType type) {
  return type == GgmlType::iq2_xxs || type == GgmlType::iq2_xs || type == GgmlType::iq2_s;
}

bool is_legacy(GgmlType type) {
  return type == GgmlType::q4_0 || type == GgmlType::q4_1 || type == GgmlType::q5_0 ||
         type == GgmlType::q5_1;
}

std::int64_t tile_block_bytes(GgmlType type) {
  switch (type) {
    case GgmlType::q8_0:
      return kQ8_0TileBlockBytes;
    case GgmlType::q4_k:
      return kQ4_KTileBlockBytes;
    case GgmlType::q5_k:
      return kQ5_KTileBlockBytes;
    case GgmlType::q6_k:
      return kQ6_KTileBlockBytes;
    case GgmlType::q2_k:
      return kQ2_KTileBlockBytes;
    case GgmlType::iq4_xs:
      return kIQ4_XSTileBlockBytes;
    case GgmlType::iq2_xxs:
    case GgmlType::iq2_xs:
    case GgmlType::iq2_s:
      return kIQ2TileBlockBytes;
    default:
      return legacy_tile_block_bytes(type);
  }
}

// Blocks of one tile per chunk of a tile group (quant_tiles.hpp): about 8 KiB.
std::int64_t tile_chunk_blocks(GgmlType type) {
  constexpr std::int64_t kChunkBytes = 8192;
  const std::int64_t block_bytes = tile_block_bytes(type);
  return std::max<std::int64_t>(1, (kChunkBytes + block_bytes / 2) / block_bytes);
}

// Tile group g of a matrix of `tiles` tiles of `blocks` blocks at `tiles_start`, all its tiles
// computed.
TileGroup tile_group(GgmlType type, const std::byte* tiles_start, std::int64_t tiles,
                     std::int64_t blocks, std::int64_t g) {
  const std::int64_t first_tile = g * kGroupTiles;
  const std::int64_t block_bytes = tile_block_bytes(type);
  const std::int64_t group_tiles = std::min(kGroupTiles, tiles - first_tile);
  return {tiles_start + first_tile * blocks * block_bytes,
          group_tiles,
          blocks,
          tile_chunk_blocks(type),
          block_bytes,
          0,
          group_tiles,
          type == GgmlType::q8_0 && prefetches_q8_0_tiles()};
}

std::int64_t block_elements(GgmlType type) {
  return type == GgmlType::q8_0 || is_legacy(type) ? kQ32 : kQK;
}

// `type` may be one rewritten into another format's tiles (row_tile_format); errors name it.
void require_row_tiles(GgmlType type, std::int64_t cols, const char* who) {
  if (!has_row_tiles(row_tile_format(type)))
    throw std::invalid_argument(std::string(who) + ": ggml type " +
                                std::string(ggml_type_name(type)) + " has no row-tile layout");
  if (cols <= 0 || cols % block_elements(row_tile_format(type)) != 0)
    throw std::invalid_argument(std::string(who) + ": " + std::to_string(cols) + " columns are " +
                                "not whole " + std::string(ggml_type_name(type)) + " blocks");
}

bool cpu_packs_avx512() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("avx512vbmi");
  return has;
}

void put16(std::byte* at, std::uint16_t value) {
  std::memcpy(at, &value, sizeof value);
}

// Packing works on 64-bit words of quants (eight bytes at a time), so a block read from disk is
// repacked at several GB/s: the disk tier repacks every expert it reads.

std::uint64_t load64(const std::uint8_t* at) {
  std::uint64_t word;
  std::memcpy(&word, at, sizeof word);
  return word;
}
std::uint32_t load32(const std::uint8_t* at) {
  std::uint32_t word;
  std::memcpy(&word, at, sizeof word);
  return word;
}
void store32(std::byte* at, std::uint32_t word) {
  std::memcpy(at, &word, sizeof word);
}

constexpr std::uint64_t kNibbles = 0x0F0F0F0F0F0F0F0Full;

// Eight 4-bit values, one per byte: bytes 0-3 as low nibbles, bytes 4-7 as their high nibbles.
std::uint32_t pair_nibbles(std::uint64_t values) {
  return static_cast<std::uint32_t>(values) | (static_cast<std::uint32_t>(values >> 32) << 4);
}

std::uint16_t load16(const std::uint8_t* at) {
  std::uint16_t word;
  std::memcpy(&word, at, sizeof word);
  return word;
}

// Each packer reads the stored block's fields in place (src: its first byte).
void pack_q8_0(const std::uint8_t* src, int r, std::byte* out) {
  put16(out + 2 * r, load16(src + offsetof(BlockQ8_0, d)));
  const std::uint8_t* qs = src + offsetof(BlockQ8_0, qs);
  for (int g = 0; g < 8; ++g)
    store32(out + kQ8_0TileQuants + 64 * g + 4 * r, load32(qs + 4 * g) ^ 0x80808080u);
}

// q4_K and q5_K share the scales and low bits; q5_K adds its fifth bits (qh, null for q4_K).
// Stored, qs[32g + l] holds element l of sub-block 2g (low nibble) and of 2g + 1 (high).
// Both blocks lead with fp16 d and dmin.
void pack_k_scales_and_nibbles(const std::uint8_t* src, const std::uint8_t* scales,
                               const std::uint8_t* qs, const std::uint8_t* qh, int r,
                               std::byte* out) {
  put16(out + 2 * r, load16(src));
  put16(out + kQ4_KTileDmin + 2 * r, load16(src + 2));
  for (int j = 0; j < 8; ++j) {
    std::uint8_t scale, min;
    q4k_scale_min(j, scales, scale, min);
    out[kQ4_KTileScales + kTileRows * j + r] = static_cast<std::byte>(scale);
    out[kQ4_KTileMins + kTileRows * j + r] = static_cast<std::byte>(min);
  }
  for (int g = 0; g < 4; ++g)
    for (int p = 0; p < 4; ++p) {
      const std::uint64_t word = load64(qs + 32 * g + 8 * p);
      store32(out + kQ4_KTileQuants + 64 * (4 * (2 * g) + p) + 4 * r,
              pair_nibbles(word & kNibbles));
      store32(out + kQ4_KTileQuants + 64 * (4 * (2 * g + 1) + p) + 4 * r,
              pair_nibbles((word >> 4) & kNibbles));
    }
  if (!qh) return;
    // Bit j of qh[l] is the fifth bit of element l of sub-block j; a tile byte (j, k) gathers
    // those of elements 8p + k (bit 2p) and 8p + 4 + k (bit 2p + 1).
#pragma GCC unroll 8
  for (int j = 0; j < 8; ++j) {
    std::uint32_t bits = 0;
    for (int p = 0; p < 4; ++p) {
      const std::uint64_t fifth = (load64(qh + 8 * p) >> j) & 0x0101010101010101ull;
      bits |= (static_cast<std::uint32_t>(fifth) | (static_cast<std::uint32_t>(fifth >> 32) << 1))
              << (2 * p);
    }
    store32(out + kQ5_KTileHigh + 64 * j + 4 * r, bits);
  }
}

// The 16 lines of a 256-element block's two-bit fields (Q6_K's qh, Q2_K's qs: element
// 128h + 32s + l at bits 2s, 2s + 1 of byte 32h + l) for row r: line j, byte k, bits 2i..2i+1
// hold element 16j + 4i + k's.
void pack_two_bit_lines(const std::uint8_t* bits, int r, std::byte* lines) {
#pragma GCC unroll 16
  for (int j = 0; j < 16; ++j) {  // elements 16j .. 16j + 15
    const int h = j / 8, s = (j / 2) % 4, l = 16 * (j % 2);
    std::uint32_t line = 0;
    for (int i = 0; i < 4; ++i)
      line |= ((load32(bits + 32 * h + l + 4 * i) >> (2 * s)) & 0x03030303u) << (2 * i);
    store32(lines + 64 * j + 4 * r, line);
  }
}

// Stored, element 128h + 32s + l has its low four bits in ql[64h + 32(s % 2) + l] (low nibble
// for s < 2, high for s >= 2) and its top two in bits 2s, 2s + 1 of qh[32h + l].
void pack_q6_k(const std::uint8_t* src, int r, std::byte* out) {
  put16(out + 2 * r, load16(src + offsetof(BlockQ6_K, d)));
  for (int j = 0; j < 16; ++j)
    out[kQ6_KTileScales + kTileRows * j + r] =
        static_cast<std::byte>(src[offsetof(BlockQ6_K, scales) + j]);
  const std::uint8_t* ql = src + offsetof(BlockQ6_K, ql);
  const std::uint8_t* qh = src + offsetof(BlockQ6_K, qh);
#pragma GCC unroll 32
  for (int c = 0; c < 32; ++c) {  // elements 8c .. 8c + 7
    const int h = c / 16, s = (c / 4) % 4, l = 8 * (c % 4);
    const std::uint64_t word = load64(ql + 64 * h + 32 * (s % 2) + l);
    store32(out + kQ6_KTileLow + 64 * c + 4 * r,
            pair_nibbles((s < 2 ? word : word >> 4) & kNibbles));
  }
  pack_two_bit_lines(qh, r, out + kQ6_KTileHigh);
}

// Stored, qs holds the quants as Q6_K's qh holds its top two bits.
void pack_q2_k(const std::uint8_t* src, int r, std::byte* out) {
  put16(out + 2 * r, load16(src + offsetof(BlockQ2_K, d)));
  put16(out + kQ2_KTileDmin + 2 * r, load16(src + offsetof(BlockQ2_K, dmin)));
  for (int j = 0; j < 16; ++j)
    out[kQ2_KTileScales + kTileRows * j + r] =
        static_cast<std::byte>(src[offsetof(BlockQ2_K, scales) + j]);
  pack_two_bit_lines(src + offsetof(BlockQ2_K, qs), r, out + kQ2_KTileQuants);
}

// Stored, qs[16j + l] holds element 32j + l in its low nibble and 32j + 16 + l in its high one:
// line (j, p) takes qs[16j + 4p .. 16j + 4p + 3] as they are.
void pack_iq4_xs(const std::uint8_t* src, int r, std::byte* out) {
  put16(out + 2 * r, load16(src + offsetof(BlockIQ4_XS, d)));
  const std::uint16_t scales_h = load16(src + offsetof(BlockIQ4_XS, scales_h));
  for (int j = 0; j < 8; ++j)
    out[kIQ4_XSTileScales + kTileRows * j + r] = static_cast<std::byte>(
        static_cast<std::int8_t>(iq4xs_scale(scales_h, src + offsetof(BlockIQ4_XS, scales_l), j)));
  const std::uint8_t* qs = src + offsetof(BlockIQ4_XS, qs);
  for (int line = 0; line < 32; ++line)
    store32(out + kIQ4_XSTileQuants + 64 * line + 4 * r, load32(qs + 4 * line));
}

// For each sign byte, bit 3 of byte k set where its bit k is (kIq2Values' sign bit).
constexpr std::array<std::uint64_t, 256> kIq2SignNibbles = [] {
  std::array<std::uint64_t, 256> bits{};
  for (unsigned signs = 0; signs < 256; ++signs)
    for (unsigned k = 0; k < 8; ++k)
      if (signs >> k & 1) bits[signs] |= std::uint64_t{8} << (8 * k);
  return bits;
}();

// The kIq2Values nibbles of group i's eight elements, one per byte.
template <GgmlType kType>
std::uint64_t iq2_nibbles(const std::uint8_t* block, int i) {
  const Iq2Group group = iq2_group<kType>(block, i);
  return ((group.magnitudes >> 4) & 0x0303030303030303) | kIq2SignNibbles[group.signs];
}

// Sub-block j's groups 4j and 4j + 1 are its first 16 elements, the low nibbles of its lines as
// iq4_xs's qs keeps them; groups 4j + 2 and 4j + 3 the high nibbles.
template <GgmlType kType>
void pack_iq2(const std::uint8_t* src, int r, std::byte* out) {
  put16(out + 2 * r, load16(src));  // d, first in every IQ2 block
  for (int h = 0; h < 16; ++h)
    out[kIQ2TileScales + kTileRows * h + r] =
        static_cast<std::byte>(2 * iq2_scale<kType>(src, h) + 1);
  for (int j = 0; j < 8; ++j) {
    const std::uint64_t first = iq2_nibbles<kType>(src, 4 * j) | iq2_nibbles<kType>(src, 4 * j + 2)
                                                                     << 4;
    const std::uint64_t second =
        iq2_nibbles<kType>(src, 4 * j + 1) | iq2_nibbles<kType>(src, 4 * j + 3) << 4;
    for (int p = 0; p < 4; ++p)
      store32(out + kIQ2TileQuants + 64 * (4 * j + p) + 4 * r,
              static_cast<std::uint32_t>((p < 2 ? first : second) >> (32 * (p % 2))));
  }
}

// Stored, qs[j] holds element j in its low nibble and j + 16 in its high one: line p of the tile
// takes qs[4p .. 4p + 3] as they are. Bit j of the little-endian qh is element j's fifth bit.
void pack_legacy(GgmlType type, const std::uint8_t* src, int r, std::byte* out) {
  put16(out + 2 * r, load16(src));
  const auto [m, qh, qs] = legacy_fields(type);
  if (m) put16(out + kLegacyTileMins + 2 * r, load16(src + m));
  const std::int64_t quants = legacy_tile_quants(type);
  for (int p = 0; p < 4; ++p) store32(out + quants + 64 * p + 4 * r, load32(src + qs + 4 * p));
  if (!qh) return;
  // Bits 4p..4p+3 (elements 4p + k) go to bit 2p of bytes k = 0..3, bits 16+4p.. to bit 2p + 1:
  // multiplying a nibble by 2^0 + 2^7 + 2^14 + 2^21 puts its bit k at bit 8k, carry-free.
  const std::uint32_t fifth = load32(src + qh);
  const auto spread = [](std::uint32_t nibble) { return (nibble * 0x00204081u) & 0x01010101u; };
  std::uint32_t bits = 0;
  for (int p = 0; p < 4; ++p)
    bits |= spread((fifth >> (4 * p)) & 0xF) << (2 * p) | spread((fifth >> (16 + 4 * p)) & 0xF)
                                                              << (2 * p + 1);
  store32(out + legacy_tile_high(type) + 4 * r, bits);
}

// ---- Scalar path: quant_tiles.hpp's order, lane by lane -----------------------------------

int quad_dot(const std::uint8_t* w, const std::int8_t* x, int bias) {
  int sum = 0;
  for (int k = 0; k < 4; ++k) sum += (static_cast<int>(w[k]) - bias) * x[k];
  return sum;
}

float q8_0_row(const std::byte* run, std::int64_t first, std::int64_t blocks, int r,
               const QuantizedActivations& x, float acc) {
  for (std::int64_t b = 0; b < blocks; ++b) {
    const std::byte* block = run + b * kQ8_0TileBlockBytes;
    const auto* lines = reinterpret_cast<const std::uint8_t*>(block + kQ8_0TileQuants);
    std::int32_t isum = 0;
    for (int g = 0; g < 8; ++g)
      isum += quad_dot(lines + 64 * g + 4 * r, x.q8_0[first + b].qs + 4 * g, 128);
    std::uint16_t d;
    std::memcpy(&d, block + 2 * r, sizeof d);
    const float scale = f16_to_f32(d) * f16_to_f32(x.q8_0[first + b].d);
    acc = acc + static_cast<float>(isum) * scale;
  }
  return acc;
}

// acc + row r's term of a K-quant tile block with a min (q4_K, q5_K, q2_K), in the float order
// of quant_tiles.hpp.
float add_term_with_min(float acc, const std::byte* block, std::int64_t dmin_offset, int r,
                        std::int32_t isum, std::int32_t msum, float dx) {
  std::uint16_t d, dmin;
  std::memcpy(&d, block + 2 * r, sizeof d);
  std::memcpy(&dmin, block + dmin_offset + 2 * r, sizeof dmin);
  float term = static_cast<float>(isum) * (f16_to_f32(d) * dx);
  term = term - static_cast<float>(msum) * (f16_to_f32(dmin) * dx);
  return acc + term;
}

float q4_k_row(const std::byte* run, std::int64_t first, std::int64_t blocks, int r,
               const QuantizedActivations& x, float acc, bool five) {
  for (std::int64_t b = 0; b < blocks; ++b) {
    const std::byte* block = run + b * (five ? kQ5_KTileBlockBytes : kQ4_KTileBlockBytes);
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(block);
    const BlockQ8_K& a = x.q8_k[first + b];
    std::int32_t isum = 0, msum = 0;
    for (int j = 0; j < 8; ++j) {
      std::int32_t dot = 0;
      for (int p = 0; p < 4; ++p)
        for (int k = 0; k < 4; ++k) {
          const std::uint8_t w = bytes[kQ4_KTileQuants + 64 * (4 * j + p) + 4 * r + k];
          const int bits = five ? bytes[kQ5_KTileHigh + 64 * j + 4 * r + k] >> (2 * p) : 0;
          const int low = (w & 0xF) | ((bits & 1) << 4), high = (w >> 4) | ((bits & 2) << 3);
          dot += low * a.qs[32 * j + 8 * p + k] + high * a.qs[32 * j + 8 * p + 4 + k];
        }
      isum += bytes[kQ4_KTileScales + kTileRows * j + r] * dot;
      msum += bytes[kQ4_KTileMins + kTileRows * j + r] * (a.bsums[2 * j] + a.bsums[2 * j + 1]);
    }
    acc = add_term_with_min(acc, block, kQ4_KTileDmin, r, isum, msum, a.d);
  }
  return acc;
}

float q6_k_row(const std::byte* run, std::int64_t first, std::int64_t blocks, int r,
               const QuantizedActivations& x, float acc) {
  for (std::int64_t b = 0; b < blocks; ++b) {
    const std::byte* block = run + b * kQ6_KTileBlockBytes;
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(block);
    const BlockQ8_K& a = x.q8_k[first + b];
    std::int32_t isum = 0;
    for (int j = 0; j < 16; ++j) {
      std::int32_t dot = 0;
      for (int k = 0; k < 4; ++k) {
        const std::uint8_t high = bytes[kQ6_KTileHigh + 64 * j + 4 * r + k];
        for (int half = 0; half < 2; ++half) {
          const std::uint8_t low = bytes[kQ6_KTileLow + 64 * (2 * j + half) + 4 * r + k];
          const int i0 = 2 * half, i1 = 2 * half + 1;  // element 16j + 4i + k, i = 0..3
          dot += ((low & 0xF) | (((high >> (2 * i0)) & 3) << 4)) * a.qs[16 * j + 4 * i0 + k];
          dot += ((low >> 4) | (((high >> (2 * i1)) & 3) << 4)) * a.qs[16 * j + 4 * i1 + k];
        }
      }
      const auto scale = static_cast<std::int8_t>(bytes[kQ6_KTileScales + kTileRows * j + r]);
      isum += scale * (dot - 32 * a.bsums[j]);
    }
    std::uint16_t d;
    std::memcpy(&d, block + 2 * r, sizeof d);
    acc = acc + static_cast<float>(isum) * (f16_to_f32(d) * a.d);
  }
  return acc;
}

float q2_k_row(const std::byte* run, std::int64_t first, std::int64_t blocks, int r,
               const QuantizedActivations& x, float acc) {
  for (std::int64_t b = 0; b < blocks; ++b) {
    const std::byte* block = run + b * kQ2_KTileBlockBytes;
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(block);
    const BlockQ8_K& a = x.q8_k[first + b];
    std::int32_t isum = 0, msum = 0;
    for (int j = 0; j < 16; ++j) {
      std::int32_t dot = 0;
      for (int k = 0; k < 4; ++k) {
        const std::uint8_t w = bytes[kQ2_KTileQuants + 64 * j + 4 * r + k];
        for (int i = 0; i < 4; ++i) dot += ((w >> (2 * i)) & 3) * a.qs[16 * j + 4 * i + k];
      }
      const std::uint8_t scale_min = bytes[kQ2_KTileScales + kTileRows * j + r];
      isum += (scale_min & 0xF) * dot;
      msum += (scale_min >> 4) * a.bsums[j];
    }
    acc = add_term_with_min(acc, block, kQ2_KTileDmin, r, isum, msum, a.d);
  }
  return acc;
}

float iq4_xs_row(const std::byte* run, std::int64_t first, std::int64_t blocks, int r,
                 const QuantizedActivations& x, float acc) {
  for (std::int64_t b = 0; b < blocks; ++b) {
    const std::byte* block = run + b * kIQ4_XSTileBlockBytes;
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(block);
    const BlockQ8_K& a = x.q8_k[first + b];
    std::int32_t isum = 0;
    for (int j = 0; j < 8; ++j) {
      std::int32_t dot = 0;
      for (int p = 0; p < 4; ++p)
        for (int k = 0; k < 4; ++k) {
          const std::uint8_t w = bytes[kIQ4_XSTileQuants + 64 * (4 * j + p) + 4 * r + k];
          dot += kIq4NlValues[w & 0xF] * a.qs[32 * j + 4 * p + k] +
                 kIq4NlValues[w >> 4] * a.qs[32 * j + 16 + 4 * p + k];
        }
      isum += static_cast<std::int8_t>(bytes[kIQ4_XSTileScales + kTileRows * j + r]) * dot;
    }
    std::uint16_t d;
    std::memcpy(&d, block + 2 * r, sizeof d);
    acc = acc + static_cast<float>(isum) * (f16_to_f32(d) * a.d);
  }
  return acc;
}

float iq2_row(const std::byte* run, std::int64_t first, std::int64_t blocks, int r,
              const QuantizedActivations& x, float acc) {
  for (std::int64_t b = 0; b < blocks; ++b) {
    const std::byte* block = run + b * kIQ2TileBlockBytes;
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(block);
    const BlockQ8_K& a = x.q8_k[first + b];
    std::int32_t isum = 0;
    for (int j = 0; j < 8; ++j) {
      std::int32_t low = 0, high = 0;
      for (int p = 0; p < 4; ++p)
        for (int k = 0; k < 4; ++k) {
          const std::uint8_t w = bytes[kIQ2TileQuants + 64 * (4 * j + p) + 4 * r + k];
          low += kIq2Values[w & 0xF] * a.qs[32 * j + 4 * p + k];
          high += kIq2Values[w >> 4] * a.qs[32 * j + 16 + 4 * p + k];
        }
      isum += static_cast<std::int8_t>(bytes[kIQ2TileScales + kTileRows * (2 * j) + r]) * low +
              static_cast<std::int8_t>(bytes[kIQ2TileScales + kTileRows * (2 * j + 1) + r]) * high;
    }
    std::uint16_t d;
    std::memcpy(&d, block + 2 * r, sizeof d);
    acc = acc + static_cast<float>(isum) * ((f16_to_f32(d) * kIq2Step) * a.d);
  }
  return acc;
}

float legacy_row(GgmlType type, const std::byte* run, std::int64_t first, std::int64_t blocks,
                 int r, const QuantizedActivations& x, float acc) {
  const std::int64_t quants = legacy_tile_quants(type), high = legacy_tile_high(type);
  const bool five = legacy_has_fifth_bits(type);
  for (std::int64_t b = 0; b < blocks; ++b) {
    const std::byte* block = run + b * legacy_tile_block_bytes(type);
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(block);
    const std::int8_t* q = x.q8_0[first + b].qs;
    std::int32_t isum = 0;
    for (int p = 0; p < 4; ++p)
      for (int k = 0; k < 4; ++k) {
        const std::uint8_t w = bytes[quants + 64 * p + 4 * r + k];
        const int bits = five ? bytes[high + 4 * r + k] >> (2 * p) : 0;
        const int low = (w & 0xF) | ((bits & 1) << 4), top = (w >> 4) | ((bits & 2) << 3);
        isum += low * q[4 * p + k] + top * q[16 + 4 * p + k];
      }
    std::uint16_t d;
    std::memcpy(&d, block + 2 * r, sizeof d);
    const float dx = f16_to_f32(x.q8_0[first + b].d);
    if (!legacy_has_min(type)) {
      const std::int32_t offset = (five ? 16 : 8) * x.q8_0_sums[first + b];
      acc = acc + static_cast<float>(isum - offset) * (f16_to_f32(d) * dx);
      continue;
    }
    std::uint16_t m;
    std::memcpy(&m, block + kLegacyTileMins + 2 * r, sizeof m);
    float term = static_cast<float>(isum) * (f16_to_f32(d) * dx);
    term = term + f16_to_f32(m) * x.q8_1_sums[first + b];
    acc = acc + term;
  }
  return acc;
}

void tile_dot_scalar(GgmlType type, const std::byte* run, std::int64_t first, std::int64_t blocks,
                     const QuantizedActivations* const* x, int count, float* out, bool resume) {
  for (int i = 0; i < count; ++i)
    for (int r = 0; r < kTileRows; ++r) {
      float& y = out[kTileRows * i + r];
      const float acc = resume ? y : 0.0f;
      switch (type) {
        case GgmlType::q8_0:
          y = q8_0_row(run, first, blocks, r, *x[i], acc);
          break;
        case GgmlType::q4_k:
        case GgmlType::q5_k:
          y = q4_k_row(run, first, blocks, r, *x[i], acc, type == GgmlType::q5_k);
          break;
        case GgmlType::q6_k:
          y = q6_k_row(run, first, blocks, r, *x[i], acc);
          break;
        case GgmlType::q2_k:
          y = q2_k_row(run, first, blocks, r, *x[i], acc);
          break;
        case GgmlType::iq4_xs:
          y = iq4_xs_row(run, first, blocks, r, *x[i], acc);
          break;
        case GgmlType::iq2_xxs:
        case GgmlType::iq2_xs:
        case GgmlType::iq2_s:
          y = iq2_row(run, first, blocks, r, *x[i], acc);
          break;
        default:
          y = legacy_row(type, run, first, blocks, r, *x[i], acc);
          break;
      }
    }
}

}  // namespace

bool has_row_tiles(GgmlType type) {
  return type == GgmlType::q8_0 || type == GgmlType::q2_k || type == GgmlType::q4_k ||
         type == GgmlType::q5_k || type == GgmlType::q6_k || type == GgmlType::iq4_xs ||
         is_iq2(type) || is_legacy(type);
}

GgmlType row_tile_format(GgmlType type) {
  switch (type) {
    case GgmlType::q3_k:
      return GgmlType::q6_k;
    case GgmlType::iq4_nl:
      return GgmlType::q8_0;
    case GgmlType::iq3_s:
    case GgmlType::iq3_xxs:
    case GgmlType::iq1_s:
    case GgmlType::iq1_m:
      return GgmlType::q6_k;
    default:
      return type;
  }
}

float rewrite_scale(GgmlType type) {
  switch (type) {
    case GgmlType::iq3_xxs:
      return 0.5f;
    case GgmlType::iq1_s:
    case GgmlType::iq1_m:
      return 0.125f;
    default:
      return 1.0f;
  }
}

namespace {

#define MOED_REWRITE_Q3_K rewrite_q3_k_generic
#include "rewrite_blocks.inc"
#undef MOED_REWRITE_Q3_K

void rewrite_iq4_nl(const std::byte* src, std::byte* dst, std::int64_t blocks) {
  for (std::int64_t b = 0; b < blocks; ++b) {
    const auto* in = reinterpret_cast<const std::uint8_t*>(src) + b * sizeof(BlockIQ4_NL);
    auto* out = reinterpret_cast<std::uint8_t*>(dst) + b * sizeof(BlockQ8_0);
    std::memcpy(out + offsetof(BlockQ8_0, d), in + offsetof(BlockIQ4_NL, d), sizeof(std::uint16_t));
    const std::uint8_t* qs = in + offsetof(BlockIQ4_NL, qs);
    auto* quants = out + offsetof(BlockQ8_0, qs);
    for (int j = 0; j < kQ32 / 2; ++j) {
      quants[j] = static_cast<std::uint8_t>(kIq4NlValues[qs[j] & 0xF]);
      quants[j + kQ32 / 2] = static_cast<std::uint8_t>(kIq4NlValues[qs[j] >> 4]);
    }
  }
}

// For each nibble, the bytes of a word whose bit in it is set.
constexpr std::array<std::uint32_t, 16> kNegativeBytes = [] {
  std::array<std::uint32_t, 16> masks{};
  for (std::uint32_t nibble = 0; nibble < 16; ++nibble)
    for (int i = 0; i < 4; ++i)
      if (nibble >> i & 1) masks[nibble] |= 0xFFU << (8 * i);
  return masks;
}();
constexpr std::uint32_t kQ6KOffsets = 0x20202020;

// Four quants in a word's bytes: 32 plus or minus each magnitude (at most 31), which neither
// carries nor borrows across bytes; a sign nibble picks the bytes to subtract.
std::uint32_t signed_q6_k_quants(std::uint32_t magnitudes, std::uint32_t sign_nibble) {
  const std::uint32_t negative = kNegativeBytes[sign_nibble];
  return ((kQ6KOffsets + magnitudes) & ~negative) | ((kQ6KOffsets - magnitudes) & negative);
}

// IQ3_S's quants four at a time (rewrite_iq3_s_blocks).
void iq3_s_quants_generic(const BlockIQ3_S& in, std::uint8_t* q) {
  for (int group = 0; group < kQK / 4; ++group) {
    const std::uint32_t quants = signed_q6_k_quants(
        iq3s_group_magnitudes(in, group), (in.signs[group / 2] >> (4 * (group % 2))) & 0xF);
    std::memcpy(q + 4 * group, &quants, sizeof quants);
  }
}

// IQ3_XXS's quants as Q6_K's of twice its values (rewrite_scale): half of each grid magnitude
// (all even, 2..31), eight elements a sign byte (seven stored bits and their parity).
void iq3_xxs_quants_generic(const BlockIQ3_XXS& in, std::uint8_t* q) {
  for (int k = 0; k < kQK / 8; ++k) {
    const std::uint32_t signs = iq3xxs_signs(in, k);
    for (int h = 0; h < 2; ++h) {
      const std::uint32_t halves = (kIq3xxsGrid[in.qs[2 * k + h]] >> 1) & 0x7F7F7F7F;
      const std::uint32_t quants = signed_q6_k_quants(halves, (signs >> (4 * h)) & 0xF);
      std::memcpy(q + 8 * k + 4 * h, &quants, sizeof quants);
    }
  }
}

// Eight IQ1 elements as Q6_K quants of eight times their values, from their grid entry (signed
// bytes -1, 0, 1) and delta's sign: 32 + 8 * grid value +- 1, a byte each (23..41, so neither
// carries nor borrows across bytes).
std::uint64_t iq1_q6_k_quants(std::uint64_t entry, bool negative_delta) {
  constexpr std::uint64_t kLowBits = 0x0101010101010101;
  const std::uint64_t minus_one = (entry >> 1) & kLowBits;  // 0xFF has bit 1, 0x01 not
  const std::uint64_t plus_one = entry & kLowBits & ~minus_one;
  const std::uint64_t base = (negative_delta ? 31 : 33) * kLowBits;
  return base + (plus_one << 3) - (minus_one << 3);
}

// IQ1_S's quants as Q6_K's of eight times its values (rewrite_scale), a group of eight at a time.
void iq1_s_quants(const BlockIQ1_S& in, std::uint8_t* q) {
  for (int group = 0; group < kQK / 8; ++group) {
    const unsigned qh = in.qh[group / 4];
    const unsigned index = in.qs[group] | ((qh >> (3 * (group % 4))) & 7U) << 8;
    const std::uint64_t quants = iq1_q6_k_quants(kIq1sGrid[index], (qh & 0x8000) != 0);
    std::memcpy(q + 8 * group, &quants, sizeof quants);
  }
}

// IQ1_M's likewise, each group of eight with its own delta.
void iq1_m_quants(const BlockIQ1_M& in, std::uint8_t* q) {
  for (int group = 0; group < kQK / 8; ++group) {
    const unsigned bits = (in.qh[group / 2] >> (4 * (group % 2))) & 0xFU;
    const std::uint64_t quants =
        iq1_q6_k_quants(kIq1sGrid[in.qs[group] | (bits & 7U) << 8], (bits & 8U) != 0);
    std::memcpy(q + 8 * group, &quants, sizeof quants);
  }
}

}  // namespace

void rewrite_blocks(GgmlType type, const std::byte* src, std::byte* dst, std::int64_t blocks,
                    QuantIsa isa) {
  switch (type) {
    case GgmlType::q3_k:
      if (usable_quant_isa(isa) == QuantIsa::scalar)
        rewrite_q3_k_generic(src, dst, blocks);
      else
        rewrite_q3_k_avx2(src, dst, blocks);
      return;
    case GgmlType::iq4_nl:
      rewrite_iq4_nl(src, dst, blocks);
      return;
    case GgmlType::iq3_s:
      if (usable_quant_isa(isa) == QuantIsa::scalar)
        rewrite_iq3_s_blocks(src, dst, blocks, [](const BlockIQ3_S& in, std::uint8_t* q) {
          iq3_s_quants_generic(in, q);
        });
      else
        rewrite_iq3_s_avx2(src, dst, blocks);
      return;
    case GgmlType::iq3_xxs:
      if (usable_quant_isa(isa) != QuantIsa::scalar) {
        rewrite_iq3_xxs_avx2(src, dst, blocks);
        return;
      }
      // Q6_K scale i (16 elements) is 1 + 2 times sub-block i / 2's scale.
      rewrite_as_q6_k_blocks<BlockIQ3_XXS>(
          src, dst, blocks,
          [](const BlockIQ3_XXS& in, std::uint8_t* q) { iq3_xxs_quants_generic(in, q); },
          [](const BlockIQ3_XXS& in, int i) { return 1 + 2 * iq3xxs_scale(in, i / 2); },
          [](const BlockIQ3_XXS& in) { return in.d; });
      return;
    case GgmlType::iq1_s:
      // Q6_K scale i (16 elements) is sub-block i / 2's 2 * scale + 1.
      rewrite_as_q6_k_blocks<BlockIQ1_S>(
          src, dst, blocks, [](const BlockIQ1_S& in, std::uint8_t* q) { iq1_s_quants(in, q); },
          [](const BlockIQ1_S& in, int i) { return iq1s_scale(in, i / 2); },
          [](const BlockIQ1_S& in) { return in.d; });
      return;
    case GgmlType::iq1_m:
      rewrite_as_q6_k_blocks<BlockIQ1_M>(
          src, dst, blocks, [](const BlockIQ1_M& in, std::uint8_t* q) { iq1_m_quants(in, q); },
          [](const BlockIQ1_M& in, int i) { return iq1m_scale(in, i); },
          [](const BlockIQ1_M& in) { return iq1m_d(in); });
      return;
    default:
      throw std::invalid_argument("rewrite_blocks: ggml type " + std::string(ggml_type_name(type)) +
                                  " is computed as it is");
  }
}

std::uint64_t row_tile_bytes(GgmlType type, std::int64_t rows, std::int64_t cols) {
  require_row_tiles(type, cols, "row_tile_bytes");
  type = row_tile_format(type);
  const std::int64_t tiles = (rows + kTileRows - 1) / kTileRows;
  return static_cast<std::uint64_t>(tiles) *
         static_cast<std::uint64_t>(cols / block_elements(type) * tile_block_bytes(type));
}

namespace {

// The packer that moves whole tile blocks through registers for `isa`, or none (row by row).
TileBlockPacker register_packer(GgmlType type, QuantIsa isa) {
  if (!has_row_tiles(type) || type == GgmlType::iq4_xs || is_iq2(type)) return nullptr;
  switch (usable_quant_isa(isa)) {
    case QuantIsa::avx512_vnni:
      return cpu_packs_avx512() ? pack_tile_block_avx512 : pack_tile_block_avx2;
    case QuantIsa::avx2:
      return pack_tile_block_avx2;
    case QuantIsa::scalar:
      return nullptr;
  }
  return nullptr;
}

}  // namespace

bool packs_tiles_in_registers(GgmlType type, QuantIsa isa) {
  return register_packer(row_tile_format(type), isa) != nullptr;
}

bool prefetches_q8_0_tiles() {
  static const bool intel = __builtin_cpu_is("intel");
  return intel;
}

namespace {

// Activation rows up to which stored rows are multiplied as they lie (stored_rows_on_this_thread).
constexpr std::int64_t kStoredRowsMaxActivations = 2;

// Packs tile group `group_index` of the matrix `rows` into `out` (laid out for the whole
// matrix), on the calling thread; full tiles through `in_registers` where there is one, `stream`
// as its.
void pack_tile_group(GgmlType type, std::span<const std::byte* const> rows, std::int64_t cols,
                     std::byte* out, std::int64_t group_index, TileBlockPacker in_registers,
                     bool stream) {
  const auto n_rows = static_cast<std::int64_t>(rows.size());
  const std::int64_t tiles = (n_rows + kTileRows - 1) / kTileRows;
  const std::int64_t blocks = cols / block_elements(type);
  const std::int64_t block_bytes = tile_block_bytes(type);
  const auto stored_bytes = static_cast<std::int64_t>(ggml_type_traits(type).type_size);
  const std::int64_t prefetch_blocks = (256 + stored_bytes - 1) / stored_bytes;
  const TileGroup group = tile_group(type, out, tiles, blocks, group_index);
  for (std::int64_t k = 0; k < group.tiles; ++k)
    for (std::int64_t b = 0; b < blocks; ++b) {
      const std::int64_t t = group_index * kGroupTiles + k;
      const std::int64_t c = b - b % group.chunk;
      std::byte* block =
          const_cast<std::byte*>(group.start) + run_offset(group, c, k) + (b - c) * block_bytes;
      const bool padded = (t + 1) * kTileRows > n_rows;
      const auto source = [&](int r) {
        return reinterpret_cast<const std::uint8_t*>(
                   rows[static_cast<std::size_t>(t * kTileRows + r)]) +
               b * stored_bytes;
      };
      if (in_registers && !padded) {
        std::array<const std::uint8_t*, kTileRows> sources;
        for (int r = 0; r < kTileRows; ++r) sources[static_cast<std::size_t>(r)] = source(r);
        // A block read from disk is in no cache, and sixteen row streams are more than the
        // hardware prefetchers follow: ask for the rows' bytes about 256 bytes ahead, in the
        // next tile's rows near the end of a tile.
        std::int64_t ahead_tile = t, ahead = b + prefetch_blocks;
        if (ahead >= blocks) {
          ++ahead_tile;
          ahead -= blocks;
        }
        if (ahead < blocks && (ahead_tile + 1) * kTileRows <= n_rows)
          for (int r = 0; r < kTileRows; ++r) {
            const auto* row = reinterpret_cast<const char*>(
                                  rows[static_cast<std::size_t>(ahead_tile * kTileRows + r)]) +
                              ahead * stored_bytes;
            for (std::int64_t at = 0; at < stored_bytes; at += 64) __builtin_prefetch(row + at);
          }
        in_registers(type, sources.data(), block, stream);
        continue;
      }
      if (padded) std::memset(block, 0, static_cast<std::size_t>(block_bytes));
      for (int r = 0; r < kTileRows && t * kTileRows + r < n_rows; ++r) {
        const auto* src = source(r);
        switch (type) {
          case GgmlType::q8_0:
            pack_q8_0(src, r, block);
            break;
          case GgmlType::q4_k:
            pack_k_scales_and_nibbles(src, src + offsetof(BlockQ4_K, scales),
                                      src + offsetof(BlockQ4_K, qs), nullptr, r, block);
            break;
          case GgmlType::q5_k:
            pack_k_scales_and_nibbles(src, src + offsetof(BlockQ5_K, scales),
                                      src + offsetof(BlockQ5_K, qs), src + offsetof(BlockQ5_K, qh),
                                      r, block);
            break;
          case GgmlType::q6_k:
            pack_q6_k(src, r, block);
            break;
          case GgmlType::q2_k:
            pack_q2_k(src, r, block);
            break;
          case GgmlType::iq4_xs:
            pack_iq4_xs(src, r, block);
            break;
          case GgmlType::iq2_xxs:
            pack_iq2<GgmlType::iq2_xxs>(src, r, block);
            break;
          case GgmlType::iq2_xs:
            pack_iq2<GgmlType::iq2_xs>(src, r, block);
            break;
          case GgmlType::iq2_s:
            pack_iq2<GgmlType::iq2_s>(src, r, block);
            break;
          default:
            pack_legacy(type, src, r, block);
            break;
        }
      }
      // Padding rows keep zero scales; a q8_0 zero quant is stored as 128.
      if (padded && type == GgmlType::q8_0)
        for (std::int64_t r = std::max<std::int64_t>(0, n_rows - t * kTileRows); r < kTileRows; ++r)
          for (int g = 0; g < 8; ++g)
            std::memset(block + kQ8_0TileQuants + 64 * g + 4 * r, 0x80, 4);
    }
  _mm_sfence();  // the register packer's streaming stores, before other threads read the group
}

}  // namespace

namespace {

// Rows of a type rewritten into another format's tiles (rewrite_blocks), one tile group at a
// time, each packed from a thread's rewritten copy of its rows.
void pack_rewritten_row_tiles(GgmlType type, std::span<const std::byte* const> rows,
                              std::int64_t cols, std::byte* out, QuantIsa isa) {
  const GgmlType tiles = row_tile_format(type);
  const TileBlockPacker in_registers = register_packer(tiles, isa);
  const auto blocks = static_cast<std::int64_t>(cols / ggml_type_traits(type).block_size);
  const auto tile_row = static_cast<std::size_t>(ggml_row_bytes(tiles, cols));
  const auto n_rows = static_cast<std::int64_t>(rows.size());
  const std::int64_t group_rows = kGroupTiles * kTileRows;
  const std::int64_t groups = row_tile_groups(n_rows);
  if (groups == 0) return;
  const int threads = static_cast<int>(std::min<std::int64_t>(groups, omp_get_max_threads()));
  // Each thread's scratch is allocated (not filled) before the region, so that nothing in it
  // throws.
  const std::size_t per_thread = static_cast<std::size_t>(group_rows) * tile_row;
  const auto scratch =
      std::make_unique_for_overwrite<std::byte[]>(static_cast<std::size_t>(threads) * per_thread);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (std::int64_t g = 0; g < groups; ++g) {
    std::byte* mine = scratch.get() + static_cast<std::size_t>(omp_get_thread_num()) * per_thread;
    const std::int64_t begin = g * group_rows, n = std::min(group_rows, n_rows - begin);
    std::array<const std::byte*, kGroupTiles * kTileRows> starts;
    for (std::int64_t r = 0; r < n; ++r) {
      std::byte* row = mine + static_cast<std::size_t>(r) * tile_row;
      rewrite_blocks(type, rows[static_cast<std::size_t>(begin + r)], row, blocks, isa);
      starts[static_cast<std::size_t>(r)] = row;
    }
    pack_tile_group(tiles, std::span(starts.data(), static_cast<std::size_t>(n)), cols,
                    out + row_tile_bytes(tiles, begin, cols), 0, in_registers, true);
  }
}

}  // namespace

void pack_row_tiles(GgmlType type, std::span<const std::byte* const> rows, std::int64_t cols,
                    std::byte* out, QuantIsa isa) {
  require_row_tiles(type, cols, "pack_row_tiles");
  if (row_tile_format(type) != type) {
    pack_rewritten_row_tiles(type, rows, cols, out, isa);
    return;
  }
  const TileBlockPacker in_registers = register_packer(type, isa);
  // Over OpenMP's threads: a demand load has compute waiting on it (the engine's packer
  // thread sets how many). By groups, so that no two threads write into one group's
  // interleaved chunks.
  const std::int64_t groups = row_tile_groups(static_cast<std::int64_t>(rows.size()));
#pragma omp parallel for schedule(static)
  for (std::int64_t group_index = 0; group_index < groups; ++group_index)
    pack_tile_group(type, rows, cols, out, group_index, in_registers, true);
}

namespace detail {

void check_row_tile_activations(GgmlType type, std::int64_t cols, const QuantizedActivations* x,
                                std::int64_t m) {
  for (std::int64_t i = 0; i < m; ++i) {
    if (x[i].n != cols)
      throw std::invalid_argument("row_tile_matmul: activation row " + std::to_string(i) + " has " +
                                  std::to_string(x[i].n) + " elements, the weight " +
                                  std::to_string(cols));
    const bool q8_0_activations = block_elements(type) == kQ32;
    if (q8_0_activations &&
        (x[i].q8_0.size() != static_cast<std::size_t>(cols / kQ32) ||
         x[i].q8_0_sums.size() != x[i].q8_0.size() || x[i].q8_1_sums.size() != x[i].q8_0.size() ||
         x[i].q8_0_scales.size() != x[i].q8_0.size() ||
         x[i].q8_0_offset.size() != x[i].q8_0.size()))
      throw std::invalid_argument("row_tile_matmul: activation row " + std::to_string(i) +
                                  " lacks the Q8_0 blocks and sums " +
                                  std::string(ggml_type_name(type)) + " needs");
    if (!q8_0_activations && (x[i].q8_k.size() != static_cast<std::size_t>(cols / kQK) ||
                              x[i].q8_k_sums32.size() != x[i].q8_k.size() * (kQK / 32) ||
                              x[i].q8_k_offsets16.size() != x[i].q8_k.size() * (kQK / 16)))
      throw std::invalid_argument("row_tile_matmul: activation row " + std::to_string(i) +
                                  " lacks the Q8_K blocks " + std::string(ggml_type_name(type)) +
                                  " needs");
  }
}

void row_tiles_on_this_thread(GgmlType type, const std::byte* tiles, std::int64_t rows,
                              std::int64_t cols, const QuantizedActivations* x, std::int64_t m,
                              float* y, std::int64_t y_stride, QuantIsa isa, std::int64_t first,
                              std::int64_t last) {
  isa = usable_quant_isa(isa);
  const std::int64_t blocks = cols / block_elements(type);
  const std::int64_t n_tiles = (rows + kTileRows - 1) / kTileRows;
  const int rows_per_call = isa == QuantIsa::avx512_vnni ? rows_per_call_avx512()
                            : isa == QuantIsa::avx2      ? rows_per_call_avx2()
                                                         : 1;
  // Computes tiles [group.begin, group.end) of the group whose first tile is first_tile, for the
  // activation rows from i0, through out.
  const auto compute = [&](const TileGroup& group, std::int64_t first_tile, std::int64_t i0,
                           float* out) {
    const int count = static_cast<int>(std::min<std::int64_t>(rows_per_call, m - i0));
    const QuantizedActivations* batch[4];
    for (int i = 0; i < count; ++i) batch[i] = x + i0 + i;
    switch (isa) {
      case QuantIsa::avx512_vnni:
        group_dot_avx512(type, group, batch, count, out);
        break;
      case QuantIsa::avx2:
        group_dot_avx2(type, group, batch, count, out);
        break;
      case QuantIsa::scalar:
        for_each_run(group, [&](const std::byte* run, std::int64_t first, std::int64_t run_blocks,
                                std::int64_t slot, bool resume) {
          tile_dot_scalar(type, run, first, run_blocks, batch, count, out + 4 * kTileRows * slot,
                          resume);
        });
        break;
    }
    for (std::int64_t k = group.begin; k < group.end; ++k) {
      const std::int64_t t = first_tile + k;
      const auto valid = static_cast<std::size_t>(std::min(kTileRows, rows - t * kTileRows));
      for (int i = 0; i < count; ++i)
        std::memcpy(y + (i0 + i) * y_stride + t * kTileRows,
                    out + 4 * kTileRows * (k - group.begin) + kTileRows * i, valid * sizeof(float));
    }
  };
  float out[kGroupTiles * 4 * kTileRows];
  for (std::int64_t g = first; g < last; ++g) {
    const TileGroup group = tile_group(type, tiles, n_tiles, blocks, g);
    if (m <= rows_per_call) {
      compute(group, g * kGroupTiles, 0, out);
      continue;
    }
    // Prefill: tile by tile, every activation row against one tile's runs while they are in
    // cache (a q8_0 group of a 14336-wide matrix is about 1 MB, a tile a quarter of it).
    for (std::int64_t k = 0; k < group.tiles; ++k) {
      TileGroup tile = group;
      tile.begin = k;
      tile.end = k + 1;
      // q8_0 asks for nothing here: the passes after the first find the tile in cache, and 12
      // KiB past one tile's run lands in the tiles beside it (Q8_0 bench prefill 725 -> 763
      // tokens/s without, eight alternated runs; asking on every pass, 675).
      tile.q8_0_prefetch = false;
      for (std::int64_t i0 = 0; i0 < m; i0 += rows_per_call)
        compute(tile, g * kGroupTiles, i0, out);
    }
  }
}

void stored_rows_on_this_thread(GgmlType type, const std::byte* stored, std::int64_t rows,
                                std::int64_t cols, const QuantizedActivations* x, std::int64_t m,
                                float* y, std::int64_t y_stride, QuantIsa isa, std::int64_t first,
                                std::int64_t last) {
  const std::int64_t group_rows = kGroupTiles * kTileRows;
  const auto row_bytes = static_cast<std::int64_t>(ggml_row_bytes(type, cols));
  // Without AVX2 (where nothing is stored, but this entry may still be called) the groups are
  // repacked, as below.
  isa = usable_quant_isa(isa);
  if (m <= kStoredRowsMaxActivations && computes_stored_rows(type, isa)) {
    const std::int64_t begin = first * group_rows, end = std::min(rows, last * group_rows);
    const std::int64_t blocks = cols / block_elements(type);
    if (begin < end && isa == QuantIsa::avx512_vnni)
      stored_rows_avx512(type, stored + begin * row_bytes, end - begin, blocks, x, m, y + begin,
                         y_stride);
    else if (begin < end)
      stored_rows_avx2(type, stored + begin * row_bytes, end - begin, blocks, x, m, y + begin,
                       y_stride);
    return;
  }
  // More activation rows than that: each group is repacked into tiles where it stays in cache,
  // and multiplied there (4096 x 4096, one thread, four rows: stored rows q4_K 2.5, q6_K 4.2,
  // q8_0 5.4 GB/s, repacking each group 4.8, 5.9 and 8.4; at two rows stored rows 6.9, 7.0 and
  // 9.6).
  thread_local std::vector<std::byte> tiles;
  thread_local std::vector<const std::byte*> starts;
  const TileBlockPacker in_registers = register_packer(type, isa);
  for (std::int64_t g = first; g < last; ++g) {
    const std::int64_t begin = g * group_rows, n = std::min(rows - begin, group_rows);
    starts.resize(static_cast<std::size_t>(n));
    for (std::int64_t r = 0; r < n; ++r)
      starts[static_cast<std::size_t>(r)] = stored + (begin + r) * row_bytes;
    tiles.resize(row_tile_bytes(type, n, cols));
    pack_tile_group(type, starts, cols, tiles.data(), 0, in_registers, false);
    row_tiles_on_this_thread(type, tiles.data(), n, cols, x, m, y + begin, y_stride, isa, 0, 1);
  }
}

}  // namespace detail

bool computes_stored_rows(GgmlType type, QuantIsa isa) {
  return has_row_tiles(type) && usable_quant_isa(isa) == isa && isa != QuantIsa::scalar;
}

void stored_rows_matmul(GgmlType type, const std::byte* stored, std::int64_t rows,
                        std::int64_t cols, const QuantizedActivations* x, std::int64_t m, float* y,
                        std::int64_t y_stride, QuantIsa isa) {
  if (!computes_stored_rows(type, isa))
    throw std::invalid_argument("stored_rows_matmul: " + std::string(ggml_type_name(type)) +
                                " is not computed from stored rows with " +
                                std::string(quant_isa_name(isa)) + " on this CPU");
  require_row_tiles(type, cols, "stored_rows_matmul");
  if (m <= 0 || rows <= 0) return;
  detail::check_row_tile_activations(type, cols, x, m);
  const auto groups = static_cast<std::uint32_t>(row_tile_groups(rows));
  detail::over_row_groups(groups, m, [&](std::uint32_t first, std::uint32_t last) {
    detail::stored_rows_on_this_thread(type, stored, rows, cols, x, m, y, y_stride, isa, first,
                                       last);
  });
}

void row_tile_matmul(GgmlType type, const std::byte* tiles, std::int64_t rows, std::int64_t cols,
                     const QuantizedActivations* x, std::int64_t m, float* y, std::int64_t y_stride,
                     QuantIsa isa) {
  require_row_tiles(type, cols, "row_tile_matmul");
  if (m <= 0 || rows <= 0) return;
  detail::check_row_tile_activations(type, cols, x, m);
  const auto groups = static_cast<std::uint32_t>(row_tile_groups(rows));
  detail::over_row_groups(groups, m, [&](std::uint32_t first, std::uint32_t last) {
    detail::row_tiles_on_this_thread(type, tiles, rows, cols, x, m, y, y_stride, isa, first, last);
  });
}

}  // namespace moed::kernels
