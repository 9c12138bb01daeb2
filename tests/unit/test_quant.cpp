// Dequantization of every ggml format moed reads, against blocks built byte by byte here with
// the expected values worked out by hand from ggml's layouts (ggml-common.h, ggml-quants.c).

#include <gtest/gtest.h>

#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "moed/kernels/quant.hpp"

using namespace moed::kernels;

namespace {

// fp16 bit patterns.
constexpr std::uint16_t kHalfOne = 0x3C00;
constexpr std::uint16_t kHalfHalf = 0x3800;
constexpr std::uint16_t kHalfQuarter = 0x3400;
constexpr std::uint16_t kHalfMinusOne = 0xBC00;

template <class Block>
std::vector<float> dequantize(GgmlType type, const Block& block, int n) {
  // One byte off any alignment: blocks in a file need not be aligned for their halves.
  std::vector<unsigned char> buffer(sizeof(Block) + 1);
  std::memcpy(buffer.data() + 1, &block, sizeof(Block));
  std::vector<float> out(static_cast<std::size_t>(n));
  dequantize_row(type, buffer.data() + 1, out.data(), n);
  return out;
}

void expect_values(const std::vector<float>& actual, const std::vector<float>& expected) {
  ASSERT_EQ(actual.size(), expected.size());
  for (std::size_t i = 0; i < expected.size(); ++i)
    EXPECT_EQ(actual[i], expected[i]) << "element " << i;
}

}  // namespace

TEST(Dequantize, Q4_0) {
  BlockQ4_0 block{};
  block.d = kHalfHalf;
  block.qs[0] = 0xF0;  // element 0: (0 - 8) * 0.5 = -4; element 16: (15 - 8) * 0.5 = 3.5
  block.qs[1] = 0x98;  // element 1: (8 - 8) * 0.5 = 0;   element 17: (9 - 8) * 0.5 = 0.5
  std::vector<float> expected(32, -4.0f);  // nibble 0: (0 - 8) * 0.5
  expected[0] = -4.0f;
  expected[16] = 3.5f;
  expected[1] = 0.0f;
  expected[17] = 0.5f;
  expect_values(dequantize(GgmlType::q4_0, block, 32), expected);
}

TEST(Dequantize, Q4_1) {
  BlockQ4_1 block{};
  block.d = kHalfHalf;
  block.m = kHalfOne;
  block.qs[0] = 0x2F;  // element 0: 15 * 0.5 + 1 = 8.5; element 16: 2 * 0.5 + 1 = 2
  std::vector<float> expected(32, 1.0f);  // nibble 0: 0 * 0.5 + 1
  expected[0] = 8.5f;
  expected[16] = 2.0f;
  expect_values(dequantize(GgmlType::q4_1, block, 32), expected);
}

namespace {

// qh = 0x80010001 (little-endian): fifth bits of elements 0, 16 and 31.
template <class Block>
void fill_q5(Block& block) {
  block.qh[0] = 0x01;
  block.qh[2] = 0x01;
  block.qh[3] = 0x80;
  block.qs[0] = 0x21;   // element 0: 1 | 16 = 17; element 16: 2 | 16 = 18
  block.qs[15] = 0xF0;  // element 15: 0;         element 31: 15 | 16 = 31
}

}  // namespace

TEST(Dequantize, Q5_0) {
  BlockQ5_0 block{};
  block.d = kHalfOne;
  fill_q5(block);
  std::vector<float> expected(32, -16.0f);  // q = 0: (0 - 16) * 1
  expected[0] = 1.0f;                       // 17 - 16
  expected[16] = 2.0f;                      // 18 - 16
  expected[15] = -16.0f;                    // 0 - 16
  expected[31] = 15.0f;                     // 31 - 16
  expect_values(dequantize(GgmlType::q5_0, block, 32), expected);
}

