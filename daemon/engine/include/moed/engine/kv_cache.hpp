#pragma once

#include <cstdint>
#include <vector>

namespace moed::engine {

// Keys (after RoPE) and values of one sequence, per layer: f32 [kv_heads, capacity, head_dim].
// Capacity grows by doubling, so a long generation reallocates O(log n) times.
class KvCache {
 public:
  KvCache(std::int64_t layers, std::int64_t kv_heads, std::int64_t head_dim);

  std::int64_t length() const { return length_; }
  std::int64_t capacity() const { return capacity_; }
  // Makes room for `extra` more positions beyond length().
  void reserve_more(std::int64_t extra);
  // Marks `count` more positions as filled (after the engine wrote them).
  void advance(std::int64_t count) { length_ += count; }

  float* keys(std::int64_t layer) { return keys_[static_cast<std::size_t>(layer)].data(); }
  float* values(std::int64_t layer) { return values_[static_cast<std::size_t>(layer)].data(); }
  std::int64_t kv_heads() const { return kv_heads_; }
  std::int64_t head_dim() const { return head_dim_; }

 private:
  std::int64_t kv_heads_, head_dim_;
  std::int64_t length_ = 0;
  std::int64_t capacity_ = 0;
  std::vector<std::vector<float>> keys_;    // per layer: f32 [kv_heads, capacity, head_dim]
  std::vector<std::vector<float>> values_;  // per layer: f32 [kv_heads, capacity, head_dim]
};

}  // namespace moed::engine
