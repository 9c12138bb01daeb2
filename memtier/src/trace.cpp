#include "moed/memtier/trace.hpp"

#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <stdexcept>
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

std::uint64_t replay_policy(const std::vector<BlockId>& requests, std::uint64_t budget,
                            EvictionPolicy& policy) {
  std::set<BlockId> resident;
  std::uint64_t hits = 0;
  auto any = [](BlockId) { return true; };
  for (const auto& block : requests) {
    if (resident.contains(block)) {
      ++hits;
      policy.on_access(block);
      continue;
    }
    policy.on_miss(block);
    if (budget == 0) continue;
    if (resident.size() >= budget) {
      const auto victim = policy.victim(any);
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
                                       std::span<const std::string> policies) {
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
        r.hits = replay_policy(requests, budget, *policy);
      }
      results.push_back(r);
    }
  }
  return results;
}

}  // namespace moed::memtier
