#include "moed/kernels/quant_dot.hpp"

#include <cpuid.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "moed/kernels/dtype.hpp"
#include "quant_dot_internal.hpp"
#include "team.hpp"

namespace moed::kernels {
namespace {

// A NaN (a NaN or infinite input, or an infinite one times a zero inverse) quantizes to 0.
std::int8_t quantize_one(float value, float inverse_scale) {
  const float scaled = std::nearbyint(value * inverse_scale);
  if (std::isnan(scaled)) return 0;
  return static_cast<std::int8_t>(std::clamp(scaled, -127.0f, 127.0f));
}

// The largest magnitude of v[0..n), NaNs skipped and reported.
float max_abs(const float* v, int n, bool& has_nan) {
  float amax = 0;
  has_nan = false;
  for (int i = 0; i < n; ++i) {
    const float a = std::fabs(v[i]);
    has_nan = has_nan || std::isnan(a);
    amax = std::max(amax, a);  // false for a NaN: amax stays
  }
  return amax;
}

// n is a whole number of 32-element blocks (the caller checks).
void quantize_blocks(const float* x, std::int64_t n, QuantizedActivations& out) {
  out.n = n;
  qdot::resize_q8_0_fields(out, n / kQ32);
  for (std::int64_t b = 0; b < n / kQ32; ++b) {
    const float* v = x + b * kQ32;
    bool has_nan;
    const float amax = max_abs(v, kQ32, has_nan);
    const float d = qdot::block_scale(amax, has_nan);
    const float inverse = qdot::block_inverse(amax, has_nan);
    BlockQ8_0& block = out.q8_0[static_cast<std::size_t>(b)];
    block.d = qdot::f32_to_f16(d);
    std::int32_t sum = 0;
    for (int i = 0; i < kQ32; ++i) {
      block.qs[i] = quantize_one(v[i], inverse);
      sum += block.qs[i];
    }
    qdot::set_q8_0_fields(out, b, d, sum);
  }
  qdot::resize_q8_k_fields(out, n % kQK == 0 ? n / kQK : 0);
  if (n % kQK != 0) return;
  for (std::int64_t b = 0; b < n / kQK; ++b) {
    const float* v = x + b * kQK;
    bool has_nan;
    const float amax = max_abs(v, kQK, has_nan);
    BlockQ8_K& block = out.q8_k[static_cast<std::size_t>(b)];
    const float inverse = qdot::block_inverse(amax, has_nan);
    block.d = qdot::super_block_scale(amax, has_nan, inverse);
    for (int i = 0; i < kQK; ++i) block.qs[i] = quantize_one(v[i], inverse);
    for (int g = 0; g < kQK / 16; ++g) {
      int sum = 0;
      for (int i = 0; i < 16; ++i) sum += block.qs[16 * g + i];
      block.bsums[g] = static_cast<std::int16_t>(sum);
    }
    qdot::set_q8_k_fields(out, b);
  }
}

bool is_k_quant(GgmlType type) {
  return type == GgmlType::q2_k || type == GgmlType::q4_k || type == GgmlType::q5_k ||
         type == GgmlType::q6_k || type == GgmlType::iq4_xs;
}

// ---- Scalar reference -------------------------------------------------------------------------

template <class Block>
Block load(const std::byte* src, std::int64_t index) {
  Block block;
  std::memcpy(&block, src + index * static_cast<std::int64_t>(sizeof(Block)), sizeof(Block));
  return block;
}

// The unsigned quants (0..15 or 0..31) of a 32-element block, its integer offset (q4_0: 8,
// q5_0: 16) and its fp16 scale and min.
struct Unpacked32 {
  int q[kQ32];
  int offset = 0;
  std::uint16_t d = 0;
  std::uint16_t m = 0;
  bool has_min = false;
};

template <class Block>
void unpack_nibbles(const Block& block, int (&q)[kQ32]) {
  for (int j = 0; j < kQ32 / 2; ++j) {
    q[j] = block.qs[j] & 0xF;
    q[j + kQ32 / 2] = block.qs[j] >> 4;
  }
}

template <class Block>
void add_fifth_bits(const Block& block, int (&q)[kQ32]) {
  std::uint32_t qh;
  std::memcpy(&qh, block.qh, sizeof qh);
  for (int j = 0; j < kQ32; ++j) q[j] |= static_cast<int>(((qh >> j) & 1u) << 4);
}

Unpacked32 unpack32(GgmlType type, const std::byte* weights, std::int64_t b) {
  Unpacked32 u;
  switch (type) {
    case GgmlType::q4_0: {
      const auto block = load<BlockQ4_0>(weights, b);
      unpack_nibbles(block, u.q);
      u.offset = 8;
      u.d = block.d;
      break;
    }
    case GgmlType::q4_1: {
      const auto block = load<BlockQ4_1>(weights, b);
      unpack_nibbles(block, u.q);
      u.d = block.d;
      u.m = block.m;
      u.has_min = true;
      break;
    }
    case GgmlType::q5_0: {
      const auto block = load<BlockQ5_0>(weights, b);
      unpack_nibbles(block, u.q);
      add_fifth_bits(block, u.q);
      u.offset = 16;
      u.d = block.d;
      break;
    }
    case GgmlType::q5_1: {
      const auto block = load<BlockQ5_1>(weights, b);
      unpack_nibbles(block, u.q);
      add_fifth_bits(block, u.q);
      u.d = block.d;
      u.m = block.m;
      u.has_min = true;
      break;
    }
    default:
      break;
  }
  return u;
}

float dot32_scalar(GgmlType type, const std::byte* weights, const BlockQ8_0* x,
                   const std::int32_t* x_sums, const float* x_q8_1_sums, std::int64_t blocks) {
  float acc[8] = {};
  for (std::int64_t b = 0; b < blocks; ++b) {
    std::int32_t isum = 0;
    float dw, term;
    const float dx = f16_to_f32(x[b].d);
    if (type == GgmlType::q8_0) {
      // Each 4-element group's integer sum into its own lane (quant_dot.hpp).
      const auto block = load<BlockQ8_0>(weights, b);
      const float d = f16_to_f32(block.d) * dx;
      for (int lane = 0; lane < 8; ++lane) {
        std::int32_t group = 0;
        for (int i = 4 * lane; i < 4 * lane + 4; ++i) group += block.qs[i] * x[b].qs[i];
        acc[lane] = acc[lane] + static_cast<float>(group) * d;
      }
      continue;
    } else {
      const Unpacked32 u = unpack32(type, weights, b);
      for (int i = 0; i < kQ32; ++i) isum += u.q[i] * x[b].qs[i];
      isum -= u.offset * x_sums[b];
      dw = f16_to_f32(u.d);
      term = static_cast<float>(isum) * (dw * dx);
      if (u.has_min) term = term + f16_to_f32(u.m) * x_q8_1_sums[b];
    }
    acc[b & 7] = acc[b & 7] + term;
  }
  return qdot::reduce8(acc);
}

void dotk_scalar(GgmlType type, const std::byte* weights, const BlockQ8_K* x, std::int64_t blocks,
                 std::int32_t* scaled, std::int32_t* mins) {
  for (std::int64_t b = 0; b < blocks; ++b) {
    const BlockQ8_K& a = x[b];
    std::int32_t isum = 0, msum = 0;
    if (type == GgmlType::iq4_xs) {
      const auto block = load<BlockIQ4_XS>(weights, b);
      for (int sub = 0; sub < kQK / 32; ++sub) {
        std::int32_t dot = 0;
        for (int l = 0; l < kQ32 / 2; ++l) {
          const std::uint8_t q = block.qs[16 * sub + l];
          dot += kIq4NlValues[q & 0xF] * a.qs[32 * sub + l];
          dot += kIq4NlValues[q >> 4] * a.qs[32 * sub + 16 + l];
        }
        isum += iq4xs_scale(block.scales_h, block.scales_l, sub) * dot;
      }
    } else if (type == GgmlType::q2_k) {
      const auto block = load<BlockQ2_K>(weights, b);
      for (int sub = 0; sub < kQK / 16; ++sub) {
        std::int32_t dot = 0;
        for (int i = 0; i < 16; ++i) {
          const int e = 16 * sub + i;
          dot += k_two_bit_field(block.qs, e) * a.qs[e];
        }
        isum += (block.scales[sub] & 0xF) * dot;
        msum += (block.scales[sub] >> 4) * a.bsums[sub];
      }
    } else if (type == GgmlType::q6_k) {
      const auto block = load<BlockQ6_K>(weights, b);
      int q[kQK];
      for (int half = 0; half < 2; ++half)
        for (int l = 0; l < 32; ++l) {
          const std::uint8_t* ql = block.ql + 64 * half;
          const std::uint8_t hi = block.qh[32 * half + l];
          q[128 * half + l] = (ql[l] & 0xF) | ((hi & 3) << 4);
          q[128 * half + l + 32] = (ql[l + 32] & 0xF) | (((hi >> 2) & 3) << 4);
          q[128 * half + l + 64] = (ql[l] >> 4) | (((hi >> 4) & 3) << 4);
          q[128 * half + l + 96] = (ql[l + 32] >> 4) | (((hi >> 6) & 3) << 4);
        }
      for (int sub = 0; sub < kQK / 16; ++sub) {
        std::int32_t dot = 0;
        for (int i = 0; i < 16; ++i) dot += q[16 * sub + i] * a.qs[16 * sub + i];
        isum += block.scales[sub] * (dot - 32 * a.bsums[sub]);
      }
    } else {
      int q[kQK];
      std::uint8_t scales[kKScaleBytes];
      if (type == GgmlType::q4_k) {
        const auto block = load<BlockQ4_K>(weights, b);
        std::memcpy(scales, block.scales, sizeof scales);
        for (int g = 0; g < 4; ++g)
          for (int l = 0; l < 32; ++l) {
            q[64 * g + l] = block.qs[32 * g + l] & 0xF;
            q[64 * g + 32 + l] = block.qs[32 * g + l] >> 4;
          }
      } else {
        const auto block = load<BlockQ5_K>(weights, b);
        std::memcpy(scales, block.scales, sizeof scales);
        for (int g = 0; g < 4; ++g)
          for (int l = 0; l < 32; ++l) {
            q[64 * g + l] = (block.qs[32 * g + l] & 0xF) | (((block.qh[l] >> (2 * g)) & 1) << 4);
            q[64 * g + 32 + l] =
                (block.qs[32 * g + l] >> 4) | (((block.qh[l] >> (2 * g + 1)) & 1) << 4);
          }
      }
      for (int sub = 0; sub < 8; ++sub) {
        std::uint8_t scale, min;
        q4k_scale_min(sub, scales, scale, min);
        std::int32_t dot = 0;
        for (int i = 0; i < 32; ++i) dot += q[32 * sub + i] * a.qs[32 * sub + i];
        isum += scale * dot;
        msum += min * (a.bsums[2 * sub] + a.bsums[2 * sub + 1]);
      }
    }
    scaled[b] = isum;
    mins[b] = msum;
  }
}

// The float part of a K-quant row from its integer sums, in the fixed order.
float finish_k(GgmlType type, const std::byte* weights, const BlockQ8_K* x, std::int64_t blocks,
               const std::int32_t* scaled, const std::int32_t* mins) {
  float acc[8] = {};
  const std::size_t block_bytes = ggml_type_traits(type).type_size;
  for (std::int64_t b = 0; b < blocks; ++b) {
    const std::byte* block = weights + b * static_cast<std::int64_t>(block_bytes);
    std::uint16_t d_bits, dmin_bits = 0;
    const bool has_min = type != GgmlType::q6_k && type != GgmlType::iq4_xs;
    if (type == GgmlType::q6_k) {
      std::memcpy(&d_bits, block + offsetof(BlockQ6_K, d), 2);
    } else if (type == GgmlType::iq4_xs) {
      std::memcpy(&d_bits, block + offsetof(BlockIQ4_XS, d), 2);
    } else if (type == GgmlType::q2_k) {
      std::memcpy(&d_bits, block + offsetof(BlockQ2_K, d), 2);
      std::memcpy(&dmin_bits, block + offsetof(BlockQ2_K, dmin), 2);
    } else {
      std::memcpy(&d_bits, block, 2);  // d then dmin lead both BlockQ4_K and BlockQ5_K
      std::memcpy(&dmin_bits, block + 2, 2);
    }
    const float dx = x[b].d;
    float term = static_cast<float>(scaled[b]) * (f16_to_f32(d_bits) * dx);
    if (has_min) term = term - static_cast<float>(mins[b]) * (f16_to_f32(dmin_bits) * dx);
    acc[b & 7] = acc[b & 7] + term;
  }
  return qdot::reduce8(acc);
}

// clang's __builtin_cpu_supports has no "f16c": read CPUID leaf 1 (ECX bit 29) instead.
bool cpu_has_f16c() {
  unsigned eax, ebx, ecx, edx;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
}

// Asked once: vec_dot runs per weight row, and CPUID traps to the hypervisor in a VM (it cost
// 88% of a q8_0 forward pass when asked per call).
bool cpu_has_avx2() {
  static const bool has =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
  return has;
}

bool cpu_has_avx512_vnni() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("avx512vnni") && cpu_has_avx2();
  return has;
}

}  // namespace

