#include "moed/memtier/tiered_store.hpp"

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
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
  Payload hit = host_.lookup(block);
  std::shared_future<Payload> load;  // the read expect() started, or a prefetch's, if any
  {
    std::lock_guard lock(mutex_);
    // A read that failed is read again rather than its error reused: the pass that expected it
    // may have stopped on an earlier error (then this read, of a later pass, would fail for
    // nothing); a read failing now fails twice, which costs a read only on the error path.
    if (auto expected = expected_.extract(block); expected && !failed(expected.mapped()))
      load = std::move(expected.mapped());
    auto it = predictions_.find(block);
    Prediction* prediction = it == predictions_.end() ? nullptr : &it->second;
    const bool first_need = prediction && !prediction->needed;
    if (first_need) {
      prediction->needed = true;
      prediction->landed = nullptr;  // the caller holds it while it computes
      for (int h = 1; h <= kPrefetchHorizons; ++h)
        if (prediction->predicted_by & (1u << (h - 1))) ++layer.horizons[h - 1].used;
    }
    const bool scored = first_need && prediction->issued_by != 0 && !prediction->cancelled;
    auto& horizon = layer.horizons[scored ? prediction->issued_by - 1 : 0];
    if (hit) {
      ++layer.hits;
      if (scored) ++horizon.hits;
      return hit;
    }
    ++layer.misses;
    // A read under way (a prefetch's, or one an earlier pass left) is joined as a demand; its
    // own callback counts its bytes.
    const bool expected = load.valid();
    if (!expected) load = loader_.prioritize(block);
    const bool joins_prefetch = !expected && load.valid() && prediction &&
                                prediction->issued_by != 0 && !prediction->cancelled;
    if (scored) {
      if (joins_prefetch) {
        ++horizon.late;
      } else if (Payload arrived = host_.peek(block)) {
        ++horizon.late;  // its read finished since the lookup: no second read
        return arrived;
      } else {
        ++horizon.wasted;  // read, then turned away by the tier
      }
    }
  }
  const auto start = Clock::now();
  if (!load.valid()) load = loader_.load(block, BlockLoader::Priority::demand, count_bytes_read());
  if (waiter_ && load.wait_for(std::chrono::seconds(0)) != std::future_status::ready) waiter_(load);
  Payload payload = load.get();
  {
    std::lock_guard lock(mutex_);
    layer.wait_seconds += since(start);
  }
  host_.admit(block, payload, HostTier::Admission::filtered);
  return payload;
}

void TieredStore::expect(BlockId block) {
  layers_.at(static_cast<std::size_t>(block.layer));  // throws for a layer out of range
  std::lock_guard lock(mutex_);
  if (auto it = expected_.find(block); it != expected_.end()) {
    if (!failed(it->second)) return;
    expected_.erase(it);  // a pass that stopped on this error left it: read again
  }
  // A prefetch still queued or reading becomes a demand. Asked before the tier: a prefetch
  // admitted between a look at the tier and this would otherwise be read twice.
  if (loader_.prioritize(block).valid()) return;
  if (host_.peek(block)) return;
  expected_.emplace(block, loader_.load(block, BlockLoader::Priority::demand, count_bytes_read()));
}

BlockLoader::OnLoaded TieredStore::count_bytes_read() {
  return [this](BlockId id, const Payload&) {
    std::lock_guard lock(mutex_);
    layers_[static_cast<std::size_t>(id.layer)].bytes_read += source_.bytes(id);
  };
}

std::vector<Payload> TieredStore::hold_resident(std::int32_t layer,
                                                std::span<const std::int32_t> experts) {
  std::vector<Payload> held;
  for (const std::int32_t expert : experts)
    held.push_back(host_.peek(BlockId::routed(layer, expert)));
  return held;
}

BlockLoader::Priority TieredStore::priority_of(int horizon) {
  return horizon == 1 ? BlockLoader::Priority::prefetch : BlockLoader::Priority::prefetch_far;
}

// With mutex_ held. The loader runs callbacks without its own lock held, so it never waits on
// this store's.
void TieredStore::issue(BlockId block, int horizon) {
  Prediction& prediction = predictions_[block];
  prediction.issued_by = horizon;
  prediction.cancelled = false;
  ++layers_[static_cast<std::size_t>(block.layer)].horizons[horizon - 1].issued;
  // Offered to the tier as a prefetch, and held for the prediction until its layer asks.
  const BlockLoader::OnLoaded admit = [this](BlockId id, const Payload& payload) {
    if (!host_.admit(id, payload)) return;
    Payload resident = host_.peek(id);
    std::lock_guard lock(mutex_);
    auto it = predictions_.find(id);
    if (it != predictions_.end() && !it->second.needed) it->second.landed = std::move(resident);
  };
  // A read an earlier pass started and could not cancel is joined: it has its byte count (a
  // second admission of a block the tier holds changes nothing).
  if (loader_.prioritize(block, priority_of(horizon), admit).valid()) return;
  loader_.load(block, priority_of(horizon),
               [admit, count = count_bytes_read()](BlockId id, const Payload& payload) {
                 count(id, payload);
                 admit(id, payload);
               });
}

