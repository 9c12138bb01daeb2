#include "moed/memtier/policy.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace moed::memtier {

void LruPolicy::on_insert(BlockId block) {
  on_erase(block);
  order_.push_front(block);
  where_[block] = order_.begin();
}

void LruPolicy::on_access(BlockId block) {
  auto it = where_.find(block);
  if (it != where_.end()) order_.splice(order_.begin(), order_, it->second);
}

void LruPolicy::on_erase(BlockId block) {
  auto it = where_.find(block);
  if (it == where_.end()) return;
  order_.erase(it->second);
  where_.erase(it);
}

std::optional<BlockId> LruPolicy::victim(const std::function<bool(BlockId)>& evictable) {
  for (auto it = order_.rbegin(); it != order_.rend(); ++it)
    if (evictable(*it)) return *it;
  return std::nullopt;
}

namespace {

// Every score divided by kRescaleAt: a power of two, so order and ties stay, but for scores so
// stale they fall below the normal doubles (they may then tie, or reach 0).
void rescale_scores(std::set<ScoredBlock>& keys) {
  std::set<ScoredBlock> rescaled;
  for (ScoredBlock key : keys) {
    key.stored /= kRescaleAt;
    rescaled.insert(rescaled.end(), key);
  }
  keys = std::move(rescaled);
}

// Moves an entry to its new place as its node, without reallocating it.
void move_key(std::set<ScoredBlock>& keys, const ScoredBlock& from, const ScoredBlock& to) {
  auto node = keys.extract(from);
  node.value() = to;
  keys.insert(std::move(node));
}

}  // namespace

LfuDecayPolicy::LfuDecayPolicy(double half_life) : growth_(std::exp2(1.0 / half_life)) {
  // At least 1 tick, so a tick grows the weight by at most 2 and one rescale always catches up.
  if (!(half_life >= 1))
    throw std::invalid_argument("lfu half-life must be at least 1, not " +
                                std::to_string(half_life));
}

std::uint64_t LfuDecayPolicy::tick() {
  access_weight_ *= growth_;
  if (access_weight_ >= kRescaleAt) {
    for (auto& [block, entry] : entries_) entry.stored /= kRescaleAt;
    access_weight_ /= kRescaleAt;
    rescale_scores(by_score_);
  }
  return ++clock_;
}

void LfuDecayPolicy::on_insert(BlockId block) {
  auto [it, added] = entries_.try_emplace(block);
  if (!added) by_score_.erase({it->second.stored, it->second.last, block});
  const std::uint64_t now = tick();
  it->second = {access_weight_, now};
  by_score_.insert({it->second.stored, now, block});
}

void LfuDecayPolicy::on_access(BlockId block) {
  auto it = entries_.find(block);
  if (it == entries_.end()) return;
  const std::uint64_t now = tick();
  // Read after tick(): a rescale there divides the entry and its key alike.
  const ScoredBlock before{it->second.stored, it->second.last, block};
  it->second = {it->second.stored + access_weight_, now};
  move_key(by_score_, before, {it->second.stored, now, block});
}

void LfuDecayPolicy::on_erase(BlockId block) {
  auto it = entries_.find(block);
  if (it == entries_.end()) return;
  by_score_.erase({it->second.stored, it->second.last, block});
  entries_.erase(it);
}

std::optional<BlockId> LfuDecayPolicy::victim(const std::function<bool(BlockId)>& evictable) {
  for (const auto& [stored, last, block] : by_score_)
    if (evictable(block)) return block;
  return std::nullopt;
}

void RecencyList::push_most_recent(BlockId block) {
  erase(block);
  order_.push_front(block);
  where_[block] = order_.begin();
}

bool RecencyList::erase(BlockId block) {
  auto it = where_.find(block);
  if (it == where_.end()) return false;
  order_.erase(it->second);
  where_.erase(it);
  return true;
}

std::optional<BlockId> RecencyList::least_recent(
    const std::function<bool(BlockId)>& evictable) const {
  for (auto it = order_.rbegin(); it != order_.rend(); ++it)
    if (evictable(*it)) return *it;
  return std::nullopt;
}

void RecencyList::drop_least_recent() {
  if (order_.empty()) return;
  where_.erase(order_.back());
  order_.pop_back();
}

void ArcPolicy::on_insert(BlockId block) {
  if (t1_.contains(block) || t2_.contains(block)) return;
  // A block ARC remembers was requested twice lately: it goes to the frequent side.
  if (b1_.erase(block) || b2_.erase(block))
    t2_.push_most_recent(block);
  else
    t1_.push_most_recent(block);
  missed_in_b2_ = false;
  trim_ghosts();
}

void ArcPolicy::on_access(BlockId block) {
  if (t1_.erase(block) || t2_.contains(block)) t2_.push_most_recent(block);
}

void ArcPolicy::on_erase(BlockId block) {
  if (t1_.erase(block))
    b1_.push_most_recent(block);
  else if (t2_.erase(block))
    b2_.push_most_recent(block);
  trim_ghosts();
}

