#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <span>
#include <vector>

#include "moed/memtier/block_loader.hpp"
#include "moed/memtier/host_tier.hpp"

namespace moed::memtier {

struct LayerCounters {
  std::uint64_t hits = 0, misses = 0;
  std::uint64_t prefetch_issued = 0, prefetch_hits = 0, prefetch_late = 0, prefetch_wasted = 0;
  std::uint64_t bytes_read = 0;
  double wait_seconds = 0;  // time compute waited on I/O for this layer
};

// Routed experts across the host and disk tiers: acquire() serves a block from host RAM or reads
// it (a demand read), predict() starts prefetch reads for the next layer's likely experts, and
// settle() scores each prediction as hit (resident when needed), late (still in flight) or
// wasted (not needed), cancelling the wasted ones still queued.
class TieredStore {
 public:
  TieredStore(HostTier& host, BlockLoader& loader, const Source& source, std::int32_t layers);

  Payload acquire(BlockId block);  // throws the read error for this block
  // The resident payloads among `experts` of `layer`, without counting lookups. The host tier
  // never evicts a block in use, so holding these keeps them for the caller, e.g. while the
  // prefetches of the next layer are admitted before this layer has acquired its experts.
  std::vector<Payload> hold_resident(std::int32_t layer, std::span<const std::int32_t> experts);
  void predict(std::int32_t layer, std::span<const std::int32_t> experts);
  void settle(std::int32_t layer);
  std::vector<LayerCounters> layer_counters() const;
  void reset_counters();

 private:
  enum class Prediction { issued, used };
  HostTier& host_;
  BlockLoader& loader_;
  const Source& source_;
  mutable std::mutex mutex_;
  std::vector<LayerCounters> layers_;
  std::map<BlockId, Prediction> predictions_;
};

// The SE-MoE ring: a fixed number of sections in a tier, filled in round-robin order with the
// blocks of a cyclic schedule (e.g. each layer's dense weights, layer after layer) ahead of the
// compute that needs them, and freed when that compute is done. Memory is bounded by
// sections x the largest block; the same type serves disk->host and host->GPU. Positions are
// taken modulo the schedule's length, so a schedule of layers repeats for every token.
// One thread (the compute's) uses the ring; counters() may be called from any thread.
class SectionRing {
 public:
  SectionRing(BlockLoader& loader, std::vector<BlockId> schedule, std::size_t sections);

  // The payload of schedule[index % size]; starts loads for the sections after it.
  Payload acquire(std::size_t index);
  // Ready payload of schedule[index % size] if its section already holds it, without waiting.
  Payload try_peek(std::size_t index);
  void release(std::size_t index);
  std::size_t sections() const { return slots_.size(); }

  struct Counters {
    std::uint64_t loads = 0, waits = 0;
    double wait_seconds = 0;
  };
  Counters counters() const;

 private:
  struct Slot {
    std::size_t index = SIZE_MAX;  // schedule position it holds (not modulo)
    bool busy = false;             // acquired and not yet released
    std::shared_future<Payload> future;
  };
  void fill(std::size_t index, BlockLoader::Priority priority);

  BlockLoader& loader_;
  std::vector<BlockId> schedule_;
  std::vector<Slot> slots_;
  mutable std::mutex counters_mutex_;
  Counters counters_;
};

}  // namespace moed::memtier
