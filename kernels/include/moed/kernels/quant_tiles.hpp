#pragma once

// Row tiles: a ggml-quantized matrix repacked once, when it enters host RAM, so that one SIMD
// lane holds one weight row. A tile is 16 consecutive rows; within it, for each block of the
// format, the 16 rows' scales lie side by side and their quants are interleaved four at a time
// (row r's elements 4k..4k+3 at bytes 4r..4r+3 of a 64-byte line). A kernel then broadcasts four
// activation bytes and multiplies all 16 rows at once (vpdpbusd, or maddubs + madd on AVX2),
// with no horizontal sum anywhere, and one weight line serves every activation row of a batch.
//
// Float order (the same in the scalar, AVX2 and AVX-512 paths, and for any batch size): per
// block, the exact integer dot of the row's quants with the activation's, then
//   q8_0: acc = acc + float(isum) * (d_w * d_x)
//   q4_K, q5_K: term = float(isum) * (d_w * d_x); term = term - float(msum) * (dmin_w * d_x);
//         acc = acc + term            (isum = sum of scale_j * dot_j, msum = sum of min_j * bsum_j)
//   q2_K: as q4_K, over its 16 sub-blocks of 16 (msum = sum of min_j * bsum_j, the Q8_K sums)
//   iq4_xs: acc = acc + float(isum) * (d_w * d_x)   (isum = sum of scale_j * dot_j, each value
//         its codebook entry)
//   q6_K: acc = acc + float(isum) * (d_w * d_x)   (isum = sum of scale_j * (dot_j - 32 bsum_j))
//   iq2_xxs, iq2_xs, iq2_s: acc = acc + float(isum) * ((d_w * 0.125) * d_x)   (isum = sum of
//         scale_j * dot_j over 16 sub-blocks of 16, scale_j = 2 * the stored scale + 1, each value
//         its signed grid magnitude: the values are d_w / 8 times these)
//   q4_0, q5_0: acc = acc + float(isum - o * xsum) * (d_w * d_x)   (o = 8, 16; xsum = the sum of
//         the activation block's quants)
//   q4_1, q5_1: term = float(isum) * (d_w * d_x); term = term + m_w * s_x;  acc = acc + term
//         (s_x = the activation block's Q8_1 sum: its unrounded scale times its quants' sum,
//         rounded to fp16)
// over blocks in order from a zero accumulator.
//
// Byte layouts, per tile and per block of the format (the blocks' order: tile groups below):
//   q8_0 (32 elements, 544 bytes): fp16 d[16]; u8 q[8 groups][16 rows][4], each quant + 128.
//   q4_K (256 elements, 2368 bytes): fp16 d[16], dmin[16]; u8 scale[8][16], min[8][16];
//     u8 line[8 sub-blocks][4][16 rows][4]: line (j, p), byte 4r + k holds element 32j + 8p + k
//     of row r in its low nibble and element 32j + 8p + 4 + k in its high nibble.
//   q5_K (256 elements, 2880 bytes): q4_K's layout of the low four bits, then
//     u8 fifth[8 sub-blocks][16 rows][4]: line j, byte 4r + k, bits 2p and 2p + 1: the fifth
//     bits of the elements in the low and high nibble of byte 4r + k of line (j, p).
//   q2_K (256 elements, 1344 bytes, as many as stored): fp16 d[16], dmin[16];
//     u8 scale_min[16 sub-blocks][16 rows] (the stored byte: scale low nibble, min high);
//     u8 line[16][16 rows][4]: line j, byte 4r + k: bits 2i..2i+1 are element 16j + 4i + k.
//   iq4_xs (256 elements, 2208 bytes): fp16 d[16]; i8 scale[8][16] (minus its 32);
//     u8 line[8 sub-blocks][4][16 rows][4]: line (j, p), byte 4r + k: the stored qs[16j + 4p + k]
//     as it is (element 32j + 4p + k's index in its low nibble, 32j + 16 + 4p + k's in its high).
//   q6_K (256 elements, 3360 bytes): fp16 d[16]; i8 scale[16][16];
//     u8 low[32][16 rows][4]: line c, byte 4r + k: element 8c + k (low nibble), 8c + 4 + k (high);
//     u8 high[16][16 rows][4]: line j, byte 4r + k: bits 2i..2i+1 are the top two bits of
//     element 16j + 4i + k.
//   q4_0, q4_1, q5_0, q5_1 (32 elements; 288, 320, 352, 384 bytes): fp16 d[16]; fp16 m[16]
//     (q4_1, q5_1); u8 line[4][16 rows][4]: line p, byte 4r + k holds element 4p + k of row r in
//     its low nibble and element 16 + 4p + k in its high nibble (the stored qs[4p + k] as it is);
//     q5_0, q5_1: u8 fifth[16 rows][4]: byte 4r + k, bits 2p and 2p + 1: the fifth bits of the
//     elements in the low and high nibble of byte 4r + k of line p.
//   iq2_xxs, iq2_xs, iq2_s (256 elements, 2336 bytes, 4.56 bits a weight: about twice the stored
//     2.06-2.56): fp16 d[16]; i8 scale[16 sub-blocks][16 rows] (2 * scale + 1; IQ2_XXS's scale per
//     32 given to both its halves); u8 line[8 sub-blocks][4][16 rows][4] as iq4_xs's: line (j, p),
//     byte 4r + k holds elements 32j + 4p + k (low nibble) and 32j + 16 + 4p + k (high), each as
//     its grid level (magnitude 8, 25, 43: 0, 1, 2) in bits 0-1 and its sign in bit 3. Eight
//     elements' grid octet and signs become one 64-bit word of nibbles with a shift, a mask and a
//     table lookup.
// A last tile short of 16 rows is padded with zero rows (zero scales), whose results are dropped.
//
// Tile groups: every four tiles (64 rows; the last group of a matrix may have fewer) lie
// interleaved by chunks of blocks: chunk 0 of each of the group's tiles in turn, then chunk 1
// of each, and so on. A chunk is round(8192 / the tile's bytes per block) blocks, at least one
// (q8_0 15, q4_0 28, q4_1 26, q5_0 23, q5_1 21, q2_K 6, iq4_xs 4, the IQ2 formats 4, q4_K 3, q5_K
// 3, q6_K 2); the last chunk of a tile may have fewer. A group is still one sequential stream, and
// each chunk of activations serves its four tiles while it is in L1. With whole tiles in turn, a
// tile wider than about 40 KiB (hidden 4096: 128 q8_0 blocks, 70 KiB) pushed the activations out of
// L1 before the next tile came back to them: a 4096 x 4096 q8_0 product streamed 22.6 GB/s on one
// thread and 38.7 on two, against 25.2 and 48.3 in groups (medians of six alternated runs).