TEST(Dequantize, Q5_1) {
  BlockQ5_1 block{};
  block.d = kHalfHalf;
  block.m = kHalfMinusOne;
  fill_q5(block);
  std::vector<float> expected(32, -1.0f);  // q = 0: 0 * 0.5 - 1
  expected[0] = 7.5f;                      // 17 * 0.5 - 1
  expected[16] = 8.0f;                     // 18 * 0.5 - 1
  expected[31] = 14.5f;                    // 31 * 0.5 - 1
  expect_values(dequantize(GgmlType::q5_1, block, 32), expected);
}

TEST(Dequantize, Q8_0) {
  BlockQ8_0 block{};
  block.d = kHalfQuarter;
  block.qs[0] = -128;  // -128 * 0.25 = -32
  block.qs[1] = 127;   // 127 * 0.25 = 31.75
  block.qs[2] = 4;     // 4 * 0.25 = 1
  std::vector<float> expected(32, 0.0f);
  expected[0] = -32.0f;
  expected[1] = 31.75f;
  expected[2] = 1.0f;
  expect_values(dequantize(GgmlType::q8_0, block, 32), expected);
}

namespace {

// d = 1, dmin = 0.5 and the packed 6-bit scales/mins:
//   sub-block 0: scale = scales[0] & 63 = 2, min = scales[4] & 63 = 3
//   sub-block 1: scale = scales[1] & 63 = 1, min = scales[5] & 63 = 0
//   sub-block 4: scale = (scales[8] & 15) | (scales[0] >> 6) << 4 = 5 | 16 = 21
//                min   = (scales[8] >> 4) | (scales[4] >> 6) << 4 = 1 | 32 = 33
//   every other sub-block: scale 0, min 0
template <class Block>
void fill_k_scales(Block& block) {
  block.d = kHalfOne;
  block.dmin = kHalfHalf;
  block.scales[0] = 0x42;
  block.scales[1] = 0x01;
  block.scales[4] = 0x83;
  block.scales[8] = 0x15;
}

}  // namespace

TEST(Dequantize, Q4KScaleUnpacking) {
  BlockQ4_K block{};
  fill_k_scales(block);
  const int want_scale[8] = {2, 1, 0, 0, 21, 0, 0, 0};
  const int want_min[8] = {3, 0, 0, 0, 33, 0, 0, 0};
  for (int j = 0; j < 8; ++j) {
    std::uint8_t scale, min;
    q4k_scale_min(j, block.scales, scale, min);
    EXPECT_EQ(scale, want_scale[j]) << "sub-block " << j;
    EXPECT_EQ(min, want_min[j]) << "sub-block " << j;
  }
}

TEST(Dequantize, Q4_K) {
  BlockQ4_K block{};
  fill_k_scales(block);
  // Sub-blocks 0 / 1 are the low / high nibbles of qs[0..31], 4 / 5 those of qs[64..95].
  block.qs[0] = 0x7A;   // element 0: 1*2*10 - 0.5*3 = 18.5;  element 32: 1*1*7 - 0 = 7
  block.qs[31] = 0x0F;  // element 31: 1*2*15 - 1.5 = 28.5
  block.qs[64] = 0x03;  // element 128: 1*21*3 - 0.5*33 = 46.5
  std::vector<float> expected(256, 0.0f);
  for (int i = 0; i < 32; ++i) expected[i] = -1.5f;      // q = 0 in sub-block 0: -0.5*3
  for (int i = 128; i < 160; ++i) expected[i] = -16.5f;  // q = 0 in sub-block 4: -0.5*33
  expected[0] = 18.5f;
  expected[31] = 28.5f;
  expected[32] = 7.0f;
  expected[128] = 46.5f;
  expect_values(dequantize(GgmlType::q4_k, block, 256), expected);
}

