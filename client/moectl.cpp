// moectl: the command-line tool for moed. `moectl trace simulate` replays a routing trace
// (JSON Lines, one line per token per MoE layer) through the host tier's eviction policies and
// Belady's optimum, offline, and prints the hit rate per policy and cache size.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "moed/client.hpp"
#include "moed/memtier/byte_size.hpp"
#include "moed/memtier/policy.hpp"
#include "moed/memtier/trace.hpp"
#include "plot.hpp"

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
    const auto& names = moed::memtier::policy_names();
    if (item != "belady" && std::ranges::find(names, item) == names.end())
      throw std::invalid_argument("--policies: '" + item + "' is not one of " +
                                  moed::memtier::policy_list() + ", belady");
    out.push_back(item);
  }
  return out;
}

// The cache sizes, in expert blocks, to simulate: --blocks N,M,... or --host A..B, where A and B
// are block counts, shares of the expert blocks the trace shows ("10%": layers x experts) or
// sizes ("2GiB", with --expert-size: the bytes of one expert block, which `moectl cache show
// --json` reports as expert_block_bytes). A range gives `steps` evenly spaced sizes.
struct Budgets {
  std::vector<std::uint64_t> blocks;
  bool share = false;  // the plot's x axis in % of the trace's expert blocks, else in blocks
  std::vector<std::string> labels;
};

Budgets host_range(const std::string& text, std::uint64_t total_blocks,
                   const std::string& expert_size, int steps) {
  const auto dots = text.find("..");
  if (dots == std::string::npos)
    throw std::invalid_argument("--host: '" + text + "' is not a range A..B, e.g. 10%..100%");
  const std::string a = text.substr(0, dots), b = text.substr(dots + 2);
  const bool share = a.ends_with('%') && b.ends_with('%');
  const bool size = !share && !a.empty() && std::isalpha(static_cast<unsigned char>(a.back()));
  std::uint64_t block_bytes = 0;
  if (size) {
    if (expert_size.empty())
      throw std::invalid_argument("--host " + text +
                                  ": sizes need --expert-size (bytes of one expert block; "
                                  "`moectl cache show --json` shows expert_block_bytes)");
    block_bytes = moed::memtier::parse_byte_size(expert_size);
    if (block_bytes == 0) throw std::invalid_argument("--expert-size must be above 0");
  }
  auto to_blocks = [&](const std::string& end) -> double {
    try {
      if (share) {
        std::size_t used = 0;
        const double pct = std::stod(end, &used);
        if (used + 1 != end.size() || pct < 0 || pct > 100) throw std::invalid_argument(end);
        return pct / 100.0 * static_cast<double>(total_blocks);
      }
      if (size) return static_cast<double>(moed::memtier::parse_byte_size(end) / block_bytes);
      std::size_t used = 0;
      const double n = static_cast<double>(std::stoull(end, &used));
      if (used != end.size()) throw std::invalid_argument(end);
      return n;
    } catch (const std::exception&) {
      throw std::invalid_argument("--host: '" + end +
                                  "' is not a block count, a share such as 25% or a size such "
                                  "as 2GiB (both ends must be of one kind)");
    }
  };
  const double lo = to_blocks(a), hi = to_blocks(b);
  if (hi < lo) throw std::invalid_argument("--host " + text + ": the range runs backwards");
  if (steps < 2) throw std::invalid_argument("--steps must be at least 2");
  Budgets out;
  out.share = share;
  for (int k = 0; k < steps; ++k) {
    const double v = lo + (hi - lo) * k / (steps - 1);
    const auto blocks = static_cast<std::uint64_t>(std::llround(v));
    if (!out.blocks.empty() && out.blocks.back() == blocks) continue;
    out.blocks.push_back(blocks);
    char label[64];
    if (share) {
      std::snprintf(label, sizeof label, "%.0f%%",
                    100.0 * blocks / std::max<double>(1, total_blocks));
    } else if (size) {
      const double bytes = static_cast<double>(blocks * block_bytes);
      if (bytes >= (1ull << 30)) {
        std::snprintf(label, sizeof label, "%.2fGiB", bytes / (1ull << 30));
      } else {
        std::snprintf(label, sizeof label, "%.0fMiB", bytes / (1ull << 20));
      }
    } else {
      std::snprintf(label, sizeof label, "%llu", static_cast<unsigned long long>(blocks));
    }
    out.labels.push_back(label);
  }
  return out;
}

