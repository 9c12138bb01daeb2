#include "moed/memtier/trace.hpp"

#include <algorithm>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <tuple>
#include <unordered_map>

#include "moed/memtier/block.hpp"
#include "moed/memtier/policy.hpp"

namespace moed::memtier {

std::string to_json_line(const RoutingEvent& event) {
  nlohmann::json line = {
      {"token", event.token}, {"layer", event.layer}, {"experts", event.experts}};
  if (!event.weights.empty()) line["weights"] = event.weights;
  return line.dump();
}

std::vector<RoutingEvent> parse_trace(std::istream& in, const std::string& origin) {
  std::vector<RoutingEvent> events;
  std::string text;
  std::size_t line_number = 0;
  while (std::getline(in, text)) {
    ++line_number;
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto fail = [&](const std::string& what) {
      throw std::runtime_error(origin + ":" + std::to_string(line_number) + ": " + what);
    };
    nlohmann::json line;
    try {
      line = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      fail(std::string("not valid JSON: ") + e.what());
    }
    if (!line.is_object()) fail("a record must be a JSON object");
    RoutingEvent event;
    // Layers and experts are int32 in BlockId; a larger id would wrap onto another block.
    auto is_id = [](const nlohmann::json& v) {
      return v.is_number_unsigned() &&
             v.get<std::uint64_t>() <= std::numeric_limits<std::int32_t>::max();
    };
    if (!line.contains("layer") || !is_id(line["layer"]))
      fail("'layer' must be an integer in [0, 2^31)");
    event.layer = line["layer"].get<std::int32_t>();
    if (!line.contains("experts") || !line["experts"].is_array())
      fail("'experts' must be an array of expert ids");
    for (const auto& e : line["experts"]) {
      if (!is_id(e))
        fail("'experts' holds " + (e.is_primitive() ? e.dump() : std::string(e.type_name())) +
             ", not an integer in [0, 2^31)");
      event.experts.push_back(e.get<std::int32_t>());
    }
    if (line.contains("token") && line["token"].is_number_integer())
      event.token = line["token"].get<std::int64_t>();
    if (line.contains("weights") && line["weights"].is_array())
      for (const auto& w : line["weights"])
        if (w.is_number()) event.weights.push_back(w.get<float>());
    events.push_back(std::move(event));
  }
  return events;
}

std::vector<RoutingEvent> read_trace(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path.string() + ": cannot open trace");
  return parse_trace(in, path.string());
}

TraceWriter::TraceWriter(const std::filesystem::path& path) : out_(path, std::ios::trunc) {
  if (!out_) throw std::runtime_error(path.string() + ": cannot open trace for writing");
}

void TraceWriter::write(const RoutingEvent& event) {
  std::lock_guard lock(mutex_);
  out_ << to_json_line(event) << '\n';
  ++lines_;
}

std::uint64_t TraceWriter::lines() const {
  std::lock_guard lock(mutex_);
  return lines_;
}

