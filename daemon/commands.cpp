#include "commands.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "moed/engine/engine.hpp"
#include "moed/engine/npy.hpp"
#include "moed/kernels/bandwidth.hpp"
#include "moed/memtier/byte_size.hpp"
#include "moed/memtier/reader.hpp"
#include "moed/model/checkpoint.hpp"
#include "moed/model/model_spec.hpp"
#include "moed/model/tokenizer.hpp"

namespace moed::cli {
namespace {

using Clock = std::chrono::steady_clock;

// Decode tokens per bandwidth-paired round in `moed bench`: long enough to time (~0.15 s on the
// bench model), short enough that the host's bandwidth barely moves within one.
constexpr std::int64_t kDecodeRound = 16;
// Long enough that the read reaches its steady rate, short enough to take before every round.
constexpr std::uint64_t kRawProbeBytes = 256ull << 20;

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t mid = values.size() / 2;
  return values.size() % 2 ? values[mid] : 0.5 * (values[mid - 1] + values[mid]);
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::vector<std::int32_t> parse_token_list(const std::string& text) {
  std::vector<std::int32_t> ids;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    std::size_t used = 0;
    long long value = 0;
    try {
      value = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != item.size() || value < 0 || value > INT32_MAX)
      throw std::invalid_argument("--tokens: '" + item + "' is not a token id");
    ids.push_back(static_cast<std::int32_t>(value));
  }
  if (ids.empty()) throw std::invalid_argument("--tokens: no token ids given");
  return ids;
}

engine::EngineOptions engine_options(const ModelArgs& args) {
  engine::EngineOptions options;
  options.threads = args.threads;
  try {
    options.host_budget = engine::HostBudget::parse(args.host_budget);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string("--host-budget: ") + e.what());
  }
  options.policy = args.policy;
  options.reader.kind =
      args.reader == "pread" ? memtier::ReaderKind::pread : memtier::ReaderKind::io_uring;
  options.reader.queue_depth = args.queue_depth;
  options.prefetch = !args.no_prefetch;
  options.prefetch_horizon = args.prefetch_horizon;
  options.kv_dtype = engine::parse_kv_dtype(args.kv_dtype);
  return options;
}

std::unique_ptr<engine::Engine> make_engine(const ModelArgs& args) {
  auto engine = std::make_unique<engine::Engine>(args.model_dir, engine_options(args));
  if (!args.trace.empty()) engine->record_trace(args.trace);
  return engine;
}

std::uint64_t peak_rss_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.starts_with("VmHWM:")) return std::stoull(line.substr(6)) * 1024;
  return 0;
}

// Restarts the peak-RSS count (VmHWM) from the current RSS.
void reset_peak_rss() {
  std::ofstream("/proc/self/clear_refs") << "5\n";
}

void drop_page_cache() {
  ::sync();
  std::ofstream drop("/proc/sys/vm/drop_caches");
  if (!(drop << "3\n"))
    std::fprintf(stderr, "bench: cannot drop the page cache (needs root); results may be warm\n");
}

}  // namespace

int run_logits(const LogitsArgs& args) {
  const auto tokens = parse_token_list(args.tokens);
  auto engine = make_engine(args);
  auto cache = engine->new_cache();
  std::vector<float> logits;
  engine->forward(tokens, cache, logits, true);
  engine::write_npy(args.out, logits,
                    {static_cast<std::int64_t>(tokens.size()), engine->spec().vocab_size});
  std::fprintf(stderr, "moed: wrote logits [%zu, %lld] to %s\n", tokens.size(),
               static_cast<long long>(engine->spec().vocab_size), args.out.c_str());
  return 0;
}

int run_generate(const GenerateArgs& args) {
  const auto tokenizer = model::load_tokenizer(args.model_dir);
  auto engine_ptr = make_engine(args);
  auto& engine = *engine_ptr;
  engine.add_stop_tokens(tokenizer.end_of_generation_ids());
  const auto prompt = tokenizer.encode(args.prompt);
  engine::SamplingParams params{args.temperature, args.top_k, args.top_p, args.seed};
  std::vector<std::int32_t> generated;
  std::string printed;
  engine.generate(prompt, args.max_new, params, [&](const engine::SampledToken& token) {
    generated.push_back(token.id);
    // Decode the whole continuation each time so multi-byte characters print once complete.
    const std::string text = tokenizer.decode(generated);
    if (text.size() > printed.size() && text.compare(0, printed.size(), printed) == 0 &&
        !text.ends_with("\xef\xbf\xbd")) {
      std::cout << text.substr(printed.size()) << std::flush;
      printed = text;
    }
    return true;
  });
  const std::string text = tokenizer.decode(generated);
  if (text.size() > printed.size() && text.compare(0, printed.size(), printed) == 0)
    std::cout << text.substr(printed.size());
  std::cout << "\n";
  if (args.print_ids) {
    for (std::size_t i = 0; i < generated.size(); ++i) std::cerr << (i ? "," : "") << generated[i];
    std::cerr << "\n";
  }
  return 0;
}

int run_tokenize(const TokenizeArgs& args) {
  if (args.text.has_value() == args.jsonl.has_value())
    throw std::invalid_argument("tokenize: give either --text or --jsonl");
  const auto tokenizer = model::load_tokenizer(args.model_dir);
  if (args.text) {
    const auto ids = tokenizer.encode(*args.text, !args.no_special);
    for (std::size_t i = 0; i < ids.size(); ++i) std::cout << (i ? "," : "") << ids[i];
    std::cout << "\n";
    return 0;
  }
  std::ifstream in(*args.jsonl);
  if (!in) throw std::runtime_error("tokenize: cannot open --jsonl file " + *args.jsonl);
  std::string line;
  for (std::int64_t number = 1; std::getline(in, line); ++number) {
    const auto text = nlohmann::json::parse(line, nullptr, false);
    if (!text.is_string())
      throw std::invalid_argument("tokenize: " + *args.jsonl + " line " + std::to_string(number) +
                                  ": not a JSON string");
    std::vector<std::int32_t> ids;
    try {
      ids = tokenizer.encode(text.get<std::string>(), !args.no_special);
    } catch (const model::UnencodableText& e) {
      throw std::invalid_argument("tokenize: " + *args.jsonl + " line " + std::to_string(number) +
                                  ": " + e.what());
    }
    const nlohmann::json out{{"ids", ids}, {"decoded", tokenizer.decode(ids, false)}};
    std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  }
  return 0;
}