void ArcPolicy::on_miss(BlockId block) {
  const auto b1 = static_cast<double>(b1_.size()), b2 = static_cast<double>(b2_.size());
  missed_in_b2_ = false;
  if (b1_.contains(block)) {
    // T1 evicted it too early: let T1 grow.
    target_recent_ =
        std::min(static_cast<double>(capacity_), target_recent_ + std::max(b2 / b1, 1.0));
  } else if (b2_.contains(block)) {
    target_recent_ = std::max(0.0, target_recent_ - std::max(b1 / b2, 1.0));
    missed_in_b2_ = true;
  }
}

std::optional<BlockId> ArcPolicy::victim(const std::function<bool(BlockId)>& evictable) {
  capacity_ = t1_.size() + t2_.size();
  const auto from_t1 = t1_.least_recent(evictable);
  const auto from_t2 = t2_.least_recent(evictable);
  const auto t1 = static_cast<double>(t1_.size());
  const bool prefer_t1 = t1 > target_recent_ || (missed_in_b2_ && t1 == target_recent_) || !from_t2;
  if (from_t1 && prefer_t1) return from_t1;
  return from_t2 ? from_t2 : from_t1;
}

void ArcPolicy::trim_ghosts() {
  // |T1| + |B1| <= c and |T1| + |T2| + |B1| + |B2| <= 2c, as in the paper.
  while (!b1_.empty() && t1_.size() + b1_.size() > capacity_) b1_.drop_least_recent();
  while (!(b1_.empty() && b2_.empty()) &&
         t1_.size() + t2_.size() + b1_.size() + b2_.size() > 2 * capacity_)
    (b2_.empty() ? b1_ : b2_).drop_least_recent();
}

TinyLfuPolicy::TinyLfuPolicy(HalfLives half_lives) : half_lives_(half_lives) {
  // At least 1, so a request grows the weight by at most 2 and one rescale always catches up.
  for (const double half_life : half_lives)
    if (!(half_life >= 1) || !std::isfinite(half_life))
      throw std::invalid_argument("tinylfu half-life must be finite and at least 1, not " +
                                  std::to_string(half_life));
  if (!std::ranges::is_sorted(half_lives))
    throw std::invalid_argument("tinylfu half-lives must go from short to long");
  request_weight_.fill(1);
  growth_.fill(1);
}

double TinyLfuPolicy::stored_count(std::size_t memory, BlockId block) const {
  auto it = counts_.find(block);
  return it == counts_.end() ? 0 : it->second.stored[memory];
}

double TinyLfuPolicy::frequency(BlockId block) const {
  return stored_count(leader_, block) / request_weight_[leader_];
}

void TinyLfuPolicy::rescale(std::size_t memory) {
  for (auto& [block, counts] : counts_) counts.stored[memory] /= kRescaleAt;
  request_weight_[memory] /= kRescaleAt;
  rescale_scores(shadows_[memory]);
  rescale_scores(resident_[memory]);
}

void TinyLfuPolicy::order_resident(BlockId block, std::uint64_t tick) {
  for (std::size_t m = 0; m < kMemories; ++m)
    resident_[m].insert({stored_count(m, block), tick, block});
}

void TinyLfuPolicy::unorder_resident(BlockId block, std::uint64_t tick) {
  for (std::size_t m = 0; m < kMemories; ++m)
    resident_[m].erase({stored_count(m, block), tick, block});
}

void TinyLfuPolicy::count(BlockId block, bool hit) {
  const auto resident = resident_ticks_.find(block);
  const bool cached = resident != resident_ticks_.end();
  const std::uint64_t cached_tick = cached ? resident->second : 0;
  if (cached && hit) resident->second = ++recency_clock_;
  const std::size_t seen_before = counts_.size();
  auto& counts = counts_[block];
  if (counts_.size() != seen_before)
    for (std::size_t m = 0; m < kMemories; ++m)
      growth_[m] = std::exp2(1.0 / (half_lives_[m] * static_cast<double>(counts_.size())));
  const std::uint64_t now = ++requests_;
  for (std::size_t m = 0; m < kMemories; ++m) {
    auto& shadow = shadows_[m];
    const double stored_before = counts.stored[m];
    request_weight_[m] *= growth_[m];
    counts.stored[m] += request_weight_[m];
    if (cached)
      move_key(resident_[m], {stored_before, cached_tick, block},
               {counts.stored[m], resident->second, block});
    const CountKey key{counts.stored[m], now, block};
    if (counts.in_shadow[m]) {
      move_key(shadow, {stored_before, counts.last_request, block}, key);
      shadow_hits_[m] += hit_weight_;
    } else if (capacity_ == 0 || shadow.size() < capacity_) {
      shadow.insert(key);
      counts.in_shadow[m] = true;
    } else if (key.stored > shadow.begin()->stored) {
      auto node = shadow.extract(shadow.begin());
      counts_.at(node.value().block).in_shadow[m] = false;
      node.value() = key;
      shadow.insert(std::move(node));
      counts.in_shadow[m] = true;
    }
    // Down to the cache's size when it is first learned (until then shadows keep every block
    // seen) and whenever the cache shrinks.
    while (capacity_ > 0 && shadow.size() > capacity_) {
      counts_.at(shadow.begin()->block).in_shadow[m] = false;
      shadow.erase(shadow.begin());
    }
  }
  counts.last_request = now;
  for (std::size_t m = 0; m < kMemories; ++m)
    if (request_weight_[m] >= kRescaleAt) rescale(m);
  hit_weight_ *= growth_[kLongest];
  if (hit_weight_ >= kRescaleAt) {
    for (double& hits : shadow_hits_) hits /= kRescaleAt;
    hit_weight_ /= kRescaleAt;
  }
  for (std::size_t m = 0; m < kMemories; ++m)
    if (shadow_hits_[m] > shadow_hits_[leader_]) leader_ = m;
}