void quantize_activations(const float* x, std::int64_t n, QuantizedActivations& out, QuantIsa isa) {
  if (n < 0 || n % kQ32 != 0)
    throw std::invalid_argument("quantize_activations: " + std::to_string(n) +
                                " elements are not whole blocks of 32");
  // The SIMD paths round eight lanes at a time, in the same operations as quantize_blocks.
  switch (usable_quant_isa(isa)) {
    case QuantIsa::avx512_vnni:
      return qdot::quantize_avx512(x, n, out);
    case QuantIsa::avx2:
      return qdot::quantize_avx2(x, n, out);
    case QuantIsa::scalar:
      return quantize_blocks(x, n, out);
  }
}

std::string_view quant_isa_name(QuantIsa isa) {
  switch (isa) {
    case QuantIsa::scalar:
      return "scalar";
    case QuantIsa::avx2:
      return "avx2";
    case QuantIsa::avx512_vnni:
      return "avx512_vnni";
  }
  return "unknown";
}

QuantIsa usable_quant_isa(QuantIsa isa) {
  if (isa == QuantIsa::avx512_vnni && !cpu_has_avx512_vnni()) isa = QuantIsa::avx2;
  if (isa == QuantIsa::avx2 && !cpu_has_avx2()) isa = QuantIsa::scalar;
  return isa;
}