int run_bench(const BenchArgs& args) {
  if (args.prompt_tokens < 1 || args.decode_tokens < 2 || args.bandwidth_mib < 64)
    throw std::invalid_argument(
        "bench: need --prompt-tokens >= 1, --decode-tokens >= 2, --bandwidth-mib >= 64");
  if (args.drop_caches) drop_page_cache();
  auto start = Clock::now();
  auto engine_ptr = make_engine(args);
  auto& engine = *engine_ptr;
  const double load_s = seconds_since(start);
  const auto& spec = engine.spec();
  std::fprintf(stderr, "bench: loaded in %.2f s, %d threads, matmul %s\n", load_s,
               engine.compute_threads(), engine.matmul_implementation().c_str());

  std::vector<std::int32_t> prompt(static_cast<std::size_t>(args.prompt_tokens));
  for (std::size_t i = 0; i < prompt.size(); ++i)
    prompt[i] =
        static_cast<std::int32_t>((i * 7919 + 1) % static_cast<std::size_t>(spec.vocab_size));
  std::vector<float> logits;
  {
    auto warm = engine.new_cache();  // builds the prefill-shaped primitives outside the timing
    engine.forward(prompt, warm, logits, false);
  }
  auto cache = engine.new_cache();
  start = Clock::now();
  engine.forward(prompt, cache, logits, false);
  const double prefill_tps = static_cast<double>(prompt.size()) / seconds_since(start);

  // Decode runs in rounds, each paired with a bandwidth probe taken just before it, so that the
  // bound and the speed are measured under the same conditions (a shared host's bandwidth
  // drifts by 2x within a minute). The headline share is the median over rounds.
  const std::uint64_t peak_before_decode = peak_rss_bytes();  // loading and prefill
  const std::size_t probe_bytes = static_cast<std::size_t>(args.bandwidth_mib) << 20;
  kernels::ReadBandwidthProbe probe(probe_bytes);
  engine::Sampler sampler({});
  std::int32_t next = sampler.sample(logits.data(), spec.vocab_size).id;
  engine.forward(std::span(&next, 1), cache, logits, false);  // first step: primitive creation
  next = sampler.sample(logits.data(), spec.vocab_size).id;
  // The context grows during the run; its midpoint gives the average KV bytes read per step.
  const double bytes_per_token = static_cast<double>(
      engine.bytes_per_decode_token(args.prompt_tokens + args.decode_tokens / 2));
  // The disk tier's bound: a raw sequential O_DIRECT read of the same files through the same
  // engine. A virtualised or shared disk drifts by 2-4x within seconds, so like the bandwidth
  // probe it is taken just before each decode round and compared with that round's tier rate.
  // Only where blocks may come from disk while decoding: the dense layers stream, or the budget
  // holds less than the weights and the KV cache at its largest in this run (its growth shrinks
  // the experts' room). With every block resident the probe read about 2 GB/s between rounds
  // for nothing.
  const auto loaded = engine.memory_stats();
  const std::uint64_t largest_kv =
      engine.kv_bytes(engine::KvCache::capacity_for(args.prompt_tokens + args.decode_tokens));
  const bool disk_involved =
      loaded.dense_streamed ||
      (loaded.budget_bytes > 0 &&
       loaded.budget_bytes < loaded.fixed_bytes + loaded.expert_bytes_total + largest_kv);
  if (disk_involved && args.drop_caches) drop_page_cache();
  auto raw_reader = disk_involved
                        ? memtier::make_reader(engine.model_files(), engine_options(args).reader)
                        : nullptr;
  // From here the peak counts the decode, plus the probes' buffers, which are subtracted below.
  reset_peak_rss();
  engine.reset_memory_stats();
  const auto disk_before = engine.memory_stats().disk;
  const auto host_before = engine.memory_stats().host;
  struct Round {
    double tokens_per_s, bandwidth, raw, disk_bytes_per_token, tier_share_of_raw;
    bool raw_from_tier;  // the tier outran the raw probe: its own rate stands for the disk's
  };
  std::vector<Round> rounds;
  double decode_seconds = 0.0;
  double decode_disk_busy = 0.0;  // seconds with disk reads in flight, within the rounds
  std::int64_t steps = 0;
  while (steps < args.decode_tokens - 1) {
    const double round_bandwidth = probe.measure(2);
    const double round_raw =
        raw_reader ? memtier::measure_sequential_read(*raw_reader, kRawProbeBytes) : 0.0;
    const std::int64_t round_steps =
        std::min<std::int64_t>(kDecodeRound, args.decode_tokens - 1 - steps);
    // The disk counters are read inside the timed window, so the round's busy time never
    // includes the probes around it.
    start = Clock::now();
    const auto round_disk = engine.memory_stats().disk;
    for (std::int64_t i = 0; i < round_steps; ++i) {
      engine.forward(std::span(&next, 1), cache, logits, false);
      next = sampler.sample(logits.data(), spec.vocab_size).id;
    }
    const auto disk_after = engine.memory_stats().disk;
    const double seconds = seconds_since(start);
    decode_seconds += seconds;
    steps += round_steps;
    const double round_disk_bytes =
        static_cast<double>(disk_after.bytes_read - round_disk.bytes_read);
    const double round_busy = disk_after.busy_seconds - round_disk.busy_seconds;
    decode_disk_busy += round_busy;
    // The raw probe and the tier read the same files: a tier faster while busy than the probe
    // shows the disk can do at least that.
    const double tier_rate = round_busy > 0 ? round_disk_bytes / round_busy : 0.0;
    const double raw = round_raw > 0 ? std::max(round_raw, tier_rate) : 0.0;
    rounds.push_back({static_cast<double>(round_steps) / seconds, round_bandwidth, raw,
                      round_disk_bytes / static_cast<double>(round_steps),
                      raw > 0 ? tier_rate / raw : 0.0, raw > round_raw});
  }
  // A bandwidth probe slower than the memory the round after it read was held up (a descheduled
  // thread: on this 2-core VM one probe in six read 1.4-3.6 GB/s before rounds that read 5 GB/s
  // and more); such a round is measured against the median of the other probes instead.
  std::vector<double> valid_probes;
  for (const auto& r : rounds)
    if (r.bandwidth >= r.tokens_per_s * bytes_per_token) valid_probes.push_back(r.bandwidth);
  const double typical_bandwidth = valid_probes.empty() ? 0.0 : median(valid_probes);
  // combined_shares: against min(memory bound, raw disk rate / the round's disk bytes per token),
  // the bound of a step that must both read its resident bytes and bring its misses from disk.
  std::vector<double> shares, bandwidths, raw_rates, tier_shares_of_raw, combined_shares;
  // Rounds that outran their probe; of those, the ones no valid probe covered either, measured
  // against their own rate (then exactly at their memory bound); rounds whose disk tier outran
  // the raw probe.
  std::size_t rounds_above_probe = 0, rounds_at_own_rate = 0, rounds_above_raw_probe = 0;
  for (const auto& r : rounds) {
    double bandwidth = r.bandwidth;
    const double reached = r.tokens_per_s * bytes_per_token;
    if (bandwidth < reached) {
      ++rounds_above_probe;
      rounds_at_own_rate += typical_bandwidth < reached;
      bandwidth = std::max(typical_bandwidth, reached);
    }
    rounds_above_raw_probe += r.raw_from_tier;
    bandwidths.push_back(bandwidth);
    shares.push_back(r.tokens_per_s / (bandwidth / bytes_per_token));
    double round_bound = bandwidth / bytes_per_token;
    if (r.raw > 0 && r.disk_bytes_per_token > 0)
      round_bound = std::min(round_bound, r.raw / r.disk_bytes_per_token);
    combined_shares.push_back(r.tokens_per_s / round_bound);
    if (r.raw > 0 && r.tier_share_of_raw > 0) {
      raw_rates.push_back(r.raw);
      tier_shares_of_raw.push_back(r.tier_share_of_raw);
    }
  }
  const double decode_tps = static_cast<double>(steps) / decode_seconds;
  const double bandwidth = median(bandwidths);
  const double share = median(shares);
  const double bound_tps = bandwidth / bytes_per_token;

  const std::uint64_t probes_bytes =
      probe_bytes + (raw_reader ? memtier::kSequentialReadMemory : 0);
  const std::uint64_t peak_rss = std::max(peak_before_decode, peak_rss_bytes() - probes_bytes);
  const auto mem = engine.memory_stats();
  const double hits = static_cast<double>(mem.host.hits - host_before.hits);
  const double lookups = hits + static_cast<double>(mem.host.misses - host_before.misses);
  std::uint64_t issued = 0, prefetch_hits = 0, late = 0, wasted = 0, predicted = 0, used = 0;
  double wait_s = 0;
  const memtier::HorizonTotals horizons = memtier::horizon_totals(mem.layers);
  for (const auto& h : horizons) {
    predicted += h.predicted;
    used += h.used;
    issued += h.issued;
    prefetch_hits += h.hits;
    late += h.late;
    wasted += h.wasted + h.cancelled;
  }
  for (const auto& l : mem.layers) {
    wait_s += l.wait_seconds;
  }
  const double disk_bytes = static_cast<double>(mem.disk.bytes_read - disk_before.bytes_read);
  const double disk_busy = mem.disk.busy_seconds - disk_before.busy_seconds;
  const double disk_rate = disk_busy > 0 ? disk_bytes / disk_busy : 0.0;
  // How much of decode had disk reads in flight. Idle disk is what a better guess could use
  // when decode is disk-bound; busy time includes wrong guesses, so a higher share alone is no
  // gain.
  const double disk_busy_share = decode_seconds > 0 ? decode_disk_busy / decode_seconds : 0.0;
  const double raw_rate = raw_rates.empty() ? 0.0 : median(raw_rates);
  const double tier_share_of_raw = tier_shares_of_raw.empty() ? 0.0 : median(tier_shares_of_raw);
  const double materialize_seconds = mem.disk.materialize_seconds - disk_before.materialize_seconds;

  nlohmann::json report{
      {"model", args.model_dir},
      {"threads", engine.compute_threads()},
      {"matmul", engine.matmul_implementation()},
      {"host_budget_bytes", mem.budget_bytes},
      {"fixed_bytes", mem.fixed_bytes},
      {"expert_bytes", mem.expert_bytes_total},
      {"expert_block_bytes", engine.expert_block_bytes()},
      {"dense_streamed", mem.dense_streamed},
      {"policy", mem.host.policy},
      {"reader", mem.reader},
      {"prefill_tokens", args.prompt_tokens},
      {"prefill_tokens_per_s", prefill_tps},
      {"decode_tokens", steps},
      {"decode_tokens_per_s", decode_tps},
      {"bytes_per_decode_token", bytes_per_token},
      {"memory_read_bandwidth_bytes_per_s", bandwidth},
      {"decode_bound_tokens_per_s", bound_tps},
      {"decode_share_of_bound", share},
      {"decode_rounds", shares.size()},
      {"decode_rounds_above_probe", rounds_above_probe},
      {"decode_rounds_at_own_rate", rounds_at_own_rate},
      {"decode_rounds_disk_above_raw_probe", rounds_above_raw_probe},
      {"decode_share_of_combined_bound", median(combined_shares)},
      {"compute_wait_share", decode_seconds > 0 ? wait_s / decode_seconds : 0.0},
      {"host_hit_rate", lookups > 0 ? hits / lookups : 0.0},
      {"prefetch_issued", issued},
      {"prefetch_hits", prefetch_hits},
      {"prefetch_late", late},
      {"prefetch_wasted", wasted},
      {"prefetch_accuracy", issued ? static_cast<double>(prefetch_hits + late) / issued : 0.0},
      {"prefetch_precision", predicted ? static_cast<double>(used) / predicted : 0.0},
      {"prefetch_horizons", memtier::to_json(horizons)},
      {"disk_bytes_per_token", disk_bytes / static_cast<double>(steps)},
      {"io_wait_seconds", wait_s},
      {"experts_run_ahead_of_reads", mem.experts_run_ahead},
      {"disk_read_bytes_per_s", disk_rate},
      {"disk_busy_share_of_decode", disk_busy_share},
      {"raw_sequential_read_bytes_per_s", raw_rate},
      {"disk_share_of_raw", tier_share_of_raw},
      {"staging_bytes", mem.disk.staging_bytes},
      {"packing_bytes_per_s", materialize_seconds > 0 ? disk_bytes / materialize_seconds : 0.0},
      {"peak_rss_bytes", peak_rss},
      {"materialize_seconds", materialize_seconds},
      {"load_stages", memtier::to_json(memtier::stages_since(disk_before.stages, mem.disk.stages))},
  };
  if (args.json) {
    std::cout << report.dump(2) << "\n";
    return 0;
  }
  const std::string budget = args.host_budget.empty() ? "unlimited" : args.host_budget;
  std::printf("model                      %s\n", args.model_dir.c_str());
  std::printf("host budget                %s (%s; experts %s, dense %s, policy %s, reader %s)\n",
              budget.c_str(),
              mem.budget_bytes ? memtier::format_byte_size(mem.budget_bytes).c_str() : "all",
              memtier::format_byte_size(mem.expert_bytes_total).c_str(),
              mem.dense_streamed ? "streamed through the ring" : "resident",
              mem.host.policy.c_str(), mem.reader.c_str());
  std::printf("threads                    %d\n", engine.compute_threads());
  std::printf("prefill (%lld tokens)       %.1f tokens/s\n",
              static_cast<long long>(args.prompt_tokens), prefill_tps);
  std::printf("decode  (%lld tokens)        %.1f tokens/s\n", static_cast<long long>(steps),
              decode_tps);
  std::printf("bytes read per token       %.1f MB (weights + KV cache)\n", bytes_per_token / 1e6);
  std::printf(
      "memory read bandwidth      %.1f GB/s (median of probes taken between rounds; %zu of %zu "
      "rounds outran their probe and are measured against the median of the valid probes, or "
      "against their own rate where higher: %zu)\n",
      bandwidth / 1e9, rounds_above_probe, shares.size(), rounds_at_own_rate);
  std::printf("decode bound               %.1f tokens/s (bandwidth / bytes per token)\n",
              bound_tps);
  std::printf("decode share of bound      %.1f%% (median over %zu rounds of %lld tokens)\n",
              100.0 * share, shares.size(), static_cast<long long>(kDecodeRound));
  if (!tier_shares_of_raw.empty())
    std::printf(
        "share of memory+disk bound %.1f%% (bound: min(bandwidth / bytes per token, raw disk "
        "rate / disk bytes per token), per round)\n",
        100.0 * median(combined_shares));
  std::printf("host hit rate              %.1f%% of %.0f expert lookups\n",
              lookups > 0 ? 100.0 * hits / lookups : 0.0, lookups);
  std::printf(
      "prefetch                   %llu issued: %llu hit, %llu late, %llu wasted; %.1f%% of "
      "predictions right\n",
      static_cast<unsigned long long>(issued), static_cast<unsigned long long>(prefetch_hits),
      static_cast<unsigned long long>(late), static_cast<unsigned long long>(wasted),
      predicted ? 100.0 * static_cast<double>(used) / static_cast<double>(predicted) : 0.0);
  for (std::size_t h = 0; h < horizons.size(); ++h) {
    const auto& c = horizons[h];
    if (c.predicted == 0) continue;
    std::printf(
        "  %zu layer%s ahead           %llu predicted, %.1f%% right; %llu issued: %llu hit, %llu "
        "late, %llu read for nothing, %llu cancelled unread\n",
        h + 1, h == 0 ? " " : "s", static_cast<unsigned long long>(c.predicted),
        100.0 * static_cast<double>(c.used) / static_cast<double>(c.predicted),
        static_cast<unsigned long long>(c.issued), static_cast<unsigned long long>(c.hits),
        static_cast<unsigned long long>(c.late), static_cast<unsigned long long>(c.wasted),
        static_cast<unsigned long long>(c.cancelled));
  }
  if (mem.dense_streamed)
    std::printf("ring                       %llu section loads, compute waited %.2f s on it\n",
                static_cast<unsigned long long>(mem.ring.loads), mem.ring.wait_seconds);
  std::printf(
      "disk read per token        %.1f MB; compute waited %.2f s on loads (%.1f%% of decode), and "
      "ran %llu resident experts while one routed before them was read\n",
      disk_bytes / static_cast<double>(steps) / 1e6, wait_s,
      decode_seconds > 0 ? 100.0 * wait_s / decode_seconds : 0.0,
      static_cast<unsigned long long>(mem.experts_run_ahead));
  if (disk_bytes > 0) {
    std::printf(
        "disk tier throughput       %.2f GB/s while reading vs raw sequential O_DIRECT %.2f GB/s "
        "(%.0f%%, median over rounds of the pair taken together; in %zu of %zu rounds the tier "
        "outran the raw probe and its own rate stands for the disk's)\n",
        disk_rate / 1e9, raw_rate / 1e9, 100.0 * tier_share_of_raw, rounds_above_raw_probe,
        shares.size());
    std::printf("disk busy                  %.1f%% of decode time\n", 100.0 * disk_busy_share);
    // Experts computed as stored are not packed at all: a rate over all the bytes read would
    // count theirs too.
    if (engine.computes_streamed_experts_as_stored())
      std::printf(
          "packing                    %.2f s turning read bytes into weights (experts are "
          "computed where they landed, as stored rows)\n",
          materialize_seconds);
    else
      std::printf("packing                    %.2f GB/s (%.2f s turning read bytes into weights)\n",
                  materialize_seconds > 0 ? disk_bytes / materialize_seconds / 1e9 : 0.0,
                  materialize_seconds);
    std::printf("load stages, mean ms       %-15s %6s %7s %8s %19s %8s\n", "kind", "loads",
                "queued", "reading", "waiting to pack", "packing");
    for (const auto& [kind, stages] : report["load_stages"].items()) {
      const auto loads = stages["loads"].get<std::uint64_t>();
      const auto mean_ms = [&stage = stages, loads](const char* key) {
        return 1e3 * stage[key].get<double>() / static_cast<double>(loads);
      };
      if (loads > 0)
        std::printf("                           %-15s %6llu %7.2f %8.2f %19.2f %8.2f\n",
                    kind.c_str(), static_cast<unsigned long long>(loads), mean_ms("queued_seconds"),
                    mean_ms("reading_seconds"), mean_ms("staged_seconds"),
                    mean_ms("packing_seconds"));
    }
  }
  std::printf("peak RSS                   %s (excluding the bandwidth and disk probes' buffers)\n",
              memtier::format_byte_size(peak_rss).c_str());
  std::printf(
      "\nlayer  hits  misses  hit%%   prefetch issued/hit/late/wasted   read MB  io wait s\n");
  for (std::size_t l = 0; l < mem.layers.size(); ++l) {
    const auto& c = mem.layers[l];
    const double total = static_cast<double>(c.hits + c.misses);
    std::printf("%5zu %5llu %7llu %5.1f   %6llu/%llu/%llu/%llu %*s %8.1f %10.3f\n", l,
                static_cast<unsigned long long>(c.hits), static_cast<unsigned long long>(c.misses),
                total > 0 ? 100.0 * static_cast<double>(c.hits) / total : 0.0,
                static_cast<unsigned long long>(c.prefetch_issued),
                static_cast<unsigned long long>(c.prefetch_hits),
                static_cast<unsigned long long>(c.prefetch_late),
                static_cast<unsigned long long>(c.prefetch_wasted), 12, "",
                static_cast<double>(c.bytes_read) / 1e6, c.wait_seconds);
  }
  return 0;
}

