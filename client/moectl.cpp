// moectl: the command-line tool for moed. `moectl trace simulate` replays a routing trace
// (JSON Lines, one line per token per MoE layer) through the host tier's eviction policies and
// Belady's optimum, offline, and prints the hit rate per policy and cache size.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "moed/memtier/trace.hpp"

namespace {

std::vector<std::uint64_t> parse_blocks(const std::string& text) {
  std::vector<std::uint64_t> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    std::size_t used = 0;
    long long value = -1;
    try {
      value = std::stoll(item, &used);
    } catch (const std::exception&) {
    }
    if (used != item.size() || value < 0)
      throw std::invalid_argument("--blocks: '" + item + "' is not a number of blocks");
    out.push_back(static_cast<std::uint64_t>(value));
  }
  if (out.empty()) throw std::invalid_argument("--blocks: give at least one cache size");
  return out;
}

std::vector<std::string> parse_policies(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (item != "lru" && item != "lfu" && item != "belady")
      throw std::invalid_argument("--policies: '" + item + "' is not one of lru, lfu, belady");
    out.push_back(item);
  }
  return out;
}

int simulate(const std::string& path, const std::string& blocks_text, const std::string& policies_text,
             bool json) {
  const auto trace = moed::memtier::read_trace(path);
  const auto budgets = parse_blocks(blocks_text);
  const auto policies = parse_policies(policies_text);
  std::set<std::int32_t> layers, experts;
  std::set<std::pair<std::int32_t, std::int32_t>> blocks;
  for (const auto& e : trace) {
    layers.insert(e.layer);
    for (auto x : e.experts) {
      experts.insert(x);
      blocks.insert({e.layer, x});
    }
  }
  const auto results = moed::memtier::simulate(trace, budgets, policies);
  if (json) {
    nlohmann::json out = {{"trace", path},
                          {"lines", trace.size()},
                          {"layers", layers.size()},
                          {"distinct_blocks", blocks.size()},
                          {"results", nlohmann::json::array()}};
    for (const auto& r : results)
      out["results"].push_back({{"policy", r.policy},
                                {"blocks", r.budget_blocks},
                                {"hits", r.hits},
                                {"requests", r.requests},
                                {"hit_rate", r.hit_rate()}});
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::printf("trace %s: %zu lines, %zu layers, %zu distinct expert blocks, %llu requests\n",
              path.c_str(), trace.size(), layers.size(), blocks.size(),
              static_cast<unsigned long long>(results.empty() ? 0 : results.front().requests));
  std::printf("%-8s", "blocks");
  for (const auto& p : policies) std::printf("  %-24s", p.c_str());
  std::printf("\n");
  for (const auto budget : budgets) {
    std::printf("%-8llu", static_cast<unsigned long long>(budget));
    for (const auto& p : policies)
      for (const auto& r : results)
        if (r.policy == p && r.budget_blocks == budget) {
          char cell[64];
          std::snprintf(cell, sizeof cell, "%llu/%llu (%.1f%%)", static_cast<unsigned long long>(r.hits),
                        static_cast<unsigned long long>(r.requests), 100.0 * r.hit_rate());
          std::printf("  %-24s", cell);
        }
    std::printf("\n");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"moectl: control and inspect moed"};
  app.require_subcommand(1);
  auto* trace = app.add_subcommand("trace", "Routing traces");
  trace->require_subcommand(1);
  std::string path, blocks = "16,32,64", policies = "lru,lfu,belady";
  bool json = false;
  auto* sim = trace->add_subcommand(
      "simulate",
      "Replay a routing trace (JSON Lines: {\"token\":17,\"layer\":3,\"experts\":[5,1]}) through "
      "one expert cache shared by all layers, and print hits per policy and cache size. Lines are "
      "replayed in file order, the experts of a line in listed order; Belady is the optimum.");
  sim->add_option("TRACE", path, "trace file (.jsonl)")->required()->check(CLI::ExistingFile);
  sim->add_option("--blocks", blocks, "cache sizes in expert blocks, comma-separated (default 16,32,64)");
  sim->add_option("--policies", policies, "policies to compare (default lru,lfu,belady)");
  sim->add_flag("--json", json, "print JSON instead of a table");
  CLI11_PARSE(app, argc, argv);
  try {
    if (sim->parsed()) return simulate(path, blocks, policies, json);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moectl: error: %s\n", e.what());
    return 1;
  }
  return 2;
}