TEST(Dequantize, Q5_K) {
  BlockQ5_K block{};
  fill_k_scales(block);
  // Bit s of qh[l] is the fifth bit of element l of sub-block s.
  block.qh[0] = 0x11;   // element 0 (sub-block 0) and element 128 (sub-block 4)
  block.qh[1] = 0x02;   // element 33 (sub-block 1, l = 1)
  block.qs[0] = 0x7A;   // element 0: 2*(10+16) - 1.5 = 50.5; element 32: 1*7 - 0 = 7
  block.qs[1] = 0x50;   // element 1: 2*0 - 1.5 = -1.5;       element 33: 1*(5+16) = 21
  block.qs[64] = 0x03;  // element 128: 21*(3+16) - 16.5 = 382.5
  std::vector<float> expected(256, 0.0f);
  for (int i = 0; i < 32; ++i) expected[i] = -1.5f;
  for (int i = 128; i < 160; ++i) expected[i] = -16.5f;
  expected[0] = 50.5f;
  expected[32] = 7.0f;
  expected[33] = 21.0f;
  expected[128] = 382.5f;
  expect_values(dequantize(GgmlType::q5_k, block, 256), expected);
}

TEST(Dequantize, Q6_K) {
  BlockQ6_K block{};
  block.d = kHalfHalf;
  // Element e of each 128-half uses scale (e / 16) of that half: 2, 1, -3, 1, ... ; 4, 1, ...
  for (auto& scale : block.scales) scale = 1;
  block.scales[0] = 2;
  block.scales[2] = -3;
  block.scales[8] = 4;
  // ql[l]: low nibble element l, high nibble l + 64; ql[l + 32]: elements l + 32 and l + 96;
  // qh[l] bits 0-1 / 2-3 / 4-5 / 6-7: high bits of elements l / l + 32 / l + 64 / l + 96.
  block.ql[0] = 0x5F;
  block.qh[0] = 0xC6;  // 3 << 6 | 0 << 4 | 1 << 2 | 2
  block.ql[64] = 0x01;
  block.qh[32] = 0x03;
  std::vector<float> expected(256);
  for (int e = 0; e < 256; ++e)  // q = 0 everywhere else: 0.5 * scale * (0 - 32)
    expected[e] = -16.0f * static_cast<float>(block.scales[e / 16]);
  expected[0] = 15.0f;               // q = 15 | 2 << 4 = 47: 0.5 * 2 * 15
  expected[32] = 24.0f;              // q = 0 | 1 << 4 = 16:  0.5 * -3 * -16
  expected[64] = -13.5f;             // q = 5 | 0 << 4 = 5:   0.5 * 1 * -27
  expected[96] = 8.0f;               // q = 0 | 3 << 4 = 48:  0.5 * 1 * 16
  expected[128] = 34.0f;             // q = 1 | 3 << 4 = 49:  0.5 * 4 * 17
  EXPECT_EQ(expected[1], -32.0f);    // 0.5 * 2 * -32
  EXPECT_EQ(expected[33], 48.0f);    // 0.5 * -3 * -32
  EXPECT_EQ(expected[129], -64.0f);  // 0.5 * 4 * -32
  expect_values(dequantize(GgmlType::q6_k, block, 256), expected);
}

TEST(Dequantize, Q2_K) {
  BlockQ2_K block{};
  block.d = kHalfHalf;
  block.dmin = kHalfOne;
  // Sub-block j's scale is the low nibble of scales[j], its min the high one:
  // x = 0.5 * scale * q - 1 * min.
  for (auto& scale_min : block.scales) scale_min = 0x10;  // scale 0, min 1: -1 everywhere
  block.scales[0] = 0x23;                                 // scale 3, min 2
  block.scales[2] = 0x04;                                 // scale 4, min 0
  block.scales[9] = 0x15;                                 // scale 5, min 1
  block.scales[15] = 0x3F;                                // scale 15, min 3
  // Element e: two bits in qs[32 * (e / 128) + e % 32] at 2 * (e % 128 / 32).
  block.qs[0] = 0x07;   // element 0: q = 3; element 32: q = 1
  block.qs[54] = 0x02;  // element 150 (half 1, l 22, quarter 0): q = 2
  block.qs[63] = 0x40;  // element 255 (half 1, l 31, quarter 3): q = 1
  std::vector<float> expected(256, -1.0f);
  for (int e = 0; e < 16; ++e) expected[e] = -2.0f;
  for (int e = 32; e < 48; ++e) expected[e] = 0.0f;
  for (int e = 240; e < 256; ++e) expected[e] = -3.0f;
  expected[0] = 2.5f;    // 0.5 * 3 * 3 - 2
  expected[32] = 2.0f;   // 0.5 * 4 * 1 - 0
  expected[150] = 4.0f;  // 0.5 * 5 * 2 - 1
  expected[255] = 4.5f;  // 0.5 * 15 * 1 - 3
  expect_values(dequantize(GgmlType::q2_k, block, 256), expected);
}

