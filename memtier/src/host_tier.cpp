#include "moed/memtier/host_tier.hpp"

#include <algorithm>
#include <stdexcept>

namespace moed::memtier {

HostTier::HostTier(std::uint64_t budget_bytes, std::unique_ptr<EvictionPolicy> policy)
    : budget_bytes_(budget_bytes), policy_(std::move(policy)) {
  if (!policy_) throw std::invalid_argument("HostTier: no eviction policy");
}

Payload HostTier::lookup(BlockId block) {
  std::lock_guard lock(mutex_);
  if (pinner_) {
    pinner_->count(block);
    if (pinner_->due()) {
      std::vector<std::pair<BlockId, std::uint64_t>> candidates;
      for (const auto& [id, payload] : blocks_)
        if (!pins_.contains(id)) candidates.push_back({id, payload->bytes()});
      std::ranges::sort(candidates);  // the choice must not depend on hash order
      const auto chosen = pinner_->choose(candidates, budget_bytes_);
      auto_pins_ = std::set<BlockId>(chosen.begin(), chosen.end());
    }
  }
  auto it = blocks_.find(block);
  if (it == blocks_.end()) {
    ++counters_.misses;
    policy_->on_miss(block);
    return nullptr;
  }
  ++counters_.hits;
  policy_->on_access(block);
  return it->second;
}

Payload HostTier::peek(BlockId block) const {
  std::lock_guard lock(mutex_);
  auto it = blocks_.find(block);
  return it == blocks_.end() ? nullptr : it->second;
}

void HostTier::evict(BlockId block) {
  auto it = blocks_.find(block);
  used_bytes_ -= it->second->bytes();
  blocks_.erase(it);
  policy_->on_erase(block);
  ++counters_.evictions;
}

HostTier::Room HostTier::make_room(std::uint64_t bytes, std::optional<BlockId> incoming) {
  auto evictable = [&](BlockId id) {
    // use_count 1: only this tier holds it, so dropping it frees the memory now.
    return !pins_.contains(id) && !auto_pins_.contains(id) && blocks_.at(id).use_count() == 1;
  };
  while (used_bytes_ + bytes > budget_bytes_) {
    const auto victim = policy_->victim(evictable);
    if (!victim) return Room::none;
    if (incoming && !policy_->admits(*incoming, *victim)) return Room::refused;
    evict(*victim);
  }
  return Room::made;
}

bool HostTier::admit(BlockId block, Payload payload, Admission admission) {
  if (!payload)
    throw std::invalid_argument("HostTier::admit: null payload for " + block.to_string());
  std::lock_guard lock(mutex_);
  if (blocks_.contains(block)) return true;
  const std::uint64_t bytes = payload->bytes();
  // An admin pinned it to keep it: the filter, which would weigh its few requests against a
  // victim's, is not asked.
  const bool filtered = admission == Admission::filtered && !pins_.contains(block);
  const auto incoming = filtered ? std::optional<BlockId>(block) : std::nullopt;
  const Room room = bytes > budget_bytes_ ? Room::none : make_room(bytes, incoming);
  if (room != Room::made) {
    ++counters_.bypasses;
    if (room == Room::refused) ++counters_.refusals;
    return false;
  }
  blocks_.emplace(block, std::move(payload));
  used_bytes_ += bytes;
  policy_->on_insert(block);
  return true;
}

void HostTier::pin(BlockId block) {
  std::lock_guard lock(mutex_);
  pins_.insert(block);
  auto_pins_.erase(block);  // now the admin's
}

void HostTier::unpin(BlockId block) {
  std::lock_guard lock(mutex_);
  pins_.erase(block);
  auto_pins_.erase(block);
}

void HostTier::set_auto_pin(double share, std::uint64_t period) {
  {
    std::lock_guard lock(mutex_);
    if (pinner_ ? pinner_->share() == share : share == 0) return;  // its pins stay
  }
  std::optional<AutoPinner> pinner;
  if (share > 0) pinner.emplace(share, period);  // validates share and period
  std::lock_guard lock(mutex_);
  pinner_ = std::move(pinner);
  auto_pins_.clear();
}

void HostTier::set_budget(std::uint64_t budget_bytes) {
  std::lock_guard lock(mutex_);
  budget_bytes_ = budget_bytes;
  make_room(0);
}

void HostTier::set_policy(std::unique_ptr<EvictionPolicy> policy) {
  if (!policy) throw std::invalid_argument("HostTier: no eviction policy");
  std::lock_guard lock(mutex_);
  policy_ = std::move(policy);
  // In block order, not hash order: the new policy has no counts yet, and its first choices
  // follow the order it was told of the blocks.
  std::vector<BlockId> resident;
  for (const auto& [block, payload] : blocks_) resident.push_back(block);
  std::ranges::sort(resident);
  for (const BlockId block : resident) policy_->on_insert(block);
}

HostTier::Counters HostTier::counters() const {
  std::lock_guard lock(mutex_);
  Counters c = counters_;
  c.used_bytes = used_bytes_;
  c.budget_bytes = budget_bytes_;
  c.blocks = blocks_.size();
  c.pinned = pins_.size() + auto_pins_.size();
  c.auto_pinned = auto_pins_.size();
  c.auto_pin_share = pinner_ ? pinner_->share() : 0;
  for (const auto& block : pins_) c.pins.push_back({block, false, blocks_.contains(block)});
  for (const auto& block : auto_pins_) c.pins.push_back({block, true, blocks_.contains(block)});
  c.policy = std::string(policy_->name());
  c.policy_half_life = policy_->deciding_half_life();
  return c;
}

}  // namespace moed::memtier
