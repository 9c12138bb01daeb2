#include "moed/memtier/tiered_store.hpp"

#include <chrono>
#include <stdexcept>

namespace moed::memtier {
namespace {
using Clock = std::chrono::steady_clock;
double since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// A load that is over and ended in an error (a read error, or a cancelled prefetch).
bool failed(const std::shared_future<Payload>& load) {
  if (!load.valid() || load.wait_for(std::chrono::seconds(0)) != std::future_status::ready)
    return false;
  try {
    load.get();
    return false;
  } catch (...) {
    return true;
  }
}
}  // namespace

TieredStore::TieredStore(HostTier& host, BlockLoader& loader, const Source& source,
                         std::int32_t layers)
    : host_(host), loader_(loader), source_(source), layers_(static_cast<std::size_t>(layers)) {}

Payload TieredStore::acquire(BlockId block) {
  auto& layer = layers_.at(static_cast<std::size_t>(block.layer));
  if (Payload hit = host_.lookup(block)) {
    std::lock_guard lock(mutex_);
    ++layer.hits;
    auto it = predictions_.find(block);
    if (it != predictions_.end() && it->second == Prediction::issued) {
      ++layer.prefetch_hits;
      it->second = Prediction::used;
    }
    return hit;
  }
  {
    std::lock_guard lock(mutex_);
    ++layer.misses;
    auto it = predictions_.find(block);
    if (it != predictions_.end() && it->second == Prediction::issued) {
      ++layer.prefetch_late;
      it->second = Prediction::used;
    }
  }
  const auto start = Clock::now();
  auto future =
      loader_.load(block, BlockLoader::Priority::demand, [this](BlockId id, const Payload&) {
        std::lock_guard lock(mutex_);
        layers_[static_cast<std::size_t>(id.layer)].bytes_read += source_.bytes(id);
      });
  Payload payload = future.get();
  {
    std::lock_guard lock(mutex_);
    layer.wait_seconds += since(start);
  }
  host_.admit(block, payload, HostTier::Admission::filtered);
  return payload;
}

std::vector<Payload> TieredStore::hold_resident(std::int32_t layer,
                                                std::span<const std::int32_t> experts) {
  std::vector<Payload> held;
  for (const std::int32_t expert : experts)
    if (Payload resident = host_.peek(BlockId::routed(layer, expert)))
      held.push_back(std::move(resident));
  return held;
}

void TieredStore::predict(std::int32_t layer, std::span<const std::int32_t> experts) {
  for (const std::int32_t expert : experts) {
    const BlockId block = BlockId::routed(layer, expert);
    {
      std::lock_guard lock(mutex_);
      if (predictions_.contains(block)) continue;
    }
    if (host_.peek(block)) continue;
    {
      std::lock_guard lock(mutex_);
      predictions_[block] = Prediction::issued;
      ++layers_.at(static_cast<std::size_t>(layer)).prefetch_issued;
    }
    loader_.load(block, BlockLoader::Priority::prefetch,
                 [this](BlockId id, const Payload& payload) {
                   {
                     std::lock_guard lock(mutex_);
                     layers_[static_cast<std::size_t>(id.layer)].bytes_read += source_.bytes(id);
                   }
                   host_.admit(id, payload);
                 });
  }
}

void TieredStore::settle(std::int32_t layer) {
  std::vector<BlockId> unused;
  {
    std::lock_guard lock(mutex_);
    for (auto it = predictions_.begin(); it != predictions_.end();) {
      if (it->first.layer != layer) {
        ++it;
        continue;
      }
      if (it->second == Prediction::issued) {
        ++layers_.at(static_cast<std::size_t>(layer)).prefetch_wasted;
        unused.push_back(it->first);
      }
      it = predictions_.erase(it);
    }
  }
  for (const auto& block : unused) loader_.cancel(block);
}

std::vector<LayerCounters> TieredStore::layer_counters() const {
  std::lock_guard lock(mutex_);
  return layers_;
}

void TieredStore::reset_counters() {
  std::lock_guard lock(mutex_);
  for (auto& layer : layers_) layer = {};
}

SectionRing::SectionRing(BlockLoader& loader, std::vector<BlockId> schedule, std::size_t sections)
    : loader_(loader),
      schedule_(std::move(schedule)),
      slots_(std::min(sections, schedule_.size())) {
  if (sections == 0 || schedule_.empty())
    throw std::invalid_argument("SectionRing: needs at least one section and one block");
}

void SectionRing::fill(std::size_t index, BlockLoader::Priority priority) {
  index %= schedule_.size();
  Slot& slot = slots_[index % slots_.size()];
  // A failed load is read again when its block is next needed: the disk may have recovered.
  if (slot.index == index && !failed(slot.future)) {
    if (priority == BlockLoader::Priority::demand) loader_.prioritize(schedule_[index]);
    return;
  }
  if (slot.busy && slot.index != index) return;  // still in use by compute; filled once released
  slot.index = index;
  slot.future = loader_.load(schedule_[index % schedule_.size()], priority);
  std::lock_guard lock(counters_mutex_);
  ++counters_.loads;
}

Payload SectionRing::acquire(std::size_t index) {
  index %= schedule_.size();
  Slot& slot = slots_[index % slots_.size()];
  if (slot.busy && slot.index != index) slot.busy = false;  // its user failed without release
  fill(index, BlockLoader::Priority::demand);
  slot.busy = true;
  for (std::size_t ahead = 1; ahead < slots_.size(); ++ahead)
    fill(index + ahead, BlockLoader::Priority::prefetch);
  if (slot.future.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
    const auto start = Clock::now();
    slot.future.wait();
    std::lock_guard lock(counters_mutex_);
    ++counters_.waits;
    counters_.wait_seconds += since(start);
  }
  return slot.future.get();
}

Payload SectionRing::try_peek(std::size_t index) {
  index %= schedule_.size();
  Slot& slot = slots_[index % slots_.size()];
  if (slot.index != index || !slot.future.valid() ||
      slot.future.wait_for(std::chrono::seconds(0)) != std::future_status::ready)
    return nullptr;
  try {
    return slot.future.get();
  } catch (...) {
    return nullptr;  // the error surfaces at acquire()
  }
}

SectionRing::Counters SectionRing::counters() const {
  std::lock_guard lock(counters_mutex_);
  return counters_;
}

void SectionRing::release(std::size_t index) {
  index %= schedule_.size();
  Slot& slot = slots_[index % slots_.size()];
  if (slot.index != index) return;
  slot.busy = false;
  // Reuse the section for the block `sections` positions later, as the round-robin order says.
  const std::size_t next = index + slots_.size();
  slot.index = SIZE_MAX;
  slot.future = {};
  fill(next, BlockLoader::Priority::prefetch);
}

}  // namespace moed::memtier