TEST(Dequantize, IQ4_XS) {
  BlockIQ4_XS block{};
  block.d = kHalfHalf;
  // Scale j: low four bits in nibble j % 2 of scales_l[j / 2], top two at bits 2j of scales_h;
  // each minus 32. Zero bytes: scale -32 and index 0 (-127) everywhere: 0.5 * -32 * -127.
  block.scales_l[0] = 0x05;          // scale 0: 5 | 2 << 4 = 37, so 5
  block.scales_h = 0x2 | 0x1 << 14;  // scale 0's top bits 2; scale 7's 1
  block.scales_l[3] = 0x30;          // scale 7: 3 | 1 << 4 = 19, so -13
  // Sub-block j's element 32j + l in the low nibble of qs[16j + l], 32j + 16 + l in the high.
  block.qs[0] = 0xF8;    // element 0: index 8 (1); element 16: index 15 (113)
  block.qs[127] = 0x7F;  // element 239: index 15 (113); element 255: index 7 (-10)
  std::vector<float> expected(256, 2032.0f);
  for (int e = 0; e < 32; ++e) expected[e] = -317.5f;    // 0.5 * 5 * -127
  for (int e = 224; e < 256; ++e) expected[e] = 825.5f;  // 0.5 * -13 * -127
  expected[0] = 2.5f;                                    // 0.5 * 5 * 1
  expected[16] = 282.5f;                                 // 0.5 * 5 * 113
  expected[239] = -734.5f;                               // 0.5 * -13 * 113
  expected[255] = 65.0f;                                 // 0.5 * -13 * -10
  expect_values(dequantize(GgmlType::iq4_xs, block, 256), expected);
  for (int j = 0; j < 8; ++j)
    EXPECT_EQ(iq4xs_scale(block.scales_h, block.scales_l, j), j == 0   ? 5
                                                              : j == 7 ? -13
                                                                       : -32)
        << "scale " << j;
}

TEST(Dequantize, Q3_K) {
  BlockQ3_K block{};
  block.d = kHalfHalf;
  // Scale i: low nibble in byte i (i < 8) or the high nibble of byte i - 8, top two bits in byte
  // 8 + i % 4 at bit 2 * (i / 4); each minus 32.
  block.scales[0] = 0x05;  // scale 0 low nibble 5 (scale 8's low nibble 0)
  block.scales[8] = 0x02;  // scale 0 top bits 2: 5 | 2 << 4 = 37, so 5
  block.scales[1] = 0x30;  // scale 9 low nibble 3 (scale 1's 0)
  block.scales[9] = 0x10;  // scale 9 top bits 1 (bits 4-5 of byte 9): 3 | 1 << 4 = 19, so -13
  // Element e: two bits in qs[32 * (e / 128) + e % 32] at 2 * (e % 128 / 32), the third in
  // hmask[e % 32] at bit e / 32; the value is q - 4.
  block.qs[0] = 0x07;      // element 0: bits 3; element 32: bits 1
  block.hmask[0] = 0x01;   // element 0's third bit: q = 7; element 32's clear: q = 1
  block.qs[54] = 0x02;     // element 150 (half 1, l 22, quarter 0): bits 2
  block.hmask[22] = 0x10;  // element 150's third bit (bit 150 / 32 = 4): q = 6
  block.qs[63] = 0x40;     // element 255 (half 1, l 31, quarter 3): bits 1, third bit clear: q = 1
  std::vector<float> expected(256);
  for (int e = 0; e < 256; ++e) expected[e] = 64.0f;    // q = 0: 0.5 * -32 * -4
  for (int e = 0; e < 16; ++e) expected[e] = -10.0f;    // scale 5: 0.5 * 5 * -4
  for (int e = 144; e < 160; ++e) expected[e] = 26.0f;  // scale -13: 0.5 * -13 * -4
  expected[0] = 7.5f;                                   // 0.5 * 5 * 3
  expected[32] = 48.0f;                                 // 0.5 * -32 * -3
  expected[150] = -13.0f;                               // 0.5 * -13 * 2
  expected[255] = 48.0f;                                // 0.5 * -32 * -3
  expect_values(dequantize(GgmlType::q3_k, block, 256), expected);
  for (int i = 0; i < 16; ++i)
    EXPECT_EQ(q3k_scale(block.scales, i), i == 0 ? 5 : i == 9 ? -13 : -32) << "scale " << i;
}

