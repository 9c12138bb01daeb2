#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <span>
#include <string>
#include <vector>

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
std::vector<SimulationResult> simulate(std::span<const RoutingEvent> trace,
                                       std::span<const std::uint64_t> budgets,
                                       std::span<const std::string> policies);

}  // namespace moed::memtier