int run_perplexity(const PerplexityArgs& args) {
  // The window is checked against the model's config before the weights load.
  const auto config = model::read_model_spec(args.model_dir);
  const std::int64_t context =
      args.context > 0 ? args.context : std::min<std::int64_t>(512, config.max_position_embeddings);
  if (context < 2 || context > config.max_position_embeddings)
    throw std::invalid_argument("--context: " + std::to_string(context) + " is not in [2, " +
                                std::to_string(config.max_position_embeddings) +
                                "], the model's max_position_embeddings");
  std::ifstream in(args.file, std::ios::binary);
  if (!in) throw std::invalid_argument("--file: cannot read '" + args.file + "'");
  std::ostringstream text;
  text << in.rdbuf();
  const auto tokenizer = model::load_tokenizer(args.model_dir);
  std::vector<std::int32_t> tokens;
  try {
    tokens = tokenizer.encode(text.str(), false);
  } catch (const model::UnencodableText& e) {
    throw std::invalid_argument("--file: '" + args.file + "': " + e.what());
  }
  if (tokens.size() < 2)
    throw std::invalid_argument("--file: '" + args.file + "' has " + std::to_string(tokens.size()) +
                                " tokens; perplexity needs at least 2");
  auto engine = make_engine(args);
  const auto& spec = engine->spec();

  // Non-overlapping windows of `context` tokens, each run from an empty cache; every token but a
  // window's first is scored given the tokens before it in its window. A window runs in chunks
  // of kPerplexityChunk rows through its cache, so the logits held at once stay bounded
  // (rows x vocab floats) whatever the context.
  constexpr std::int64_t kPerplexityChunk = 256;
  const auto total = static_cast<std::int64_t>(tokens.size());
  const std::int64_t windows = (total + context - 1) / context;
  const auto vocab = static_cast<std::size_t>(spec.vocab_size);
  double nll_sum = 0.0;
  std::int64_t scored = 0;
  std::vector<float> logits;
  const auto start = Clock::now();
  auto last_report = start;
  for (std::int64_t w = 0; w < windows; ++w) {
    const std::int64_t begin = w * context;
    const std::int64_t length = std::min(context, total - begin);
    if (length >= 2) {
      const std::span window(tokens.data() + begin, static_cast<std::size_t>(length));
      auto cache = engine->new_cache(length);
      for (std::int64_t chunk = 0; chunk < length; chunk += kPerplexityChunk) {
        const std::int64_t rows = std::min(kPerplexityChunk, length - chunk);
        engine->forward(
            window.subspan(static_cast<std::size_t>(chunk), static_cast<std::size_t>(rows)), cache,
            logits, true);
        for (std::int64_t r = 0; r < rows && chunk + r + 1 < length; ++r) {
          const float* row = logits.data() + static_cast<std::size_t>(r) * vocab;
          const double peak = *std::max_element(row, row + vocab);
          double sum = 0.0;
          for (std::size_t v = 0; v < vocab; ++v)
            sum += std::exp(static_cast<double>(row[v]) - peak);
          const auto target =
              static_cast<std::size_t>(window[static_cast<std::size_t>(chunk + r + 1)]);
          nll_sum += peak + std::log(sum) - static_cast<double>(row[target]);
          ++scored;
        }
      }
    }
    if (seconds_since(last_report) >= 2.0 || w + 1 == windows) {
      last_report = Clock::now();
      std::fprintf(stderr,
                   "perplexity: window %lld/%lld, %lld tokens scored, running perplexity %.4f "
                   "(%.0f tokens/s)\n",
                   static_cast<long long>(w + 1), static_cast<long long>(windows),
                   static_cast<long long>(scored), std::exp(nll_sum / static_cast<double>(scored)),
                   static_cast<double>(begin + length) / seconds_since(start));
    }
  }
  const double mean_nll = nll_sum / static_cast<double>(scored);
  if (args.json) {
    nlohmann::json report = {{"file", args.file},    {"context", context},
                             {"tokens", total},      {"scored", scored},
                             {"mean_nll", mean_nll}, {"perplexity", std::exp(mean_nll)},
                             {"windows", windows}};
    // A file name need not be UTF-8; its invalid bytes print as U+FFFD.
    std::printf("%s\n",
                report.dump(1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::printf("file        %s\n", args.file.c_str());
    std::printf("tokens      %lld in %lld windows of up to %lld (%lld scored)\n",
                static_cast<long long>(total), static_cast<long long>(windows),
                static_cast<long long>(context), static_cast<long long>(scored));
    std::printf("mean NLL    %.6f nats/token\n", mean_nll);
    std::printf("perplexity  %.4f\n", std::exp(mean_nll));
  }
  return 0;
}

}  // namespace moed::cli

namespace moed::cli {
namespace {

std::string router_description(const model::ModelSpec& s) {
  const auto& r = s.router;
  std::string out = r.scoring == model::Scoring::softmax ? "softmax" : "sigmoid";
  if (r.correction_bias) out += " + correction bias for the choice";
  if (r.n_group > 1)
    out += ", best " + std::to_string(r.topk_group) + " of " + std::to_string(r.n_group) +
           " groups (" + (r.group_top2_sum ? "top-2 sum" : "max") + ")";
  out += r.normalize ? ", top-k renormalised" : ", top-k not renormalised";
  if (r.scaling != 1.0) {
    char scaled[32];
    std::snprintf(scaled, sizeof scaled, ", x%g", r.scaling);
    out += scaled;
  }
  return out;
}

std::string attention_description(const model::ModelSpec& s) {
  const auto& a = s.attention;
  char text[256];
  if (a.kind == model::AttentionKind::gqa) {
    std::snprintf(text, sizeof text, "gqa, %lld heads, %lld kv heads, head_dim %lld%s%s%s",
                  static_cast<long long>(a.heads), static_cast<long long>(a.kv_heads),
                  static_cast<long long>(a.head_dim), a.qkv_bias ? ", q/k/v bias" : "",
                  a.qk_norm == model::QkNorm::per_head ? ", q/k RMSNorm per head"
                  : a.qk_norm == model::QkNorm::whole  ? ", q/k RMSNorm over the projection"
                                                       : "",
                  a.clip_qkv > 0 ? ", clip_qkv" : "");
  } else {
    std::snprintf(text, sizeof text,
                  "mla, %lld heads, q_lora_rank %lld, kv_lora_rank %lld, qk nope/rope %lld/%lld, "
                  "v %lld; the cache holds the latent and rope key",
                  static_cast<long long>(a.heads), static_cast<long long>(a.q_lora_rank),
                  static_cast<long long>(a.kv_lora_rank),
                  static_cast<long long>(a.qk_nope_head_dim),
                  static_cast<long long>(a.qk_rope_head_dim), static_cast<long long>(a.v_head_dim));
  }
  std::string out = text;
  std::snprintf(text, sizeof text, "; rope %s, dim %lld, theta %g%s, softmax scale %.6g",
                s.rope.style == model::RopeStyle::half ? "half-split" : "adjacent pairs",
                static_cast<long long>(s.rope.dim), s.rope.theta,
                s.rope.yarn_factor > 0 ? ", yarn" : "", a.softmax_scale);
  return out + text;
}

}  // namespace

int run_info(const InfoArgs& args) {
  const auto spec = model::read_model_spec(args.model_dir);
  const model::Checkpoint checkpoint = model::open_checkpoint(args.model_dir, spec);
  // An FP8 weight's bytes include its block scales, which are read with it.
  auto bytes_of = [&](const std::string& name) {
    const auto& t = checkpoint.tensor(name);
    const auto* scales = checkpoint.block_scales(t);
    return t.nbytes + (scales ? scales->nbytes : 0);
  };
  // What a weight takes in host RAM: an FP8 matrix as CpuMatmul holds it (FP8 rows, one byte a
  // weight and an f32 scale per column and column block, where this CPU computes them; else
  // widened to bf16) and a quantized one in the row tiles it is computed from (row_tile_format: a
  // q3_K, iq3_xxs, iq3_s, iq1_s or iq1_m weight as q6_K, an iq4_nl one as q8_0), both as
  // CpuMatmul::packed_bytes gives them; another plain one in the dtype it is computed in (f16 as
  // f32).
  kernels::CpuMatmul matmul;
  matmul.hold_fp8_in_panels(engine::HostBudget::parse(args.host_budget).caps_memory());
  std::string fp8_held_as = "bf16";  // as CpuMatmul holds FP8 matrices here
  auto host_bytes_of = [&](const std::string& name) -> std::uint64_t {
    const auto& t = checkpoint.tensor(name);
    if (kernels::is_quantized(t.dtype)) {
      const std::int64_t cols = t.shape.back();
      const kernels::WeightPart part{
          nullptr, t.dtype,
          static_cast<std::int64_t>(t.nbytes / kernels::row_bytes(t.dtype, cols))};
      return matmul.packed_bytes(std::span(&part, 1), cols);
    }
    if (t.dtype == kernels::DType::f8_e4m3 && t.shape.size() == 2) {
      const kernels::WeightPart part{
          nullptr,
          t.dtype,
          t.shape[0],
          {nullptr, kernels::DType::f32, spec.fp8_block_rows, spec.fp8_block_cols}};
      if (matmul.keeps_fp8_rows(std::span(&part, 1), t.shape[1])) fp8_held_as = "fp8 rows";
      if (matmul.keeps_fp8_panels(std::span(&part, 1))) fp8_held_as = "fp8 panels";
      return matmul.packed_bytes(std::span(&part, 1), t.shape[1]);
    }
    return t.nbytes / kernels::dtype_size(t.dtype) *
           kernels::dtype_size(kernels::CpuMatmul::compute_dtype(t.dtype));
  };
  std::vector<std::uint64_t> dense_bytes, expert_blocks;  // per layer
  std::uint64_t expert_block = 0;                         // the largest layer's
  std::uint64_t experts_total = 0;
  // Experts that stream are cached as the file stores them where this CPU computes their formats
  // from stored rows (the engine's choice; IQ2's tiles take about twice their stored bytes).
  std::uint64_t experts_streamed_host = 0;
  std::uint64_t dense_host = 0, experts_host = 0, expert_block_host = 0;
  // A quantized file's bytes by format (llama-quantize mixes them: q4_K_M has q6_K layers).
  std::map<std::string, std::uint64_t> bytes_by_format;
  auto count_format = [&](const std::string& name) {
    const auto& t = checkpoint.tensor(name);
    bytes_by_format[std::string(kernels::dtype_name(t.dtype))] += bytes_of(name);
  };
  for (std::int64_t l = 0; l < spec.num_layers; ++l) {
    std::uint64_t layer = 0;
    for (const auto& t : model::dense_tensors(spec, l)) {
      layer += bytes_of(t.name);
      // MLA's kv_b is cut into per-head matrices, which an FP8 one is widened to bf16 for.
      dense_host += t.role == model::DenseRole::kv_b &&
                            checkpoint.tensor(t.name).dtype == kernels::DType::f8_e4m3
                        ? checkpoint.tensor(t.name).nbytes * 2
                        : host_bytes_of(t.name);
      count_format(t.name);
    }
    dense_bytes.push_back(layer);
    std::uint64_t block = 0, block_host = 0;
    for (std::int64_t e = 0; spec.has_experts(l) && e < spec.num_experts; ++e)
      for (const auto m :
           {model::ExpertMatrix::gate, model::ExpertMatrix::up, model::ExpertMatrix::down}) {
        if (e == 0) {
          block += bytes_of(model::expert_tensor(spec, l, 0, m));
          block_host += host_bytes_of(model::expert_tensor(spec, l, 0, m));
        }
        count_format(model::expert_tensor(spec, l, e, m));
      }
    expert_blocks.push_back(block);
    expert_block = std::max(expert_block, block);
    expert_block_host = std::max(expert_block_host, block_host);
    experts_total += block * static_cast<std::uint64_t>(spec.num_experts);
    experts_host += block_host * static_cast<std::uint64_t>(spec.num_experts);
    if (spec.has_experts(l)) {
      std::vector<kernels::WeightPart> parts;
      for (const auto m :
           {model::ExpertMatrix::gate, model::ExpertMatrix::up, model::ExpertMatrix::down})
        parts.push_back({nullptr, checkpoint.tensor(model::expert_tensor(spec, l, 0, m)).dtype, 0});
      experts_streamed_host +=
          (kernels::CpuMatmul::computes_stored_rows(parts) ? block : block_host) *
          static_cast<std::uint64_t>(spec.num_experts);
    }
  }
  for (const auto& name : {model::embedding_tensor(), model::final_norm_tensor()})
    count_format(name);
  if (!spec.tie_word_embeddings) count_format(model::lm_head_tensor(spec));
  std::string formats;
  for (const auto& [format, bytes] : bytes_by_format)
    formats += (formats.empty() ? "" : ", ") + format + " " + memtier::format_byte_size(bytes);
  std::uint64_t dense_total = 0;
  for (const auto b : dense_bytes) dense_total += b;
  // The engine packs the LM head (the embedding, when tied) into host RAM and reads embedding rows
  // in place from the mapped file.
  const std::uint64_t embedding = bytes_of(model::embedding_tensor());
  const std::uint64_t head =
      bytes_of(model::lm_head_tensor(spec)) + bytes_of(model::final_norm_tensor());
  const auto kv_per_position = static_cast<std::uint64_t>(
      spec.num_layers * spec.attention.cache_elements() * 2);  // bf16, the default

  // Where the bytes would live: the LM head and the dense part in host RAM, routed experts cached
  // up to the budget (as the engine reads it, in host bytes) and read from disk beyond it (in
  // stored bytes, the same share of them).
  const std::uint64_t head_host =
      host_bytes_of(model::lm_head_tensor(spec)) + host_bytes_of(model::final_norm_tensor());
  const std::uint64_t fixed = head_host + dense_host;
  std::uint64_t cached = experts_host;
  std::uint64_t cached_of = experts_host;  // the host bytes of all experts, as the cache holds them
  if (!args.host_budget.empty()) {
    const std::uint64_t total =
        engine::HostBudget::parse(args.host_budget)
            .total(fixed, experts_host,
                   static_cast<std::uint64_t>(spec.experts_per_token) * expert_block_host);
    const std::uint64_t room = total > fixed ? total - fixed : 0;
    if (room < experts_host) cached_of = experts_streamed_host;
    cached = std::min(room, cached_of);
  }
  const bool cached_as_stored = cached_of != experts_host;
  // The stored bytes of the experts left out: the same share as of their host bytes.
  __extension__ const std::uint64_t disk =
      cached_of == 0
          ? 0
          : experts_total - static_cast<std::uint64_t>(static_cast<unsigned __int128>(cached) *
                                                       experts_total / cached_of);

  if (args.json) {
    nlohmann::json layers = nlohmann::json::array();
    for (std::int64_t l = 0; l < spec.num_layers; ++l)
      layers.push_back(
          {{"layer", l},
           {"attention", to_string(spec.layers[static_cast<std::size_t>(l)].attention)},
           {"ffn", to_string(spec.layers[static_cast<std::size_t>(l)].ffn)},
           {"routed_experts", spec.has_experts(l) ? spec.num_experts : 0},
           {"dense_bytes", dense_bytes[static_cast<std::size_t>(l)]}});
    const nlohmann::json out = {
        {"model", args.model_dir},
        {"format", checkpoint.is_gguf() ? "gguf" : "safetensors"},
        {"bytes_by_weight_format", bytes_by_format},
        {"fp8_weight_block", spec.fp8_block_rows == 0
                                 ? nlohmann::json(nullptr)
                                 : nlohmann::json{spec.fp8_block_rows, spec.fp8_block_cols}},
        {"fp8_held_as",
         spec.fp8_block_rows == 0 ? nlohmann::json(nullptr) : nlohmann::json(fp8_held_as)},
        {"family", to_string(spec.family)},
        {"vocab_size", spec.vocab_size},
        {"hidden_size", spec.hidden_size},
        {"max_position_embeddings", spec.max_position_embeddings},
        {"attention", attention_description(spec)},
        {"experts", spec.num_experts},
        {"experts_per_token", spec.experts_per_token},
        {"expert_intermediate_size", spec.intermediate_size},
        {"shared_intermediate_size", spec.shared_intermediate_size},
        {"router", router_description(spec)},
        {"layers", layers},
        {"bytes",
         {{"embedding", embedding},
          {"lm_head", head},
          {"dense_layers", dense_total},
          {"routed_experts", experts_total},
          {"expert_block", expert_block},
          {"kv_per_position_bf16", kv_per_position}}},
        {"tiers",
         {{"host_budget", args.host_budget},
          {"host", fixed + cached},
          {"experts_cached", cached},
          {"experts_cached_as_stored", cached_as_stored},
          {"disk", disk}}}};
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  using memtier::format_byte_size;
  std::printf("model: %s\n", args.model_dir.c_str());
  const std::string fp8_blocks = spec.fp8_block_rows == 0
                                     ? ""
                                     : " (block scales included, one per " +
                                           std::to_string(spec.fp8_block_rows) + " x " +
                                           std::to_string(spec.fp8_block_cols) + " elements)";
  std::printf(
      "weights: %s; %s%s\n",
      checkpoint.is_gguf() ? ("GGUF, architecture " + spec.model_type).c_str() : "safetensors",
      formats.c_str(), fp8_blocks.c_str());
  std::printf("family: %s; vocab %lld, hidden %lld, %lld layers, context %lld\n",
              to_string(spec.family), static_cast<long long>(spec.vocab_size),
              static_cast<long long>(spec.hidden_size), static_cast<long long>(spec.num_layers),
              static_cast<long long>(spec.max_position_embeddings));
  std::printf("attention: %s\n", attention_description(spec).c_str());
  std::printf("experts: %lld routed per MoE layer, top %lld, width %lld",
              static_cast<long long>(spec.num_experts),
              static_cast<long long>(spec.experts_per_token),
              static_cast<long long>(spec.intermediate_size));
  if (spec.shared_intermediate_size > 0)
    std::printf("; shared experts of width %lld%s",
                static_cast<long long>(spec.shared_intermediate_size),
                spec.shared_expert_gate ? " (sigmoid-gated)" : "");
  std::printf("\nrouter: %s\n", router_description(spec).c_str());
  std::printf("%-6s %-9s %-6s %-15s %s\n", "layer", "attention", "ffn", "experts", "dense bytes");
  for (std::int64_t l = 0; l < spec.num_layers; ++l) {
    const auto& kinds = spec.layers[static_cast<std::size_t>(l)];
    const std::string experts =
        spec.has_experts(l) ? std::to_string(spec.num_experts) + " x " +
                                  format_byte_size(expert_blocks[static_cast<std::size_t>(l)])
                            : "-";
    std::printf("%-6lld %-9s %-6s %-15s %s\n", static_cast<long long>(l),
                to_string(kinds.attention), to_string(kinds.ffn), experts.c_str(),
                format_byte_size(dense_bytes[static_cast<std::size_t>(l)]).c_str());
  }
  std::printf(
      "bytes as stored: embedding %s (read in place), LM head %s, dense layers %s, routed "
      "experts %s; KV %s per position (bf16)\n",
      format_byte_size(embedding).c_str(), format_byte_size(head).c_str(),
      format_byte_size(dense_total).c_str(), format_byte_size(experts_total).c_str(),
      format_byte_size(kv_per_position).c_str());
  std::printf(
      "tiers%s, estimated from sizes as held (%sf16 as f32; packing may pad): host %s (LM head, "
      "dense layers, %s of experts cached%s), disk %s (as stored)\n",
      args.host_budget.empty() ? " (no host budget)"
                               : (" at host budget " + args.host_budget).c_str(),
      spec.fp8_block_rows == 0 ? ""
      : fp8_held_as == "bf16"  ? "FP8 as bf16 on this CPU, "
                               : "FP8 at one byte a weight with its scales on this CPU, ",
      format_byte_size(fixed + cached).c_str(), format_byte_size(cached).c_str(),
      cached_as_stored ? " as the file stores them" : "", format_byte_size(disk).c_str());
  return 0;
}

}  // namespace moed::cli
