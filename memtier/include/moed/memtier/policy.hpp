#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

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
  // A request found `block` not resident; it will be loaded and offered to admits().
  virtual void on_miss(BlockId /*block*/) {}
  // Whether a block loaded after a miss may displace `victim`. When it may not, the tier serves
  // that one use from the loaded bytes and keeps `victim`: an admission filter.
  virtual bool admits(BlockId /*incoming*/, BlockId /*victim*/) const { return true; }
  // A policy that chooses how long its counts remember: the half-life deciding now, in requests
  // per block seen. 0 for the others.
  virtual double deciding_half_life() const { return 0; }
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

// A block ordered by a decayed score, then by a tick (the older first): the victim order LFU and
// TinyLFU keep. Scores are stored in units of a weight that grows instead of every score
// decaying; once the weight reaches kRescaleAt, everything is divided by it.
struct ScoredBlock {
  double stored;
  std::uint64_t tick;
  BlockId block;
  auto operator<=>(const ScoredBlock&) const = default;
};
inline constexpr double kRescaleAt = 0x1p64;

// Least frequently used with exponential decay: each access adds 1 to a score that halves every
// `half_life` accesses (to any block, at least 1), so experts that were hot long ago cool down.
// Ties go to the least recently used. (Scores are kept in units of a growing weight, so a score
// left alone for over a thousand half-lives stays ordered where one decayed in plain doubles
// would reach 0 and tie.)
class LfuDecayPolicy final : public EvictionPolicy {
 public:
  explicit LfuDecayPolicy(double half_life = 1024.0);
  std::string_view name() const override { return "lfu"; }
  void on_insert(BlockId block) override;
  void on_access(BlockId block) override;
  void on_erase(BlockId block) override;
  std::optional<BlockId> victim(const std::function<bool(BlockId)>& evictable) override;

 private:
  // A score in units of the current access weight, and the tick of its last insert or access.
  struct Entry {
    double stored;
    std::uint64_t last;
  };
  // Called with the block's old entry erased from the order: a new tick, and the weight grows.
  std::uint64_t tick();
  // What an access adds now. It grows instead of every score decaying, so the blocks stay
  // ordered by score without a scan; at kRescaleAt every score is divided by it (as TinyLFU's).
  double access_weight_ = 1;
  double growth_;
  std::uint64_t clock_ = 0;
  std::unordered_map<BlockId, Entry, BlockIdHash> entries_;
  std::set<ScoredBlock> by_score_;  // the victim first
};

// Blocks in recency order, most recent first, with O(1) lookup: a building block of ARC's lists.
class RecencyList {
 public:
  bool contains(BlockId block) const { return where_.contains(block); }
  std::size_t size() const { return order_.size(); }
  bool empty() const { return order_.empty(); }
  void push_most_recent(BlockId block);
  bool erase(BlockId block);  // false when absent
  // The least recent block `evictable` accepts.
  std::optional<BlockId> least_recent(const std::function<bool(BlockId)>& evictable) const;
  void drop_least_recent();
  const std::list<BlockId>& most_recent_first() const { return order_; }

 private:
  std::list<BlockId> order_;  // front: most recent
  std::unordered_map<BlockId, std::list<BlockId>::iterator, BlockIdHash> where_;
};

// Adaptive Replacement Cache (Megiddo & Modha, FAST 2003). T1 holds blocks requested once since
// they were loaded, T2 blocks requested again; the ghost lists B1 and B2 remember the blocks each
// lately evicted. A miss on a ghost moves the target size p of T1 toward the list that would
// have kept the block. The tier budgets bytes, not blocks, so the capacity c the ghost lists are
// bounded by is the number of resident blocks when the tier last needed room.
class ArcPolicy final : public EvictionPolicy {
 public:
  std::string_view name() const override { return "arc"; }
  void on_insert(BlockId block) override;
  void on_access(BlockId block) override;
  void on_erase(BlockId block) override;
  void on_miss(BlockId block) override;
  std::optional<BlockId> victim(const std::function<bool(BlockId)>& evictable) override;

  double target_recent() const { return target_recent_; }  // p
  bool remembers(BlockId block) const { return b1_.contains(block) || b2_.contains(block); }

 private:
  void trim_ghosts();
  RecencyList t1_, t2_, b1_, b2_;
  double target_recent_ = 0;
  std::size_t capacity_ = 0;
  bool missed_in_b2_ = false;  // the pending miss hit B2: ARC's tie rule then prefers T1
};