TEST(Dequantize, IQ4_NL) {
  BlockIQ4_NL block{};
  block.d = kHalfHalf;
  // Element j in the low nibble of qs[j], j + 16 in the high; each indexes ggml's codebook
  // {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113}.
  block.qs[0] = 0xF0;                       // element 0: index 0, -127; element 16: index 15, 113
  block.qs[15] = 0x78;                      // element 15: index 8, 1; element 31: index 7, -10
  std::vector<float> expected(32, -63.5f);  // index 0 everywhere else: 0.5 * -127
  expected[16] = 56.5f;
  expected[15] = 0.5f;
  expected[31] = -5.0f;
  expect_values(dequantize(GgmlType::iq4_nl, block, 32), expected);
}

TEST(Dequantize, IQ3_S) {
  BlockIQ3_S block{};
  block.d = kHalfHalf;
  // Zero bytes: grid entry 0 (magnitudes 1, 1, 1, 1), scale 0 (multiplier 1), positive: 0.5.
  // Elements 4i..4i + 3 take the grid entry qs[i] | (bit i % 8 of qh[i / 8]) << 8, one byte each,
  // the first in the lowest.
  block.qs[0] = 1;     // entry 1, 0x01010103: element 0 is 3
  block.qs[9] = 0xFF;  // with bit 1 of qh[1], entry 511, 0x0f0f0101: elements 38, 39 15
  block.qh[1] = 0x02;
  block.scales[0] = 0x20;  // sub-block 1's scale (high nibble) 2: multiplier 5
  block.scales[3] = 0xF0;  // sub-block 7's scale 15: multiplier 31
  block.signs[4] = 0x80;   // element 39 negative
  block.signs[31] = 0x01;  // element 248 negative
  std::vector<float> expected(256, 0.5f);
  for (int e = 32; e < 64; ++e) expected[e] = 2.5f;
  for (int e = 224; e < 256; ++e) expected[e] = 15.5f;
  expected[0] = 1.5f;
  expected[38] = 37.5f;  // 0.5 * 5 * 15
  expected[39] = -37.5f;
  expected[248] = -15.5f;
  expect_values(dequantize(GgmlType::iq3_s, block, 256), expected);
  for (int j = 0; j < 8; ++j)
    EXPECT_EQ(iq3s_scale(block, j), j == 1 ? 5 : j == 7 ? 31 : 1) << "scale " << j;
}

