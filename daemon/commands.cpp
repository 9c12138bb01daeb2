#include "commands.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "moed/engine/engine.hpp"
#include "moed/engine/npy.hpp"
#include "moed/kernels/bandwidth.hpp"
#include "moed/kernels/cpu_threads.hpp"
#include "moed/model/tokenizer.hpp"

namespace moed::cli {
namespace {

using Clock = std::chrono::steady_clock;

// Decode tokens per bandwidth-paired round in `moed bench`: long enough to time (~0.15 s on the
// bench model), short enough that the host's bandwidth barely moves within one.
constexpr std::int64_t kDecodeRound = 16;

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
  return options;
}

}  // namespace

int run_logits(const LogitsArgs& args) {
  const auto tokens = parse_token_list(args.tokens);
  engine::Engine engine(args.model_dir, engine_options(args));
  auto cache = engine.new_cache();
  std::vector<float> logits;
  engine.forward(tokens, cache, logits, true);
  engine::write_npy(args.out, logits,
                    {static_cast<std::int64_t>(tokens.size()), engine.spec().vocab_size});
  std::fprintf(stderr, "moed: wrote logits [%zu, %lld] to %s\n", tokens.size(),
               static_cast<long long>(engine.spec().vocab_size), args.out.c_str());
  return 0;
}

int run_generate(const GenerateArgs& args) {
  const auto tokenizer = model::Tokenizer::from_model_dir(args.model_dir);
  engine::Engine engine(args.model_dir, engine_options(args));
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
    for (std::size_t i = 0; i < generated.size(); ++i)
      std::cerr << (i ? "," : "") << generated[i];
    std::cerr << "\n";
  }
  return 0;
}

int run_tokenize(const TokenizeArgs& args) {
  const auto tokenizer = model::Tokenizer::from_model_dir(args.model_dir);
  const auto ids = tokenizer.encode(args.text, !args.no_special);
  for (std::size_t i = 0; i < ids.size(); ++i) std::cout << (i ? "," : "") << ids[i];
  std::cout << "\n";
  return 0;
}

int run_bench(const BenchArgs& args) {
  if (args.prompt_tokens < 1 || args.decode_tokens < 2 || args.bandwidth_mib < 64)
    throw std::invalid_argument(
        "bench: need --prompt-tokens >= 1, --decode-tokens >= 2, --bandwidth-mib >= 64");
  auto start = Clock::now();
  engine::Engine engine(args.model_dir, engine_options(args));
  const double load_s = seconds_since(start);
  const auto& spec = engine.spec();
  std::fprintf(stderr, "bench: loaded in %.2f s, %d threads, matmul %s\n", load_s,
               kernels::compute_threads(), engine.matmul_implementation().c_str());

  std::vector<std::int32_t> prompt(static_cast<std::size_t>(args.prompt_tokens));
  for (std::size_t i = 0; i < prompt.size(); ++i)
    prompt[i] = static_cast<std::int32_t>((i * 7919 + 1) % static_cast<std::size_t>(spec.vocab_size));
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
  kernels::ReadBandwidthProbe probe(static_cast<std::size_t>(args.bandwidth_mib) << 20);
  engine::Sampler sampler({});
  std::int32_t next = sampler.sample(logits.data(), spec.vocab_size).id;
  engine.forward(std::span(&next, 1), cache, logits, false);  // first step: primitive creation
  next = sampler.sample(logits.data(), spec.vocab_size).id;
  // The context grows during the run; its midpoint gives the average KV bytes read per step.
  const double bytes_per_token = static_cast<double>(
      engine.bytes_per_decode_token(args.prompt_tokens + args.decode_tokens / 2));
  std::vector<double> shares, bandwidths;
  double decode_seconds = 0.0;
  std::int64_t steps = 0;
  while (steps < args.decode_tokens - 1) {
    const double round_bandwidth = probe.measure(2);
    const std::int64_t round_steps = std::min<std::int64_t>(kDecodeRound, args.decode_tokens - 1 - steps);
    start = Clock::now();
    for (std::int64_t i = 0; i < round_steps; ++i) {
      engine.forward(std::span(&next, 1), cache, logits, false);
      next = sampler.sample(logits.data(), spec.vocab_size).id;
    }
    const double seconds = seconds_since(start);
    decode_seconds += seconds;
    steps += round_steps;
    bandwidths.push_back(round_bandwidth);
    shares.push_back(static_cast<double>(round_steps) / seconds / (round_bandwidth / bytes_per_token));
  }
  const double decode_tps = static_cast<double>(steps) / decode_seconds;
  const double bandwidth = median(bandwidths);
  const double share = median(shares);
  const double bound_tps = bandwidth / bytes_per_token;
  nlohmann::json report{
      {"model", args.model_dir},
      {"threads", kernels::compute_threads()},
      {"weights_bytes", engine.packed_bytes()},
      {"prefill_tokens", args.prompt_tokens},
      {"prefill_tokens_per_s", prefill_tps},
      {"decode_tokens", steps},
      {"decode_tokens_per_s", decode_tps},
      {"bytes_per_decode_token", bytes_per_token},
      {"memory_read_bandwidth_bytes_per_s", bandwidth},
      {"decode_bound_tokens_per_s", bound_tps},
      {"decode_share_of_bound", share},
      {"decode_rounds", shares.size()},
  };
  if (args.json) {
    std::cout << report.dump(2) << "\n";
    return 0;
  }
  std::printf("model                      %s\n", args.model_dir.c_str());
  std::printf("weights (packed)           %.1f MB\n", static_cast<double>(engine.packed_bytes()) / 1e6);
  std::printf("threads                    %d\n", kernels::compute_threads());
  std::printf("prefill (%lld tokens)       %.1f tokens/s\n", static_cast<long long>(args.prompt_tokens), prefill_tps);
  std::printf("decode  (%lld tokens)        %.1f tokens/s\n", static_cast<long long>(steps), decode_tps);
  std::printf("bytes read per token       %.1f MB (weights + KV cache)\n", bytes_per_token / 1e6);
  std::printf("memory read bandwidth      %.1f GB/s (median of probes taken between rounds)\n",
              bandwidth / 1e9);
  std::printf("decode bound               %.1f tokens/s (bandwidth / bytes per token)\n", bound_tps);
  std::printf("decode share of bound      %.1f%% (median over %zu rounds of %lld tokens)\n",
              100.0 * share, shares.size(), static_cast<long long>(kDecodeRound));
  return 0;
}

}  // namespace moed::cli