namespace {

std::vector<BlockId> requests_of(std::span<const RoutingEvent> trace) {
  std::vector<BlockId> requests;
  for (const auto& event : trace)
    for (const auto expert : event.experts)
      requests.push_back(BlockId::routed(event.layer, expert));
  return requests;
}

// As HostTier::lookup before it looks: the request is counted and, when a choice is due, the
// pins are chosen again among the resident blocks (one unit each, as the budget counts them).
void count_for_pins(std::optional<AutoPinner>& pinner, BlockId block,
                    const std::set<BlockId>& resident, std::uint64_t budget,
                    std::set<BlockId>& pinned) {
  if (!pinner) return;
  pinner->count(block);
  if (!pinner->due()) return;
  std::vector<std::pair<BlockId, std::uint64_t>> sizes;
  for (const auto& b : resident) sizes.push_back({b, 1});
  const auto chosen = pinner->choose(sizes, budget);
  pinned = std::set<BlockId>(chosen.begin(), chosen.end());
}

std::uint64_t replay_policy(const std::vector<BlockId>& requests, std::uint64_t budget,
                            EvictionPolicy& policy, double auto_pin_share) {
  std::set<BlockId> resident;
  std::uint64_t hits = 0;
  std::optional<AutoPinner> pinner;
  if (auto_pin_share > 0) pinner.emplace(auto_pin_share);
  std::set<BlockId> pinned;
  auto any = [&](BlockId block) { return !pinned.contains(block); };
  for (const auto& block : requests) {
    count_for_pins(pinner, block, resident, budget, pinned);
    if (resident.contains(block)) {
      ++hits;
      policy.on_access(block);
      continue;
    }
    policy.on_miss(block);
    if (budget == 0) continue;
    if (resident.size() >= budget) {
      const auto victim = policy.victim(any);
      if (!victim) continue;                         // everything resident is pinned
      if (!policy.admits(block, *victim)) continue;  // served once, not kept
      resident.erase(*victim);
      policy.on_erase(*victim);
    }
    resident.insert(block);
    policy.on_insert(block);
  }
  return hits;
}

std::uint64_t replay_belady(const std::vector<BlockId>& requests, std::uint64_t budget) {
  constexpr std::size_t kNever = std::numeric_limits<std::size_t>::max();
  std::vector<std::size_t> next_use(requests.size(), kNever);
  std::map<BlockId, std::size_t> seen;
  for (std::size_t i = requests.size(); i-- > 0;) {
    auto it = seen.find(requests[i]);
    if (it != seen.end()) next_use[i] = it->second;
    seen[requests[i]] = i;
  }
  std::set<std::pair<std::size_t, BlockId>> by_next_use;  // farthest last
  std::map<BlockId, std::size_t> resident;                // block -> its next use
  std::uint64_t hits = 0;
  for (std::size_t i = 0; i < requests.size(); ++i) {
    const BlockId block = requests[i];
    auto it = resident.find(block);
    if (it != resident.end()) {
      ++hits;
      by_next_use.erase({it->second, block});
      it->second = next_use[i];
      by_next_use.insert({next_use[i], block});
      continue;
    }
    if (budget == 0) continue;
    if (resident.size() >= budget) {
      const auto farthest = std::prev(by_next_use.end());
      if (next_use[i] >= farthest->first) continue;  // the incoming block is the farthest
      resident.erase(farthest->second);
      by_next_use.erase(farthest);
    }
    resident[block] = next_use[i];
    by_next_use.insert({next_use[i], block});
  }
  return hits;
}

}  // namespace

std::vector<SimulationResult> simulate(std::span<const RoutingEvent> trace,
                                       std::span<const std::uint64_t> budgets,
                                       std::span<const std::string> policies,
                                       double auto_pin_share) {
  const auto requests = requests_of(trace);
  std::vector<SimulationResult> results;
  for (const auto& policy_name : policies) {
    if (policy_name != "belady") make_policy(policy_name);  // validates the name up front
    for (const auto budget : budgets) {
      SimulationResult r{policy_name, budget, 0, requests.size()};
      if (policy_name == "belady") {
        r.hits = replay_belady(requests, budget);
      } else {
        auto policy = make_policy(policy_name);
        r.hits = replay_policy(requests, budget, *policy, auto_pin_share);
      }
      results.push_back(r);
    }
  }
  return results;
}

namespace {

// The simulated store: what the live TieredStore and BlockLoader do, in steps without time.
class PrefetchReplay {
 public:
  PrefetchReplay(std::uint64_t budget, EvictionPolicy& policy, const PrefetchOptions& options,
                 std::int32_t layers, std::int32_t experts, double auto_pin_share,
                 PrefetchSimulation& out)
      : budget_(budget),
        policy_(policy),
        options_(options),
        out_(out),
        predictor_(options.predictor, layers, experts, std::max(1, options.horizons)) {
    if (auto_pin_share > 0) pinner_.emplace(auto_pin_share);
  }

  void step(const RoutingEvent& event) {
    held_.clear();
    if (options_.horizons > 0 && !event.experts.empty()) {
      for (const auto e : event.experts)
        if (resident_.contains(BlockId::routed(event.layer, e)))
          held_.insert(BlockId::routed(event.layer, e));
      predictor_.observe(event.layer, event.experts, static_cast<int>(event.experts.size()));
      for (int h = 1; h <= options_.horizons; ++h)
        predict(event.layer + h, predictor_.predict(event.layer, h, options_.width), h);
    }
    read_prefetches();
    for (const auto e : event.experts) {
      request(BlockId::routed(event.layer, e));
      held_.erase(BlockId::routed(event.layer, e));  // the engine lets each go once it is used
    }
    settle(event);
  }

 private:
  struct Prediction {
    unsigned predicted_by = 0;
    int issued_by = 0;
    bool queued = false, cancelled = false, needed = false;
  };
  using QueueKey = std::tuple<int, std::uint64_t, BlockId>;  // horizon, order issued, block

  HorizonCounters& counters(int horizon) { return out_.horizons[horizon - 1]; }