TEST(Dequantize, IQ3_XXS) {
  BlockIQ3_XXS block{};
  block.d = kHalfHalf;
  // Zero bytes: grid entry 0 (magnitudes 4, 4, 4, 4), scale 0 (0.5 * (0.5 + 0) * d = 0.125),
  // positive: 0.5. Elements 4i..4i + 3 take the grid entry qs[i], one byte each, the first in the
  // lowest; sub-block j's word at scales_and_signs[4j] holds the signs of its elements 8l..8l + 7
  // in bits 7l..7l + 6 (the eighth their parity) and its scale in bits 28..31.
  block.qs[0] = 5;                    // entry 5, 0x04040c3e: elements 0, 1 are 62, 12
  block.qs[60] = 0xFF;                // entry 255, 0x3e341c04: elements 240..243 4, 28, 52, 62
  block.scales_and_signs[0] = 0x01;   // element 0 negative, and so element 7 (parity)
  block.scales_and_signs[31] = 0xF0;  // sub-block 7's scale 15: 0.5 * 15.5 * 0.5 = 3.875
  block.scales_and_signs[28] = 0x80;  // sub-block 7, bits 7 and 8: elements 232 and 233
  block.scales_and_signs[29] = 0x01;  // negative, an even count (element 239 positive)
  std::vector<float> expected(256, 0.5f);
  for (int e = 224; e < 256; ++e) expected[e] = 15.5f;
  expected[0] = -7.75f;
  expected[1] = 1.5f;
  expected[7] = -0.5f;
  expected[232] = expected[233] = -15.5f;
  expected[241] = 108.5f;  // 3.875 * 28
  expected[242] = 201.5f;
  expected[243] = 240.25f;
  expect_values(dequantize(GgmlType::iq3_xxs, block, 256), expected);
  for (int j = 0; j < 8; ++j) EXPECT_EQ(iq3xxs_scale(block, j), j == 7 ? 15 : 0) << "scale " << j;
}

TEST(Dequantize, IQ1_S) {
  BlockIQ1_S block{};
  block.d = kHalfHalf;
  // Zero bytes: grid entry 0 (eight -1), scale 0 (d * 1), delta +1/8: 0.5 * -0.875. Group g of
  // eight takes entry qs[g] | (bits 3(g % 4).. of qh[g / 4]) << 8, one signed byte an element.
  block.qs[0] = 1;  // entry 1, 0xffffffffffffff01: element 0 is 1
  // Sub-block 7: scale 5 (d * 11 = 5.5), delta -1/8, group 29's index 256
  // (0xff00ff01000100ff: -1, 0, 1, 0, 1, -1, 0, -1).
  block.qh[7] = 0xD008;
  std::vector<float> expected(256, -0.4375f);
  expected[0] = 0.5625f;
  for (int e = 224; e < 256; ++e) expected[e] = -6.1875f;  // 5.5 * -1.125
  const float group[8] = {-6.1875f, -0.6875f, 4.8125f,  -0.6875f,
                          4.8125f,  -6.1875f, -0.6875f, -6.1875f};
  for (int l = 0; l < 8; ++l) expected[232 + l] = group[l];
  expect_values(dequantize(GgmlType::iq1_s, block, 256), expected);
  for (int j = 0; j < 8; ++j) EXPECT_EQ(iq1s_scale(block, j), j == 7 ? 11 : 1) << "scale " << j;
}

TEST(Dequantize, IQ1_M) {
  BlockIQ1_M block{};
  // d = 0.5 (half 0x3800) in the top nibbles of the four scale words, nibble w in word w.
  block.scales[5] = 0x80;
  block.scales[7] = 0x30;
  block.scales[7] |= 0x06;  // group of 16 number 15 (word 3, bits 9..11): scale 3, d * 7 = 3.5
  EXPECT_EQ(iq1m_d(block), 0x3800);
  block.qs[0] = 1;      // entry 1: element 0 is 1
  block.qh[15] = 0x90;  // group of eight 31: index bits 1 (256), delta -1/8
  std::vector<float> expected(256, -0.4375f);
  expected[0] = 0.5625f;
  for (int e = 240; e < 248; ++e) expected[e] = -3.0625f;  // 3.5 * -0.875
  const float group[8] = {-3.9375f, -0.4375f, 3.0625f,  -0.4375f,
                          3.0625f,  -3.9375f, -0.4375f, -3.9375f};
  for (int l = 0; l < 8; ++l) expected[248 + l] = group[l];
  expect_values(dequantize(GgmlType::iq1_m, block, 256), expected);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(iq1m_scale(block, i), i == 15 ? 7 : 1) << "scale " << i;
}