void TinyLfuPolicy::on_insert(BlockId block) {
  auto [resident, added] = resident_ticks_.try_emplace(block, 0);
  if (!added) unorder_resident(block, resident->second);
  resident->second = ++recency_clock_;
  order_resident(block, resident->second);
  // A budget that grew: the shadows grow with the cache rather than when it next needs room.
  if (capacity_ > 0) capacity_ = std::max(capacity_, resident_ticks_.size());
}

void TinyLfuPolicy::on_access(BlockId block) {
  count(block, true);
}

void TinyLfuPolicy::on_erase(BlockId block) {
  const auto resident = resident_ticks_.find(block);
  if (resident == resident_ticks_.end()) return;
  unorder_resident(block, resident->second);
  resident_ticks_.erase(resident);
}

void TinyLfuPolicy::on_miss(BlockId block) {
  count(block, false);
}

std::optional<BlockId> TinyLfuPolicy::victim(const std::function<bool(BlockId)>& evictable) {
  capacity_ = resident_ticks_.size();
  // The lowest count first, the least recent among equals.
  for (const CountKey& key : resident_[leader_])
    if (evictable(key.block)) return key.block;
  return std::nullopt;
}

bool TinyLfuPolicy::admits(BlockId incoming, BlockId victim) const {
  return stored_count(leader_, incoming) > stored_count(leader_, victim);
}

const std::vector<std::string>& policy_names() {
  static const std::vector<std::string> names = {"lru", "lfu", "arc", "tinylfu"};
  return names;
}

std::string policy_list() {
  std::string list;
  for (const auto& name : policy_names()) list += (list.empty() ? "" : ", ") + name;
  return list;
}

std::unique_ptr<EvictionPolicy> make_policy(std::string_view name) {
  if (name == "lru") return std::make_unique<LruPolicy>();
  if (name == "lfu") return std::make_unique<LfuDecayPolicy>();
  if (name == "arc") return std::make_unique<ArcPolicy>();
  if (name == "tinylfu") return std::make_unique<TinyLfuPolicy>();
  throw std::invalid_argument("unknown eviction policy '" + std::string(name) + "' (" +
                              policy_list() + ")");
}

AutoPinner::AutoPinner(double share, std::uint64_t period) : share_(share), period_(period) {
  if (!(share >= 0 && share <= 1))
    throw std::invalid_argument("auto-pin share " + std::to_string(share) + " is outside 0..1");
  if (period == 0) throw std::invalid_argument("auto-pin period must be above 0");
}

void AutoPinner::count(BlockId block) {
  counts_[block] += 1;
  ++since_choice_;
}

std::vector<BlockId> AutoPinner::choose(
    const std::vector<std::pair<BlockId, std::uint64_t>>& resident, std::uint64_t budget_bytes) {
  double total = 0;
  for (const auto& [block, count] : counts_) total += count;
  const double threshold = counts_.empty() ? 0 : 2 * total / static_cast<double>(counts_.size());
  std::vector<std::pair<double, std::pair<BlockId, std::uint64_t>>> candidates;
  for (const auto& entry : resident)
    if (auto it = counts_.find(entry.first); it != counts_.end() && it->second >= threshold)
      candidates.push_back({it->second, entry});
  std::ranges::sort(candidates, [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second.first < b.second.first;
  });
  const auto room = static_cast<std::uint64_t>(share_ * static_cast<double>(budget_bytes));
  std::vector<BlockId> pins;
  std::uint64_t bytes = 0;
  for (const auto& [count, entry] : candidates) {
    if (bytes + entry.second > room) break;
    bytes += entry.second;
    pins.push_back(entry.first);
  }
  for (auto it = counts_.begin(); it != counts_.end();) {
    it->second /= 2;
    it = it->second < 0.5 ? counts_.erase(it) : std::next(it);
  }
  since_choice_ = 0;
  return pins;
}

}  // namespace moed::memtier