  void predict(std::int32_t layer, const std::vector<std::int32_t>& experts, int horizon) {
    if (experts.empty()) return;
    for (auto& [block, p] : predictions_)
      if (block.layer == layer && p.queued && !p.needed &&
          std::ranges::find(experts, block.expert) == experts.end()) {
        dequeue(block, p);
        p.cancelled = true;
        ++counters(p.issued_by).cancelled;
      }
    for (const auto e : experts) {
      const BlockId block = BlockId::routed(layer, e);
      Prediction& p = predictions_[block];
      const unsigned bit = 1u << (horizon - 1);
      if (p.predicted_by & bit) continue;
      p.predicted_by |= bit;
      ++counters(horizon).predicted;
      if (p.needed) continue;
      if (p.issued_by != 0 && !p.cancelled) {
        if (p.queued && horizon < p.issued_by) {
          const auto it = queued_at_.find(block);
          queue_.erase(it->second);
          it->second = {horizon, std::get<1>(it->second), block};
          queue_.insert(it->second);
        }
        continue;
      }
      if (resident_.contains(block)) continue;
      p.issued_by = horizon;
      p.cancelled = false;
      p.queued = true;
      ++counters(horizon).issued;
      const QueueKey key{horizon, next_issue_++, block};
      queue_.insert(key);
      queued_at_[block] = key;
    }
  }

  void dequeue(BlockId block, Prediction& p) {
    const auto it = queued_at_.find(block);
    queue_.erase(it->second);
    queued_at_.erase(it);
    p.queued = false;
  }

  // One lookup, as HostTier::lookup then TieredStore::acquire.
  void request(BlockId block) {
    Prediction* p = nullptr;
    if (auto it = predictions_.find(block); it != predictions_.end()) p = &it->second;
    const bool first_need = p && !p->needed;
    if (first_need) p->needed = true;
    landed_.erase(block);
    count_for_pins(pinner_, block, resident_, budget_, pinned_);
    const bool scored = first_need && p->issued_by != 0 && !p->cancelled;
    if (resident_.contains(block)) {
      ++out_.hits;
      policy_.on_access(block);
      if (scored) ++counters(p->issued_by).hits;
      return;
    }
    policy_.on_miss(block);
    if (scored) {
      if (p->queued) {
        dequeue(block, *p);
        ++counters(p->issued_by).late;
      } else {
        ++counters(p->issued_by).wasted;  // read, then evicted or not kept
      }
    }
    ++out_.demand_reads;
    admit(block, true);
  }

  // As HostTier::admit; `filtered`: the policy's admission filter may keep its victim.
  void admit(BlockId block, bool filtered) {
    if (budget_ == 0) return;
    auto evictable = [&](BlockId id) {
      return !held_.contains(id) && !landed_.contains(id) && !pinned_.contains(id);
    };
    while (resident_.size() >= budget_) {
      const auto victim = policy_.victim(evictable);
      if (!victim) return;
      if (filtered && !policy_.admits(block, *victim)) return;
      resident_.erase(*victim);
      policy_.on_erase(*victim);
    }
    resident_.insert(block);
    policy_.on_insert(block);
  }

  void read_prefetches() {
    const std::uint64_t limit = options_.reads_per_layer;
    for (std::uint64_t reads = 0; !queue_.empty() && (limit == 0 || reads < limit); ++reads) {
      const BlockId block = std::get<2>(*queue_.begin());
      dequeue(block, predictions_.at(block));
      ++out_.prefetch_reads;
      if (!resident_.contains(block)) admit(block, false);
      if (resident_.contains(block)) landed_.insert(block);  // held until needed or settled
    }
  }

  void settle(const RoutingEvent& event) {
    unsigned predicted_here = 0;
    for (auto it = predictions_.begin(); it != predictions_.end();) {
      auto& [block, p] = *it;
      if (block.layer != event.layer) {
        ++it;
        continue;
      }
      predicted_here |= p.predicted_by;
      landed_.erase(block);
      for (int h = 1; h <= options_.horizons; ++h)
        if (p.needed && (p.predicted_by & (1u << (h - 1)))) ++counters(h).used;
      if (p.issued_by != 0 && !p.cancelled && !p.needed) {
        if (p.queued) {
          dequeue(block, p);
          ++counters(p.issued_by).cancelled;
        } else {
          ++counters(p.issued_by).wasted;
        }
      }
      it = predictions_.erase(it);
    }
    for (int h = 1; h <= options_.horizons; ++h)
      if (predicted_here & (1u << (h - 1))) out_.routed[h - 1] += event.experts.size();
  }

