#include "moed/engine/kv_cache.hpp"

#include <algorithm>
#include <cstring>

namespace moed::engine {
namespace {
// The first allocation holds a short chat turn without growing.
constexpr std::int64_t kInitialCapacity = 64;
}  // namespace

KvCache::KvCache(std::int64_t layers, std::int64_t kv_heads, std::int64_t head_dim)
    : kv_heads_(kv_heads),
      head_dim_(head_dim),
      keys_(static_cast<std::size_t>(layers)),
      values_(static_cast<std::size_t>(layers)) {}

void KvCache::reserve_more(std::int64_t extra) {
  const std::int64_t needed = length_ + extra;
  if (needed <= capacity_) return;
  std::int64_t grown = std::max(capacity_ * 2, kInitialCapacity);
  while (grown < needed) grown *= 2;
  auto regrow = [&](std::vector<float>& old) {
    std::vector<float> fresh(static_cast<std::size_t>(kv_heads_ * grown * head_dim_));
    for (std::int64_t h = 0; h < kv_heads_ && capacity_ > 0; ++h)
      std::memcpy(fresh.data() + h * grown * head_dim_, old.data() + h * capacity_ * head_dim_,
                  static_cast<std::size_t>(length_ * head_dim_) * sizeof(float));
    old = std::move(fresh);
  };
  for (auto& k : keys_) regrow(k);
  for (auto& v : values_) regrow(v);
  capacity_ = grown;
}

}  // namespace moed::engine
