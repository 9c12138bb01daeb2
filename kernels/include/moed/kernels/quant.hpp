#pragma once

// ggml's tensor types as GGUF files carry them: the type ids, each type's block (elements per
// block, bytes per block) and, for the formats moed computes in, the block layouts byte for byte
// as ggml-common.h lays them out, so a block read from a file is used where it lies.

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "moed/kernels/dtype.hpp"

namespace moed::kernels {

// ggml_type ids; the gaps are types ggml removed (their ids are never reused).
enum class GgmlType : std::uint32_t {
  f32 = 0,
  f16 = 1,
  q4_0 = 2,
  q4_1 = 3,
  q5_0 = 6,
  q5_1 = 7,
  q8_0 = 8,
  q8_1 = 9,
  q2_k = 10,
  q3_k = 11,
  q4_k = 12,
  q5_k = 13,
  q6_k = 14,
  q8_k = 15,
  iq2_xxs = 16,
  iq2_xs = 17,
  iq3_xxs = 18,
  iq1_s = 19,
  iq4_nl = 20,
  iq3_s = 21,
  iq2_s = 22,
  iq4_xs = 23,
  i8 = 24,
  i16 = 25,
  i32 = 26,
  i64 = 27,
  f64 = 28,
  iq1_m = 29,
  bf16 = 30,
  tq1_0 = 34,
  tq2_0 = 35,
  mxfp4 = 39,
};

struct GgmlTypeTraits {
  std::string_view name;     // as ggml names it: "q4_K", "bf16"
  std::uint32_t block_size;  // elements per block
  std::uint32_t type_size;   // bytes per block
};

// The traits of a type id, or nullopt for an id ggml does not define (or has removed).
std::optional<GgmlTypeTraits> ggml_type_traits(std::uint32_t id);
GgmlTypeTraits ggml_type_traits(GgmlType type);
std::string_view ggml_type_name(GgmlType type);
// Whether dequantize_row (and so moed) handles the type.
bool ggml_type_supported(GgmlType type);
// The names of those types, in id order, for messages that list what moed reads.
std::string supported_ggml_type_names();

// Elements per super-block of the K-quants.
inline constexpr int kQK = 256;
// Elements per block of the 32-element formats.
inline constexpr int kQ32 = 32;
// Bytes of packed 6-bit scales and mins in a Q4_K / Q5_K block.
inline constexpr int kKScaleBytes = 12;

// Halves (d, m, dmin) are IEEE fp16 bit patterns, as ggml_half.
struct BlockQ4_0 {
  std::uint16_t d;
  std::uint8_t qs[kQ32 / 2];  // element j in the low nibble of qs[j], j + 16 in the high
};
struct BlockQ4_1 {
  std::uint16_t d;
  std::uint16_t m;
  std::uint8_t qs[kQ32 / 2];
};
struct BlockQ5_0 {
  std::uint16_t d;
  std::uint8_t qh[4];  // bit j (little-endian u32) is the fifth bit of element j
  std::uint8_t qs[kQ32 / 2];
};
struct BlockQ5_1 {
  std::uint16_t d;
  std::uint16_t m;
  std::uint8_t qh[4];
  std::uint8_t qs[kQ32 / 2];
};
struct BlockQ8_0 {
  std::uint16_t d;
  std::int8_t qs[kQ32];
};
// x = d * kIq4NlValues[q], q 4 bits in Q4_0's nibble order.
struct BlockIQ4_NL {
  std::uint16_t d;
  std::uint8_t qs[kQ32 / 2];  // element j in the low nibble of qs[j], j + 16 in the high
};
// IQ4_NL's non-linear codebook (ggml-common.h's kvalues_iq4nl).
inline constexpr std::int8_t kIq4NlValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                                 1,    13,   25,  38,  53,  69,  89,  113};
// 8 sub-blocks of 32 with 6-bit scales; x = (d * (scale - 32)) * kIq4NlValues[q], q 4 bits in
// IQ4_NL's nibble order within each sub-block (qs[16j + l]: element 32j + l in the low nibble,
// 32j + 16 + l in the high). iq4xs_scale unpacks the scales.
struct BlockIQ4_XS {
  std::uint16_t d;
  std::uint16_t scales_h;           // bits 2j, 2j + 1: the top two bits of scale j
  std::uint8_t scales_l[kQK / 64];  // the low four bits of scale j: nibble j % 2 of byte j / 2
  std::uint8_t qs[kQK / 2];
};
// Scale j (0..7) of an IQ4_XS block, signed (-32..31), as ggml's dequantize_row_iq4_xs unpacks it.
inline int iq4xs_scale(std::uint16_t scales_h, const std::uint8_t* scales_l, int j) {
  const int low = (scales_l[j / 2] >> (4 * (j % 2))) & 0xF;
  return (low | ((scales_h >> (2 * j)) & 3) << 4) - 32;
}
// 8 sub-blocks of 32 with 4-bit scales; x = (d * (1 + 2 * scale)) * magnitude * sign, the
// magnitudes odd (1..15) and taken four at a time from IQ3_S's grid: iq3s_quant gives element e's.
struct BlockIQ3_S {
  std::uint16_t d;
  std::uint8_t qs[kQK / 4];       // the low 8 bits of the grid index of elements 4i..4i + 3
  std::uint8_t qh[kQK / 32];      // bit k of byte j: bit 8 of the index of group 8j + k
  std::uint8_t signs[kQK / 8];    // bit e % 8 of byte e / 8: element e is negative
  std::uint8_t scales[kQK / 64];  // sub-block j's scale in nibble j % 2 of byte j / 2
};
// IQ3_S's grid (ggml-common.h's iq3s_grid): 512 of the 4096 quadruples of odd magnitudes 1..15,
// one per byte, the first element in the lowest.
extern const std::uint32_t kIq3sGrid[512];
// The grid entry of group g (0..63) of an IQ3_S block: the magnitudes of elements 4g..4g + 3.
inline std::uint32_t iq3s_group_magnitudes(const BlockIQ3_S& block, int group) {
  return kIq3sGrid[block.qs[group] | ((block.qh[group / 8] >> (group % 8)) & 1U) << 8];
}
// Element e (0..255) of an IQ3_S block as a signed integer (-15..15), as ggml's
// dequantize_row_iq3_s reads it.
inline int iq3s_quant(const BlockIQ3_S& block, int e) {
  const auto magnitude =
      static_cast<int>((iq3s_group_magnitudes(block, e / 4) >> (8 * (e % 4))) & 0xFF);
  return (block.signs[e / 8] >> (e % 8)) & 1 ? -magnitude : magnitude;
}
// Scale multiplier of sub-block j (0..7) of an IQ3_S block: 1 + 2 * its 4-bit scale (1..31).
inline int iq3s_scale(const BlockIQ3_S& block, int j) {
  return 1 + 2 * ((block.scales[j / 2] >> (4 * (j % 2))) & 0xF);
}
// 8 sub-blocks of 32, each with a 4-bit scale and four 7-bit sign indices in one word;
// x = d * (0.5 + scale) * 0.5 * magnitude * sign, the magnitudes (4, 12, ..., 52, 62) taken four
// at a time from IQ3_XXS's grid: iq3xxs_quant gives element e's.
struct BlockIQ3_XXS {
  std::uint16_t d;
  std::uint8_t qs[kQK / 4];  // the grid index of elements 4i..4i + 3
  // Sub-block j's word (little-endian) at 4j: bits 7l..7l + 6 give the signs of its elements
  // 8l..8l + 7 (the eighth makes their count of negatives even), bits 28..31 its scale.
  std::uint8_t scales_and_signs[kQK / 8];
};
// IQ3_XXS's grid (ggml-common.h's iq3xxs_grid): 256 quadruples of the magnitudes 4, 12, 20, 28,
// 36, 44, 52 and 62, one per byte, the first element in the lowest.
extern const std::uint32_t kIq3xxsGrid[256];
// Sub-block j's (0..7) scale-and-signs word of an IQ3_XXS block.
inline std::uint32_t iq3xxs_word(const BlockIQ3_XXS& block, int j) {
  const std::uint8_t* bytes = block.scales_and_signs + 4 * j;
  return static_cast<std::uint32_t>(bytes[0]) | static_cast<std::uint32_t>(bytes[1]) << 8 |
         static_cast<std::uint32_t>(bytes[2]) << 16 | static_cast<std::uint32_t>(bytes[3]) << 24;
}
// The sign byte of eight IQ3_XXS, IQ2_XXS or IQ2_XS elements from its seven stored bits: those
// bits and, in bit 7, their parity (ggml's ksigns_iq2xs). A table, as files built without POPCNT
// would compute a parity in a dozen instructions.
inline constexpr std::array<std::uint8_t, 128> kParitySignBytes = [] {
  std::array<std::uint8_t, 128> bytes{};
  for (unsigned seven = 0; seven < 128; ++seven) {
    unsigned parity = 0;
    for (unsigned bits = seven; bits != 0; bits >>= 1) parity ^= bits & 1;
    bytes[seven] = static_cast<std::uint8_t>(seven | parity << 7);
  }
  return bytes;
}();
// The signs of elements 8k..8k + 7 (0 <= k < 32) of an IQ3_XXS block, bit i for element 8k + i.
inline std::uint32_t iq3xxs_signs(const BlockIQ3_XXS& block, int k) {
  return kParitySignBytes[(iq3xxs_word(block, k / 4) >> (7 * (k % 4))) & 0x7F];
}
// Element e (0..255) of an IQ3_XXS block as a signed integer (-62..62), as ggml's
// dequantize_row_iq3_xxs reads it.
inline int iq3xxs_quant(const BlockIQ3_XXS& block, int e) {
  const auto magnitude = static_cast<int>((kIq3xxsGrid[block.qs[e / 4]] >> (8 * (e % 4))) & 0xFF);
  return (iq3xxs_signs(block, e / 8) >> (e % 8)) & 1 ? -magnitude : magnitude;
}
// The 4-bit scale of sub-block j (0..7) of an IQ3_XXS block.
inline int iq3xxs_scale(const BlockIQ3_XXS& block, int j) {
  return static_cast<int>(iq3xxs_word(block, j) >> 28);
}
// IQ2's grids (ggml-common.h's iq2xxs_grid, iq2xs_grid and iq2s_grid): octets of the magnitudes
// 8, 25 and 43, one per byte, the first element in the lowest.
extern const std::uint64_t kIq2xxsGrid[256];
extern const std::uint64_t kIq2xsGrid[512];
extern const std::uint64_t kIq2sGrid[1024];
// The three IQ2 formats: 32 groups of eight elements, each a grid octet of magnitudes with a sign
// byte, and a 4-bit scale per 32 (IQ2_XXS) or 16 (IQ2_XS, IQ2_S) elements;
// x = d * (0.5 + scale) * 0.25 * magnitude * sign, which is d * (2 * scale + 1) / 8 times it.
struct BlockIQ2_XXS {
  std::uint16_t d;
  // Sub-block j (32 elements): the little-endian word at 8j holds the grid indices of its four
  // groups of eight, a byte each; the word at 8j + 4 their signs (bits 7l..7l + 6 for group l,
  // kParitySignBytes) and its scale in bits 28..31.
  std::uint8_t qs[kQK / 4];
};
struct BlockIQ2_XS {
  std::uint16_t d;
  // Group i (elements 8i..8i + 7): bits 0..8 its index in kIq2xsGrid, bits 9..15 its signs
  // (kParitySignBytes).
  std::uint16_t qs[kQK / 8];
  std::uint8_t scales[kQK / 32];  // sub-block j: its first 16 elements' scale in the low nibble
};
struct BlockIQ2_S {
  std::uint16_t d;
  std::uint8_t qs[kQK / 8];     // the low 8 bits of group i's index in kIq2sGrid
  std::uint8_t signs[kQK / 8];  // group i's signs, bit k for element 8i + k
  std::uint8_t qh[kQK / 32];    // sub-block j: bits 2l..2l + 1 the top bits of group 4j + l's index
  std::uint8_t scales[kQK / 32];
};
// Group i (0..31) of an IQ2 block: the magnitudes of its eight elements (a grid octet) and their
// signs (bit k set: element 8i + k is negative), as ggml's dequantizers read them.
struct Iq2Group {
  std::uint64_t magnitudes;
  unsigned signs;
};
// The IQ2 readers take a block's bytes where they lie (any alignment): the disk tier repacks
// every IQ2 block it reads, and a copy of the block into a local struct costs more than the
// reading (loads that straddle the copy's stores wait for them).
inline std::uint32_t iq2_le32(const std::uint8_t* at) {
  return static_cast<std::uint32_t>(at[0]) | static_cast<std::uint32_t>(at[1]) << 8 |
         static_cast<std::uint32_t>(at[2]) << 16 | static_cast<std::uint32_t>(at[3]) << 24;
}
// Group i of the IQ2 block (kType iq2_xxs, iq2_xs or iq2_s) at `block`.
template <GgmlType kType>
Iq2Group iq2_group(const std::uint8_t* block, int i) {
  if constexpr (kType == GgmlType::iq2_xxs) {
    const std::uint8_t* words = block + offsetof(BlockIQ2_XXS, qs) + 8 * (i / 4);
    return {kIq2xxsGrid[words[i % 4]],
            kParitySignBytes[(iq2_le32(words + 4) >> (7 * (i % 4))) & 0x7F]};
  } else if constexpr (kType == GgmlType::iq2_xs) {
    const std::uint8_t* q = block + offsetof(BlockIQ2_XS, qs) + 2 * i;
    const unsigned word = q[0] | static_cast<unsigned>(q[1]) << 8;
    return {kIq2xsGrid[word & 0x1FF], kParitySignBytes[word >> 9]};
  } else {
    static_assert(kType == GgmlType::iq2_s);
    const unsigned top = (block[offsetof(BlockIQ2_S, qh) + i / 4] >> (2 * (i % 4))) & 3U;
    return {kIq2sGrid[block[offsetof(BlockIQ2_S, qs) + i] | top << 8],
            block[offsetof(BlockIQ2_S, signs) + i]};
  }
}
// The 4-bit scale of elements 16h..16h + 15 (0 <= h < 16) of the IQ2 block at `block`.
template <GgmlType kType>
int iq2_scale(const std::uint8_t* block, int h) {
  if constexpr (kType == GgmlType::iq2_xxs) {
    return static_cast<int>(iq2_le32(block + offsetof(BlockIQ2_XXS, qs) + 8 * (h / 2) + 4) >> 28);
  } else {
    constexpr std::size_t kScales =
        kType == GgmlType::iq2_xs ? offsetof(BlockIQ2_XS, scales) : offsetof(BlockIQ2_S, scales);
    return (block[kScales + h / 2] >> (4 * (h % 2))) & 0xF;
  }
}
// Element e (0..255) of the IQ2 block at `block` as a signed magnitude (-43..43).
template <GgmlType kType>
int iq2_quant(const std::uint8_t* block, int e) {
  const Iq2Group group = iq2_group<kType>(block, e / 8);
  const auto magnitude = static_cast<int>((group.magnitudes >> (8 * (e % 8))) & 0xFF);
  return (group.signs >> (e % 8)) & 1 ? -magnitude : magnitude;
}
// IQ1_S's and IQ1_M's grid (ggml-common.h's iq1s_grid): 2048 of the 6561 octets of -1, 0 and 1,
// one signed byte each, the first element in the lowest.
extern const std::uint64_t kIq1sGrid[2048];
// ggml's IQ1S_DELTA in eighths: an IQ1 element is (its scale) * (grid value +- 1/8), which is
// (its scale) / 8 times the odd integer 8 * grid value +- 1 (-9..9).
inline int iq1_eighths(const std::uint64_t entry, int j, bool negative_delta) {
  const auto grid = static_cast<std::int8_t>((entry >> (8 * j)) & 0xFF);
  return 8 * grid + (negative_delta ? -1 : 1);
}
// 8 sub-blocks of 32, each with a 3-bit scale and one delta sign in qh; x = d * (2 * scale + 1) *
// (grid value + delta), delta +-1/8, the grid values taken eight at a time from kIq1sGrid.
struct BlockIQ1_S {
  std::uint16_t d;
  std::uint8_t qs[kQK / 8];  // the low 8 bits of the grid index of elements 8i..8i + 7
  // Sub-block j: bits 3l..3l + 2 the top bits of its group l's index, 12..14 its scale, 15 the
  // delta's sign (set: negative).
  std::uint16_t qh[kQK / 32];
};
// Element e (0..255) of an IQ1_S block in eighths of its sub-block's d * (2 * scale + 1).
inline int iq1s_eighths(const BlockIQ1_S& block, int e) {
  const int j = e / 32, group = e / 8;
  const unsigned top = (block.qh[j] >> (3 * (group % 4))) & 7U;
  return iq1_eighths(kIq1sGrid[block.qs[group] | top << 8], e % 8, (block.qh[j] & 0x8000) != 0);
}
// The multiplier of sub-block j (0..7) of an IQ1_S block: 2 * its scale + 1 (1..15).
inline int iq1s_scale(const BlockIQ1_S& block, int j) {
  return 2 * ((block.qh[j] >> 12) & 7) + 1;
}
// 16 groups of 16 with 3-bit scales, a delta sign per 8 elements, and d spread over the top
// nibbles of the four scale words; x = d * (2 * scale + 1) * (grid value + delta).
struct BlockIQ1_M {
  std::uint8_t qs[kQK / 8];  // the low 8 bits of the grid index of elements 8i..8i + 7
  // Byte k: bits 0..2 the top bits of group 2k's index, bit 3 its delta's sign; bits 4..6 and 7
  // the same for group 2k + 1.
  std::uint8_t qh[kQK / 16];
  // Four little-endian words: word w holds the scales of groups of 16 4w..4w + 3, three bits
  // each from bit 0, and in bits 12..15 nibble w of d's half.
  std::uint8_t scales[kQK / 32];
};
inline unsigned iq1m_scale_word(const BlockIQ1_M& block, int w) {
  return static_cast<unsigned>(block.scales[2 * w]) | static_cast<unsigned>(block.scales[2 * w + 1])
                                                          << 8;
}
// The half d of an IQ1_M block.
inline std::uint16_t iq1m_d(const BlockIQ1_M& block) {
  return static_cast<std::uint16_t>(
      iq1m_scale_word(block, 0) >> 12 | (iq1m_scale_word(block, 1) >> 8 & 0x00F0) |
      (iq1m_scale_word(block, 2) >> 4 & 0x0F00) | (iq1m_scale_word(block, 3) & 0xF000));
}
// The multiplier of group i (0..15, 16 elements) of an IQ1_M block: 2 * its scale + 1 (1..15).
inline int iq1m_scale(const BlockIQ1_M& block, int i) {
  return static_cast<int>(2 * ((iq1m_scale_word(block, i / 4) >> (3 * (i % 4))) & 7) + 1);
}
// Element e (0..255) of an IQ1_M block in eighths of its group's d * (2 * scale + 1).
inline int iq1m_eighths(const BlockIQ1_M& block, int e) {
  const int group = e / 8;
  const unsigned bits = (block.qh[group / 2] >> (4 * (group % 2))) & 0xF;
  return iq1_eighths(kIq1sGrid[block.qs[group] | (bits & 7) << 8], e % 8, (bits & 8) != 0);
}
// Activations for the 32-element formats with Q8_0's layout; ggml's q8_1 adds s = d * sum(qs).
struct BlockQ8_1 {
  std::uint16_t d;
  std::uint16_t s;
  std::int8_t qs[kQ32];
};
// 8 sub-blocks of 32, each with a 6-bit scale and a 6-bit min packed in `scales`
// (q4k_scale_min unpacks them); x = d * scale * q - dmin * min.
struct BlockQ4_K {
  std::uint16_t d;
  std::uint16_t dmin;
  std::uint8_t scales[kKScaleBytes];
  std::uint8_t qs[kQK / 2];  // per 64 elements: 32 bytes, low nibbles first 32, high the next
};
struct BlockQ5_K {
  std::uint16_t d;
  std::uint16_t dmin;
  std::uint8_t scales[kKScaleBytes];
  std::uint8_t
      qh[kQK / 8];  // bit 2i / 2i+1 of qh[l]: fifth bit of element l of sub-block 2i / 2i+1
  std::uint8_t qs[kQK / 2];
};
// 16 sub-blocks of 16, each with a 4-bit scale (low nibble of scales[j]) and a 4-bit min (high
// nibble); x = (d * scale) * q - dmin * min, q 2 bits: element e in byte 32 * (e / 128) + e % 32
// of `qs`, at bit 2 * (e % 128 / 32). d and dmin come last, unlike Q4_K's.
struct BlockQ2_K {
  std::uint8_t scales[kQK / 16];
  std::uint8_t qs[kQK / 4];
  std::uint16_t d;
  std::uint16_t dmin;
};
// 16 sub-blocks of 16 with 6-bit scales; x = d * (scale - 32) * (q - 4), q 3 bits: two in `qs`
// (element e in byte 32 * (e / 128) + e % 32, at bit 2 * (e % 128 / 32)), the third in `hmask`
// (byte e % 32, bit e / 32). Scale i: its low four bits in byte i (i < 8, low nibble) or i - 8
// (high nibble) of `scales`, its top two in byte 8 + i % 4 at bit 2 * (i / 4).
struct BlockQ3_K {
  std::uint8_t hmask[kQK / 8];
  std::uint8_t qs[kQK / 4];
  std::uint8_t scales[kKScaleBytes];
  std::uint16_t d;
};
// The two-bit field of element e (0..255) in the 64 `qs` bytes of a Q2_K or Q3_K block.
inline int k_two_bit_field(const std::uint8_t* qs, int e) {
  return (qs[32 * (e / 128) + e % 32] >> (2 * (e % 128 / 32))) & 3;
}
// 16 sub-blocks of 16 with signed 8-bit scales; x = d * scale * (q - 32), q 6 bits.
struct BlockQ6_K {
  std::uint8_t ql[kQK / 2];  // low 4 bits
  std::uint8_t qh[kQK / 4];  // high 2 bits
  std::int8_t scales[kQK / 16];
  std::uint16_t d;
};
// Activations for the K-quants: f32 scale and the sums of each 16 quants.
struct BlockQ8_K {
  float d;
  std::int8_t qs[kQK];
  std::int16_t bsums[kQK / 16];
};