  std::uint64_t budget_;
  EvictionPolicy& policy_;
  const PrefetchOptions& options_;
  PrefetchSimulation& out_;
  RoutingPredictor predictor_;
  std::set<BlockId> resident_, held_;
  std::set<BlockId> landed_;  // prefetched and admitted, not yet needed: as TieredStore holds
  std::optional<AutoPinner> pinner_;
  std::set<BlockId> pinned_;  // the pinner's last choice
  std::map<BlockId, Prediction> predictions_;
  std::set<QueueKey> queue_;
  std::map<BlockId, QueueKey> queued_at_;
  std::uint64_t next_issue_ = 0;
};

}  // namespace

std::vector<PrefetchSimulation> simulate_prefetch(std::span<const RoutingEvent> trace,
                                                  std::span<const std::uint64_t> budgets,
                                                  std::span<const std::string> policies,
                                                  const PrefetchOptions& options,
                                                  double auto_pin_share) {
  if (options.horizons < 0 || options.horizons > kPrefetchHorizons)
    throw std::invalid_argument("prefetch horizons " + std::to_string(options.horizons) +
                                " is outside 0.." + std::to_string(kPrefetchHorizons));
  if (options.width < 0)
    throw std::invalid_argument("prefetch width " + std::to_string(options.width) + " is below 0");
  for (const auto& name : policies) make_policy(name);  // validates the names up front
  std::int32_t layers = 0, experts = 0;
  std::uint64_t requests = 0;
  for (const auto& event : trace) {
    layers = std::max(layers, event.layer + 1);
    for (const auto e : event.experts) experts = std::max(experts, e + 1);
    requests += event.experts.size();
  }
  std::vector<PrefetchSimulation> results;
  for (const auto& policy_name : policies)
    for (const auto budget : budgets) {
      PrefetchSimulation& r = results.emplace_back();
      r.policy = policy_name;
      r.budget_blocks = budget;
      r.requests = requests;
      if (trace.empty()) continue;
      auto policy = make_policy(policy_name);
      PrefetchReplay replay(budget, *policy, options, layers, std::max(experts, 1), auto_pin_share,
                            r);
      for (const auto& event : trace) replay.step(event);
    }
  return results;
}

nlohmann::json prefetch_report(std::span<const PrefetchSimulation> with,
                               std::span<const SimulationResult> without,
                               const PrefetchOptions& options) {
  auto ratio = [](std::uint64_t a, std::uint64_t b) {
    return b ? static_cast<double>(a) / static_cast<double>(b) : 0.0;
  };
  auto plain_hits = [&](const std::string& policy, std::uint64_t budget) -> std::uint64_t {
    for (const auto& r : without)
      if (r.policy == policy && r.budget_blocks == budget) return r.hits;
    throw std::logic_error("prefetch_report: no result without prefetch for " + policy + " at " +
                           std::to_string(budget) + " blocks");
  };
  const auto horizons = static_cast<std::size_t>(options.horizons);
  nlohmann::json report = {{"horizons", options.horizons},
                           {"predictor", to_string(options.predictor)},
                           {"width", options.width},
                           {"reads_per_layer", options.reads_per_layer},
                           {"accuracy", nlohmann::json::array()},
                           {"results", nlohmann::json::array()}};
  if (!with.empty())
    for (std::size_t h = 0; h < horizons; ++h) {
      const auto& first = with.front();
      report["accuracy"].push_back(
          {{"horizon", h + 1},
           {"predicted", first.horizons[h].predicted},
           {"used", first.horizons[h].used},
           {"routed", first.routed[h]},
           {"precision", ratio(first.horizons[h].used, first.horizons[h].predicted)},
           {"recall", ratio(first.horizons[h].used, first.routed[h])}});
    }
  for (const auto& r : with) {
    nlohmann::json per_horizon = nlohmann::json::array();
    for (std::size_t h = 0; h < horizons; ++h) {
      const auto& c = r.horizons[h];
      per_horizon.push_back({{"horizon", h + 1},
                             {"issued", c.issued},
                             {"hits", c.hits},
                             {"late", c.late},
                             {"wasted", c.wasted},
                             {"cancelled", c.cancelled}});
    }
    report["results"].push_back({{"policy", r.policy},
                                 {"blocks", r.budget_blocks},
                                 {"hits", r.hits},
                                 {"hits_without_prefetch", plain_hits(r.policy, r.budget_blocks)},
                                 {"requests", r.requests},
                                 {"demand_reads", r.demand_reads},
                                 {"prefetch_reads", r.prefetch_reads},
                                 {"horizons", per_horizon}});
  }
  return report;
}

}  // namespace moed::memtier