void TieredStore::prefetch(std::int32_t layer, std::span<const std::int32_t> experts, int horizon) {
  if (horizon < 1 || horizon > kPrefetchHorizons)
    throw std::invalid_argument("prefetch: horizon " + std::to_string(horizon) + " is outside 1.." +
                                std::to_string(kPrefetchHorizons));
  if (layer < 0 || static_cast<std::size_t>(layer) >= layers_.size())
    throw std::invalid_argument("prefetch: layer " + std::to_string(layer) + " is outside 0.." +
                                std::to_string(layers_.size() - 1));
  for (const std::int32_t expert : experts)
    if (expert < 0)
      throw std::invalid_argument("prefetch: expert " + std::to_string(expert) + " of layer " +
                                  std::to_string(layer) + " is negative");
  std::lock_guard lock(mutex_);
  auto& counters = layers_[static_cast<std::size_t>(layer)].horizons[horizon - 1];
  // The earlier predictions this one replaces: their reads not yet started are dropped.
  for (auto it = predictions_.lower_bound(BlockId::routed(layer, 0));
       it != predictions_.end() && it->first.layer == layer; ++it) {
    Prediction& earlier = it->second;
    if (earlier.issued_by == 0 || earlier.cancelled || earlier.needed ||
        std::ranges::find(experts, it->first.expert) != experts.end())
      continue;
    if (loader_.cancel(it->first)) {
      earlier.cancelled = true;
      ++layers_[static_cast<std::size_t>(layer)].horizons[earlier.issued_by - 1].cancelled;
    }
  }
  for (const std::int32_t expert : experts) {
    const BlockId block = BlockId::routed(layer, expert);
    Prediction& prediction = predictions_[block];
    const unsigned bit = 1u << (horizon - 1);
    if (prediction.predicted_by & bit) continue;  // listed twice
    prediction.predicted_by |= bit;
    ++counters.predicted;
    if (prediction.needed) continue;
    const bool reading = prediction.issued_by != 0 && !prediction.cancelled;
    if (reading) {
      // Predicted again nearer to its use: its read, if queued, moves up to this priority.
      if (horizon < prediction.issued_by) loader_.prioritize(block, priority_of(horizon));
      continue;
    }
    if (host_.peek(block)) continue;
    issue(block, horizon);
  }
}

void TieredStore::settle(std::int32_t layer) {
  std::lock_guard lock(mutex_);
  auto& counters = layers_.at(static_cast<std::size_t>(layer));
  auto it = predictions_.lower_bound(BlockId::routed(layer, 0));
  while (it != predictions_.end() && it->first.layer == layer) {
    const Prediction& prediction = it->second;
    if (prediction.issued_by != 0 && !prediction.cancelled && !prediction.needed) {
      auto& horizon = counters.horizons[prediction.issued_by - 1];
      if (loader_.cancel(it->first)) {
        ++horizon.cancelled;
      } else {
        ++horizon.wasted;
      }
    }
    it = predictions_.erase(it);
  }
  // Reads expect() started for experts the layer did not acquire (it stopped on an error).
  std::erase_if(expected_, [&](const auto& entry) { return entry.first.layer == layer; });
}

void TieredStore::abandon() {
  while (true) {
    std::int32_t layer = 0;
    {
      std::lock_guard lock(mutex_);
      if (predictions_.empty()) {
        expected_.clear();
        return;
      }
      layer = predictions_.begin()->first.layer;
    }
    settle(layer);
  }
}

std::vector<LayerCounters> TieredStore::layer_counters() const {
  std::lock_guard lock(mutex_);
  std::vector<LayerCounters> out = layers_;
  for (auto& layer : out) {
    layer.prefetch_issued = layer.prefetch_hits = layer.prefetch_late = layer.prefetch_wasted = 0;
    for (const auto& h : layer.horizons) {
      layer.prefetch_issued += h.issued;
      layer.prefetch_hits += h.hits;
      layer.prefetch_late += h.late;
      layer.prefetch_wasted += h.wasted + h.cancelled;
    }
  }
  return out;
}

HorizonTotals horizon_totals(const std::vector<LayerCounters>& layers) {
  HorizonTotals totals{};
  for (const auto& layer : layers)
    for (std::size_t h = 0; h < totals.size(); ++h) {
      const auto& c = layer.horizons[h];
      totals[h].predicted += c.predicted;
      totals[h].used += c.used;
      totals[h].issued += c.issued;
      totals[h].hits += c.hits;
      totals[h].late += c.late;
      totals[h].wasted += c.wasted;
      totals[h].cancelled += c.cancelled;
    }
  return totals;
}

nlohmann::json to_json(const HorizonTotals& horizons) {
  nlohmann::json out = nlohmann::json::array();
  for (std::size_t h = 0; h < horizons.size(); ++h)
    out.push_back({{"horizon", h + 1},
                   {"predicted", horizons[h].predicted},
                   {"used", horizons[h].used},
                   {"issued", horizons[h].issued},
                   {"hits", horizons[h].hits},
                   {"late", horizons[h].late},
                   {"wasted", horizons[h].wasted},
                   {"cancelled", horizons[h].cancelled}});
  return out;
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