static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ5_0) == 22 && sizeof(BlockQ5_1) == 24);
static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ8_1) == 36);
static_assert(sizeof(BlockQ2_K) == 84 && sizeof(BlockQ3_K) == 110);
static_assert(sizeof(BlockIQ4_NL) == 18 && sizeof(BlockIQ4_XS) == 136);
static_assert(sizeof(BlockIQ3_S) == 110 && sizeof(BlockIQ3_XXS) == 98);
static_assert(sizeof(BlockIQ1_S) == 50 && sizeof(BlockIQ1_M) == 56);
static_assert(sizeof(BlockIQ2_XXS) == 66 && sizeof(BlockIQ2_XS) == 74 && sizeof(BlockIQ2_S) == 82);
static_assert(sizeof(BlockQ4_K) == 144 && sizeof(BlockQ5_K) == 176);
static_assert(sizeof(BlockQ6_K) == 210 && sizeof(BlockQ8_K) == 292);

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K block, as ggml's
// get_scale_min_k4: sub-blocks 0-3 in the low 6 bits of bytes 0-3 / 4-7, sub-blocks 4-7 split
// into a low nibble in bytes 8-11 and the two spare top bits of bytes 0-3 / 4-7.
inline void q4k_scale_min(int j, const std::uint8_t* scales, std::uint8_t& scale,
                          std::uint8_t& min) {
  if (j < 4) {
    scale = scales[j] & 63;
    min = scales[j + 4] & 63;
  } else {
    scale = static_cast<std::uint8_t>((scales[j + 4] & 0xF) | ((scales[j - 4] >> 6) << 4));
    min = static_cast<std::uint8_t>((scales[j + 4] >> 4) | ((scales[j] >> 6) << 4));
  }
}

// Scale i (0..15) of a Q3_K block, signed (-32..31), as ggml's dequantize_row_q3_K unpacks it.
inline int q3k_scale(const std::uint8_t* scales, int i) {
  const int low = i < 8 ? scales[i] & 0xF : scales[i - 8] >> 4;
  const int high = (scales[8 + i % 4] >> (2 * (i / 4))) & 3;
  return (low | high << 4) - 32;
}

// The weight DType a ggml type is computed as (nullopt for types moed does not compute), and back.
std::optional<DType> dtype_of(GgmlType type);
GgmlType ggml_type_of(DType dtype);

// Bytes of a row of n elements; n must be a multiple of the type's block size.
std::uint64_t ggml_row_bytes(GgmlType type, std::uint64_t n);

// dst[0..n) = the n elements of the blocks at src (any alignment). Throws std::invalid_argument
// naming the type when moed does not handle it or n is not a multiple of its block size.
void dequantize_row(GgmlType type, const void* src, float* dst, std::int64_t n);

}  // namespace moed::kernels