// The prefetch table of `trace simulate --prefetch`: accuracy per horizon (the same for every
// policy and size, as the predictor sees only the trace), then hits with and without prefetch
// and the reads and prefetch outcomes per policy and size.
void print_prefetch(const std::vector<moed::memtier::PrefetchSimulation>& with,
                    const std::vector<moed::memtier::SimulationResult>& without,
                    const Budgets& budgets, const moed::memtier::PrefetchOptions& options,
                    std::uint64_t tokens, bool json, nlohmann::json& out) {
  const nlohmann::json report = moed::memtier::prefetch_report(with, without, options);
  if (json) {
    out["prefetch"] = report;
    return;
  }
  const std::string width = options.width ? std::to_string(options.width) : "as many as routed";
  const std::string reads =
      options.reads_per_layer
          ? "at most " + std::to_string(options.reads_per_layer) + " reads per layer"
          : "reads unbounded";
  std::printf("\nprefetch %d layer(s) ahead, %s predictor, %s expert(s) per layer ahead, %s\n",
              options.horizons, std::string(to_string(options.predictor)).c_str(), width.c_str(),
              reads.c_str());
  std::printf("horizon  predicted  used     precision  recall\n");
  for (const auto& a : report["accuracy"])
    std::printf("%-8d %-10llu %-8llu %6.1f%%    %6.1f%%\n", a["horizon"].get<int>(),
                a["predicted"].get<unsigned long long>(), a["used"].get<unsigned long long>(),
                100.0 * a["precision"].get<double>(), 100.0 * a["recall"].get<double>());
  std::printf("\n%-10s %-8s %-8s %-8s %-10s %-12s", "budget", "blocks", "policy", "hits",
              "prefetch", "reads/token");
  for (int h = 1; h <= options.horizons; ++h) std::printf("  h%d hit/late/wasted/cancel", h);
  std::printf("\n");
  const double per_token = static_cast<double>(std::max<std::uint64_t>(tokens, 1));
  for (const auto& r : report["results"]) {
    const auto blocks = r["blocks"].get<std::uint64_t>();
    std::size_t k = 0;
    while (k + 1 < budgets.blocks.size() && budgets.blocks[k] != blocks) ++k;
    char cell[64];
    std::snprintf(cell, sizeof cell, "%.2f+%.2f", r["demand_reads"].get<double>() / per_token,
                  r["prefetch_reads"].get<double>() / per_token);
    std::printf("%-10s %-8llu %-8s %-8llu %-10llu %-12s", budgets.labels[k].c_str(),
                static_cast<unsigned long long>(blocks), r["policy"].get<std::string>().c_str(),
                r["hits_without_prefetch"].get<unsigned long long>(),
                r["hits"].get<unsigned long long>(), cell);
    for (const auto& c : r["horizons"]) {
      std::snprintf(cell, sizeof cell, "%llu/%llu/%llu/%llu", c["hits"].get<unsigned long long>(),
                    c["late"].get<unsigned long long>(), c["wasted"].get<unsigned long long>(),
                    c["cancelled"].get<unsigned long long>());
      std::printf("  %-27s", cell);
    }
    std::printf("\n");
  }
  std::printf("(hits: without prefetch; prefetch: hits with it. reads/token: demand + prefetch)\n");
}

