#include "moed/kernels/quant.hpp"

#include <array>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

#include "moed/kernels/dtype.hpp"

namespace moed::kernels {

const std::uint32_t kIq3sGrid[512] = {
    0x01010101, 0x01010103, 0x01010105, 0x0101010b, 0x0101010f, 0x01010301, 0x01010303, 0x01010305,
    0x01010309, 0x0101030d, 0x01010501, 0x01010503, 0x0101050b, 0x01010707, 0x01010901, 0x01010905,
    0x0101090b, 0x0101090f, 0x01010b03, 0x01010b07, 0x01010d01, 0x01010d05, 0x01010f03, 0x01010f09,
    0x01010f0f, 0x01030101, 0x01030103, 0x01030105, 0x01030109, 0x01030301, 0x01030303, 0x0103030b,
    0x01030501, 0x01030507, 0x0103050f, 0x01030703, 0x0103070b, 0x01030909, 0x01030d03, 0x01030d0b,
    0x01030f05, 0x01050101, 0x01050103, 0x0105010b, 0x0105010f, 0x01050301, 0x01050307, 0x0105030d,
    0x01050503, 0x0105050b, 0x01050701, 0x01050709, 0x01050905, 0x0105090b, 0x0105090f, 0x01050b03,
    0x01050b07, 0x01050f01, 0x01050f07, 0x01070107, 0x01070303, 0x0107030b, 0x01070501, 0x01070505,
    0x01070703, 0x01070707, 0x0107070d, 0x01070909, 0x01070b01, 0x01070b05, 0x01070d0f, 0x01070f03,
    0x01070f0b, 0x01090101, 0x01090307, 0x0109030f, 0x01090503, 0x01090509, 0x01090705, 0x01090901,
    0x01090907, 0x01090b03, 0x01090f01, 0x010b0105, 0x010b0109, 0x010b0501, 0x010b0505, 0x010b050d,
    0x010b0707, 0x010b0903, 0x010b090b, 0x010b090f, 0x010b0d0d, 0x010b0f07, 0x010d010d, 0x010d0303,
    0x010d0307, 0x010d0703, 0x010d0b05, 0x010d0f03, 0x010f0101, 0x010f0105, 0x010f0109, 0x010f0501,
    0x010f0505, 0x010f050d, 0x010f0707, 0x010f0b01, 0x010f0b09, 0x03010101, 0x03010103, 0x03010105,
    0x03010109, 0x03010301, 0x03010303, 0x03010307, 0x0301030b, 0x0301030f, 0x03010501, 0x03010505,
    0x03010703, 0x03010709, 0x0301070d, 0x03010b09, 0x03010b0d, 0x03010d03, 0x03010f05, 0x03030101,
    0x03030103, 0x03030107, 0x0303010d, 0x03030301, 0x03030309, 0x03030503, 0x03030701, 0x03030707,
    0x03030903, 0x03030b01, 0x03030b05, 0x03030f01, 0x03030f0d, 0x03050101, 0x03050305, 0x0305030b,
    0x0305030f, 0x03050501, 0x03050509, 0x03050705, 0x03050901, 0x03050907, 0x03050b0b, 0x03050d01,
    0x03050f05, 0x03070103, 0x03070109, 0x0307010f, 0x03070301, 0x03070307, 0x03070503, 0x0307050f,
    0x03070701, 0x03070709, 0x03070903, 0x03070d05, 0x03070f01, 0x03090107, 0x0309010b, 0x03090305,
    0x03090309, 0x03090703, 0x03090707, 0x03090905, 0x0309090d, 0x03090b01, 0x03090b09, 0x030b0103,
    0x030b0301, 0x030b0307, 0x030b0503, 0x030b0701, 0x030b0705, 0x030b0b03, 0x030d0501, 0x030d0509,
    0x030d050f, 0x030d0909, 0x030d090d, 0x030f0103, 0x030f0107, 0x030f0301, 0x030f0305, 0x030f0503,
    0x030f070b, 0x030f0903, 0x030f0d05, 0x030f0f01, 0x05010101, 0x05010103, 0x05010107, 0x0501010b,
    0x0501010f, 0x05010301, 0x05010305, 0x05010309, 0x0501030d, 0x05010503, 0x05010507, 0x0501050f,
    0x05010701, 0x05010705, 0x05010903, 0x05010907, 0x0501090b, 0x05010b01, 0x05010b05, 0x05010d0f,
    0x05010f01, 0x05010f07, 0x05010f0b, 0x05030101, 0x05030105, 0x05030301, 0x05030307, 0x0503030f,
    0x05030505, 0x0503050b, 0x05030703, 0x05030709, 0x05030905, 0x05030b03, 0x05050103, 0x05050109,
    0x0505010f, 0x05050503, 0x05050507, 0x05050701, 0x0505070f, 0x05050903, 0x05050b07, 0x05050b0f,
    0x05050f03, 0x05050f09, 0x05070101, 0x05070105, 0x0507010b, 0x05070303, 0x05070505, 0x05070509,
    0x05070703, 0x05070707, 0x05070905, 0x05070b01, 0x05070d0d, 0x05090103, 0x0509010f, 0x05090501,
    0x05090507, 0x05090705, 0x0509070b, 0x05090903, 0x05090f05, 0x05090f0b, 0x050b0109, 0x050b0303,
    0x050b0505, 0x050b070f, 0x050b0901, 0x050b0b07, 0x050b0f01, 0x050d0101, 0x050d0105, 0x050d010f,
    0x050d0503, 0x050d0b0b, 0x050d0d03, 0x050f010b, 0x050f0303, 0x050f050d, 0x050f0701, 0x050f0907,
    0x050f0b01, 0x07010105, 0x07010303, 0x07010307, 0x0701030b, 0x0701030f, 0x07010505, 0x07010703,
    0x07010707, 0x0701070b, 0x07010905, 0x07010909, 0x0701090f, 0x07010b03, 0x07010d07, 0x07010f03,
    0x07030103, 0x07030107, 0x0703010b, 0x07030309, 0x07030503, 0x07030507, 0x07030901, 0x07030d01,
    0x07030f05, 0x07030f0d, 0x07050101, 0x07050305, 0x07050501, 0x07050705, 0x07050709, 0x07050b01,
    0x07070103, 0x07070301, 0x07070309, 0x07070503, 0x07070507, 0x0707050f, 0x07070701, 0x07070903,
    0x07070907, 0x0707090f, 0x07070b0b, 0x07070f07, 0x07090107, 0x07090303, 0x0709030d, 0x07090505,
    0x07090703, 0x07090b05, 0x07090d01, 0x07090d09, 0x070b0103, 0x070b0301, 0x070b0305, 0x070b050b,
    0x070b0705, 0x070b0909, 0x070b0b0d, 0x070b0f07, 0x070d030d, 0x070d0903, 0x070f0103, 0x070f0107,
    0x070f0501, 0x070f0505, 0x070f070b, 0x09010101, 0x09010109, 0x09010305, 0x09010501, 0x09010509,
    0x0901050f, 0x09010705, 0x09010903, 0x09010b01, 0x09010f01, 0x09030105, 0x0903010f, 0x09030303,
    0x09030307, 0x09030505, 0x09030701, 0x0903070b, 0x09030907, 0x09030b03, 0x09030b0b, 0x09050103,
    0x09050107, 0x09050301, 0x0905030b, 0x09050503, 0x09050707, 0x09050901, 0x09050b0f, 0x09050d05,
    0x09050f01, 0x09070109, 0x09070303, 0x09070307, 0x09070501, 0x09070505, 0x09070703, 0x0907070b,
    0x09090101, 0x09090105, 0x09090509, 0x0909070f, 0x09090901, 0x09090f03, 0x090b010b, 0x090b010f,
    0x090b0503, 0x090b0d05, 0x090d0307, 0x090d0709, 0x090d0d01, 0x090f0301, 0x090f030b, 0x090f0701,
    0x090f0907, 0x090f0b03, 0x0b010105, 0x0b010301, 0x0b010309, 0x0b010505, 0x0b010901, 0x0b010909,
    0x0b01090f, 0x0b010b05, 0x0b010d0d, 0x0b010f09, 0x0b030103, 0x0b030107, 0x0b03010b, 0x0b030305,
    0x0b030503, 0x0b030705, 0x0b030f05, 0x0b050101, 0x0b050303, 0x0b050507, 0x0b050701, 0x0b05070d,
    0x0b050b07, 0x0b070105, 0x0b07010f, 0x0b070301, 0x0b07050f, 0x0b070909, 0x0b070b03, 0x0b070d0b,
    0x0b070f07, 0x0b090103, 0x0b090109, 0x0b090501, 0x0b090705, 0x0b09090d, 0x0b0b0305, 0x0b0b050d,
    0x0b0b0b03, 0x0b0b0b07, 0x0b0d0905, 0x0b0f0105, 0x0b0f0109, 0x0b0f0505, 0x0d010303, 0x0d010307,
    0x0d01030b, 0x0d010703, 0x0d010707, 0x0d010d01, 0x0d030101, 0x0d030501, 0x0d03050f, 0x0d030d09,
    0x0d050305, 0x0d050709, 0x0d050905, 0x0d050b0b, 0x0d050d05, 0x0d050f01, 0x0d070101, 0x0d070309,
    0x0d070503, 0x0d070901, 0x0d09050b, 0x0d090907, 0x0d090d05, 0x0d0b0101, 0x0d0b0107, 0x0d0b0709,
    0x0d0b0d01, 0x0d0d010b, 0x0d0d0901, 0x0d0f0303, 0x0d0f0307, 0x0f010101, 0x0f010109, 0x0f01010f,
    0x0f010501, 0x0f010505, 0x0f01070d, 0x0f010901, 0x0f010b09, 0x0f010d05, 0x0f030105, 0x0f030303,
    0x0f030509, 0x0f030907, 0x0f03090b, 0x0f050103, 0x0f050109, 0x0f050301, 0x0f05030d, 0x0f050503,
    0x0f050701, 0x0f050b03, 0x0f070105, 0x0f070705, 0x0f07070b, 0x0f070b07, 0x0f090103, 0x0f09010b,
    0x0f090307, 0x0f090501, 0x0f090b01, 0x0f0b0505, 0x0f0b0905, 0x0f0d0105, 0x0f0d0703, 0x0f0f0101,
};

const std::uint32_t kIq3xxsGrid[256] = {
    0x04040404, 0x04040414, 0x04040424, 0x04040c0c, 0x04040c1c, 0x04040c3e, 0x04041404, 0x04041414,
    0x04041c0c, 0x04042414, 0x04043e1c, 0x04043e2c, 0x040c040c, 0x040c041c, 0x040c0c04, 0x040c0c14,
    0x040c140c, 0x040c142c, 0x040c1c04, 0x040c1c14, 0x040c240c, 0x040c2c24, 0x040c3e04, 0x04140404,
    0x04140414, 0x04140424, 0x04140c0c, 0x04141404, 0x04141414, 0x04141c0c, 0x04141c1c, 0x04141c3e,
    0x04142c0c, 0x04142c3e, 0x04143e2c, 0x041c040c, 0x041c043e, 0x041c0c04, 0x041c0c14, 0x041c142c,
    0x041c3e04, 0x04240c1c, 0x04241c3e, 0x04242424, 0x04242c3e, 0x04243e1c, 0x04243e2c, 0x042c040c,
    0x042c043e, 0x042c1c14, 0x042c2c14, 0x04341c2c, 0x04343424, 0x043e0c04, 0x043e0c24, 0x043e0c34,
    0x043e241c, 0x043e340c, 0x0c04040c, 0x0c04041c, 0x0c040c04, 0x0c040c14, 0x0c04140c, 0x0c04141c,
    0x0c041c04, 0x0c041c14, 0x0c041c24, 0x0c04243e, 0x0c042c04, 0x0c0c0404, 0x0c0c0414, 0x0c0c0c0c,
    0x0c0c1404, 0x0c0c1414, 0x0c14040c, 0x0c14041c, 0x0c140c04, 0x0c140c14, 0x0c14140c, 0x0c141c04,
    0x0c143e14, 0x0c1c0404, 0x0c1c0414, 0x0c1c1404, 0x0c1c1c0c, 0x0c1c2434, 0x0c1c3434, 0x0c24040c,
    0x0c24042c, 0x0c242c04, 0x0c2c1404, 0x0c2c1424, 0x0c2c2434, 0x0c2c3e0c, 0x0c34042c, 0x0c3e1414,
    0x0c3e2404, 0x14040404, 0x14040414, 0x14040c0c, 0x14040c1c, 0x14041404, 0x14041414, 0x14041434,
    0x14041c0c, 0x14042414, 0x140c040c, 0x140c041c, 0x140c042c, 0x140c0c04, 0x140c0c14, 0x140c140c,
    0x140c1c04, 0x140c341c, 0x140c343e, 0x140c3e04, 0x14140404, 0x14140414, 0x14140c0c, 0x14140c3e,
    0x14141404, 0x14141414, 0x14141c3e, 0x14142404, 0x14142c2c, 0x141c040c, 0x141c0c04, 0x141c0c24,
    0x141c3e04, 0x141c3e24, 0x14241c2c, 0x14242c1c, 0x142c041c, 0x142c143e, 0x142c240c, 0x142c3e24,
    0x143e040c, 0x143e041c, 0x143e0c34, 0x143e242c, 0x1c04040c, 0x1c040c04, 0x1c040c14, 0x1c04140c,
    0x1c04141c, 0x1c042c04, 0x1c04342c, 0x1c043e14, 0x1c0c0404, 0x1c0c0414, 0x1c0c1404, 0x1c0c1c0c,
    0x1c0c2424, 0x1c0c2434, 0x1c14040c, 0x1c14041c, 0x1c140c04, 0x1c14142c, 0x1c142c14, 0x1c143e14,
    0x1c1c0c0c, 0x1c1c1c1c, 0x1c241c04, 0x1c24243e, 0x1c243e14, 0x1c2c0404, 0x1c2c0434, 0x1c2c1414,
    0x1c2c2c2c, 0x1c340c24, 0x1c341c34, 0x1c34341c, 0x1c3e1c1c, 0x1c3e3404, 0x24040424, 0x24040c3e,
    0x24041c2c, 0x24041c3e, 0x24042c1c, 0x24042c3e, 0x240c3e24, 0x24141404, 0x24141c3e, 0x24142404,
    0x24143404, 0x24143434, 0x241c043e, 0x241c242c, 0x24240424, 0x24242c0c, 0x24243424, 0x242c142c,
    0x242c241c, 0x242c3e04, 0x243e042c, 0x243e0c04, 0x243e0c14, 0x243e1c04, 0x2c040c14, 0x2c04240c,
    0x2c043e04, 0x2c0c0404, 0x2c0c0434, 0x2c0c1434, 0x2c0c2c2c, 0x2c140c24, 0x2c141c14, 0x2c143e14,
    0x2c1c0414, 0x2c1c2c1c, 0x2c240c04, 0x2c24141c, 0x2c24143e, 0x2c243e14, 0x2c2c0414, 0x2c2c1c0c,
    0x2c342c04, 0x2c3e1424, 0x2c3e2414, 0x34041424, 0x34042424, 0x34042434, 0x34043424, 0x340c140c,
    0x340c340c, 0x34140c3e, 0x34143424, 0x341c1c04, 0x341c1c34, 0x34242424, 0x342c042c, 0x342c2c14,
    0x34341c1c, 0x343e041c, 0x343e140c, 0x3e04041c, 0x3e04042c, 0x3e04043e, 0x3e040c04, 0x3e041c14,
    0x3e042c14, 0x3e0c1434, 0x3e0c2404, 0x3e140c14, 0x3e14242c, 0x3e142c14, 0x3e1c0404, 0x3e1c0c2c,
    0x3e1c1c1c, 0x3e1c3404, 0x3e24140c, 0x3e24240c, 0x3e2c0404, 0x3e2c0414, 0x3e2c1424, 0x3e341c04,
};

namespace {

struct TypeEntry {
  std::uint32_t id;
  GgmlTypeTraits traits;
};

// ggml.c's type_traits (block sizes and type sizes) for every type ggml still defines.
constexpr std::array kTypes{
    TypeEntry{0, {"f32", 1, 4}},         TypeEntry{1, {"f16", 1, 2}},
    TypeEntry{2, {"q4_0", 32, 18}},      TypeEntry{3, {"q4_1", 32, 20}},
    TypeEntry{6, {"q5_0", 32, 22}},      TypeEntry{7, {"q5_1", 32, 24}},
    TypeEntry{8, {"q8_0", 32, 34}},      TypeEntry{9, {"q8_1", 32, 36}},
    TypeEntry{10, {"q2_K", 256, 84}},    TypeEntry{11, {"q3_K", 256, 110}},
    TypeEntry{12, {"q4_K", 256, 144}},   TypeEntry{13, {"q5_K", 256, 176}},
    TypeEntry{14, {"q6_K", 256, 210}},   TypeEntry{15, {"q8_K", 256, 292}},
    TypeEntry{16, {"iq2_xxs", 256, 66}}, TypeEntry{17, {"iq2_xs", 256, 74}},
    TypeEntry{18, {"iq3_xxs", 256, 98}}, TypeEntry{19, {"iq1_s", 256, 50}},
    TypeEntry{20, {"iq4_nl", 32, 18}},   TypeEntry{21, {"iq3_s", 256, 110}},
    TypeEntry{22, {"iq2_s", 256, 82}},   TypeEntry{23, {"iq4_xs", 256, 136}},
    TypeEntry{24, {"i8", 1, 1}},         TypeEntry{25, {"i16", 1, 2}},
    TypeEntry{26, {"i32", 1, 4}},        TypeEntry{27, {"i64", 1, 8}},
    TypeEntry{28, {"f64", 1, 8}},        TypeEntry{29, {"iq1_m", 256, 56}},
    TypeEntry{30, {"bf16", 1, 2}},       TypeEntry{34, {"tq1_0", 256, 54}},
    TypeEntry{35, {"tq2_0", 256, 66}},   TypeEntry{39, {"mxfp4", 32, 17}},
};

const TypeEntry* find_entry(std::uint32_t id) {
  for (const auto& entry : kTypes)
    if (entry.id == id) return &entry;
  return nullptr;
}

// Blocks in a mapped file need not be aligned for their halves: copy each one out.
template <class Block>
Block load_block(const std::byte* src, std::int64_t index) {
  Block block;
  std::memcpy(&block, src + index * static_cast<std::int64_t>(sizeof(Block)), sizeof(Block));
  return block;
}

void dequantize_q4_0(const std::byte* src, float* dst, std::int64_t blocks) {
  for (std::int64_t b = 0; b < blocks; ++b, dst += kQ32) {
    const auto block = load_block<BlockQ4_0>(src, b);
    const float d = f16_to_f32(block.d);
    for (int j = 0; j < kQ32 / 2; ++j) {
      dst[j] = static_cast<float>((block.qs[j] & 0xF) - 8) * d;
      dst[j + kQ32 / 2] = static_cast<float>((block.qs[j] >> 4) - 8) * d;
    }
  }
}

void dequantize_q4_1(const std::byte* src, float* dst, std::int64_t blocks) {
  for (std::int64_t b = 0; b < blocks; ++b, dst += kQ32) {
    const auto block = load_block<BlockQ4_1>(src, b);
    const float d = f16_to_f32(block.d);
    const float m = f16_to_f32(block.m);
    for (int j = 0; j < kQ32 / 2; ++j) {
      dst[j] = static_cast<float>(block.qs[j] & 0xF) * d + m;
      dst[j + kQ32 / 2] = static_cast<float>(block.qs[j] >> 4) * d + m;
    }
  }
}

// The 5-bit quants of a Q5_0 / Q5_1 block, unsigned (0..31).
template <class Block>
void unpack_q5(const Block& block, int (&q)[kQ32]) {
  std::uint32_t qh;
  std::memcpy(&qh, block.qh, sizeof qh);
  for (int j = 0; j < kQ32 / 2; ++j) {
    q[j] = (block.qs[j] & 0xF) | static_cast<int>(((qh >> j) & 1u) << 4);
    q[j + kQ32 / 2] = (block.qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
  }
}

void dequantize_q5_0(const std::byte* src, float* dst, std::int64_t blocks) {
  for (std::int64_t b = 0; b < blocks; ++b, dst += kQ32) {
    const auto block = load_block<BlockQ5_0>(src, b);
    const float d = f16_to_f32(block.d);
    int q[kQ32];
    unpack_q5(block, q);
    for (int j = 0; j < kQ32; ++j) dst[j] = static_cast<float>(q[j] - 16) * d;
  }
}

void dequantize_q5_1(const std::byte* src, float* dst, std::int64_t blocks) {
  for (std::int64_t b = 0; b < blocks; ++b, dst += kQ32) {
    const auto block = load_block<BlockQ5_1>(src, b);
    const float d = f16_to_f32(block.d);
    const float m = f16_to_f32(block.m);
    int q[kQ32];
    unpack_q5(block, q);
    for (int j = 0; j < kQ32; ++j) dst[j] = static_cast<float>(q[j]) * d + m;
  }
}

void dequantize_q8_0(const std::byte* src, float* dst, std::int64_t blocks) {
  for (std::int64_t b = 0; b < blocks; ++b, dst += kQ32) {
    const auto block = load_block<BlockQ8_0>(src, b);
    const float d = f16_to_f32(block.d);
    for (int j = 0; j < kQ32; ++j) dst[j] = static_cast<float>(block.qs[j]) * d;
  }
}

void dequantize_q4_k(const std::byte* src, float* dst, std::int64_t blocks) {
  for (std::int64_t b = 0; b < blocks; ++b) {
    const auto block = load_block<BlockQ4_K>(src, b);
    const float d = f16_to_f32(block.d);
    const float dmin = f16_to_f32(block.dmin);
    const std::uint8_t* q = block.qs;
    for (int sub = 0; sub < 8; sub += 2, q += 32) {
      std::uint8_t scale_lo, min_lo, scale_hi, min_hi;
      q4k_scale_min(sub, block.scales, scale_lo, min_lo);
      q4k_scale_min(sub + 1, block.scales, scale_hi, min_hi);
      const float d_lo = d * scale_lo, m_lo = dmin * min_lo;
      const float d_hi = d * scale_hi, m_hi = dmin * min_hi;
      for (int l = 0; l < 32; ++l) *dst++ = d_lo * static_cast<float>(q[l] & 0xF) - m_lo;
      for (int l = 0; l < 32; ++l) *dst++ = d_hi * static_cast<float>(q[l] >> 4) - m_hi;
    }
  }
}

void dequantize_q5_k(const std::byte* src, float* dst, std::int64_t blocks) {
  for (std::int64_t b = 0; b < blocks; ++b) {
    const auto block = load_block<BlockQ5_K>(src, b);
    const float d = f16_to_f32(block.d);
    const float dmin = f16_to_f32(block.dmin);
    const std::uint8_t* ql = block.qs;
    for (int sub = 0; sub < 8; sub += 2, ql += 32) {
      std::uint8_t scale_lo, min_lo, scale_hi, min_hi;
      q4k_scale_min(sub, block.scales, scale_lo, min_lo);
      q4k_scale_min(sub + 1, block.scales, scale_hi, min_hi);
      const float d_lo = d * scale_lo, m_lo = dmin * min_lo;
      const float d_hi = d * scale_hi, m_hi = dmin * min_hi;
      const std::uint8_t bit_lo = static_cast<std::uint8_t>(1u << sub);
      const std::uint8_t bit_hi = static_cast<std::uint8_t>(2u << sub);
      for (int l = 0; l < 32; ++l)
        *dst++ = d_lo * static_cast<float>((ql[l] & 0xF) + (block.qh[l] & bit_lo ? 16 : 0)) - m_lo;
      for (int l = 0; l < 32; ++l)
        *dst++ = d_hi * static_cast<float>((ql[l] >> 4) + (block.qh[l] & bit_hi ? 16 : 0)) - m_hi;
    }
  }
}

void dequantize_q6_k(const std::byte* src, float* dst, std::int64_t blocks) {
  for (std::int64_t b = 0; b < blocks; ++b) {
    const auto block = load_block<BlockQ6_K>(src, b);
    const float d = f16_to_f32(block.d);
    // Two halves of 128: ql holds 64 bytes (low nibbles of elements 0-63, high nibbles of
    // 64-127), qh 32 bytes (2 bits for each of the four 32-element quarters).
    for (int half = 0; half < 2; ++half, dst += 128) {
      const std::uint8_t* ql = block.ql + 64 * half;
      const std::uint8_t* qh = block.qh + 32 * half;
      const std::int8_t* sc = block.scales + 8 * half;
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        dst[l] = d * static_cast<float>(sc[is + 0] * q1);
        dst[l + 32] = d * static_cast<float>(sc[is + 2] * q2);
        dst[l + 64] = d * static_cast<float>(sc[is + 4] * q3);
        dst[l + 96] = d * static_cast<float>(sc[is + 6] * q4);
      }
    }
  }
}

// The 3-bit quant (0..7) of element e of a Q3_K block.
int q3k_quant(const BlockQ3_K& block, int e) {
  const int low = k_two_bit_field(block.qs, e);
  const int high = (block.hmask[e % 32] >> (e / 32)) & 1;
  return low | high << 2;
}

void dequantize_iq4_nl(const std::byte* src, float* dst, std::int64_t blocks) {
  for (std::int64_t b = 0; b < blocks; ++b, dst += kQ32) {
    const auto block = load_block<BlockIQ4_NL>(src, b);
    const float d = f16_to_f32(block.d);
    for (int j = 0; j < kQ32 / 2; ++j) {
      dst[j] = d * static_cast<float>(kIq4NlValues[block.qs[j] & 0xF]);
      dst[j + kQ32 / 2] = d * static_cast<float>(kIq4NlValues[block.qs[j] >> 4]);
    }
  }
}

// In ggml's order: (d * scale) * value.
void dequantize_iq4_xs(const std::byte* src, float* dst, std::int64_t blocks) {
  for (std::int64_t b = 0; b < blocks; ++b) {
    const auto block = load_block<BlockIQ4_XS>(src, b);
    const float d = f16_to_f32(block.d);
    for (int j = 0; j < kQK / 32; ++j, dst += kQ32) {
      const float dl = d * static_cast<float>(iq4xs_scale(block.scales_h, block.scales_l, j));
      for (int l = 0; l < kQ32 / 2; ++l) {
        const std::uint8_t q = block.qs[16 * j + l];
        dst[l] = dl * static_cast<float>(kIq4NlValues[q & 0xF]);
        dst[l + kQ32 / 2] = dl * static_cast<float>(kIq4NlValues[q >> 4]);
      }
    }
  }
}

// In ggml's order: (d * scale) * q - dmin * min.
void dequantize_q2_k(const std::byte* src, float* dst, std::int64_t blocks) {
  for (std::int64_t b = 0; b < blocks; ++b, dst += kQK) {
    const auto block = load_block<BlockQ2_K>(src, b);
    const float d = f16_to_f32(block.d), dmin = f16_to_f32(block.dmin);
    for (int e = 0; e < kQK; ++e) {
      const std::uint8_t sc = block.scales[e / 16];
      const int q = k_two_bit_field(block.qs, e);
      dst[e] = d * static_cast<float>(sc & 0xF) * static_cast<float>(q) -
               dmin * static_cast<float>(sc >> 4);
    }
  }
}

// In ggml's order: (d * (1 + 2 * scale)) * magnitude, the sign applied to the magnitude.
void dequantize_iq3_s(const std::byte* src, float* dst, std::int64_t blocks) {
  for (std::int64_t b = 0; b < blocks; ++b) {
    const auto block = load_block<BlockIQ3_S>(src, b);
    const float d = f16_to_f32(block.d);
    for (int j = 0; j < kQK / 32; ++j, dst += kQ32) {
      const float dl = d * static_cast<float>(iq3s_scale(block, j));
      for (int l = 0; l < kQ32; ++l)
        dst[l] = dl * static_cast<float>(iq3s_quant(block, kQ32 * j + l));
    }
  }
}

// In ggml's order: d * (0.5 + scale) * 0.5, times the magnitude, the sign applied to the
// magnitude (every product is exact).
void dequantize_iq3_xxs(const std::byte* src, float* dst, std::int64_t blocks) {
  for (std::int64_t b = 0; b < blocks; ++b) {
    const auto block = load_block<BlockIQ3_XXS>(src, b);
    const float d = f16_to_f32(block.d);
    for (int j = 0; j < kQK / 32; ++j, dst += kQ32) {
      const float db = d * (0.5f + static_cast<float>(iq3xxs_scale(block, j))) * 0.5f;
      for (int l = 0; l < kQ32; ++l)
        dst[l] = db * static_cast<float>(iq3xxs_quant(block, kQ32 * j + l));
    }
  }
}

void dequantize_q3_k(const std::byte* src, float* dst, std::int64_t blocks) {
  for (std::int64_t b = 0; b < blocks; ++b, dst += kQK) {
    const auto block = load_block<BlockQ3_K>(src, b);
    const float d = f16_to_f32(block.d);
    for (int e = 0; e < kQK; ++e)
      dst[e] = d * static_cast<float>(q3k_scale(block.scales, e / 16) * (q3k_quant(block, e) - 4));
  }
}

}  // namespace

std::optional<GgmlTypeTraits> ggml_type_traits(std::uint32_t id) {
  const TypeEntry* entry = find_entry(id);
  if (!entry) return std::nullopt;
  return entry->traits;
}

GgmlTypeTraits ggml_type_traits(GgmlType type) {
  const TypeEntry* entry = find_entry(static_cast<std::uint32_t>(type));
  if (!entry)
    throw std::invalid_argument("unknown ggml type id " +
                                std::to_string(static_cast<std::uint32_t>(type)));
  return entry->traits;
}

std::string_view ggml_type_name(GgmlType type) {
  const TypeEntry* entry = find_entry(static_cast<std::uint32_t>(type));
  return entry ? entry->traits.name : std::string_view("unknown");
}

namespace {
// The types moed computes (ggml_type_supported), each as the DType it is computed as.
constexpr std::pair<GgmlType, DType> kComputedTypes[] = {
    {GgmlType::f32, DType::f32},        {GgmlType::bf16, DType::bf16},
    {GgmlType::f16, DType::f16},        {GgmlType::q8_0, DType::q8_0},
    {GgmlType::q4_0, DType::q4_0},      {GgmlType::q4_1, DType::q4_1},
    {GgmlType::q5_0, DType::q5_0},      {GgmlType::q5_1, DType::q5_1},
    {GgmlType::q4_k, DType::q4_k},      {GgmlType::q5_k, DType::q5_k},
    {GgmlType::q6_k, DType::q6_k},      {GgmlType::q3_k, DType::q3_k},
    {GgmlType::iq4_nl, DType::iq4_nl},  {GgmlType::q2_k, DType::q2_k},
    {GgmlType::iq4_xs, DType::iq4_xs},  {GgmlType::iq3_s, DType::iq3_s},
    {GgmlType::iq3_xxs, DType::iq3_xxs}};
}  // namespace

std::optional<DType> dtype_of(GgmlType type) {
  for (const auto& [ggml, dtype] : kComputedTypes)
    if (ggml == type) return dtype;
  return std::nullopt;
}

bool ggml_type_supported(GgmlType type) {
  return dtype_of(type).has_value();
}

std::string supported_ggml_type_names() {
  std::string names;
  for (const TypeEntry& entry : kTypes) {
    if (!dtype_of(static_cast<GgmlType>(entry.id))) continue;
    if (!names.empty()) names += ", ";
    names += entry.traits.name;
  }
  return names;
}

GgmlType ggml_type_of(DType dtype) {
  for (const auto& [ggml, computed] : kComputedTypes)
    if (computed == dtype) return ggml;
  throw std::invalid_argument("ggml_type_of: unknown DType");
}

std::uint64_t ggml_row_bytes(GgmlType type, std::uint64_t n) {
  const auto traits = ggml_type_traits(type);
  if (n % traits.block_size != 0)
    throw std::invalid_argument("a row of " + std::to_string(n) +
                                " elements is not a whole number of " + std::string(traits.name) +
                                " blocks of " + std::to_string(traits.block_size));
  return n / traits.block_size * traits.type_size;
}

void dequantize_row(GgmlType type, const void* src, float* dst, std::int64_t n) {
  if (!ggml_type_supported(type))
    throw std::invalid_argument("ggml type " + std::string(ggml_type_name(type)) + " (id " +
                                std::to_string(static_cast<std::uint32_t>(type)) +
                                ") is not supported; moed reads " + supported_ggml_type_names());
  if (n < 0) throw std::invalid_argument("dequantize_row: negative element count");
  const auto bytes = static_cast<const std::byte*>(src);
  const std::int64_t blocks = static_cast<std::int64_t>(
      ggml_row_bytes(type, static_cast<std::uint64_t>(n)) / ggml_type_traits(type).type_size);
  switch (type) {
    case GgmlType::f32:
      std::memcpy(dst, src, static_cast<std::size_t>(n) * sizeof(float));
      return;
    case GgmlType::f16:
      convert_to_f32(src, DType::f16, dst, static_cast<std::size_t>(n));
      return;
    case GgmlType::bf16:
      convert_to_f32(src, DType::bf16, dst, static_cast<std::size_t>(n));
      return;
    case GgmlType::q4_0:
      dequantize_q4_0(bytes, dst, blocks);
      return;
    case GgmlType::q4_1:
      dequantize_q4_1(bytes, dst, blocks);
      return;
    case GgmlType::q5_0:
      dequantize_q5_0(bytes, dst, blocks);
      return;
    case GgmlType::q5_1:
      dequantize_q5_1(bytes, dst, blocks);
      return;
    case GgmlType::q8_0:
      dequantize_q8_0(bytes, dst, blocks);
      return;
    case GgmlType::q2_k:
      dequantize_q2_k(bytes, dst, blocks);
      return;
    case GgmlType::q3_k:
      dequantize_q3_k(bytes, dst, blocks);
      return;
    case GgmlType::iq4_nl:
      dequantize_iq4_nl(bytes, dst, blocks);
      return;
    case GgmlType::iq4_xs:
      dequantize_iq4_xs(bytes, dst, blocks);
      return;
    case GgmlType::iq3_s:
      dequantize_iq3_s(bytes, dst, blocks);
      return;
    case GgmlType::iq3_xxs:
      dequantize_iq3_xxs(bytes, dst, blocks);
      return;
    case GgmlType::q4_k:
      dequantize_q4_k(bytes, dst, blocks);
      return;
    case GgmlType::q5_k:
      dequantize_q5_k(bytes, dst, blocks);
      return;
    case GgmlType::q6_k:
      dequantize_q6_k(bytes, dst, blocks);
      return;
    default:
      break;
  }
  throw std::invalid_argument("ggml type " + std::string(ggml_type_name(type)) +
                              " has no dequantizer");
}

}  // namespace moed::kernels
