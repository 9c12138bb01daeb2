#include "bf16_rows.hpp"

#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "moed/kernels/dtype.hpp"

namespace moed::kernels::detail {
namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

// The probe weight: enough columns for two N blocks and enough rows of x for a pass and a part.
constexpr std::int64_t kProbeColumns = 128;
constexpr std::int64_t kProbeRows = 5;

// Values spread over many binades, with signs, so that every rounding step of the chain shows.
std::vector<std::uint16_t> probe_values(std::size_t count, std::uint32_t seed) {
  std::vector<std::uint16_t> values(count);
  std::uint32_t state = seed;
  for (auto& value : values) {
    state = state * 1664525u + 1013904223u;
    const float magnitude = static_cast<float>((state >> 8) & 0xFFFF) / 4096.0f + 0.01f;
    value = f32_to_bf16((state & 1) ? -magnitude : magnitude);
  }
  return values;
}

// oneDNN's result and moed's for a probe weight of `k` inputs, compared bit for bit.
bool probe_matches(std::int64_t k) {
  const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
  const dnnl::memory::desc src({kProbeRows, k}, dt::bf16, tag::ab);
  const dnnl::memory::desc any_weights({k, kProbeColumns}, dt::bf16, tag::any);
  const dnnl::memory::desc dst({kProbeRows, kProbeColumns}, dt::f32, tag::ab);
  const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, any_weights, dst), engine);
  const auto layout = blocked_layout(pd.weights_desc());
  if (!layout) return false;

  auto plain = probe_values(static_cast<std::size_t>(kProbeColumns * k), 7);
  auto x = probe_values(static_cast<std::size_t>(kProbeRows * k), 11);
  dnnl::memory plain_memory({{k, kProbeColumns}, dt::bf16, tag::ba}, engine, plain.data());
  dnnl::memory weights(pd.weights_desc(), engine);
  dnnl::reorder(plain_memory, weights).execute(stream, plain_memory, weights);
  std::vector<float> expected(static_cast<std::size_t>(kProbeRows * kProbeColumns));
  dnnl::memory src_memory(src, engine, x.data());
  dnnl::memory dst_memory(dst, engine, expected.data());
  dnnl::matmul(pd).execute(
      stream,
      {{DNNL_ARG_SRC, src_memory}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, dst_memory}});
  stream.wait();

  std::vector<float> ours(expected.size());
  bf16_rows(*layout, weights.get_data_handle(), x.data(), kProbeRows, ours.data());
  return std::memcmp(ours.data(), expected.data(), ours.size() * sizeof(float)) == 0;
}

}  // namespace

std::int64_t onednn_bf16_k_block(std::int64_t k) {
  return k <= 1024 ? 512 : 1024;
}

bool bf16_rows_match_onednn(std::int64_t k) {
  static const bool has_bf16_dot =
      __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
  if (!has_bf16_dot || k <= 0 || k % 32 != 0) return false;
  static std::mutex mutex;
  static std::map<std::int64_t, bool> verdicts;
  std::lock_guard lock(mutex);
  if (auto it = verdicts.find(k); it != verdicts.end()) return it->second;
  return verdicts[k] = probe_matches(k);
}

void bf16_rows(const BlockedLayout& layout, const void* weights, const std::uint16_t* x,
               std::int64_t m, float* y) {
  const std::int64_t blocks = layout.rows / layout.n_block;
  const auto* packed = static_cast<const std::uint16_t*>(weights);
#pragma omp parallel for schedule(static)
  for (std::int64_t b = 0; b < blocks; ++b) bf16_rows_block_avx512(layout, packed, b, x, m, y);
}

}  // namespace moed::kernels::detail
