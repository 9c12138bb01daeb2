#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <unordered_map>
#include <vector>

#include "moed/memtier/block.hpp"
#include "moed/memtier/policy.hpp"

namespace moed::memtier {

// What a tier holds for a block: the engine's packed form of it (e.g. oneDNN-reordered expert
// weights). memtier only counts its bytes and decides when to drop its reference.
class BlockPayload {
 public:
  virtual ~BlockPayload() = default;
  virtual std::uint64_t bytes() const = 0;
};
using Payload = std::shared_ptr<const BlockPayload>;

// Host RAM under a strict byte budget. Residency is decided by the policy; pinned blocks and
// blocks in use (someone else holds the payload) are never evicted. A block that cannot fit
// is not cached: the caller uses it once and it goes (counted as a bypass). Thread-safe.
class HostTier {
 public:
  HostTier(std::uint64_t budget_bytes, std::unique_ptr<EvictionPolicy> policy);

  // The resident payload, or null. Counts a hit or a miss and tells the policy.
  Payload lookup(BlockId block);
  // Resident payload without counting (for scoring and tests).
  Payload peek(BlockId block) const;
  // Whether the policy's admission filter may turn a block away. A demand load after a miss
  // asks it (the filter saw the miss); a prefetch or warm-up does not, as its block is about to
  // be used and turning it away would only read it again.
  enum class Admission { unconditional, filtered };
  // Makes room by eviction and keeps the payload; false (a bypass) when it cannot fit within the
  // budget or the filter prefers the victim. A block an admin pinned skips the filter.
  bool admit(BlockId block, Payload payload, Admission admission = Admission::unconditional);

  // An admin's pin; unpin() also drops an automatic pin until the next choice.
  void pin(BlockId block);
  void unpin(BlockId block);
  // Automatic pins: every `period` lookups an AutoPinner chooses, of the resident blocks not
  // pinned by an admin, the most requested ones within `share` of the budget (0: none; the
  // automatic pins go). Setting the share the tier already has keeps its pins.
  void set_auto_pin(double share, std::uint64_t period = 1024);
  void set_budget(std::uint64_t budget_bytes);  // evicts down to the new budget where it can
  void set_policy(std::unique_ptr<EvictionPolicy> policy);

  struct Counters {
    std::uint64_t hits = 0, misses = 0, evictions = 0, bypasses = 0;
    std::uint64_t refusals = 0;  // bypasses where the admission filter kept the victim
    std::uint64_t used_bytes = 0, budget_bytes = 0, blocks = 0;
    std::uint64_t pinned = 0, auto_pinned = 0;  // pinned: by an admin or automatically
    double auto_pin_share = 0;                  // 0: automatic pins off
    struct Pin {
      BlockId block;
      bool automatic;  // else an admin's
      bool resident;
    };
    std::vector<Pin> pins;
    std::string policy;
    double policy_half_life = 0;  // EvictionPolicy::deciding_half_life()
  };
  Counters counters() const;

 private:
  enum class Room { made, none, refused };
  // With mutex_ held. Each victim is first offered to the policy's filter against `incoming`:
  // `none` when nothing evictable is left, `refused` when the filter prefers a victim.
  Room make_room(std::uint64_t bytes, std::optional<BlockId> incoming = std::nullopt);
  void evict(BlockId block);  // with mutex_ held

  mutable std::mutex mutex_;
  std::uint64_t budget_bytes_;
  std::uint64_t used_bytes_ = 0;
  std::unique_ptr<EvictionPolicy> policy_;
  std::unordered_map<BlockId, Payload, BlockIdHash> blocks_;
  std::set<BlockId> pins_;       // an admin's
  std::set<BlockId> auto_pins_;  // the pinner's last choice
  std::optional<AutoPinner> pinner_;
  Counters counters_;
};

}  // namespace moed::memtier