template <class Block>
const std::uint8_t* bytes_of(const Block& block) {
  return reinterpret_cast<const std::uint8_t*>(&block);
}

// Zero bytes in every IQ2 format: grid entry 0 (eight 8), scale 0 (d * 0.5 * 0.25), no sign:
// 0.5 * 0.125 * 8 = 0.5. Entry 1 is 43 and seven 8, entry 2 25, 25 and six 8.
TEST(Dequantize, IQ2_XXS) {
  BlockIQ2_XXS block{};
  block.d = kHalfHalf;
  block.qs[0] = 1;      // sub-block 0, group 0: entry 1
  block.qs[4] = 0x80;   // sub-block 0, group 1's signs: 0x81 (elements 8 and 15)
  block.qs[57] = 2;     // sub-block 7, group 1: entry 2 (elements 232, 233)
  block.qs[60] = 0x01;  // sub-block 7, group 0's signs: 0x81 (element 224, and 231 for parity)
  block.qs[63] = 0xF0;  // sub-block 7's scale 15: 0.5 * 15.5 * 0.25 = 1.9375
  std::vector<float> expected(256, 0.5f);
  expected[0] = 2.6875f;
  expected[8] = expected[15] = -0.5f;
  for (int e = 224; e < 256; ++e) expected[e] = 15.5f;
  expected[224] = expected[231] = -15.5f;
  expected[232] = expected[233] = 48.4375f;
  expect_values(dequantize(GgmlType::iq2_xxs, block, 256), expected);
  for (int h = 0; h < 16; ++h)
    EXPECT_EQ(iq2_scale<GgmlType::iq2_xxs>(bytes_of(block), h), h >= 14 ? 15 : 0) << "scale " << h;
}

TEST(Dequantize, IQ2_XS) {
  BlockIQ2_XS block{};
  block.d = kHalfHalf;
  block.qs[0] = 1 | 1 << 9;  // entry 1, signs 0x81: elements 0 and 7 negative
  block.qs[1] = 3 << 9;      // signs 0x03: elements 8 and 9
  block.qs[31] = 2;          // group 31: entry 2 (elements 248, 249)
  block.scales[7] = 0xF3;    // elements 224..239: scale 3 (0.4375), 240..255: 15 (1.9375)
  std::vector<float> expected(256, 0.5f);
  expected[0] = -2.6875f;
  expected[7] = expected[8] = expected[9] = -0.5f;
  for (int e = 224; e < 240; ++e) expected[e] = 3.5f;
  for (int e = 240; e < 256; ++e) expected[e] = 15.5f;
  expected[248] = expected[249] = 48.4375f;
  expect_values(dequantize(GgmlType::iq2_xs, block, 256), expected);
  for (int h = 0; h < 16; ++h)
    EXPECT_EQ(iq2_scale<GgmlType::iq2_xs>(bytes_of(block), h), h == 14   ? 3
                                                               : h == 15 ? 15
                                                                         : 0)
        << "scale " << h;
}

TEST(Dequantize, IQ2_S) {
  BlockIQ2_S block{};
  block.d = kHalfHalf;
  block.qs[0] = 1;         // with qh bits 0..1 (01), entry 257
  block.qh[0] = 0x09;      // and group 1's bits 2..3 (10): entry 512
  block.signs[0] = 0x02;   // element 1 negative, with no parity rule
  block.signs[1] = 0x80;   // and element 15
  block.qs[31] = 0xFF;     // group 31 (sub-block 7, group 3): with qh bits 6..7, entry 1023
  block.qh[7] = 0xC0;      // (eight 43)
  block.scales[7] = 0x50;  // elements 240..255: scale 5, 0.5 * 5.5 * 0.25 = 0.6875
  std::vector<float> expected(256, 0.5f);
  for (int e = 0; e < 8; ++e) {  // d * 0.5 * 0.25 = 1/16 times the entries' magnitudes
    expected[e] = 0.0625f * static_cast<float>((kIq2sGrid[257] >> (8 * e)) & 0xFF);
    expected[8 + e] = 0.0625f * static_cast<float>((kIq2sGrid[512] >> (8 * e)) & 0xFF);
  }
  expected[1] = -expected[1];
  expected[15] = -expected[15];
  for (int e = 240; e < 248; ++e) expected[e] = 5.5f;
  for (int e = 248; e < 256; ++e) expected[e] = 29.5625f;
  expect_values(dequantize(GgmlType::iq2_s, block, 256), expected);
}

