#include "moed/kernels/quant.hpp"

#include <array>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

#include "moed/kernels/dtype.hpp"

namespace moed::kernels {
namespace {

struct TypeEntry {
  std::uint32_t id;
  GgmlTypeTraits traits;
  bool supported;
};

// ggml.c's type_traits (block sizes and type sizes) for every type ggml still defines.
constexpr std::array kTypes{
    TypeEntry{0, {"f32", 1, 4}, true},          TypeEntry{1, {"f16", 1, 2}, true},
    TypeEntry{2, {"q4_0", 32, 18}, true},       TypeEntry{3, {"q4_1", 32, 20}, true},
    TypeEntry{6, {"q5_0", 32, 22}, true},       TypeEntry{7, {"q5_1", 32, 24}, true},
    TypeEntry{8, {"q8_0", 32, 34}, true},       TypeEntry{9, {"q8_1", 32, 36}, false},
    TypeEntry{10, {"q2_K", 256, 84}, true},     TypeEntry{11, {"q3_K", 256, 110}, true},
    TypeEntry{12, {"q4_K", 256, 144}, true},    TypeEntry{13, {"q5_K", 256, 176}, true},
    TypeEntry{14, {"q6_K", 256, 210}, true},    TypeEntry{15, {"q8_K", 256, 292}, false},
    TypeEntry{16, {"iq2_xxs", 256, 66}, false}, TypeEntry{17, {"iq2_xs", 256, 74}, false},
    TypeEntry{18, {"iq3_xxs", 256, 98}, false}, TypeEntry{19, {"iq1_s", 256, 50}, false},
    TypeEntry{20, {"iq4_nl", 32, 18}, true},    TypeEntry{21, {"iq3_s", 256, 110}, false},
    TypeEntry{22, {"iq2_s", 256, 82}, false},   TypeEntry{23, {"iq4_xs", 256, 136}, true},
    TypeEntry{24, {"i8", 1, 1}, false},         TypeEntry{25, {"i16", 1, 2}, false},
    TypeEntry{26, {"i32", 1, 4}, false},        TypeEntry{27, {"i64", 1, 8}, false},
    TypeEntry{28, {"f64", 1, 8}, false},        TypeEntry{29, {"iq1_m", 256, 56}, false},
    TypeEntry{30, {"bf16", 1, 2}, true},        TypeEntry{34, {"tq1_0", 256, 54}, false},
    TypeEntry{35, {"tq2_0", 256, 66}, false},   TypeEntry{39, {"mxfp4", 32, 17}, false},
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
  const int low = (block.qs[32 * (e / 128) + e % 32] >> (2 * (e % 128 / 32))) & 3;
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
      const int q = (block.qs[32 * (e / 128) + e % 32] >> (2 * (e % 128 / 32))) & 3;
      dst[e] = d * static_cast<float>(sc & 0xF) * static_cast<float>(q) -
               dmin * static_cast<float>(sc >> 4);
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

bool ggml_type_supported(GgmlType type) {
  const TypeEntry* entry = find_entry(static_cast<std::uint32_t>(type));
  return entry && entry->supported;
}

namespace {
constexpr std::pair<GgmlType, DType> kComputedTypes[] = {
    {GgmlType::f32, DType::f32},       {GgmlType::bf16, DType::bf16},
    {GgmlType::f16, DType::f16},       {GgmlType::q8_0, DType::q8_0},
    {GgmlType::q4_0, DType::q4_0},     {GgmlType::q4_1, DType::q4_1},
    {GgmlType::q5_0, DType::q5_0},     {GgmlType::q5_1, DType::q5_1},
    {GgmlType::q4_k, DType::q4_k},     {GgmlType::q5_k, DType::q5_k},
    {GgmlType::q6_k, DType::q6_k},     {GgmlType::q3_k, DType::q3_k},
    {GgmlType::iq4_nl, DType::iq4_nl}, {GgmlType::q2_k, DType::q2_k},
    {GgmlType::iq4_xs, DType::iq4_xs}};
}  // namespace

std::optional<DType> dtype_of(GgmlType type) {
  for (const auto& [ggml, dtype] : kComputedTypes)
    if (ggml == type) return dtype;
  return std::nullopt;
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
                                ") is not supported; moed reads f32, f16, bf16, q8_0, q4_0, "
                                "q4_1, q5_0, q5_1, q2_K, q3_K, q4_K, q5_K, q6_K, iq4_nl, iq4_xs");
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
