#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "moed/memtier/aligned_buffer.hpp"

namespace moed::engine {

// Element type of the keys and values. bf16 halves the cache; attention widens it to f32 as it
// reads, so only the stored keys and values are rounded.
enum class KvDtype { f32, bf16 };
const char* to_string(KvDtype dtype);
// "f32" or "bf16"; throws std::invalid_argument quoting the text otherwise.
KvDtype parse_kv_dtype(std::string_view text);
std::size_t kv_element_size(KvDtype dtype);

// Bytes of KV capacity held by all caches of one engine, so the engine can take them out of its
// host budget. Thread-safe.
struct KvAccount {
  std::atomic<std::uint64_t> bytes{0};
};

// What a position stores per layer: keys and values of each KV head (grouped-query attention), or
// one vector that serves as both (MLA's latent with its rope key, read by the absorbed form).
enum class KvLayout { keys_and_values, shared };

// Keys (after RoPE) and values of one sequence, per layer: [kv_heads, capacity, head_dim] of the
// cache's dtype (values() is keys() in the shared layout). The capacity is allocated once for the
// whole sequence when it is known (the scheduler reserves prompt + max_tokens); otherwise it grows
// in steps of kGrowthPositions. The memory is not written, so it costs nothing until used;
// reserve_more makes the pages of the positions it reserves resident kResidentStepPositions at a
// time, one madvise per head and buffer, rather than one page fault per head and page as the
// engine writes (a decode step wrote a fresh page in about one layer of two, and a fault cost
// about 10 us on a VM). Where the kernel grants huge pages, a page holds
// many positions, so a reserve may make up to 2 MiB per head and buffer resident at once:
// never more than the capacity, which the budget already counts.
class KvCache {
 public:
  static constexpr std::int64_t kGrowthPositions = 256;
  static constexpr std::int64_t kResidentStepPositions = 64;

  KvCache(std::int64_t layers, std::int64_t kv_heads, std::int64_t head_dim, KvDtype dtype,
          std::shared_ptr<KvAccount> account, std::int64_t capacity = 0,
          KvLayout layout = KvLayout::keys_and_values);
  ~KvCache();
  KvCache(KvCache&& other) noexcept;
  KvCache& operator=(KvCache&&) = delete;
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  std::int64_t length() const { return length_; }
  std::int64_t capacity() const { return capacity_; }
  KvDtype dtype() const { return dtype_; }
  // Bytes of keys and values this cache holds at its capacity.
  std::uint64_t bytes() const { return bytes_for(capacity_); }
  std::uint64_t bytes_for(std::int64_t positions) const;
  // The capacity a cache grown to hold `positions` has.
  static std::int64_t capacity_for(std::int64_t positions);
  // Makes room for `extra` more positions beyond length(), their pages resident.
  void reserve_more(std::int64_t extra);
  // Positions from the front whose pages reserve_more has made resident.
  std::int64_t resident_positions() const { return resident_; }
  // Marks `count` more positions as filled (after the engine wrote them).
  void advance(std::int64_t count) { length_ += count; }

  std::byte* keys(std::int64_t layer) { return buffer(layer); }
  std::byte* values(std::int64_t layer) { return buffer(shared_ ? layer : layers_ + layer); }
  std::int64_t kv_heads() const { return kv_heads_; }
  std::int64_t head_dim() const { return head_dim_; }

 private:
  // Copies the written positions into a new buffer: old and new are both held meanwhile.
  void resize(std::int64_t capacity);
  // Makes the pages of positions up to `positions` resident, rounded up to a whole step of
  // kResidentStepPositions within the capacity.
  void make_resident(std::int64_t positions);

  // Buffer `index` of buffers(): [kv_heads, capacity, head_dim].
  std::byte* buffer(std::int64_t index) {
    return storage_.data() + static_cast<std::size_t>(index) * buffer_bytes(capacity_);
  }
  // Bytes of `positions` positions of one head, and of one buffer at `capacity`.
  std::size_t head_bytes(std::int64_t positions) const;
  std::size_t buffer_bytes(std::int64_t capacity) const;
  // Keys of every layer, then values of every layer (none in the shared layout).
  std::int64_t buffers() const { return shared_ ? layers_ : 2 * layers_; }

  std::int64_t layers_, kv_heads_, head_dim_;
  KvDtype dtype_;
  bool shared_;
  std::shared_ptr<KvAccount> account_;
  std::int64_t length_ = 0;
  std::int64_t capacity_ = 0;
  std::int64_t resident_ = 0;
  // All buffers in one allocation, in 2 MiB pages where the kernel grants them: a decode step
  // writes one position into every head's buffer, and with each layer's buffers allocated apart
  // in 4 KiB pages those writes missed the TLB (storing a step's keys and values took 12-14k
  // cycles a layer on the Q8_0 bench model against 1.0k in huge pages).
  memtier::AlignedBuffer storage_;
};

}  // namespace moed::engine