std::optional<QuantIsa> quant_isa_named(std::string_view name) {
  for (const QuantIsa isa : kQuantIsas)
    if (name == quant_isa_name(isa)) return isa;
  return std::nullopt;
}

std::string quant_isa_names() {
  std::string names;
  for (const QuantIsa isa : kQuantIsas) {
    if (!names.empty()) names += ", ";
    names += quant_isa_name(isa);
  }
  return names;
}

QuantIsa best_quant_isa() {
  static const QuantIsa best = [] {
    QuantIsa most = QuantIsa::avx512_vnni;
    if (const char* cap = std::getenv(kMaxQuantIsaVariable)) {
      if (const auto named = quant_isa_named(cap))
        most = *named;
      else
        std::fprintf(stderr, "moed: %s=%s names no path (%s); ignored\n", kMaxQuantIsaVariable, cap,
                     quant_isa_names().c_str());
    }
    return usable_quant_isa(most);
  }();
  return best;
}

bool quant_dot_supported(GgmlType type) {
  switch (type) {
    case GgmlType::q8_0:
    case GgmlType::q4_0:
    case GgmlType::q4_1:
    case GgmlType::q5_0:
    case GgmlType::q5_1:
    case GgmlType::q2_k:
    case GgmlType::q4_k:
    case GgmlType::q5_k:
    case GgmlType::q6_k:
    case GgmlType::iq4_xs:
      return true;
    default:
      return false;
  }
}

