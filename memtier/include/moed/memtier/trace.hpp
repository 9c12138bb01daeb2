#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json_fwd.hpp>
#include <span>
#include <string>
#include <vector>

#include "moed/memtier/predictor.hpp"
#include "moed/memtier/tiered_store.hpp"

namespace moed::memtier {

// One routing decision: the experts one token was sent to in one MoE layer. As JSON Lines:
// {"token": 17, "layer": 3, "experts": [5, 1], "weights": [0.61, 0.39]}
// (weights optional on input; extra fields ignored).
struct RoutingEvent {
  std::int64_t token = 0;
  std::int32_t layer = 0;
  std::vector<std::int32_t> experts;
  std::vector<float> weights;
};

std::string to_json_line(const RoutingEvent& event);
// Reads a trace; throws std::runtime_error naming the file and line of a malformed record.
std::vector<RoutingEvent> read_trace(const std::filesystem::path& path);
std::vector<RoutingEvent> parse_trace(std::istream& in, const std::string& origin);

// Appends routing events to a JSON Lines file. Thread-safe.
class TraceWriter {
 public:
  explicit TraceWriter(const std::filesystem::path& path);
  void write(const RoutingEvent& event);
  std::uint64_t lines() const;

 private:
  mutable std::mutex mutex_;
  std::ofstream out_;
  std::uint64_t lines_ = 0;
};

struct SimulationResult {
  std::string policy;  // one of policy_names(), or "belady"
  std::uint64_t budget_blocks = 0;
  std::uint64_t hits = 0;
  std::uint64_t requests = 0;
  double hit_rate() const { return requests ? static_cast<double>(hits) / requests : 0.0; }
};

// Replays a trace through one cache of `budget` expert blocks (all layers together): lines in
// file order, the experts of a line in listed order, each one request for one block; a miss
// loads the block and, when the cache is full, evicts the policy's victim unless the policy's
// admission filter turns the block away (as HostTier::admit with Admission::filtered does).
// "belady" drops, of the resident blocks and the incoming one, the one whose next request lies
// farthest ahead (never again counts as farthest): the optimum for a cache that, like one with
// an admission filter, may decline to keep a block.
// `auto_pin_share` above 0: an AutoPinner with that share pins blocks as HostTier's does.
std::vector<SimulationResult> simulate(std::span<const RoutingEvent> trace,
                                       std::span<const std::uint64_t> budgets,
                                       std::span<const std::string> policies,
                                       double auto_pin_share = 0);

struct PrefetchOptions {
  int horizons = kPrefetchHorizons;  // layers ahead predicted: 0 (no prefetch), 1 or 2
  RoutingPredictor::Kind predictor = RoutingPredictor::Kind::transition;
  int width = 0;  // experts predicted per layer ahead; 0: as many as a line lists
  // Prefetch reads the disk completes while one layer computes (demand reads come on top, with
  // compute waiting); 0: no limit, every prefetch is read in the layer that issued it.
  std::uint64_t reads_per_layer = 0;
};

struct PrefetchSimulation {
  std::string policy;
  std::uint64_t budget_blocks = 0;
  std::uint64_t hits = 0, requests = 0;
  std::uint64_t demand_reads = 0, prefetch_reads = 0;
  // Per horizon, as the live store counts them (late: still queued when needed, then read as a
  // demand), and `routed`: the requests of the layers that horizon made predictions for, so
  // recall = used / routed and precision = used / predicted.
  std::array<HorizonCounters, kPrefetchHorizons> horizons{};
  std::array<std::uint64_t, kPrefetchHorizons> routed{};
  double hit_rate() const { return requests ? static_cast<double>(hits) / requests : 0.0; }
};

// simulate() with prefetch, as the engine drives TieredStore. Line by line (one token at one
// layer): the line's resident experts are held; the predictor observes the line's experts and
// predicts the layers `horizon` ahead within the same token, and queues prefetches for the
// predicted experts not resident (a newer prediction for a layer cancels the queued reads it
// leaves out; one nearer raises a queued read's priority); up to reads_per_layer queued
// prefetches are read, nearest horizon first, oldest first, and admitted without the filter,
// evicting blocks not held (an admitted prefetch is itself held until its layer needs it or
// settles, as TieredStore keeps it); the line's experts are requested as in simulate(), each let go
// once requested (a queued prefetch is then read as the demand and counted late); the line's layer
// settles (its queued prefetches are cancelled). With horizons 0 the hits equal simulate()'s;
// with unbounded reads they equal a live TieredStore driven the same way once each layer's
// prefetches have landed. `auto_pin_share` as simulate()'s: the requests drive an AutoPinner as
// HostTier::lookup does. Belady is not simulated with prefetch (throws).
std::vector<PrefetchSimulation> simulate_prefetch(std::span<const RoutingEvent> trace,
                                                  std::span<const std::uint64_t> budgets,
                                                  std::span<const std::string> policies,
                                                  const PrefetchOptions& options,
                                                  double auto_pin_share = 0);

// The JSON report of simulate_prefetch(), as `moectl trace simulate --json` and the daemon's
// /admin/trace/simulate give it: the options, each horizon's precision and recall, then per
// policy and size the hits with prefetch and without (from `without`, simulate()'s results for
// the same trace, policies and sizes; std::logic_error if one is missing), the reads and each
// horizon's outcomes.
nlohmann::json prefetch_report(std::span<const PrefetchSimulation> with,
                               std::span<const SimulationResult> without,
                               const PrefetchOptions& options);

}  // namespace moed::memtier
