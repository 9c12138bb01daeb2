#include "moed/memtier/host_tier.hpp"

#include <stdexcept>

namespace moed::memtier {

HostTier::HostTier(std::uint64_t budget_bytes, std::unique_ptr<EvictionPolicy> policy)
    : budget_bytes_(budget_bytes), policy_(std::move(policy)) {
  if (!policy_) throw std::invalid_argument("HostTier: no eviction policy");
}

Payload HostTier::lookup(BlockId block) {
  std::lock_guard lock(mutex_);
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
    return !pins_.contains(id) && blocks_.at(id).use_count() == 1;
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
  const auto incoming =
      admission == Admission::filtered ? std::optional<BlockId>(block) : std::nullopt;
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
}

void HostTier::unpin(BlockId block) {
  std::lock_guard lock(mutex_);
  pins_.erase(block);
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
  for (const auto& [block, payload] : blocks_) policy_->on_insert(block);
}

HostTier::Counters HostTier::counters() const {
  std::lock_guard lock(mutex_);
  Counters c = counters_;
  c.used_bytes = used_bytes_;
  c.budget_bytes = budget_bytes_;
  c.blocks = blocks_.size();
  c.pinned = pins_.size();
  c.policy = std::string(policy_->name());
  return c;
}

}  // namespace moed::memtier