float vec_dot(GgmlType type, const void* weight_row, const QuantizedActivations& x, QuantIsa isa) {
  if (!quant_dot_supported(type))
    throw std::invalid_argument("vec_dot: ggml type " + std::string(ggml_type_name(type)) +
                                " has no quantized dot product");
  // q2_K's and iq4_xs's dots are only this reference: moed computes them with row tiles, which
  // the tests check against it.
  isa =
      type == GgmlType::q2_k || type == GgmlType::iq4_xs ? QuantIsa::scalar : usable_quant_isa(isa);
  const auto* weights = static_cast<const std::byte*>(weight_row);
  if (is_k_quant(type)) {
    if (x.n % kQK != 0 || x.q8_k.size() != static_cast<std::size_t>(x.n / kQK))
      throw std::invalid_argument("vec_dot: " + std::string(ggml_type_name(type)) + " needs " +
                                  "activations in whole Q8_K blocks of 256, not " +
                                  std::to_string(x.n));
    const std::int64_t blocks = x.n / kQK;
    constexpr std::int64_t kChunk = 64;  // super-blocks per pass: 16384 elements
    std::int32_t scaled[kChunk], mins[kChunk];
    const std::size_t block_bytes = ggml_type_traits(type).type_size;
    float acc = 0;
    for (std::int64_t start = 0; start < blocks; start += kChunk) {
      const std::int64_t count = std::min(kChunk, blocks - start);
      const std::byte* w = weights + start * static_cast<std::int64_t>(block_bytes);
      const BlockQ8_K* a = x.q8_k.data() + start;
      // Rows longer than one chunk add chunk results in order; every path chunks alike.
      float chunk;
      switch (isa) {
        case QuantIsa::avx512_vnni:
          chunk = qdot::dotk_avx512(type, w, a, count);
          break;
        case QuantIsa::avx2:
          chunk = qdot::dotk_avx2(type, w, a, count);
          break;
        default:
          dotk_scalar(type, w, a, count, scaled, mins);
          chunk = finish_k(type, w, a, count, scaled, mins);
          break;
      }
      acc = acc + chunk;
    }
    return acc;
  }
  const std::int64_t blocks = x.n / kQ32;
  switch (isa) {
    case QuantIsa::avx512_vnni:
      return qdot::dot32_avx512(type, weights, x.q8_0.data(), x.q8_0_sums.data(),
                                x.q8_1_sums.data(), blocks);
    case QuantIsa::avx2:
      return qdot::dot32_avx2(type, weights, x.q8_0.data(), x.q8_0_sums.data(), x.q8_1_sums.data(),
                              blocks);
    case QuantIsa::scalar:
      break;
  }
  return dot32_scalar(type, weights, x.q8_0.data(), x.q8_0_sums.data(), x.q8_1_sums.data(), blocks);
}

