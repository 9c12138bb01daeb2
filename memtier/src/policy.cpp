#include "moed/memtier/policy.hpp"

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

LfuDecayPolicy::LfuDecayPolicy(double half_life) : decay_per_tick_(std::exp2(-1.0 / half_life)) {
  if (!(half_life > 0)) throw std::invalid_argument("lfu half_life must be positive");
}

double LfuDecayPolicy::decayed(const Entry& e) const {
  return e.score * std::pow(decay_per_tick_, static_cast<double>(clock_ - e.last));
}

void LfuDecayPolicy::on_insert(BlockId block) {
  entries_[block] = {1.0, ++clock_};
}

void LfuDecayPolicy::on_access(BlockId block) {
  auto it = entries_.find(block);
  if (it == entries_.end()) return;
  ++clock_;
  it->second = {decayed(it->second) + 1.0, clock_};
}

void LfuDecayPolicy::on_erase(BlockId block) {
  entries_.erase(block);
}

std::optional<BlockId> LfuDecayPolicy::victim(const std::function<bool(BlockId)>& evictable) {
  std::optional<BlockId> best;
  double best_score = 0;
  std::uint64_t best_last = 0;
  for (const auto& [block, entry] : entries_) {
    if (!evictable(block)) continue;
    const double score = decayed(entry);
    if (!best || score < best_score || (score == best_score && entry.last < best_last)) {
      best = block;
      best_score = score;
      best_last = entry.last;
    }
  }
  return best;
}

std::unique_ptr<EvictionPolicy> make_policy(std::string_view name) {
  if (name == "lru") return std::make_unique<LruPolicy>();
  if (name == "lfu") return std::make_unique<LfuDecayPolicy>();
  throw std::invalid_argument("unknown eviction policy '" + std::string(name) + "' (lru, lfu)");
}

}  // namespace moed::memtier
