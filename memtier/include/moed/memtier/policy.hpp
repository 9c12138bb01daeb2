#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "moed/memtier/block.hpp"

namespace moed::memtier {

// Decides which resident block leaves when room is needed. Sees only block ids: no I/O, no
// allocation, no pins (the tier passes `evictable`, which excludes pinned and in-use blocks).
// The host tier and the trace simulator drive the same objects, so simulated hit rates are the
// tier's hit rates.
class EvictionPolicy {
 public:
  virtual ~EvictionPolicy() = default;
  virtual std::string_view name() const = 0;
  virtual void on_insert(BlockId block) = 0;
  virtual void on_access(BlockId block) = 0;
  virtual void on_erase(BlockId block) = 0;
  virtual std::optional<BlockId> victim(const std::function<bool(BlockId)>& evictable) = 0;
};

// Least recently used: a hit or an insert makes the block the most recent.
class LruPolicy final : public EvictionPolicy {
 public:
  std::string_view name() const override { return "lru"; }
  void on_insert(BlockId block) override;
  void on_access(BlockId block) override;
  void on_erase(BlockId block) override;
  std::optional<BlockId> victim(const std::function<bool(BlockId)>& evictable) override;

 private:
  std::list<BlockId> order_;  // front: most recent
  std::unordered_map<BlockId, std::list<BlockId>::iterator, BlockIdHash> where_;
};

// Least frequently used with exponential decay: each access adds 1 to a score that halves every
// `half_life` accesses (to any block), so experts that were hot long ago cool down. Ties go to
// the least recently used.
class LfuDecayPolicy final : public EvictionPolicy {
 public:
  explicit LfuDecayPolicy(double half_life = 1024.0);
  std::string_view name() const override { return "lfu"; }
  void on_insert(BlockId block) override;
  void on_access(BlockId block) override;
  void on_erase(BlockId block) override;
  std::optional<BlockId> victim(const std::function<bool(BlockId)>& evictable) override;

 private:
  struct Entry {
    double score;
    std::uint64_t last;
  };
  double decayed(const Entry& e) const;
  double decay_per_tick_;
  std::uint64_t clock_ = 0;
  std::unordered_map<BlockId, Entry, BlockIdHash> entries_;
};

// "lru" or "lfu"; throws std::invalid_argument naming the value otherwise.
std::unique_ptr<EvictionPolicy> make_policy(std::string_view name);

}  // namespace moed::memtier