void quant_matvec(GgmlType type, const void* weights, std::int64_t rows, std::int64_t cols,
                  const float* x, float* y, QuantIsa isa) {
  QuantizedActivations activations;
  quantize_activations(x, cols, activations);
  if (rows <= 0) return;
  const std::uint64_t row_bytes = ggml_row_bytes(type, static_cast<std::uint64_t>(cols));
  const auto* base = static_cast<const std::byte*>(weights);
  // The first dot outside the parallel region: it throws for an unsupported type.
  y[0] = vec_dot(type, base, activations, isa);
#pragma omp parallel for schedule(static)
  for (std::int64_t r = 1; r < rows; ++r)
    y[r] = vec_dot(type, base + static_cast<std::uint64_t>(r) * row_bytes, activations, isa);
}

void quantize_rows(const float* x, std::int64_t m, std::int64_t cols,
                   std::vector<QuantizedActivations>& out) {
  if (m <= 0) return;
  if (out.size() < static_cast<std::size_t>(m)) out.resize(static_cast<std::size_t>(m));
  // The first row outside the parallel region: it throws for a bad length.
  quantize_activations(x, cols, out[0]);
  if (m == 1) return;  // decode: no parallel region to enter and leave
  // Where the products these rows feed run (run_team): a region of the other kind between two
  // of theirs leaves one team's idle worker spinning on the core the other's needs.
  detail::run_team(m, [&](const detail::Team::Member& member) {
    const auto [first, last] = member.share(m - 1);
    for (std::int64_t i = 1 + first; i < 1 + last; ++i)
      quantize_activations(x + i * cols, cols, out[static_cast<std::size_t>(i)]);
  });
}

}  // namespace moed::kernels