int simulate(const std::string& path, const std::string& blocks_text, const std::string& host,
             const std::string& expert_size, int steps, const std::string& policies_text,
             const std::string& plot, bool json, const moed::memtier::PrefetchOptions& prefetch,
             double auto_pin_share) {
  const auto trace = moed::memtier::read_trace(path);
  const auto policies = parse_policies(policies_text);
  std::set<std::int32_t> layers;
  std::int32_t max_expert = -1;
  std::set<std::pair<std::int32_t, std::int32_t>> blocks;
  for (const auto& e : trace) {
    layers.insert(e.layer);
    for (auto x : e.experts) {
      max_expert = std::max(max_expert, x);
      blocks.insert({e.layer, x});
    }
  }
  const std::uint64_t total_blocks = layers.size() * static_cast<std::uint64_t>(max_expert + 1);
  Budgets budgets;
  if (!host.empty()) {
    budgets = host_range(host, total_blocks, expert_size, steps);
  } else {
    budgets.blocks = parse_blocks(blocks_text);
    for (auto b : budgets.blocks) budgets.labels.push_back(std::to_string(b));
  }
  const auto results = moed::memtier::simulate(trace, budgets.blocks, policies, auto_pin_share);
  std::vector<moed::memtier::PrefetchSimulation> prefetched;
  if (prefetch.horizons > 0) {
    std::vector<std::string> live_policies;  // Belady's optimum is simulated without prefetch
    for (const auto& p : policies)
      if (p != "belady") live_policies.push_back(p);
    if (live_policies.empty())
      throw std::invalid_argument("--prefetch: --policies needs a policy other than belady");
    prefetched = moed::memtier::simulate_prefetch(trace, budgets.blocks, live_policies, prefetch,
                                                  auto_pin_share);
  }
  std::set<std::int64_t> tokens;
  for (const auto& e : trace) tokens.insert(e.token);
  auto result_of = [&](const std::string& policy, std::uint64_t budget) {
    for (const auto& r : results)
      if (r.policy == policy && r.budget_blocks == budget) return r;
    throw std::logic_error("simulate: missing result");
  };
  if (!plot.empty()) {
    std::vector<double> x;
    for (std::size_t k = 0; k < budgets.blocks.size(); ++k)
      x.push_back(budgets.share ? 100.0 * budgets.blocks[k] / std::max<double>(1, total_blocks)
                                : static_cast<double>(budgets.blocks[k]));
    std::vector<moectl::PlotSeries> series;
    for (const auto& p : policies) {
      series.push_back({p, {}});
      for (auto b : budgets.blocks) series.back().y.push_back(result_of(p, b).hit_rate());
    }
    moectl::write_line_plot(
        plot, "expert cache hit rate: " + std::filesystem::path(path).filename().string(),
        budgets.share ? "% of expert blocks" : "cache size (expert blocks)", x, series);
  }
  if (json) {
    nlohmann::json out = {{"trace", path},
                          {"lines", trace.size()},
                          {"layers", layers.size()},
                          {"distinct_blocks", blocks.size()},
                          {"expert_blocks", total_blocks},
                          {"results", nlohmann::json::array()}};
    for (std::size_t k = 0; k < budgets.blocks.size(); ++k)
      for (const auto& p : policies) {
        const auto r = result_of(p, budgets.blocks[k]);
        out["results"].push_back({{"policy", r.policy},
                                  {"blocks", r.budget_blocks},
                                  {"budget", budgets.labels[k]},
                                  {"hits", r.hits},
                                  {"requests", r.requests},
                                  {"hit_rate", r.hit_rate()}});
      }
    if (!plot.empty()) out["plot"] = plot;
    if (auto_pin_share > 0) out["auto_pin"] = auto_pin_share;  // as the daemon's report says it
    if (!prefetched.empty())
      print_prefetch(prefetched, results, budgets, prefetch, tokens.size(), true, out);
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::printf(
      "trace %s: %zu lines, %zu layers, %zu distinct expert blocks (of %llu), %llu requests\n",
      path.c_str(), trace.size(), layers.size(), blocks.size(),
      static_cast<unsigned long long>(total_blocks),
      static_cast<unsigned long long>(results.empty() ? 0 : results.front().requests));
  std::printf("%-10s %-8s", "budget", "blocks");
  for (const auto& p : policies) std::printf("  %-24s", p.c_str());
  std::printf("\n");
  for (std::size_t k = 0; k < budgets.blocks.size(); ++k) {
    std::printf("%-10s %-8llu", budgets.labels[k].c_str(),
                static_cast<unsigned long long>(budgets.blocks[k]));
    for (const auto& p : policies) {
      const auto r = result_of(p, budgets.blocks[k]);
      char cell[64];
      std::snprintf(cell, sizeof cell, "%llu/%llu (%.1f%%)",
                    static_cast<unsigned long long>(r.hits),
                    static_cast<unsigned long long>(r.requests), 100.0 * r.hit_rate());
      std::printf("  %-24s", cell);
    }
    std::printf("\n");
  }
  if (!prefetched.empty()) {
    nlohmann::json unused;
    print_prefetch(prefetched, results, budgets, prefetch, tokens.size(), false, unused);
  }
  if (!plot.empty()) std::fprintf(stderr, "moectl: wrote the plot to %s\n", plot.c_str());
  return 0;
}

using nlohmann::json;

void print_json_or(bool as_json, const std::string& text,
                   const std::function<void(const json&)>& table) {
  if (as_json) {
    std::cout << json::parse(text).dump(2) << "\n";
  } else {
    table(json::parse(text));
  }
}

void cache_table(const json& c) {
  const auto& h = c["host"];
  const double lookups = h["hits"].get<double>() + h["misses"].get<double>();
  std::printf("tier   budget        used          blocks  hit rate  evictions  policy\n");
  std::printf(
      "host   %-13s %-13s %-7llu %6.1f%%   %-10llu %s\n",
      h["budget_bytes"].get<std::uint64_t>()
          ? std::to_string(h["budget_bytes"].get<std::uint64_t>() >> 20).append(" MiB").c_str()
          : "unlimited",
      std::to_string(h["used_bytes"].get<std::uint64_t>() >> 20).append(" MiB").c_str(),
      static_cast<unsigned long long>(h["blocks"].get<std::uint64_t>()),
      lookups > 0 ? 100.0 * h["hits"].get<double>() / lookups : 0.0,
      static_cast<unsigned long long>(h["evictions"].get<std::uint64_t>()),
      h["policy"].get<std::string>().c_str());
  if (h.contains("pins") && !h["pins"].empty()) {
    std::string pins;
    for (const auto& pin : h["pins"])
      pins += (pins.empty() ? "" : ", ") + pin["block"].get<std::string>() + " by " +
              pin["by"].get<std::string>() + (pin["resident"].get<bool>() ? "" : " (not resident)");
    std::printf("       pinned: %s\n", pins.c_str());
  }
  if (h.value("policy_half_life", 0.0) > 0)
    std::printf(
        "       %s counts deciding: half-life of %g requests per block seen (the memory "
        "whose shadow cache hits most)\n",
        h["policy"].get<std::string>().c_str(), h["policy_half_life"].get<double>());
  if (h.value("auto_pin_share", 0.0) > 0)
    std::printf("       automatic pins: %llu, up to %.0f%% of the budget\n",
                static_cast<unsigned long long>(h.value("auto_pinned", std::uint64_t{0})),
                100.0 * h["auto_pin_share"].get<double>());
  if (h.value("bypasses", std::uint64_t{0}) > 0)
    std::printf("       %llu loads used once and not kept, %llu of them refused by the %s filter\n",
                static_cast<unsigned long long>(h["bypasses"].get<std::uint64_t>()),
                static_cast<unsigned long long>(h.value("refusals", std::uint64_t{0})),
                h["policy"].get<std::string>().c_str());
  if (c.contains("kv")) {
    const auto& kv = c["kv"];
    const auto limit = kv["limit_bytes"].get<std::uint64_t>();
    std::printf("kv     %-13s %-13s (%s, within the host budget)\n",
                limit ? std::to_string(limit >> 20).append(" MiB").c_str() : "unlimited",
                std::to_string(kv["bytes"].get<std::uint64_t>() >> 20).append(" MiB").c_str(),
                kv["dtype"].get<std::string>().c_str());
  }
  const auto& d = c["disk"];
  std::printf("disk   %-13s read %llu MiB in %llu blocks (%s), %llu errors\n", "model files",
              static_cast<unsigned long long>(d["bytes_read"].get<std::uint64_t>() >> 20),
              static_cast<unsigned long long>(d["reads"].get<std::uint64_t>()),
              d["reader"].get<std::string>().c_str(),
              static_cast<unsigned long long>(d["errors"].get<std::uint64_t>()));
  std::printf("       staging %llu MiB (%s), packing took %.2f s\n",
              static_cast<unsigned long long>(d.value("staging_bytes", std::uint64_t{0}) >> 20),
              d.value("staging_registered", false) ? "registered with io_uring" : "not registered",
              d.value("packing_seconds", 0.0));
  if (d.contains("load_stages")) {
    bool header = false;
    for (const auto& [kind, stages] : d["load_stages"].items()) {
      const auto loads = stages["loads"].get<std::uint64_t>();
      if (loads == 0) continue;
      if (!header)
        std::printf("       load stages, mean ms: %-15s %6s %7s %8s %19s %8s\n", "kind", "loads",
                    "queued", "reading", "waiting to pack", "packing");
      header = true;
      const auto mean_ms = [&](const char* key) {
        return 1e3 * stages[key].get<double>() / static_cast<double>(loads);
      };
      std::printf("                             %-15s %6llu %7.2f %8.2f %19.2f %8.2f\n",
                  kind.c_str(), static_cast<unsigned long long>(loads), mean_ms("queued_seconds"),
                  mean_ms("reading_seconds"), mean_ms("staged_seconds"),
                  mean_ms("packing_seconds"));
    }
  }
  std::printf("\nlayer  hits     misses   hit rate  prefetch issued/hit/late/wasted\n");
  int l = 0;
  for (const auto& layer : c["layers"]) {
    const double total = layer["hits"].get<double>() + layer["misses"].get<double>();
    std::printf("%-6d %-8llu %-8llu %6.1f%%   %llu/%llu/%llu/%llu\n", l++,
                static_cast<unsigned long long>(layer["hits"].get<std::uint64_t>()),
                static_cast<unsigned long long>(layer["misses"].get<std::uint64_t>()),
                total > 0 ? 100.0 * layer["hits"].get<double>() / total : 0.0,
                static_cast<unsigned long long>(layer["prefetch_issued"].get<std::uint64_t>()),
                static_cast<unsigned long long>(layer["prefetch_hits"].get<std::uint64_t>()),
                static_cast<unsigned long long>(layer["prefetch_late"].get<std::uint64_t>()),
                static_cast<unsigned long long>(layer["prefetch_wasted"].get<std::uint64_t>()));
  }
  if (!c.contains("prefetch")) return;
  std::printf(
      "\nprefetch         predicted  used (precision)  issued   hit/late/wasted/cancelled\n");
  for (const auto& h : c["prefetch"]["horizons"]) {
    const auto predicted = h["predicted"].get<std::uint64_t>();
    const auto used = h["used"].get<std::uint64_t>();
    const int horizon = h["horizon"].get<int>();
    const std::string ahead =
        std::to_string(horizon) + (horizon == 1 ? " layer ahead" : " layers ahead");
    std::printf(
        "%-16s %-10llu %-8llu %6.1f%%   %-8llu %llu/%llu/%llu/%llu\n", ahead.c_str(),
        static_cast<unsigned long long>(predicted), static_cast<unsigned long long>(used),
        predicted ? 100.0 * static_cast<double>(used) / static_cast<double>(predicted) : 0.0,
        static_cast<unsigned long long>(h["issued"].get<std::uint64_t>()),
        static_cast<unsigned long long>(h["hits"].get<std::uint64_t>()),
        static_cast<unsigned long long>(h["late"].get<std::uint64_t>()),
        static_cast<unsigned long long>(h["wasted"].get<std::uint64_t>()),
        static_cast<unsigned long long>(h["cancelled"].get<std::uint64_t>()));
  }
}

std::pair<int, int> parse_block(const std::string& text) {
  const auto colon = text.find(':');
  try {
    if (colon != std::string::npos)
      return {std::stoi(text.substr(0, colon)), std::stoi(text.substr(colon + 1))};
  } catch (const std::exception&) {
  }
  throw std::invalid_argument("'" + text + "' is not LAYER:EXPERT, e.g. 3:5");
}

// The JSON Schema a --json-schema file holds, as compact text, its keys in their order.
std::string read_schema(const std::string& path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  if (!file) throw std::runtime_error("--json-schema " + path + ": cannot be read");
  try {
    return nlohmann::ordered_json::parse(text.str()).dump();
  } catch (const nlohmann::json::parse_error& e) {
    throw std::runtime_error("--json-schema " + path + ": not JSON (" + e.what() + ")");
  }
}

double parse_duration_s(const std::string& text) {
  std::size_t used = 0;
  double value = -1;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
  }
  const std::string unit = text.substr(used);
  const double factor = unit.empty() || unit == "s" ? 1
                        : unit == "m"               ? 60
                        : unit == "ms"              ? 0.001
                                                    : -1;
  if (value <= 0 || factor < 0)
    throw std::invalid_argument("'" + text + "' is not a duration such as 60s or 2m");
  return value * factor;
}