#include <cstddef>
#include <cstdint>
#include <span>

#include "moed/kernels/quant.hpp"
#include "moed/kernels/quant_dot.hpp"

namespace moed::kernels {

inline constexpr std::int64_t kTileRows = 16;
inline constexpr std::int64_t kGroupTiles = 4;

// Tile groups of a matrix of `rows` rows: the unit in which threads share its product.
inline std::int64_t row_tile_groups(std::int64_t rows) {
  const std::int64_t tiles = (rows + kTileRows - 1) / kTileRows;
  return (tiles + kGroupTiles - 1) / kGroupTiles;
}

// The formats with row tiles of their own: q8_0, q4_0, q4_1, q5_0, q5_1, q2_K, q4_K, q5_K, q6_K,
// iq4_xs, and iq2_xxs, iq2_xs and iq2_s in one layout (q3_K, iq3_s, iq3_xxs, iq1_s and iq1_m are
// rewritten into q6_K's, iq4_nl into q8_0's: row_tile_format).
bool has_row_tiles(GgmlType type);

// The format whose row tiles (and stored rows) hold rows of `type`: q6_K for q3_K, iq3_s, iq3_xxs,
// iq1_s and iq1_m, q8_0 for iq4_nl, whose blocks rewrite_blocks rewrites as that format's blocks
// of exactly the same values, or of exactly a power of two times them (rewrite_scale): Q3_K's
// 3-bit quants and 6-bit scales, IQ3_S's grid magnitudes and scale multipliers, half IQ3_XXS's
// and eight times IQ1_S's and IQ1_M's are Q6_K values, IQ4_NL's codebook entries Q8_0 quants
// under the same d; so they take its kernels at its size. The type itself for a format with row
// tiles of its own.
GgmlType row_tile_format(GgmlType type);
// What the values of rewrite_blocks' blocks of `type` (and of its row tiles and the products
// computed from them) are multiplied by to be `type`'s: 1, but 0.5 for iq3_xxs and 0.125 for
// iq1_s and iq1_m. IQ3_XXS's magnitudes (4..62) and scale multipliers give d times a quarter of an
// odd integer; Q6_K's quants reach 31, so its blocks take half the magnitudes under the same d,
// which is twice the values. An IQ1 element is d * (2 * scale + 1) * (grid value +- 1/8): its
// blocks take the eighths (8 * grid value +- 1, -9..9), eight times the values. Dividing d
// instead would round subnormal halves, common for the small weights of large models' experts.
// A power of two scales a float sum exactly (unless a result is subnormal), so the product of the
// rewritten blocks times this is the product of blocks of the same values.
float rewrite_scale(GgmlType type);
// Rewrites `blocks` blocks of `type` (q3_K, iq3_s, iq3_xxs, iq1_s, iq1_m or iq4_nl, any
// alignment) at src as row_tile_format(type)'s blocks of the same values (times
// 1 / rewrite_scale(type)) at dst; every `isa` writes the same bytes (AVX2's 32-byte vectors take
// a Q3_K half's 32 quant bytes at once).
void rewrite_blocks(GgmlType type, const std::byte* src, std::byte* dst, std::int64_t blocks,
                    QuantIsa isa = best_quant_isa());

// Bytes of `rows` x `cols` weights in row tiles (rows padded up to whole tiles).
std::uint64_t row_tile_bytes(GgmlType type, std::int64_t rows, std::int64_t cols);

// Repacks rows (each `cols` elements of `type` blocks, as stored in a GGUF file) into row tiles
// of row_tile_format(type) at `out` (row_tile_bytes of them), over OpenMP's threads. Throws
// std::invalid_argument for a type whose row_tile_format has no row tiles or a width that is not
// whole blocks of `type`. A SIMD
// `isa` moves whole tiles through registers: AVX-512 ones where the CPU also has VBMI, else AVX2
// ones; every path writes the same bytes.
void pack_row_tiles(GgmlType type, std::span<const std::byte* const> rows, std::int64_t cols,
                    std::byte* out, QuantIsa isa = best_quant_isa());
// Whether pack_row_tiles(type, ..., isa) moves whole tiles through registers rather than packing
// row by row (the scalar path, and iq4_xs and the IQ2 formats on every path).
bool packs_tiles_in_registers(GgmlType type, QuantIsa isa = best_quant_isa());

// Whether the q8_0 row-tile kernels ask for their blocks ahead in software: on Intel CPUs, whose
// hardware prefetchers alone leave a core short of its read rate on them (the other formats
// always ask; quant_tiles_simd.inc gives the measurements).
bool prefetches_q8_0_tiles();

// y[i * y_stride + r] = dot(weight row r, x[i]) for the m activation rows, from row tiles;
// tile groups spread over the compute threads. Row i's result does not depend on m or on the other
// rows.
void row_tile_matmul(GgmlType type, const std::byte* tiles, std::int64_t rows, std::int64_t cols,
                     const QuantizedActivations* x, std::int64_t m, float* y, std::int64_t y_stride,
                     QuantIsa isa = best_quant_isa());

// Stored rows: a matrix in any format with row tiles computed as a GGUF file stores it, row after
// row, with no repacking (a block streamed from disk and used once need not be turned into tiles).
// Two rows at a time (one from each half, so each reads on sequentially) on AVX-512 VNNI and on
// AVX2 (`isa`; the IQ2 formats' grid octets and signs made into vectors as they are read); the
// float order above, so the results are bit-identical to the row tiles'. For one activation row
// about the tile kernels' rate from memory: 2.5 times packing plus the tile product's on AVX-512,
// about 3 times on AVX2 (docs/design.md, section 4); IQ2 1.8-3.1 GB/s of its bytes, 1.2-3 times
// packing plus the tile product's; for more than two
// (prefill), each 64-row group is repacked into tiles where it stays in cache and multiplied
// there.
bool computes_stored_rows(GgmlType type, QuantIsa isa = best_quant_isa());
// As row_tile_matmul, from `rows` rows stored one after another at `stored`. Throws
// std::invalid_argument where !computes_stored_rows(type, isa) or cols is not whole blocks.
void stored_rows_matmul(GgmlType type, const std::byte* stored, std::int64_t rows,
                        std::int64_t cols, const QuantizedActivations* x, std::int64_t m, float* y,
                        std::int64_t y_stride, QuantIsa isa = best_quant_isa());

}  // namespace moed::kernels
