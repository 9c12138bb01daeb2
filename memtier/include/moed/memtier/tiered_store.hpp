#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json_fwd.hpp>
#include <span>
#include <vector>

#include "moed/memtier/block_loader.hpp"
#include "moed/memtier/host_tier.hpp"

namespace moed::memtier {

// Predictions can look this many layers ahead: horizon 1 is the next layer, 2 the one after.
inline constexpr int kPrefetchHorizons = 2;

// How the predictions made `horizon` layers ahead of a layer fared. A prediction is one
// (layer, expert) pair, counted once per pass through the layer however often it is repeated.
struct HorizonCounters {
  std::uint64_t predicted = 0;  // experts predicted for the layer
  std::uint64_t used = 0;       // of those, experts the layer then routed to (precision)
  std::uint64_t issued = 0;     // prefetch loads these predictions started
  std::uint64_t hits = 0;       // issued, and resident when the layer needed the expert
  std::uint64_t late = 0;       // issued, and still being read when needed
  // Issued and read, but not needed by the layer, or turned away by the tier (no room it could
  // free). A prefetch the tier admitted is held until its layer needs it, so never evicted first.
  std::uint64_t wasted = 0;
  // Issued but dropped before their read started: the layer was computed first, or a newer
  // prediction for it left the expert out. Never read, so they evicted nothing.
  std::uint64_t cancelled = 0;
};

struct LayerCounters {
  std::uint64_t hits = 0, misses = 0;
  // Totals over the horizons (wasted includes cancelled: prefetches that were not needed).
  std::uint64_t prefetch_issued = 0, prefetch_hits = 0, prefetch_late = 0, prefetch_wasted = 0;
  std::array<HorizonCounters, kPrefetchHorizons> horizons{};  // [0]: horizon 1
  std::uint64_t bytes_read = 0;
  double wait_seconds = 0;  // time compute waited on I/O for this layer
};

using HorizonTotals = std::array<HorizonCounters, kPrefetchHorizons>;
// Each prefetch horizon's counters summed over the layers.
HorizonTotals horizon_totals(const std::vector<LayerCounters>& layers);
// [{"horizon": 1, "predicted", "used", "issued", "hits", "late", "wasted", "cancelled"}, ...]
nlohmann::json to_json(const HorizonTotals& horizons);

// Routed experts across the host and disk tiers: acquire() serves a block from host RAM or reads
// it (a demand read), prefetch() starts reads for the experts predicted for a layer one or more
// layers ahead, and settle() scores each prediction for a layer once it has been computed.
// Prefetches for the next layer are read before those for layers further ahead and demands
// before both; a queued prefetch whose prediction went stale (its layer was computed, or a newer
// prediction for the layer left it out) is cancelled, so it never takes a read or evicts a
// block. Reads already started finish and are kept, and an admitted prefetch is held (kept from
// eviction) until its layer needs it or settles. Prediction calls (prefetch, predict, settle),
// expect and acquire come from one thread, the compute's; counters may be read from any.
class TieredStore {
 public:
  TieredStore(HostTier& host, BlockLoader& loader, const Source& source, std::int32_t layers);

  Payload acquire(BlockId block);  // throws the read error for this block
  // How acquire() waits for a block still being read: `waiter` must return once `load` is
  // ready (the engine keeps its compute threads awake meanwhile). Default: load.wait().
  using Waiter = std::function<void(const std::shared_future<Payload>& load)>;
  void set_waiter(Waiter waiter) { waiter_ = std::move(waiter); }
  // The caller will acquire `block` soon (the next expert of the layer it computes): unless it is
  // resident, its demand read starts now, so that it overlaps the caller's work on the block
  // before; a prefetch of it still queued or reading becomes a demand (and can no longer be
  // cancelled). acquire() then takes the payload and offers it to the host tier as though it
  // had just been read, so the tier sees the same requests in the same order and the hits stay
  // the simulator's; until then the payload is held outside the tier's budget (one expert: the
  // engine expects only the next). Throws std::out_of_range for a layer out of range.
  void expect(BlockId block);
  // The payloads of `experts` of `layer` that are resident (null for the others, so entry i is
  // experts[i]'s), without counting lookups. The host tier never evicts a block in use, so
  // holding these keeps them for the caller, e.g. while the prefetches of the next layer are
  // admitted before this layer has acquired its experts.
  std::vector<Payload> hold_resident(std::int32_t layer, std::span<const std::int32_t> experts);
  // The experts predicted for `layer`, `horizon` (1..kPrefetchHorizons) layers ahead of the one
  // computing now. Replaces earlier predictions for that layer: their queued reads for experts
  // not in `experts` are cancelled, and an expert predicted again at a nearer horizon has its
  // queued read raised to that horizon's priority. Throws std::invalid_argument for a horizon
  // or layer out of range.
  void prefetch(std::int32_t layer, std::span<const std::int32_t> experts, int horizon);
  void predict(std::int32_t layer, std::span<const std::int32_t> experts) {
    prefetch(layer, experts, 1);
  }
  // `layer` has been computed: scores its predictions and cancels their reads not yet started,
  // and forgets the reads expect() started for it that no acquire() took.
  void settle(std::int32_t layer);
  // The pass stopped before computing every layer (a read failed): settles the layers it left
  // predictions for and forgets every read expect() started, so that none of them holds a
  // payload or stands in for the next pass's own (a prediction left over would read as this
  // layer's, and its expert would not be predicted and prefetched again).
  void abandon();
  std::vector<LayerCounters> layer_counters() const;
  void reset_counters();

 private:
  struct Prediction {
    unsigned predicted_by = 0;  // bit h-1 set: predicted at horizon h
    int issued_by = 0;          // horizon whose prefetch started the read; 0: none started
    bool cancelled = false;     // its queued read was dropped
    bool needed = false;        // the layer asked for the expert
    // The prefetched payload, held from its admission until the layer asks for it or settles:
    // the tier never evicts a block in use, so a later prefetch (whose new block the policy
    // may rank below this one, e.g. TinyLFU by its single request) cannot evict it unused.
    Payload landed;
  };
  static BlockLoader::Priority priority_of(int horizon);
  void issue(BlockId block, int horizon);
  // Adds a read's bytes to its layer's counters once the read is over.
  BlockLoader::OnLoaded count_bytes_read();
  HostTier& host_;
  BlockLoader& loader_;
  const Source& source_;
  mutable std::mutex mutex_;
  std::vector<LayerCounters> layers_;
  std::map<BlockId, Prediction> predictions_;
  std::map<BlockId, std::shared_future<Payload>> expected_;  // reads expect() started
  Waiter waiter_;
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