// TinyLFU admission (Einziger, Friedman & Manes, ACM ToS 2017) in front of least-frequent
// eviction. Every request, hit or miss, counts for its block; a missed block is admitted only
// when its (decayed) count is above the victim's, the resident block with the lowest count (the
// least recent among equals). Under cyclic layer-by-layer routing with a cache smaller than one
// token's experts, LRU evicts every block before its next use; this keeps the experts each layer
// routes to most and lets the rest pass through. Counts are exact rather than
// a count-min sketch: blocks number in the thousands.
//
// Counts decay exponentially, and how long they remember decides between recency and frequency:
// a short memory follows routing that returns to the experts of the last few tokens, a long one
// the experts a layer favours over hundreds of tokens. Traces of real and trained routing want
// either (README, "Memory tiers"), so counts are kept with several memories and, as set
// dueling in CPU caches does, each memory runs a shadow cache: the block ids the cache would
// hold if that memory alone decided, at the cache's size in blocks. The memory whose shadow hit
// most lately decides what the cache admits and evicts; it starts with the middle one.
class TinyLfuPolicy final : public EvictionPolicy {
 public:
  static constexpr std::size_t kMemories = 3;
  // Each memory's half-life, in requests per block seen (counts halve over that many
  // requests), from short to long, at least 1.
  using HalfLives = std::array<double, kMemories>;
  static constexpr HalfLives kDefaultHalfLives = {1, 4, 32};

  explicit TinyLfuPolicy(HalfLives half_lives = kDefaultHalfLives);
  std::string_view name() const override { return "tinylfu"; }
  void on_insert(BlockId block) override;
  void on_access(BlockId block) override;
  void on_erase(BlockId block) override;
  void on_miss(BlockId block) override;
  std::optional<BlockId> victim(const std::function<bool(BlockId)>& evictable) override;
  bool admits(BlockId incoming, BlockId victim) const override;

  double deciding_half_life() const override { return half_lives_[leader_]; }
  // In the memory that decides now, a block's decayed count (the latest request counts 1, one a
  // half-life earlier 0.5).
  double frequency(BlockId block) const;

 private:
  struct Counts {
    std::array<double, kMemories> stored{};  // in units of the memory's request weight
    std::array<bool, kMemories> in_shadow{};
    std::uint64_t last_request = 0;
  };
  // Blocks ordered by count, then by a tick (a shadow's: the last request; the cache's: the last
  // insert or hit), so that the victim is the first.
  using CountKey = ScoredBlock;
  // A request; `hit`: it found the block resident, which makes the block the most recent.
  void count(BlockId block, bool hit);
  void rescale(std::size_t memory);
  double stored_count(std::size_t memory, BlockId block) const;
  void order_resident(BlockId block, std::uint64_t tick);
  void unorder_resident(BlockId block, std::uint64_t tick);

  HalfLives half_lives_;
  // What a request adds now, per memory. It grows by the decay instead of every count
  // shrinking, so a request updates one count per memory and moves its shadow entry and, when
  // the block is cached, its entry in the cache's order (O(log size) each); once it reaches
  // kRescaleAt, every 64 half-lives or so, all counts are divided by it at once.
  std::array<double, kMemories> request_weight_;
  std::array<double, kMemories> growth_;  // per request, for the blocks seen so far
  std::array<std::set<CountKey>, kMemories> shadows_;
  // Shadow hits, decaying as the longest memory's counts do.
  static constexpr std::size_t kLongest = kMemories - 1;
  std::array<double, kMemories> shadow_hits_{};
  double hit_weight_ = 1;
  std::size_t leader_ = 1;
  // Resident blocks when the cache last needed room, or more once a larger budget let it grow;
  // 0: not yet known.
  std::size_t capacity_ = 0;
  std::uint64_t requests_ = 0;
  std::unordered_map<BlockId, Counts, BlockIdHash> counts_;
  // The cache's blocks with their ticks, and in each memory's victim order: victim() takes the
  // first evictable block instead of scanning them all (with 4000 blocks cached and 480
  // requests a token, as DeepSeek-V3's: 1.5 ms of CPU a token under the tier's lock, not 42-52).
  std::unordered_map<BlockId, std::uint64_t, BlockIdHash> resident_ticks_;
  std::array<std::set<CountKey>, kMemories> resident_;
  std::uint64_t recency_clock_ = 0;
};

// Chooses experts to pin from how often they are requested, whatever the eviction policy: every
// `period` requests, of the resident blocks, those requested at least twice as often as the
// average block requested since the last choice, most requested first, while their bytes fit in
// `share` of the budget. Pins chosen so are never evicted until a later choice drops them. Counts
// halve at each choice, so popularity that fades lets its pins go. The host tier and the
// simulator drive the same object.
class AutoPinner {
 public:
  explicit AutoPinner(double share, std::uint64_t period = 1024);
  void count(BlockId block);
  bool due() const { return since_choice_ >= period_; }
  // `resident`: each resident block and its bytes.
  std::vector<BlockId> choose(const std::vector<std::pair<BlockId, std::uint64_t>>& resident,
                              std::uint64_t budget_bytes);
  double share() const { return share_; }

 private:
  double share_;
  std::uint64_t period_;
  std::uint64_t since_choice_ = 0;
  std::unordered_map<BlockId, double, BlockIdHash> counts_;
};

// The names make_policy accepts, and the one the daemon uses unless told otherwise.
const std::vector<std::string>& policy_names();
inline constexpr std::string_view kDefaultPolicy = "tinylfu";
// "lru, lfu, ...": for help texts and error messages.
std::string policy_list();

// One of policy_names(); throws std::invalid_argument naming the value otherwise.
std::unique_ptr<EvictionPolicy> make_policy(std::string_view name);

}  // namespace moed::memtier