TEST(Dequantize, FloatFormats) {
  const float f32[2] = {1.25f, -3.0f};
  std::vector<float> out(2);
  dequantize_row(GgmlType::f32, f32, out.data(), 2);
  expect_values(out, {1.25f, -3.0f});
  const std::uint16_t f16[2] = {0x3E00, 0xC200};  // 1.5, -3
  dequantize_row(GgmlType::f16, f16, out.data(), 2);
  expect_values(out, {1.5f, -3.0f});
  const std::uint16_t bf16[2] = {0x3FC0, 0xC040};  // 1.5, -3
  dequantize_row(GgmlType::bf16, bf16, out.data(), 2);
  expect_values(out, {1.5f, -3.0f});
}

TEST(Dequantize, RowsOfSeveralBlocks) {
  BlockQ8_0 blocks[2]{};
  blocks[0].d = kHalfOne;
  blocks[1].d = kHalfHalf;
  blocks[0].qs[31] = 3;  // element 31: 3
  blocks[1].qs[0] = 3;   // element 32: 1.5
  std::vector<float> out(64);
  dequantize_row(GgmlType::q8_0, blocks, out.data(), 64);
  EXPECT_EQ(out[31], 3.0f);
  EXPECT_EQ(out[32], 1.5f);
  EXPECT_EQ(ggml_row_bytes(GgmlType::q8_0, 64), 68u);
  EXPECT_EQ(ggml_row_bytes(GgmlType::q4_k, 512), 288u);
}

TEST(Dequantize, RefusesOtherTypesByName) {
  std::vector<float> out(256);
  std::vector<unsigned char> bytes(1024);
  try {
    dequantize_row(GgmlType::tq2_0, bytes.data(), out.data(), 256);
    ADD_FAILURE() << "tq2_0 was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(
                  "tq2_0 (id 35) is not supported; moed reads f32, f16, q4_0, q4_1, q5_0, q5_1, "
                  "q8_0, q2_K, q3_K, q4_K, q5_K, q6_K, iq2_xxs, iq2_xs, iq3_xxs, iq1_s, iq4_nl, "
                  "iq3_s, iq2_s, iq4_xs, iq1_m, bf16"),
              std::string::npos)
        << e.what();
  }
  try {
    dequantize_row(GgmlType::q4_k, bytes.data(), out.data(), 128);
    ADD_FAILURE() << "a partial q4_K block was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("q4_K blocks of 256"), std::string::npos) << e.what();
  }
}

TEST(GgmlTypes, TraitsMatchGgml) {
  EXPECT_FALSE(ggml_type_traits(4u).has_value());  // removed Q4_2
  EXPECT_FALSE(ggml_type_traits(40u).has_value());
  const auto q6 = ggml_type_traits(14u);
  ASSERT_TRUE(q6.has_value());
  EXPECT_EQ(q6->name, "q6_K");
  EXPECT_EQ(q6->block_size, 256u);
  EXPECT_EQ(q6->type_size, 210u);
  EXPECT_EQ(ggml_type_traits(GgmlType::q5_1).type_size, sizeof(BlockQ5_1));
  EXPECT_TRUE(ggml_type_supported(GgmlType::bf16));
  EXPECT_TRUE(ggml_type_supported(GgmlType::iq4_xs));
  EXPECT_TRUE(ggml_type_supported(GgmlType::iq2_xxs));
  EXPECT_FALSE(ggml_type_supported(GgmlType::tq2_0));
}