// One reply (MESSAGE given) or an interactive session over standard input.
int run_chat(moed::Client& client, moed::ChatRequest request, const std::string& system_prompt,
             const std::string& message, bool as_json) {
  const bool interactive = message.empty() && ::isatty(STDIN_FILENO);
  auto reset = [&] {
    request.messages.clear();
    if (!system_prompt.empty()) request.messages.push_back({"system", system_prompt});
  };
  // Sends the conversation with one more user turn; keeps both turns when the reply arrives.
  auto turn = [&](const std::string& text) {
    request.messages.push_back({"user", text});
    moed::Completion reply;
    try {
      if (as_json) {
        reply = client.chat(request);
        std::cout << json{{"reply", reply.text},
                          {"finish_reason", reply.finish_reason},
                          {"prompt_tokens", reply.prompt_tokens},
                          {"completion_tokens", reply.completion_tokens}}
                         .dump()
                  << std::endl;
      } else {
        reply = client.chat_stream(request, [](std::string_view piece) {
          std::cout << piece << std::flush;
          return true;
        });
        std::cout << std::endl;
      }
    } catch (...) {
      request.messages.pop_back();
      throw;
    }
    request.messages.push_back({"assistant", reply.text});
  };
  reset();
  if (!message.empty()) {
    turn(message);
    return 0;
  }
  if (interactive)
    std::fprintf(stderr, "moectl chat: one message per line; /reset forgets, /exit leaves\n");
  std::string line;
  while (true) {
    if (interactive) std::cout << "> " << std::flush;
    if (!std::getline(std::cin, line) || line == "/exit" || line == "/quit") break;
    if (line == "/reset") {
      reset();
      continue;
    }
    if (line.empty()) continue;
    try {
      turn(line);
    } catch (const moed::ConnectionError&) {
      throw;
    } catch (const moed::Error& e) {  // a refused turn; the session goes on
      std::fprintf(stderr, "moectl: error: %s (HTTP %d)\n", e.what(), e.status());
      if (!interactive) return 1;
    }
  }
  if (interactive) std::cout << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"moectl: control and inspect moed over its Unix socket"};
  app.require_subcommand(1);
  app.fallthrough();  // --json and --socket may also follow the subcommand
  std::string socket = "/run/moed/moed.sock";
  bool json_out = false;
  app.add_option("--socket", socket, "moed's socket (default /run/moed/moed.sock)");
  app.add_flag("--json", json_out, "print JSON instead of tables, for scripts");

  // Sampling flags shared by generate and chat; the seed is only sent when given.
  std::uint64_t seed = 0;
  std::string schema_file;
  auto add_sampling = [&](CLI::App* sub, moed::GenerationOptions& options) {
    sub->add_option("-n,--max-tokens", options.max_tokens, "tokens to generate (default 16)");
    sub->add_option("--temperature", options.temperature,
                    "sampling temperature (default 1; 0 is greedy)");
    sub->add_option("--top-p", options.top_p, "nucleus mass");
    sub->add_option("--top-k", options.top_k, "keep the k most likely tokens");
    sub->add_option("--stop", options.stop, "stop string (repeatable)");
    auto* json_object = sub->add_flag("--json-object", options.json_object,
                                      "answer with one JSON object and nothing else (OpenAI's "
                                      "response_format json_object; ask for JSON in the prompt "
                                      "too)");
    sub->add_option("--json-schema", schema_file,
                    "answer with an instance of the JSON Schema in FILE (OpenAI's "
                    "response_format json_schema, strict: its root is an object schema, and what "
                    "moed cannot enforce is refused)")
        ->check(CLI::ExistingFile)
        ->excludes(json_object);
    return sub->add_option("--seed", seed, "sampling seed (same seed, same output)");
  };
  moed::CompletionRequest gen;
  bool stream = false;
  auto* generate = app.add_subcommand("generate", "Complete a prompt and print the text");
  generate->add_option("PROMPT", gen.prompt, "prompt text")->required();
  auto* seed_opt = add_sampling(generate, gen);
  generate->add_flag("--stream", stream, "print tokens as they arrive");

  moed::ChatRequest conversation;
  std::string system_prompt, message;
  auto* chat = app.add_subcommand(
      "chat",
      "Talk to the model through its chat template. With MESSAGE: one reply, then exit. Without: "
      "an interactive session reading one user turn per line from standard input (the history is "
      "kept; /reset forgets it, /exit or end of input leaves)");
  chat->add_option("MESSAGE", message, "one user message (omit for a session)");
  chat->add_option("--system", system_prompt, "system message that opens the conversation");
  auto* chat_seed_opt = add_sampling(chat, conversation);
  conversation.max_tokens = 256;
  chat->get_option("--max-tokens")->description("tokens per reply (default 256)");

  auto* status = app.add_subcommand("status", "Daemon health, loading progress, queue and speed");
  auto* models = app.add_subcommand("models", "List the served models");
  auto* cache = app.add_subcommand("cache", "Memory tiers: show, resize, pin");
  cache->require_subcommand(1);
  int watch = 0;
  auto* cache_show =
      cache->add_subcommand("show", "Tiers, budgets, use and hit rates per tier and layer");
  cache_show->add_option("--watch", watch, "refresh every N seconds");
  std::string host_budget, policy, gpu_budget;
  auto* cache_set = cache->add_subcommand("set", "Change the tier budgets or policy live");
  cache_set->add_option("--gpu", gpu_budget, "GPU budget (a size such as 40GiB)");
  cache_set->add_option("--host", host_budget,
                        "host budget: a size (2GiB) or a share of the experts (25%)");
  cache_set->add_option("--policy", policy,
                        "host-tier eviction policy: " + moed::memtier::policy_list());
  double auto_pin = 0;
  auto* auto_pin_opt =
      cache_set
          ->add_option("--auto-pin", auto_pin,
                       "pin the most requested experts automatically, up to this share of the "
                       "host budget (0..1; 0 turns it off)")
          ->check(CLI::Range(0.0, 1.0));
  std::string block;
  auto* cache_pin = cache->add_subcommand("pin", "Keep an expert in host RAM");
  cache_pin->add_option("LAYER:EXPERT", block)->required();
  auto* cache_unpin = cache->add_subcommand("unpin", "Let an expert be evicted again");
  cache_unpin->add_option("LAYER:EXPERT", block)->required();
  auto* experts =
      app.add_subcommand("experts", "Activation counts per layer and expert (a heatmap)");

  auto* trace = app.add_subcommand("trace", "Routing traces");
  trace->require_subcommand(1);
  std::string duration, out_file;
  auto* record =
      trace->add_subcommand("record", "Record the daemon's routing for a while and save it");
  record->add_option("DURATION", duration, "how long, e.g. 60s or 2m")->required();
  record->add_option("-o,--output", out_file, "trace file to write (.jsonl)")->required();

  std::string path, blocks = "16,32,64", policies = "lru,lfu,arc,tinylfu,belady", host_span,
                    expert_size, plot;
  int steps = 8;
  auto* sim = trace->add_subcommand(
      "simulate",
      "Replay a routing trace (JSON Lines: {\"token\":17,\"layer\":3,\"experts\":[5,1]}) through "
      "one expert cache shared by all layers, and print hits per policy and cache size. Lines are "
      "replayed in file order, the experts of a line in listed order; Belady is the optimum.");
  sim->add_option("TRACE", path, "trace file (.jsonl)")->required()->check(CLI::ExistingFile);
  auto* blocks_opt = sim->add_option(
      "--blocks", blocks, "cache sizes in expert blocks, comma-separated (default 16,32,64)");
  sim->add_option("--host", host_span,
                  "a range of cache sizes A..B instead of --blocks: block counts (8..64), shares "
                  "of the trace's expert blocks (10%..100%) or sizes (1GiB..8GiB, with "
                  "--expert-size)")
      ->excludes(blocks_opt);
  sim->add_option("--steps", steps, "sizes simulated across a --host range (default 8)");
  sim->add_option("--expert-size", expert_size,
                  "bytes of one expert block, for --host sizes (cache show --json: "
                  "expert_block_bytes)");
  sim->add_option("--plot", plot, "also draw hit rate against cache size into this PNG file");
  sim->add_option("--policies", policies,
                  "policies to compare (default lru,lfu,arc,tinylfu,belady)");
  moed::memtier::PrefetchOptions prefetch{.horizons = 0};
  double auto_pin_share = 0;
  sim->add_option("--auto-pin", auto_pin_share,
                  "pin the most requested resident experts automatically, up to this share of "
                  "the cache (0..1, default 0: off), as the host tier's automatic pins do")
      ->check(CLI::Range(0.0, 1.0));
  std::string predictor = "transition";
  sim->add_option("--prefetch", prefetch.horizons,
                  "also simulate prefetching this many layers ahead (1 or 2; default 0: none) "
                  "and print each horizon's precision and recall")
      ->check(CLI::Range(0, moed::memtier::kPrefetchHorizons));
  sim->add_option("--predictor", predictor,
                  "what predicts the layers ahead: transition (per-layer expert transition "
                  "counts learned as the trace goes; default) or previous (the previous token's "
                  "experts at that layer)")
      ->check(CLI::IsMember({"transition", "previous"}));
  sim->add_option("--prefetch-width", prefetch.width,
                  "experts predicted per token and layer ahead (default: as many as routed)")
      ->check(CLI::NonNegativeNumber);
  sim->add_option("--reads-per-layer", prefetch.reads_per_layer,
                  "blocks the disk reads while one layer computes, demand reads first (default "
                  "0: unbounded)");
  CLI11_PARSE(app, argc, argv);

  try {
    if (sim->parsed()) {
      prefetch.predictor = moed::memtier::predictor_kind(predictor);
      return simulate(path, blocks, host_span, expert_size, steps, policies, plot, json_out,
                      prefetch, auto_pin_share);
    }
    moed::Client client(socket);
    if (generate->parsed()) {
      if (*seed_opt) gen.seed = seed;
      if (!schema_file.empty()) gen.json_schema = read_schema(schema_file);
      if (stream && !json_out) {
        client.complete_stream(gen, [](std::string_view text) {
          std::cout << text << std::flush;
          return true;
        });
        std::cout << "\n";
        return 0;
      }
      const auto c = client.complete(gen);
      if (json_out)
        std::cout << json{{"text", c.text},
                          {"finish_reason", c.finish_reason},
                          {"prompt_tokens", c.prompt_tokens},
                          {"completion_tokens", c.completion_tokens}}
                         .dump(2)
                  << "\n";
      else
        std::cout << c.text << "\n";
      return 0;
    }
    if (chat->parsed()) {
      if (*chat_seed_opt) conversation.seed = seed;
      if (!schema_file.empty()) conversation.json_schema = read_schema(schema_file);
      return run_chat(client, conversation, system_prompt, message, json_out);
    }
    if (status->parsed()) {
      const auto h = client.health();
      double tps = 0, queue = 0, active = 0;
      if (h.status == "ok") {
        std::istringstream metrics(client.metrics());
        std::string name;
        double value;
        while (metrics >> name) {
          if (name == "#") {
            std::string rest;
            std::getline(metrics, rest);
            continue;
          }
          metrics >> value;
          if (name == "moed_tokens_per_second") tps = value;
          if (name == "moed_queue_length") queue = value;
          if (name == "moed_active_sessions") active = value;
        }
      }
      if (json_out) {
        std::cout << json{{"status", h.status},       {"model", h.model},
                          {"progress", h.progress},   {"error", h.error},
                          {"tokens_per_second", tps}, {"queue", queue},
                          {"active", active}}
                         .dump(2)
                  << "\n";
      } else {
        std::printf(
            "status    %s%s\nmodel     %s\nprogress  %.0f%%\nactive    %.0f\nqueued    "
            "%.0f\ntokens/s  %.1f\n",
            h.status.c_str(), h.error.empty() ? "" : (": " + h.error).c_str(), h.model.c_str(),
            100 * h.progress, active, queue, tps);
      }
      return h.status == "ok" ? 0 : 1;
    }
    if (models->parsed()) {
      const auto list = client.models();
      if (json_out)
        std::cout << json(list).dump(2) << "\n";
      else
        for (const auto& m : list) std::cout << m << "\n";
      return 0;
    }
    if (cache_show->parsed()) {
      do {
        if (watch > 0 && !json_out) std::printf("\033[2J\033[H");
        print_json_or(json_out, client.cache(), cache_table);
        if (watch > 0) std::this_thread::sleep_for(std::chrono::seconds(watch));
      } while (watch > 0);
      return 0;
    }
    if (cache_set->parsed()) {
      if (host_budget.empty() && policy.empty() && gpu_budget.empty() && !*auto_pin_opt)
        throw std::invalid_argument("cache set: give --host, --gpu, --policy and/or --auto-pin");
      print_json_or(json_out,
                    client.set_cache(host_budget, policy, gpu_budget,
                                     *auto_pin_opt ? std::optional(auto_pin) : std::nullopt),
                    cache_table);
      return 0;
    }
    if (cache_pin->parsed() || cache_unpin->parsed()) {
      const auto [layer, expert] = parse_block(block);
      const auto answer =
          cache_pin->parsed() ? client.pin(layer, expert) : client.unpin(layer, expert);
      print_json_or(json_out, answer, [](const json& j) {
        std::printf("%s %s\n", j["block"].get<std::string>().c_str(),
                    j["pinned"].get<bool>() ? "pinned" : "unpinned");
      });
      return 0;
    }
    if (experts->parsed()) {
      print_json_or(json_out, client.experts(), [](const json& j) {
        std::uint64_t most = 1;
        for (const auto& row : j["counts"])
          for (const auto& v : row) most = std::max(most, v.get<std::uint64_t>());
        static const char* kShades[] = {" ", "\u2591", "\u2592", "\u2593", "\u2588"};
        std::printf("layer  experts 0..%zu (darker = more tokens; max %llu)\n",
                    j["experts"].get<std::size_t>() - 1, static_cast<unsigned long long>(most));
        int l = 0;
        for (const auto& row : j["counts"]) {
          std::printf("%5d  ", l++);
          for (const auto& v : row)
            std::printf("%s", kShades[(v.get<std::uint64_t>() * 4 + most - 1) / most]);
          std::printf("\n");
        }
      });
      return 0;
    }
    if (record->parsed()) {
      const double seconds = parse_duration_s(duration);
      client.trace_start();
      std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
      client.trace_stop();
      const std::string data = client.trace_download();
      std::ofstream out(out_file, std::ios::binary);
      if (!(out << data && out.flush()))
        throw std::runtime_error(out_file + ": cannot write the trace");
      const auto records = static_cast<std::size_t>(std::count(data.begin(), data.end(), '\n'));
      if (json_out)
        std::cout << json{{"file", out_file}, {"records", records}}.dump(2) << "\n";
      else
        std::fprintf(stderr, "moectl: wrote %zu routing records to %s\n", records,
                     out_file.c_str());
      return 0;
    }
  } catch (const moed::Error& e) {
    std::fprintf(
        stderr, "moectl: error: %s%s\n", e.what(),
        e.status() ? (" (HTTP " + std::to_string(e.status()) + ", " + e.type() + ")").c_str() : "");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moectl: error: %s\n", e.what());
    return 1;
  }
  return 2;
}
