#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "golden_files.hpp"
#include "moed/engine/engine.hpp"
#include "moed/engine/npy.hpp"
#include "moed/engine/sampler.hpp"
#include "moed/kernels/cpu_ops.hpp"
#include "moed/kernels/cpu_threads.hpp"

namespace fs = std::filesystem;
using namespace moed::engine;
namespace memtier = moed::memtier;
namespace model = moed::model;

namespace {}  // namespace

struct GoldenCase {
  const char* model;
  double tolerance;
};

void PrintTo(const GoldenCase& c, std::ostream* os) {
  *os << c.model;
}

class GoldenLogits : public ::testing::TestWithParam<GoldenCase> {};

TEST_P(GoldenLogits, MatchTheNumpyReference) {
  const auto [model, tolerance] = GetParam();
  EngineOptions options;
  options.kv_dtype = KvDtype::f32;  // the reference keeps f32 keys and values
  Engine engine(kModels / model, options);
  const auto tokens = read_tokens(kGolden / "prompt-tokens.txt");
  const auto golden = read_npy(kGolden / (std::string(model) + ".logits.npy"));
  ASSERT_EQ(golden.shape, (std::vector<std::int64_t>{static_cast<std::int64_t>(tokens.size()),
                                                     engine.spec().vocab_size}));
  const auto logits = prefill_logits(engine, tokens);
  const auto c = compare(logits, golden.data, engine.spec().vocab_size);
  EXPECT_LE(c.relative_error, tolerance) << model;
  EXPECT_EQ(c.argmax_mismatches, 0) << model;
}

INSTANTIATE_TEST_SUITE_P(TinyModels, GoldenLogits,
                         ::testing::Values(GoldenCase{"tiny-f32", 1e-4},
                                           GoldenCase{"tiny-bf16", 2e-2},
                                           GoldenCase{"tiny-tied", 1e-4}),
                         [](const auto& info) {
                           std::string name = info.param.model;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

TEST(Engine, DemandPackingKeepsACoreForIoAndStaysWithinTheUsersThreads) {
  EXPECT_EQ(demand_pack_threads(0, 16), 15);
  EXPECT_EQ(demand_pack_threads(0, 2), 1);
  EXPECT_EQ(demand_pack_threads(0, 1), 1);
  EXPECT_EQ(demand_pack_threads(4, 32), 4);
  EXPECT_EQ(demand_pack_threads(8, 4), 3);
  EXPECT_EQ(demand_pack_threads(1, 1), 1);
}

TEST(Engine, KeepsTheTeamAwakeInLoadWaitsOnlyWhereItFitsBesideThePacker) {
  EXPECT_TRUE(team_awake_in_load_waits(2, 1, 2));
  EXPECT_TRUE(team_awake_in_load_waits(8, 8, 16));
  EXPECT_TRUE(team_awake_in_load_waits(4, 4, 32));
  EXPECT_FALSE(team_awake_in_load_waits(1, 1, 2));     // no other thread to keep awake
  EXPECT_FALSE(team_awake_in_load_waits(15, 15, 16));  // the default on 16 cores streaming
  EXPECT_FALSE(team_awake_in_load_waits(2, 1, 1));
}

TEST(Engine, ShardedCheckpointGivesBitIdenticalLogits) {
  Engine single(kModels / "tiny-f32", {});
  Engine sharded(kModels / "tiny-f32-sharded", {});
  const auto tokens = read_tokens(kGolden / "prompt-tokens.txt");
  EXPECT_EQ(prefill_logits(single, tokens), prefill_logits(sharded, tokens));
}

TEST(Engine, PrefillThenDecodeMatchesOneLongPrefill) {
  for (const char* model : {"tiny-f32", "tiny-bf16"}) {
    Engine engine(kModels / model, {});
    const auto tokens = read_tokens(kGolden / "prompt-tokens.txt");
    const std::int64_t vocab = engine.spec().vocab_size;
    const auto full = prefill_logits(engine, tokens);

    auto cache = engine.new_cache();
    std::vector<float> logits, stepped;
    const std::size_t split = 5;
    engine.forward(std::span(tokens).first(split), cache, logits, true);
    stepped = logits;
    for (std::size_t i = split; i < tokens.size(); ++i) {
      engine.forward(std::span(tokens).subspan(i, 1), cache, logits, false);
      stepped.insert(stepped.end(), logits.begin(), logits.end());
    }
    EXPECT_EQ(cache.length(), static_cast<std::int64_t>(tokens.size()));
    const auto c = compare(stepped, full, vocab);
    // f32 differs only by summation order between batch shapes; bf16 also by activation rounding.
    EXPECT_LE(c.relative_error, std::string(model) == "tiny-f32" ? 1e-5 : 1e-2) << model;
    EXPECT_EQ(c.argmax_mismatches, 0) << model;
  }
}

// Both KV dtypes: bf16 keys and values (the default) must keep the reference's greedy tokens.
TEST(Engine, GreedyGenerationMatchesTheReference) {
  for (const char* model : {"tiny-f32", "tiny-bf16"})
    for (const KvDtype kv_dtype : {KvDtype::f32, KvDtype::bf16}) {
      SCOPED_TRACE(std::string(model) + " with " + to_string(kv_dtype) + " KV");
      nlohmann::json golden;
      std::ifstream(kGolden / (std::string(model) + ".greedy.json")) >> golden;
      EngineOptions options;
      options.kv_dtype = kv_dtype;
      Engine engine(kModels / model, options);
      const auto prompt = golden["prompt"].get<std::vector<std::int32_t>>();
      const auto want = golden["generated"].get<std::vector<std::int32_t>>();
      EXPECT_EQ(greedy_tokens(engine, prompt, want.size()), want)
          << model << " (reference's smallest top-1 margin " << golden["min_margin"].get<double>()
          << ")";
    }
}

TEST(Engine, SameSeedSameTokensDifferentSeedDiffers) {
  Engine engine(kModels / "tiny-f32", {});
  const std::vector<std::int32_t> prompt = {1, 17, 42};
  SamplingParams params{1.0f, 0, 1.0f, 7};
  const auto a = engine.generate(prompt, 24, params, nullptr);
  const auto b = engine.generate(prompt, 24, params, nullptr);
  params.seed = 8;
  const auto c = engine.generate(prompt, 24, params, nullptr);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

TEST(Engine, RejectsBadTokensAndOverlongSequences) {
  Engine engine(kModels / "tiny-f32", {});
  auto cache = engine.new_cache();
  std::vector<float> logits;
  const std::vector<std::int32_t> bad = {1, 512};
  EXPECT_THROW(engine.forward(bad, cache, logits, false), std::out_of_range);
  EXPECT_EQ(cache.length(), 0);
  const std::vector<std::int32_t> negative = {-1};
  EXPECT_THROW(engine.forward(negative, cache, logits, false), std::out_of_range);
  std::vector<std::int32_t> too_long(
      static_cast<std::size_t>(engine.spec().max_position_embeddings + 1), 5);
  EXPECT_THROW(engine.forward(too_long, cache, logits, false), std::length_error);
  EXPECT_THROW(engine.forward({}, cache, logits, false), std::invalid_argument);
}

TEST(Engine, GenerateStopsWhenTheCallbackSaysSo) {
  Engine engine(kModels / "tiny-f32", {});
  int calls = 0;
  const auto out = engine.generate(std::vector<std::int32_t>{1, 17}, 10, {},
                                   [&](const SampledToken&) { return ++calls < 3; });
  EXPECT_EQ(out.size(), 3u);
}

TEST(Engine, GenerateStopsRightAfterTheModelsEosToken) {
  const std::vector<std::int32_t> prompt = {1, 17};
  const auto free_run = Engine(kModels / "tiny-f32", {}).generate(prompt, 10, {}, nullptr);
  ASSERT_EQ(free_run.size(), 10u);
  // The same weights with the fifth greedy token declared the end of sequence in config.json.
  const std::int32_t eos = free_run[4];
  const auto stop_at = std::find(free_run.begin(), free_run.end(), eos) - free_run.begin() + 1;
  const fs::path dir = fs::temp_directory_path() / ("moed-test-eos-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  for (const auto& entry : fs::directory_iterator(kModels / "tiny-f32"))
    if (entry.path().filename() != "config.json")
      fs::create_symlink(entry.path(), dir / entry.path().filename());
  auto config = nlohmann::json::parse(std::ifstream(kModels / "tiny-f32" / "config.json"));
  config["eos_token_id"] = eos;
  std::ofstream(dir / "config.json") << config.dump(2);
  Engine engine(dir, {});
  const auto out = engine.generate(prompt, 10, {}, nullptr);
  EXPECT_EQ(out, std::vector<std::int32_t>(free_run.begin(), free_run.begin() + stop_at));
  EXPECT_EQ(out.back(), eos);
  fs::remove_all(dir);
}

TEST(Sampler, GreedyTopKOneAndTinyTopPAgree) {
  const std::vector<float> logits = {0.1f, 2.5f, -1.0f, 2.4f, 0.0f};
  Sampler greedy({});
  EXPECT_EQ(greedy.sample(logits.data(), 5).id, 1);
  Sampler top1({1.5f, 1, 1.0f, 3});
  Sampler nucleus({1.5f, 0, 1e-6f, 3});
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(top1.sample(logits.data(), 5).id, 1);
    EXPECT_EQ(nucleus.sample(logits.data(), 5).id, 1);
  }
  const auto token = greedy.sample(logits.data(), 5);
  double total = 0;
  for (float l : logits) total += std::exp(l);
  EXPECT_NEAR(token.logprob, 2.5 - std::log(total), 1e-5);
}

TEST(Sampler, TopPZeroKeepsOnlyTheMostLikely) {
  const std::vector<float> logits = {0.1f, 2.5f, -1.0f, 2.4f, 0.0f};
  Sampler nucleus({1.5f, 0, 0.0f, 3});
  Sampler with_top_k({1.5f, 3, 0.0f, 4});
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(nucleus.sample(logits.data(), 5).id, 1);
    EXPECT_EQ(with_top_k.sample(logits.data(), 5).id, 1);
  }
  EXPECT_THROW(Sampler({1.0f, 0, -0.1f, 1}), std::invalid_argument);
}

// OpenAI's logit_bias and penalties: the bias is added before the draw (greedy included), each
// drawn token loses presence_penalty once and frequency_penalty per time drawn, and the
// log-probability reported stays the model's own.
TEST(Sampler, LogitBiasAndPenaltiesSteerTheDrawNotTheLogprob) {
  const std::vector<float> logits = {0.1f, 2.5f, -1.0f, 2.4f, 0.0f};
  double total = 0;
  for (float l : logits) total += std::exp(l);
  SamplingParams biased;
  biased.logit_bias = {{4, 3.0f}, {99, 50.0f}};  // an id past the vocabulary is ignored
  Sampler forced(biased);
  const auto token = forced.sample(logits.data(), 5);
  EXPECT_EQ(token.id, 4);
  EXPECT_NEAR(token.logprob, 0.0 - std::log(total), 1e-5);
  biased.logit_bias = {{1, -100.0f}};
  EXPECT_EQ(Sampler(biased).sample(logits.data(), 5).id, 3);

  // Greedy with a presence penalty of 0.2: 1, then 3 (2.5 - 0.2 < 2.4), then 1 for good (both
  // lose 0.2 once, however often drawn). A frequency penalty of 0.06 lets 1 win twice (2.44 >
  // 2.4), then 3 once (2.38 < 2.4), then 1 again (2.38 > 2.34).
  SamplingParams presence;
  presence.presence_penalty = 0.2f;
  Sampler by_presence(presence);
  std::vector<std::int32_t> drawn;
  for (int i = 0; i < 4; ++i) drawn.push_back(by_presence.sample(logits.data(), 5).id);
  EXPECT_EQ(drawn, (std::vector<std::int32_t>{1, 3, 1, 1}));
  SamplingParams frequency;
  frequency.frequency_penalty = 0.06f;
  Sampler by_frequency(frequency);
  drawn.clear();
  for (int i = 0; i < 4; ++i) drawn.push_back(by_frequency.sample(logits.data(), 5).id);
  EXPECT_EQ(drawn, (std::vector<std::int32_t>{1, 1, 3, 1}));

  SamplingParams bad;
  bad.frequency_penalty = NAN;
  EXPECT_THROW((Sampler(bad)), std::invalid_argument);
}

TEST(Sampler, TopKTwoOnlyEverPicksTheTwoBest) {
  const std::vector<float> logits = {0.1f, 2.5f, -1.0f, 2.4f, 0.0f};
  Sampler sampler({1.0f, 2, 1.0f, 11});
  std::set<std::int32_t> seen;
  for (int i = 0; i < 200; ++i) seen.insert(sampler.sample(logits.data(), 5).id);
  EXPECT_EQ(seen, (std::set<std::int32_t>{1, 3}));
}

// The draw of a sampler without top-k as it was before sorting went band by band: every
// candidate sorted, most likely first (ties to the lower id), the nucleus cut, then the draw;
// without a nucleus, the draw in id order.
std::int32_t fully_sorted_draw(const std::vector<float>& logits, float temperature, float top_p,
                               std::uint64_t seed) {
  const auto n = static_cast<std::int64_t>(logits.size());
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  std::vector<float> probs(logits.size());
  const double sum =
      moed::kernels::exp_and_sum(logits.data(), n, max_logit, 1.0f / temperature, probs.data());
  for (auto& p : probs) p *= static_cast<float>(1.0 / sum);
  std::vector<std::int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) {
    return probs[a] > probs[b] || (probs[a] == probs[b] && a < b);
  });
  std::size_t keep = order.size();
  double total = 0.0;
  if (top_p < 1.0f) {
    keep = 0;
    while (keep < order.size() && total < top_p) total += probs[order[keep++]];
  } else {
    for (const float p : probs) total += p;
    std::iota(order.begin(), order.end(), 0);
  }
  std::mt19937_64 rng(seed);
  const double target = std::uniform_real_distribution<double>(0.0, total)(rng);
  double running = 0.0;
  for (std::size_t i = 0; i < keep; ++i)
    if ((running += probs[order[i]]) >= target) return order[i];
  return order[keep - 1];
}

TEST(Sampler, WithoutTopKDrawsWhatAFullSortDraws) {
  // 5000 logits spread over many bands of probability, a few far ahead, some tied.
  std::mt19937 rng(4);
  std::normal_distribution<float> spread(0.0f, 3.0f);
  std::vector<float> logits(5000);
  for (auto& l : logits) l = std::round(spread(rng) * 4.0f) / 4.0f;
  logits[17] = logits[4000] = 14.0f;
  // Candidates of no weight at all, which only the last band (a floor of 0) sorts.
  for (int i = 0; i < 40; ++i)
    logits[static_cast<std::size_t>(100 * i + 3)] = i % 2 ? -INFINITY : -100.0f;
  for (const float top_p : {0.3f, 0.9f, 0.999f, 1.0f})
    for (std::uint64_t seed = 0; seed < 60; ++seed) {
      Sampler sampler({0.8f, 0, top_p, seed});
      EXPECT_EQ(sampler.sample(logits.data(), 5000).id,
                fully_sorted_draw(logits, 0.8f, top_p, seed))
          << "top_p " << top_p << ", seed " << seed;
    }
}

TEST(Sampler, DrawsEachTokenAsOftenAsItsProbability) {
  // Temperature 0.7 over six logits, with and without a nucleus (0.8 keeps the three most
  // likely, renormalised): frequencies over 40000 draws within 0.01 of the probabilities.
  const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 1.5f, 1.0f, 0.0f};
  std::vector<double> probs(logits.size());
  double total = 0.0;
  for (std::size_t i = 0; i < logits.size(); ++i) total += probs[i] = std::exp(logits[i] / 0.7);
  for (auto& p : probs) p /= total;
  const std::vector<int> nucleus = {1, 3, 4};
  const double nucleus_mass = probs[1] + probs[3] + probs[4];
  for (const float top_p : {1.0f, 0.8f}) {
    Sampler sampler({0.7f, 0, top_p, 9});
    std::vector<int> counts(logits.size());
    constexpr int kDraws = 40000;
    for (int i = 0; i < kDraws; ++i)
      ++counts[static_cast<std::size_t>(sampler.sample(logits.data(), 6).id)];
    for (std::size_t i = 0; i < logits.size(); ++i) {
      const bool kept =
          std::find(nucleus.begin(), nucleus.end(), static_cast<int>(i)) != nucleus.end();
      const double want = top_p == 1.0f ? probs[i] : kept ? probs[i] / nucleus_mass : 0.0;
      EXPECT_NEAR(counts[i] / static_cast<double>(kDraws), want, 0.01)
          << "token " << i << ", top_p " << top_p;
    }
  }
}

// Allows the even ids up to a bound, and remembers what it was told was drawn.
class EvenIdsBelow : public TokenConstraint {
 public:
  explicit EvenIdsBelow(std::int32_t bound) : bound_(bound) {}
  bool allows(std::int32_t id) const override { return id % 2 == 0 && id < bound_; }
  void advance(std::int32_t id) override { drawn.push_back(id); }
  std::vector<std::int32_t> drawn;

 private:
  std::int32_t bound_;
};

// A constraint renormalizes the distribution over the tokens it allows (temperature and the
// nucleus apply to what is left), and the log-probability reported stays the model's own.
TEST(Sampler, AConstraintLimitsTheDrawNotTheLogprob) {
  const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 1.5f, 1.0f, 0.0f};
  double total = 0.0;
  for (const float l : logits) total += std::exp(l);
  auto even = std::make_shared<EvenIdsBelow>(6);
  SamplingParams greedy;
  greedy.constraint = even;
  Sampler best_allowed(greedy);
  const auto token = best_allowed.sample(logits.data(), 6);
  EXPECT_EQ(token.id, 4);
  EXPECT_NEAR(token.logprob, 1.0 - std::log(total), 1e-5);
  EXPECT_EQ(even->drawn, (std::vector<std::int32_t>{4}));

  // Temperature 0.7: 0, 2 and 4 in proportion to exp(logit / 0.7) among themselves.
  std::vector<double> want(logits.size());
  double kept = 0.0;
  for (std::size_t i = 0; i < logits.size(); i += 2) kept += want[i] = std::exp(logits[i] / 0.7);
  for (auto& p : want) p /= kept;
  for (const float top_p : {1.0f, 0.999f}) {
    SamplingParams warm{0.7f, 0, top_p, 5};
    warm.constraint = std::make_shared<EvenIdsBelow>(6);
    Sampler sampler(warm);
    std::vector<int> counts(logits.size());
    constexpr int kDraws = 30000;
    for (int i = 0; i < kDraws; ++i)
      ++counts[static_cast<std::size_t>(sampler.sample(logits.data(), 6).id)];
    for (std::size_t i = 0; i < logits.size(); ++i)
      EXPECT_NEAR(counts[i] / static_cast<double>(kDraws), want[i], 0.01)
          << "token " << i << ", top_p " << top_p;
  }

  // Nothing allowed is the request's error, greedy or not.
  for (const float temperature : {0.0f, 1.0f}) {
    SamplingParams none{temperature};
    none.constraint = std::make_shared<EvenIdsBelow>(0);
    Sampler dead_end(none);
    EXPECT_THROW(dead_end.sample(logits.data(), 6), ConstraintDeadEnd);
  }
}

TEST(Sampler, AFlatNucleusKeepsTheLowerIdsAndANanLogitIsNeverDrawn) {
  const std::vector<float> flat(1000, 0.0f);
  Sampler half({1.0f, 0, 0.5f, 2});
  for (int i = 0; i < 200; ++i) EXPECT_LT(half.sample(flat.data(), 1000).id, 500);
  for (const float temperature : {0.0f, 1.0f, 0.7f}) {
    const std::vector<float> nan_first = {NAN, 1.0f, 2.0f, 0.0f};
    const std::vector<float> nan_second = {1.0f, NAN, 2.0f, 0.0f};
    Sampler sampler({temperature, 0, 1.0f, 5});
    std::set<std::int32_t> first, second;
    for (int i = 0; i < 300; ++i) {
      const auto token = sampler.sample(nan_first.data(), 4);
      EXPECT_TRUE(std::isfinite(token.logprob)) << temperature;
      first.insert(token.id);
      second.insert(sampler.sample(nan_second.data(), 4).id);
    }
    const bool greedy = temperature == 0.0f;
    EXPECT_EQ(first, (greedy ? std::set<std::int32_t>{2} : std::set<std::int32_t>{1, 2, 3}))
        << temperature;
    EXPECT_EQ(second, (greedy ? std::set<std::int32_t>{2} : std::set<std::int32_t>{0, 2, 3}))
        << temperature;
  }
}

TEST(Sampler, RejectsBadParameters) {
  EXPECT_THROW(Sampler({-1.0f, 0, 1.0f, 0}), std::invalid_argument);
  EXPECT_THROW(Sampler({NAN, 0, 1.0f, 0}), std::invalid_argument);
  EXPECT_THROW(Sampler({1.0f, 0, 1.5f, 0}), std::invalid_argument);
  EXPECT_THROW(Sampler({1.0f, 0, NAN, 0}), std::invalid_argument);
  EXPECT_THROW(Sampler({1.0f, -2, 1.0f, 0}), std::invalid_argument);
}

TEST(Npy, WritesWhatNumpyReads) {
  const auto path =
      fs::temp_directory_path() / ("moed-test-" + std::to_string(::getpid()) + ".npy");
  const std::vector<float> data = {1, 2, 3, 4, 5, 6};
  write_npy(path, data, {2, 3});
  const auto back = read_npy(path);
  EXPECT_EQ(back.shape, (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(back.data, data);
  std::ifstream in(path, std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(in)), {});
  const std::size_t header_len =
      static_cast<unsigned char>(all[8]) | (static_cast<unsigned char>(all[9]) << 8);
  EXPECT_EQ((10 + header_len) % 64, 0u);  // the format aligns the data to 64 bytes
  fs::remove(path);
}

// ---- memtier under the engine --------------------------------------------------------------

#include "faulty_reader.hpp"
#include "moed/memtier/trace.hpp"

namespace {

EngineOptions budget_options(double expert_share, std::uint64_t budget_bytes,
                             memtier::ReaderKind reader, bool prefetch) {
  EngineOptions options;
  options.host_budget = {budget_bytes, expert_share};
  options.reader.kind = reader;
  options.prefetch = prefetch;
  return options;
}

// What the read-failure tests compare with and aim at: the golden prompt, the unlimited
// engine's logits for it, and the checkpoint whose tensor offsets name the reads to fail.
struct FaultSetup {
  std::vector<std::int32_t> tokens = read_tokens(kGolden / "prompt-tokens.txt");
  std::vector<float> want = [this] {
    Engine unlimited(kModels / "tiny-f32", {});
    return prefill_logits(unlimited, tokens);
  }();
  model::ModelSpec spec = model::ModelSpec::from_config(kModels / "tiny-f32");
  model::Checkpoint checkpoint{kModels / "tiny-f32", spec};
};

// The options with a FaultyReader as the disk tier's engine; `faulty` points at it once the
// engine is built.
EngineOptions with_faulty_reader(EngineOptions options, moed::testing::FaultyReader*& faulty) {
  options.reader_factory = [&faulty](std::vector<fs::path> files) {
    auto reader = std::make_unique<moed::testing::FaultyReader>(std::move(files));
    faulty = reader.get();
    return reader;
  };
  return options;
}

}  // namespace

TEST(HostBudget, ParsesSizesSharesAndRejectsTheRest) {
  EXPECT_EQ(HostBudget::parse("").bytes, 0u);
  EXPECT_EQ(HostBudget::parse("").expert_share, 0.0);
  EXPECT_EQ(HostBudget::parse("2GiB").bytes, 2ull << 30);
  EXPECT_DOUBLE_EQ(HostBudget::parse("25%").expert_share, 0.25);
  for (const char* bad : {"abc%", "0%", "150%", "25 %", "%", "lots", "0"}) {
    try {
      HostBudget::parse(bad);
      ADD_FAILURE() << bad;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
    }
  }
}

TEST(EngineMemtier, LiveBudgetChangesKeepTheFixedPart) {
  Engine engine(kModels / "tiny-f32", {});
  EXPECT_THROW(engine.set_host_budget(HostBudget::parse("64KiB")), std::invalid_argument);
  engine.set_host_budget(HostBudget::parse("25%"));
  const auto stats = engine.memory_stats();
  EXPECT_EQ(stats.budget_bytes - stats.fixed_bytes, stats.host.budget_bytes);
  EXPECT_LE(stats.host.used_bytes, stats.host.budget_bytes);  // evicted down to the new budget
}

TEST(EngineMemtier, EveryBudgetReaderAndPrefetchSettingGivesBitIdenticalLogits) {
  for (const char* model : {"tiny-f32", "tiny-bf16"}) {
    const auto tokens = read_tokens(kGolden / "prompt-tokens.txt");
    Engine unlimited(kModels / model, {});
    const auto want = prefill_logits(unlimited, tokens);
    // Decode a few steps too, so the cache sees reuse and eviction across steps.
    auto decode = [&](Engine& engine) {
      auto cache = engine.new_cache();
      std::vector<float> logits, all;
      engine.forward(std::span(tokens).first(4), cache, logits, false);
      for (std::size_t i = 4; i < tokens.size(); ++i) {
        engine.forward(std::span(tokens).subspan(i, 1), cache, logits, false);
        all.insert(all.end(), logits.begin(), logits.end());
      }
      return all;
    };
    const auto want_decode = decode(unlimited);
    // With prefetch, resident experts run ahead of a missing one routed before them; the
    // results must not move for it.
    std::uint64_t run_ahead = 0;
    for (const auto reader : {memtier::ReaderKind::io_uring, memtier::ReaderKind::pread})
      for (const bool prefetch : {true, false})
        for (const double share : {0.25, 0.5}) {
          Engine engine(kModels / model, budget_options(share, 0, reader, prefetch));
          EXPECT_EQ(prefill_logits(engine, tokens), want) << model << " share " << share;
          EXPECT_EQ(decode(engine), want_decode) << model << " share " << share;
          const auto stats = engine.memory_stats();
          EXPECT_FALSE(stats.dense_streamed);
          EXPECT_GT(stats.host.misses, 0u);
          if (!prefetch) {
            EXPECT_EQ(stats.experts_run_ahead, 0u);
          }
          run_ahead += stats.experts_run_ahead;
        }
    EXPECT_GT(run_ahead, 0u) << model;
    // Two compute threads: the second spins while the first waits for reads (where the cores
    // allow, as on the 2-core CI machine; streaming's default is one thread there). Not on one
    // core (as ThreadSanitizer's runs have it: TSan cannot see libgomp's barriers).
    if (moed::kernels::physical_core_count() < 2) continue;
    auto two_threads = budget_options(0.25, 0, memtier::ReaderKind::io_uring, true);
    two_threads.threads = 2;
    Engine engine(kModels / model, two_threads);
    EXPECT_EQ(prefill_logits(engine, tokens), want) << model << " two threads";
    EXPECT_EQ(decode(engine), want_decode) << model << " two threads";
    EXPECT_GT(engine.memory_stats().host.misses, 0u);
  }
}

// Predicting two layers ahead moves reads earlier, never results; both horizons are scored.
// Layer 0 is predicted from the embedding (horizon 1), and so is layer 1 two layers ahead.
TEST(EngineMemtier, TwoLayerAheadPrefetchKeepsLogitsAndScoresBothHorizons) {
  const auto tokens = read_tokens(kGolden / "prompt-tokens.txt");
  Engine unlimited(kModels / "tiny-f32", {});
  const auto want = prefill_logits(unlimited, tokens);
  auto options = budget_options(0.25, 0, memtier::ReaderKind::io_uring, true);
  EXPECT_EQ(options.prefetch_horizon, 2);  // the default
  for (const int horizons : {2, 1}) {
    options.prefetch_horizon = horizons;
    Engine engine(kModels / "tiny-f32", options);
    EXPECT_EQ(prefill_then_decode(engine, tokens), prefill_then_decode(unlimited, tokens));
    EXPECT_EQ(prefill_logits(engine, tokens), want);
    std::uint64_t predicted[2] = {0, 0};
    const auto layers = engine.memory_stats().layers;
    for (const auto& layer : layers)
      for (int h = 0; h < 2; ++h)
        predicted[h] += layer.horizons[static_cast<std::size_t>(h)].predicted;
    EXPECT_GT(predicted[0], 0u);
    EXPECT_EQ(predicted[1] > 0, horizons == 2);
    EXPECT_GT(layers[0].horizons[0].predicted, 0u);
    EXPECT_EQ(layers[0].horizons[1].predicted, 0u);
    EXPECT_EQ(layers[1].horizons[1].predicted > 0, horizons == 2);
  }
}

TEST(EngineMemtier, DenseLayersStreamThroughTheRingWhenTheBudgetIsTooSmall) {
  const auto tokens = read_tokens(kGolden / "prompt-tokens.txt");
  Engine unlimited(kModels / "tiny-f32", {});
  const auto want = prefill_logits(unlimited, tokens);
  // 3 MiB: below the tiny model's dense weights plus one layer's experts (~6.6 MB).
  Engine engine(kModels / "tiny-f32",
                budget_options(0, 3 << 20, memtier::ReaderKind::io_uring, true));
  const auto stats = engine.memory_stats();
  EXPECT_TRUE(stats.dense_streamed);
  EXPECT_LE(stats.fixed_bytes, 3u << 20);
  EXPECT_EQ(prefill_logits(engine, tokens), want);
  EXPECT_EQ(prefill_logits(engine, tokens), want);  // the ring wraps around for the next request
  EXPECT_GE(engine.memory_stats().ring.loads, 8u);
  EXPECT_LE(engine.memory_stats().host.used_bytes, (3u << 20) - stats.fixed_bytes);
  EXPECT_THROW(Engine(kModels / "tiny-f32",
                      budget_options(0, 64 << 10, memtier::ReaderKind::io_uring, true)),
               std::invalid_argument);
}

// The daemon's /metrics and GET /admin/cache read memory_stats() on HTTP threads while the
// scheduler's thread decodes and changes the budget. ThreadSanitizer (scripts/tsan.sh) reports
// any unsynchronized counter; without it, what each read sees must still be coherent.
TEST(EngineMemtier, MemoryStatsCanBeReadWhileTheEngineDecodes) {
  const auto tokens = read_tokens(kGolden / "prompt-tokens.txt");
  // 3 MiB: the dense layers stream through the ring, whose counters change at every layer.
  Engine engine(kModels / "tiny-f32",
                budget_options(0, 3 << 20, memtier::ReaderKind::io_uring, true));
  const std::uint64_t first_budget = engine.memory_stats().budget_bytes;
  const std::uint64_t second_budget = first_budget + (1 << 20);
  std::atomic<bool> done{false};
  std::uint64_t reads = 0, backwards = 0, unknown_budgets = 0;
  MemoryStats last;
  std::thread reader([&] {
    while (true) {
      const bool work_done = done.load();
      const auto stats = engine.memory_stats();
      if (stats.ring.loads < last.ring.loads || stats.disk.reads < last.disk.reads) ++backwards;
      if (stats.budget_bytes != first_budget && stats.budget_bytes != second_budget)
        ++unknown_budgets;
      last = stats;
      ++reads;
      if (work_done) break;
    }
  });
  auto cache = engine.new_cache();
  std::vector<float> logits;
  engine.forward(std::span(tokens).first(4), cache, logits, false);
  engine.set_host_budget(HostBudget{second_budget, 0});
  for (std::size_t i = 4; i < tokens.size(); ++i)
    engine.forward(std::span(tokens).subspan(i, 1), cache, logits, false);
  done = true;
  reader.join();
  EXPECT_GT(reads, 1u);
  EXPECT_EQ(backwards, 0u);
  EXPECT_EQ(unknown_budgets, 0u);
  // The last read began after the work had ended, so it sees all of it.
  EXPECT_EQ(last.ring.loads, engine.memory_stats().ring.loads);
  EXPECT_EQ(last.budget_bytes, second_budget);
}

TEST(EngineMemtier, ReadFailuresFailTheRequestAndTheNextRequestsAreCorrect) {
  const FaultSetup setup;
  const auto& [tokens, want, spec, checkpoint] = setup;
  moed::testing::FaultyReader* faulty = nullptr;
  const auto options =
      with_faulty_reader(budget_options(0.25, 0, memtier::ReaderKind::pread, false), faulty);
  Engine engine(kModels / "tiny-f32", options);
  ASSERT_NE(faulty, nullptr);
  // Each expert of layer 2 fails in turn; a 16-token prefill routes to all of them.
  int failed_requests = 0;
  for (const char* mode : {"error", "short"}) {
    for (int e = 0; e < 8; ++e) {
      const auto& w1 =
          checkpoint.tensor(model::expert_tensor(spec, 2, e, model::ExpertMatrix::gate));
      const std::int64_t aligned = static_cast<std::int64_t>(w1.file_offset / 4096 * 4096);
      (std::string(mode) == "error" ? faulty->fail_at : faulty->short_at) = aligned;
      auto cache = engine.new_cache();
      std::vector<float> logits;
      try {
        engine.forward(tokens, cache, logits, true);
      } catch (const std::runtime_error& e) {
        ++failed_requests;
        const std::string what = e.what();
        EXPECT_NE(what.find("model.safetensors"), std::string::npos) << what;
        EXPECT_TRUE(what.find("Input/output error") != std::string::npos ||
                    what.find("short read") != std::string::npos)
            << what;
      }
      faulty->fail_at = -1;
      faulty->short_at = -1;
      EXPECT_EQ(prefill_logits(engine, tokens), want) << mode << " expert " << e;
    }
  }
  EXPECT_EQ(failed_requests, 16);
  EXPECT_GT(engine.memory_stats().disk.errors, 0u);
}

TEST(EngineMemtier, APassStoppedByAReadErrorLeavesNoPredictionsForTheNext) {
  const FaultSetup setup;
  const auto& [tokens, want, spec, checkpoint] = setup;
  const auto options = budget_options(0.25, 0, memtier::ReaderKind::pread, true);
  Engine clean(kModels / "tiny-f32", options);
  EXPECT_EQ(prefill_logits(clean, tokens), want);
  const auto clean_layers = clean.memory_stats().layers;

  moed::testing::FaultyReader* faulty = nullptr;
  Engine engine(kModels / "tiny-f32", with_faulty_reader(options, faulty));
  ASSERT_NE(faulty, nullptr);
  // Layer 2 fails after predicting layer 3 (and layer 1 predicted it two layers ahead).
  const auto& w1 = checkpoint.tensor(model::expert_tensor(spec, 2, 0, model::ExpertMatrix::gate));
  faulty->fail_at = static_cast<std::int64_t>(w1.file_offset / 4096 * 4096);
  auto cache = engine.new_cache();
  std::vector<float> logits;
  EXPECT_THROW(engine.forward(tokens, cache, logits, true), std::runtime_error);
  faulty->fail_at = -1;
  engine.reset_memory_stats();
  EXPECT_EQ(prefill_logits(engine, tokens), want);
  const auto layers = engine.memory_stats().layers;
  ASSERT_EQ(layers.size(), clean_layers.size());
  for (std::size_t l = 0; l < layers.size(); ++l)
    for (int h = 0; h < memtier::kPrefetchHorizons; ++h) {
      EXPECT_EQ(layers[l].horizons[h].predicted, clean_layers[l].horizons[h].predicted)
          << "layer " << l << " horizon " << h + 1;
      EXPECT_EQ(layers[l].horizons[h].used, clean_layers[l].horizons[h].used)
          << "layer " << l << " horizon " << h + 1;
    }
}

TEST(EngineMemtier, AFailedDenseSectionReadIsReadAgainByTheNextRequest) {
  const FaultSetup setup;
  const auto& [tokens, want, spec, checkpoint] = setup;
  moed::testing::FaultyReader* faulty = nullptr;
  // 3 MiB: dense layers stream through the ring (see the test above).
  const auto options =
      with_faulty_reader(budget_options(0, 3 << 20, memtier::ReaderKind::pread, true), faulty);
  Engine engine(kModels / "tiny-f32", options);
  ASSERT_TRUE(engine.memory_stats().dense_streamed);
  for (const std::int64_t layer : {0, 2}) {
    const auto& q =
        checkpoint.tensor("model.layers." + std::to_string(layer) + ".self_attn.q_proj.weight");
    faulty->fail_at = static_cast<std::int64_t>(q.file_offset / 4096 * 4096);
    auto cache = engine.new_cache();
    std::vector<float> logits;
    EXPECT_THROW(engine.forward(tokens, cache, logits, true), std::runtime_error) << layer;
    faulty->fail_at = -1;  // the disk recovers
    EXPECT_EQ(prefill_logits(engine, tokens), want) << "layer " << layer;
    EXPECT_EQ(prefill_logits(engine, tokens), want) << "layer " << layer;
  }
}

TEST(EngineMemtier, TeardownWithPrefetchesInFlightIsSafe) {
  // For the sanitizer build: the loader's threads used to outlive the store and the host tier
  // that in-flight prefetches call back into when they complete. The engine is destroyed right
  // after a one-token step whose experts were all resident (pinned) while its mispredicted
  // prefetches are still reading (the disk holds each read back 300 ms).
  // Room for exactly one token's experts (one per layer and slot: 8) and its one-position KV
  // cache, so the mispredicted blocks are never admitted and are predicted again each time.
  std::uint64_t budget = 0;
  {
    Engine probe(kModels / "tiny-f32", budget_options(0.25, 0, memtier::ReaderKind::pread, false));
    const auto& spec = probe.spec();
    budget = probe.memory_stats().fixed_bytes + probe.new_cache(1).bytes() +
             static_cast<std::uint64_t>(spec.num_layers * spec.experts_per_token) *
                 probe.expert_block_bytes();
  }
  bool in_flight_at_teardown = false;
  for (std::int32_t next = 7; next < 40 && !in_flight_at_teardown; ++next) {
    moed::testing::FaultyReader* faulty = nullptr;
    const auto options =
        with_faulty_reader(budget_options(0, budget, memtier::ReaderKind::pread, true), faulty);
    Engine engine(kModels / "tiny-f32", options);
    std::vector<float> logits;
    // Runs token `next` on a new cache (so it routes the same way every time); returns the
    // experts it routed to.
    auto step = [&] {
      auto cache = engine.new_cache(1);
      const auto before = engine.activation_counts();
      engine.forward(std::span(&next, 1), cache, logits, false);
      const auto after = engine.activation_counts();
      std::vector<memtier::BlockId> routed;
      for (std::size_t l = 0; l < after.size(); ++l)
        for (std::size_t e = 0; e < after[l].size(); ++e)
          if (after[l][e] > before[l][e])
            routed.push_back(memtier::BlockId::routed(static_cast<std::int32_t>(l),
                                                      static_cast<std::int32_t>(e)));
      return routed;
    };
    const auto routed = step();
    for (const auto& block : routed) engine.host_tier().pin(block);
    step();  // loads whatever of them an unneeded prefetch had evicted; now all stay
    for (const auto& block : routed) ASSERT_NE(engine.host_tier().peek(block), nullptr);
    faulty->hold_ms = 300;
    const auto misses = engine.memory_stats().host.misses;
    std::uint64_t issued_before = 0, issued_after = 0;
    for (const auto& l : engine.memory_stats().layers) issued_before += l.prefetch_issued;
    step();
    for (const auto& l : engine.memory_stats().layers) issued_after += l.prefetch_issued;
    ASSERT_EQ(engine.memory_stats().host.misses, misses);  // the step waited for no read
    in_flight_at_teardown = issued_after > issued_before;
  }
  EXPECT_TRUE(in_flight_at_teardown) << "no step left a prefetch in flight; pick other tokens";
}

TEST(Engine, ComputesWithTheConfiguredThreadsOnAnyThread) {
  // The daemon builds the engine on one thread and computes on its scheduler's thread;
  // OpenMP's thread count is per thread, so it must hold on the computing thread too.
  for (const int threads : {1, 2}) {
    EngineOptions options;
    options.threads = threads;
    Engine engine(kModels / "tiny-f32", options);
    std::thread compute([&] {
      auto cache = engine.new_cache();
      std::vector<float> logits;
      engine.forward(std::vector<std::int32_t>{1, 17}, cache, logits, false);
    });
    compute.join();
    EXPECT_EQ(engine.memory_stats().compute_threads, threads);
  }
}

TEST(EngineMemtier, SimulatedHitsEqualTheHostTiersOnTheSameTraceForEveryPolicy) {
  EXPECT_EQ(EngineOptions{}.policy, memtier::kDefaultPolicy);
  const auto trace_path = fs::temp_directory_path() /
                          ("moed-test-engine-trace-" + std::to_string(::getpid()) + ".jsonl");
  // Learn the fixed part of the budget, then give the experts room for exactly `blocks` blocks.
  const std::uint64_t fixed =
      Engine(kModels / "tiny-f32", budget_options(0.25, 0, memtier::ReaderKind::io_uring, false))
          .memory_stats()
          .fixed_bytes;
  Engine probe(kModels / "tiny-f32", {});
  for (const auto& policy : memtier::policy_names())
    for (const std::uint64_t blocks : {3u, 8u, 20u}) {
      // The KV cache generate() grows (one step of positions) counts in the budget too.
      const std::uint64_t budget =
          fixed + blocks * probe.expert_block_bytes() + probe.kv_bytes(KvCache::kGrowthPositions);
      auto options = budget_options(0, budget, memtier::ReaderKind::io_uring, false);
      options.policy = policy;
      Engine engine(kModels / "tiny-f32", options);
      engine.record_trace(trace_path);
      const auto generated =
          engine.generate(std::vector<std::int32_t>{1}, 40, {0.9f, 0, 1.0f, 3}, nullptr);
      engine.record_trace(std::nullopt);
      const auto host = engine.memory_stats().host;
      EXPECT_EQ(host.policy, policy);
      const auto events = memtier::read_trace(trace_path);
      // One line per token per layer: the prompt and every generated token but the last one
      // were run through the model.
      EXPECT_EQ(events.size(), generated.size() * 4u);
      const std::uint64_t budgets[] = {blocks};
      const std::string policies[] = {policy, "belady"};
      const auto results = memtier::simulate(events, budgets, policies);
      EXPECT_EQ(results[0].requests, host.hits + host.misses) << policy << " " << blocks;
      EXPECT_EQ(results[0].hits, host.hits) << policy << " " << blocks;
      EXPECT_GE(results[1].hits, results[0].hits);
    }
  fs::remove(trace_path);
}

// ---- the scheduler -------------------------------------------------------------------------

#include "moed/engine/scheduler.hpp"

namespace {

std::vector<std::int32_t> drain_tokens(Session& session) {
  std::vector<std::int32_t> out;
  TokenEvent event;
  while (session.next(event)) out.push_back(event.id);
  return out;
}

}  // namespace

TEST(Scheduler, ConcurrentRequestsGetTheTokensTheyGetAlone) {
  Engine engine(kModels / "tiny-f32", {});
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 8; ++i) {
    GenerationRequest r;
    r.prompt = {1, 17 + i, 42, 300 - i};
    r.max_tokens = 12 + i;
    r.sampling =
        i % 2 ? SamplingParams{0.8f, 40, 0.95f, static_cast<std::uint64_t>(i)} : SamplingParams{};
    requests.push_back(r);
  }
  std::vector<std::vector<std::int32_t>> alone;
  for (const auto& r : requests) {
    auto out = engine.generate(r.prompt, r.max_tokens, r.sampling, nullptr);
    alone.push_back(out);
  }
  Scheduler scheduler(engine, {64, 8});
  std::vector<std::shared_ptr<Session>> sessions;
  for (const auto& r : requests) sessions.push_back(scheduler.submit(r));
  std::vector<std::vector<std::int32_t>> together(sessions.size());
  std::vector<std::thread> readers;
  for (std::size_t i = 0; i < sessions.size(); ++i)
    readers.emplace_back([&, i] { together[i] = drain_tokens(*sessions[i]); });
  for (auto& t : readers) t.join();
  for (std::size_t i = 0; i < sessions.size(); ++i) {
    EXPECT_EQ(together[i], alone[i]) << "request " << i;
    EXPECT_NE(sessions[i]->finish_reason(), FinishReason::error) << sessions[i]->error();
  }
  const auto c = scheduler.counters();
  EXPECT_EQ(c.completed, 8u);
  EXPECT_LT(c.steps, c.generated_tokens);  // decode steps were shared between requests
}

// Allows any token for a number of draws, then none.
class RunsDry : public TokenConstraint {
 public:
  explicit RunsDry(int draws) : left_(draws) {}
  bool allows(std::int32_t) const override { return left_ > 0; }
  void advance(std::int32_t) override { --left_; }

 private:
  int left_;
};

// A constraint that leaves no token fails its own request, in the middle of a shared decode
// step, and the request beside it goes on as alone.
TEST(Scheduler, AConstraintWithNoTokenLeftFailsItsRequestAlone) {
  Engine engine(kModels / "tiny-f32", {});
  GenerationRequest plain;
  plain.prompt = {1, 17, 42, 300};
  plain.max_tokens = 12;
  const auto alone = engine.generate(plain.prompt, plain.max_tokens, plain.sampling, nullptr);
  GenerationRequest dry = plain;
  dry.sampling.constraint = std::make_shared<RunsDry>(3);
  Scheduler scheduler(engine, {64, 8});
  const auto dry_session = scheduler.submit(dry);
  const auto plain_session = scheduler.submit(plain);
  EXPECT_EQ(drain_tokens(*dry_session).size(), 3u);
  EXPECT_EQ(dry_session->finish_reason(), FinishReason::error);
  EXPECT_NE(dry_session->error().find("no token can continue"), std::string::npos)
      << dry_session->error();
  EXPECT_EQ(drain_tokens(*plain_session), alone);
  EXPECT_EQ(plain_session->finish_reason(), FinishReason::length) << plain_session->error();
  const auto c = scheduler.counters();
  EXPECT_EQ(c.failed, 1u);
  EXPECT_EQ(c.completed, 1u);
}

TEST(Scheduler, RejectsBadRequestsNamingTheField) {
  Engine engine(kModels / "tiny-f32", {});
  Scheduler scheduler(engine, {4, 2});
  GenerationRequest r;
  EXPECT_THROW(scheduler.submit(r), std::invalid_argument);  // empty prompt
  r.prompt = {1, 512};
  try {
    scheduler.submit(r);
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("prompt: token id 512"), std::string::npos);
  }
  r.prompt = {1};
  r.max_tokens = 0;
  EXPECT_THROW(scheduler.submit(r), std::invalid_argument);
  r.max_tokens = 4;
  r.sampling.top_p = 2.0f;
  EXPECT_THROW(scheduler.submit(r), std::invalid_argument);
  r.sampling.top_p = 1.0f;
  r.prompt.assign(static_cast<std::size_t>(engine.spec().max_position_embeddings), 1);
  EXPECT_THROW(scheduler.submit(r), std::invalid_argument);
}

TEST(Scheduler, QueueFullAndCancel) {
  Engine engine(kModels / "tiny-f32", {});
  Scheduler scheduler(engine, {2, 1});
  GenerationRequest long_one;
  long_one.prompt = {1, 5, 6};
  long_one.max_tokens = 4000;
  auto first = scheduler.submit(long_one);
  TokenEvent event;
  ASSERT_TRUE(first->next(event));  // running now; the queue is empty again
  auto second = scheduler.submit(long_one);
  auto third = scheduler.submit(long_one);
  EXPECT_THROW(scheduler.submit(long_one), QueueFull);
  // Clients that left while queued free their places at the next step, while the first runs.
  second->cancel();
  third->cancel();
  EXPECT_TRUE(drain_tokens(*second).empty());
  EXPECT_TRUE(drain_tokens(*third).empty());
  EXPECT_EQ(second->finish_reason(), FinishReason::cancelled);
  EXPECT_EQ(third->finish_reason(), FinishReason::cancelled);
  EXPECT_EQ(first->finish_reason(), FinishReason::running);
  auto fourth = scheduler.submit(long_one);  // room in the queue again
  fourth->cancel();
  first->cancel();  // a client that vanished mid-stream
  while (first->next(event)) {
  }
  EXPECT_EQ(first->finish_reason(), FinishReason::cancelled);
  drain_tokens(*fourth);
  EXPECT_EQ(fourth->finish_reason(), FinishReason::cancelled);
}

TEST(Scheduler, DrainReturnsOnlyOnceRunningAndQueuedRequestsHaveFinished) {
  Engine engine(kModels / "tiny-f32", {});
  Scheduler scheduler(engine, {4, 1});  // one runs, the other waits in the queue
  GenerationRequest r;
  r.prompt = {1, 5, 6};
  r.max_tokens = 40;
  auto running = scheduler.submit(r);
  TokenEvent event;
  ASSERT_TRUE(running->next(event));
  auto queued = scheduler.submit(r);
  scheduler.drain();
  EXPECT_THROW(scheduler.submit(r), std::runtime_error);  // draining: no new work
  for (auto* session : {running.get(), queued.get()}) {
    EXPECT_NE(session->finish_reason(), FinishReason::running);
    EXPECT_NE(session->finish_reason(), FinishReason::cancelled);
    EXPECT_NE(session->finish_reason(), FinishReason::error) << session->error();
  }
  EXPECT_FALSE(drain_tokens(*queued).empty());  // it ran, to its end, before drain returned
  const auto c = scheduler.counters();
  EXPECT_EQ(c.active + c.queued, 0u);
  EXPECT_EQ(c.completed, 2u);
}

TEST(Scheduler, TopLogprobsAreSortedAndNormalised) {
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f};
  const auto top = top_logprobs(logits.data(), 3, 2);
  ASSERT_EQ(top.size(), 2u);
  EXPECT_EQ(top[0].first, 1);
  EXPECT_EQ(top[1].first, 2);
  const double total = std::exp(1.0) + std::exp(3.0) + std::exp(2.0);
  EXPECT_NEAR(top[0].second, 3.0 - std::log(total), 1e-5);

  const std::vector<float> with_nan = {NAN, 1.0f, NAN, 3.0f};
  const auto listed = top_logprobs(with_nan.data(), 4, 4);
  ASSERT_EQ(listed.size(), 2u);
  EXPECT_EQ(listed[0].first, 3);
  EXPECT_EQ(listed[1].first, 1);
  EXPECT_NEAR(listed[0].second, 3.0 - std::log(std::exp(1.0) + std::exp(3.0)), 1e-5);
}

// ---- issue 11: drain during prefill, KV in the budget, chunked prefill ----------------------

#include <condition_variable>
#include <mutex>

#include "moed/memtier/byte_size.hpp"

namespace {

// Reads with pread like FaultyReader, but while closed holds every read at submission until the
// test opens it: a way to stop the engine mid-forward at a known point.
class GatedReader final : public memtier::Reader {
 public:
  explicit GatedReader(std::vector<fs::path> files) : Reader(std::move(files), 4, 64 << 10) {}
  memtier::ReaderKind kind() const override { return memtier::ReaderKind::pread; }
  void close() {
    std::lock_guard lock(mutex_);
    closed_ = true;
  }
  void open() {
    {
      std::lock_guard lock(mutex_);
      closed_ = false;
    }
    changed_.notify_all();
  }
  // Returns once a read is held at the closed gate.
  void wait_until_held() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return held_; });
  }

 protected:
  void submit(std::span<const memtier::AlignedRead> reads) override {
    {
      std::unique_lock lock(mutex_);
      if (closed_) {
        held_ = true;
        changed_.notify_all();
        changed_.wait(lock, [&] { return !closed_; });
      }
    }
    for (const auto& r : reads)
      done_.push_back(
          {r.id, ::pread(fd(r.file), r.destination, r.length, static_cast<off_t>(r.offset))});
  }
  void reap(std::vector<memtier::ReadResult>& out, bool) override {
    out.insert(out.end(), done_.begin(), done_.end());
    done_.clear();
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  bool closed_ = false;
  bool held_ = false;
  std::vector<memtier::ReadResult> done_;
};

GenerationRequest greedy_request(std::vector<std::int32_t> prompt, std::int64_t max_tokens) {
  GenerationRequest r;
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  return r;
}

std::vector<std::int32_t> long_prompt(std::size_t length) {
  std::vector<std::int32_t> prompt;
  for (std::size_t i = 0; i < length; ++i)
    prompt.push_back(static_cast<std::int32_t>(1 + (i * 37) % 500));
  return prompt;
}

}  // namespace

TEST(Scheduler, DrainWaitsForARequestStillInItsPrefill) {
  GatedReader* gate = nullptr;
  // A quarter of the experts in RAM and no prefetch: the prefill itself reads experts from disk,
  // so closing the reader's gate stops it in the middle.
  auto options = budget_options(0.25, 0, memtier::ReaderKind::pread, false);
  options.reader_factory = [&](std::vector<fs::path> files) {
    auto reader = std::make_unique<GatedReader>(std::move(files));
    gate = reader.get();
    return reader;
  };
  Engine engine(kModels / "tiny-f32", options);
  ASSERT_NE(gate, nullptr);
  gate->close();
  Scheduler scheduler(engine, {4, 2});
  auto session = scheduler.submit(greedy_request({1, 17, 42}, 2));
  gate->wait_until_held();  // out of the queue, inside its prefill
  const auto c = scheduler.counters();
  EXPECT_EQ(c.queued + c.active, 1u) << "a request in its prefill counts as running";
  bool finished_when_drained = false;
  std::thread drainer([&] {
    scheduler.drain();
    finished_when_drained = session->finish_reason() != FinishReason::running;
  });
  gate->open();
  drainer.join();
  EXPECT_TRUE(finished_when_drained) << "drain() returned while the request was prefilling";
  EXPECT_EQ(session->finish_reason(), FinishReason::length) << session->error();
}

TEST(Engine, KvCacheIsBf16OrF32AndGrowsInSteps) {
  EngineOptions f32_options;
  f32_options.kv_dtype = KvDtype::f32;
  Engine f32(kModels / "tiny-f32", f32_options);
  Engine bf16(kModels / "tiny-f32", {});
  EXPECT_EQ(bf16.kv_dtype(), KvDtype::bf16);  // the default
  // tiny: 4 layers x 4 KV heads x 32 dims, keys and values.
  EXPECT_EQ(f32.kv_bytes(100), 100u * 2 * 4 * 4 * 32 * 4);
  EXPECT_EQ(bf16.kv_bytes(100), f32.kv_bytes(100) / 2);
  auto cache = bf16.new_cache();
  std::vector<float> logits;
  bf16.forward(long_prompt(300), cache, logits, false);
  EXPECT_EQ(cache.capacity(), 2 * KvCache::kGrowthPositions);  // not doubled past the need
  EXPECT_EQ(bf16.memory_stats().kv_bytes, bf16.kv_bytes(cache.capacity()));
  auto wrong = f32.new_cache();
  EXPECT_THROW(bf16.forward(long_prompt(3), wrong, logits, false), std::invalid_argument);
  EXPECT_THROW(parse_kv_dtype("f16"), std::invalid_argument);
}

namespace {

// Pages of `bytes` from `at` that are not resident (mincore), over whole pages.
std::size_t pages_not_resident(const std::byte* at, std::size_t bytes) {
  const auto page = static_cast<std::uintptr_t>(sysconf(_SC_PAGESIZE));
  const std::uintptr_t begin = reinterpret_cast<std::uintptr_t>(at) / page * page;
  const std::uintptr_t end =
      (reinterpret_cast<std::uintptr_t>(at) + bytes + page - 1) / page * page;
  std::vector<unsigned char> resident((end - begin) / page);
  if (mincore(reinterpret_cast<void*>(begin), end - begin, resident.data()) != 0)
    throw std::runtime_error(std::string("mincore: ") + std::strerror(errno));
  return static_cast<std::size_t>(
      std::count_if(resident.begin(), resident.end(), [](unsigned char r) { return !(r & 1); }));
}

// Whether this kernel takes MADV_POPULATE_WRITE (5.14 and later); before, KvCache leaves the
// pages to fault in as they are written.
bool kernel_populates_on_advice() {
  const auto page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  void* probe = mmap(nullptr, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (probe == MAP_FAILED) return false;
  const bool populated = madvise(probe, page, MADV_POPULATE_WRITE) == 0;
  munmap(probe, page);
  return populated;
}

}  // namespace

TEST(Engine, KvCacheMakesThePagesOfPositionsResidentAStepAtATime) {
  if (!kernel_populates_on_advice()) GTEST_SKIP() << "the kernel refuses MADV_POPULATE_WRITE";
  constexpr std::int64_t kHeads = 2, kDim = 128, kStep = KvCache::kResidentStepPositions;
  const std::size_t position_bytes = kDim * kv_element_size(KvDtype::bf16);
  KvCache cache(2, kHeads, kDim, KvDtype::bf16, nullptr, 4 * kStep);
  EXPECT_EQ(cache.resident_positions(), 0);
  cache.reserve_more(1);
  EXPECT_EQ(cache.resident_positions(), kStep);
  // Every head of keys and values, in every layer, has its first step's pages, written or not.
  for (std::int64_t layer = 0; layer < 2; ++layer)
    for (std::int64_t h = 0; h < kHeads; ++h) {
      const std::size_t head = static_cast<std::size_t>(h * 4 * kStep) * position_bytes;
      EXPECT_EQ(pages_not_resident(cache.keys(layer) + head, kStep * position_bytes), 0u);
      EXPECT_EQ(pages_not_resident(cache.values(layer) + head, kStep * position_bytes), 0u);
    }
  cache.advance(kStep - 1);
  cache.reserve_more(1);  // still inside the first step
  EXPECT_EQ(cache.resident_positions(), kStep);
  cache.reserve_more(2);
  EXPECT_EQ(cache.resident_positions(), 2 * kStep);
  cache.advance(2);
  cache.reserve_more(4 * kStep - cache.length());  // up to the capacity, not past it
  EXPECT_EQ(cache.resident_positions(), 4 * kStep);
  // Growing copies the written positions of every head, keys and values apart, and starts over
  // from them.
  cache.advance(4 * kStep - cache.length());
  const auto mark = [&](std::int64_t layer, bool values, std::int64_t h, std::int64_t position) {
    return static_cast<std::byte>(layer * 37 + values * 17 + h * 5 + position);
  };
  const auto at = [&](std::int64_t layer, bool values, std::int64_t h, std::int64_t position) {
    std::byte* buffer = values ? cache.values(layer) : cache.keys(layer);
    return buffer + static_cast<std::size_t>(h * cache.capacity() + position) * position_bytes;
  };
  for (std::int64_t layer = 0; layer < 2; ++layer)
    for (const bool values : {false, true})
      for (std::int64_t h = 0; h < kHeads; ++h)
        for (const std::int64_t position : {std::int64_t{0}, 4 * kStep - 1})
          std::memset(at(layer, values, h, position),
                      static_cast<int>(mark(layer, values, h, position)), position_bytes);
  cache.reserve_more(1);
  EXPECT_EQ(cache.capacity(), 4 * kStep + KvCache::kGrowthPositions);
  EXPECT_EQ(cache.resident_positions(), 5 * kStep);
  for (std::int64_t layer = 0; layer < 2; ++layer)
    for (const bool values : {false, true})
      for (std::int64_t h = 0; h < kHeads; ++h)
        for (const std::int64_t position : {std::int64_t{0}, 4 * kStep - 1}) {
          const std::byte* bytes = at(layer, values, h, position);
          EXPECT_TRUE(
              std::all_of(bytes, bytes + position_bytes,
                          [&](std::byte b) { return b == mark(layer, values, h, position); }))
              << "layer " << layer << (values ? " values" : " keys") << " head " << h
              << " position " << position;
        }
}

// Reserving a position does not make the whole capacity resident: in a head's buffer of 20 MiB
// (ten huge pages), the second huge page stays unmapped until positions there are reserved. Over
// 32 MiB in all, so that the allocator maps fresh memory rather than reuse its heap's.
TEST(Engine, KvCacheLeavesPositionsNotYetReservedUnmapped) {
  if (!kernel_populates_on_advice()) GTEST_SKIP() << "the kernel refuses MADV_POPULATE_WRITE";
  constexpr std::int64_t kDim = 128, kCapacity = 81920;
  constexpr std::size_t kHugePage = std::size_t{2} << 20;
  const std::size_t position_bytes = kDim * kv_element_size(KvDtype::bf16);
  const std::int64_t huge_page_positions = static_cast<std::int64_t>(kHugePage / position_bytes);
  KvCache cache(1, 1, kDim, KvDtype::bf16, nullptr, kCapacity);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(cache.keys(0)) % kHugePage, 0u)
      << "not on a huge page's boundary";
  cache.reserve_more(1);
  const std::size_t step_bytes = KvCache::kResidentStepPositions * position_bytes;
  EXPECT_EQ(pages_not_resident(cache.keys(0), step_bytes), 0u);
  std::byte* second = cache.keys(0) + kHugePage;
  EXPECT_EQ(pages_not_resident(second, kHugePage), kHugePage / sysconf(_SC_PAGESIZE));
  cache.advance(huge_page_positions);
  cache.reserve_more(1);
  EXPECT_EQ(pages_not_resident(second, step_bytes), 0u);
}

// The shared layout (MLA's latent) has one buffer per layer: values are the keys.
TEST(Engine, KvCacheSharedLayoutHasValuesAsKeys) {
  KvCache shared(3, 1, 64, KvDtype::f32, nullptr, 8, KvLayout::shared);
  KvCache split(3, 1, 64, KvDtype::f32, nullptr, 8);
  EXPECT_EQ(shared.bytes(), split.bytes() / 2);
  for (std::int64_t layer = 0; layer < 3; ++layer)
    EXPECT_EQ(shared.values(layer), shared.keys(layer));
  EXPECT_NE(split.values(0), split.keys(0));
  EXPECT_EQ(split.keys(1) - split.keys(0), 8 * 64 * 4);
}

TEST(EngineMemtier, KvCachesComeOutOfTheExpertsShareOfTheBudget) {
  Engine engine(kModels / "tiny-f32", budget_options(0.5, 0, memtier::ReaderKind::io_uring, true));
  const auto before = engine.memory_stats();
  EXPECT_EQ(before.kv_bytes, 0u);
  const std::uint64_t working_set = 2 * engine.expert_block_bytes();
  EXPECT_EQ(before.kv_limit_bytes, before.budget_bytes - before.fixed_bytes - working_set);
  {
    auto cache = engine.new_cache(1000);
    const auto during = engine.memory_stats();
    EXPECT_EQ(during.kv_bytes, engine.kv_bytes(1000));
    // fixed part + what experts may cache + KV = the budget, and the experts are within theirs.
    EXPECT_EQ(during.fixed_bytes + during.host.budget_bytes + during.kv_bytes, during.budget_bytes);
    EXPECT_LE(during.host.used_bytes, during.host.budget_bytes);
    EXPECT_THROW(engine.set_host_budget({during.fixed_bytes + during.kv_bytes / 2, 0}),
                 std::invalid_argument);
  }
  EXPECT_EQ(engine.memory_stats().kv_bytes, 0u);
  auto next = engine.new_cache(1);  // the experts get their room back at the next use
  const auto after = engine.memory_stats();
  EXPECT_EQ(after.fixed_bytes + after.host.budget_bytes + after.kv_bytes, after.budget_bytes);
}

// A default max_tokens (the client named none) is cut to the rest of the context, or of the KV
// room where that is smaller, instead of refused; 0 sets no limit of its own. The request
// reserves (and holds) exactly what it got.
TEST(Scheduler, ADefaultMaxTokensIsCutToTheContextAndTheKvRoom) {
  const auto spec = model::ModelSpec::from_config(kModels / "tiny-f32");
  const std::vector<std::int32_t> prompt = {1, 5, 6};
  const auto context = spec.max_position_embeddings;
  Engine probe(kModels / "tiny-f32", budget_options(0.25, 0, memtier::ReaderKind::io_uring, true));
  ASSERT_GT(context, 100);
  const std::uint64_t room = probe.kv_bytes(100) + probe.kv_bytes(1) / 2;  // 100.5 positions
  const std::uint64_t budget =
      probe.memory_stats().fixed_bytes + spec.experts_per_token * probe.expert_block_bytes() + room;
  auto by_default = [&](std::int64_t max_tokens) {
    auto request = greedy_request(prompt, max_tokens);
    request.max_tokens_given = false;
    return request;
  };
  struct Case {
    bool limited;
    std::int64_t default_max_tokens, positions;
  };
  for (const auto& [limited, default_max_tokens, positions] :
       {Case{false, 0, context}, Case{true, 0, 100}, Case{true, 20, 23}, Case{false, 20, 23},
        Case{false, 100000, context}}) {
    Engine engine(
        kModels / "tiny-f32",
        limited ? budget_options(0, budget, memtier::ReaderKind::io_uring, true) : EngineOptions{});
    Scheduler scheduler(engine, {1, 4});
    auto session = scheduler.submit(by_default(default_max_tokens));
    TokenEvent event;
    ASSERT_TRUE(session->next(event));
    EXPECT_EQ(engine.kv_room().used, engine.kv_bytes(positions))
        << limited << " " << default_max_tokens;
    session->cancel();
    while (session->next(event)) {
    }
  }
  // No room even for the prompt and one token: refused, naming what it needs.
  Engine tight(
      kModels / "tiny-f32",
      budget_options(0,
                     probe.memory_stats().fixed_bytes +
                         spec.experts_per_token * probe.expert_block_bytes() + probe.kv_bytes(3),
                     memtier::ReaderKind::io_uring, true));
  Scheduler scheduler(tight, {1, 4});
  try {
    scheduler.submit(by_default(0));
    FAIL();
  } catch (const InsufficientMemory& e) {
    EXPECT_NE(std::string(e.what()).find("shorten the prompt"), std::string::npos) << e.what();
  }
}

TEST(Scheduler, AdmitsByKvMemoryQueueingThenRefusing) {
  // Room for the KV caches of exactly one request of prompt + max_tokens = 100 positions.
  const auto spec = model::ModelSpec::from_config(kModels / "tiny-f32");
  Engine probe(kModels / "tiny-f32", budget_options(0.25, 0, memtier::ReaderKind::io_uring, true));
  const std::uint64_t one = probe.kv_bytes(100);
  const std::uint64_t budget = probe.memory_stats().fixed_bytes +
                               spec.experts_per_token * probe.expert_block_bytes() + one + one / 2;
  // The first request must hold its KV for the whole test: a prompt whose greedy tokens do not
  // reach EOS (no budget changes them).
  std::vector<std::int32_t> first_prompt;
  Engine unlimited(kModels / "tiny-f32", {});
  for (std::int32_t t = 2; first_prompt.empty() && t < 64; ++t)
    if (unlimited.generate(std::vector<std::int32_t>{1, t, 42}, 97, {}, nullptr).size() == 97u)
      first_prompt = {1, t, 42};
  ASSERT_FALSE(first_prompt.empty());
  Engine engine(kModels / "tiny-f32",
                budget_options(0, budget, memtier::ReaderKind::io_uring, true));
  ASSERT_EQ(engine.kv_room().limit, one + one / 2);
  Scheduler scheduler(engine, {1, 4});

  auto first = scheduler.submit(greedy_request(first_prompt, 97));
  TokenEvent event;
  ASSERT_TRUE(first->next(event));  // running, holding 100 positions of KV
  const std::vector<std::int32_t> prompt = {1, 5, 6};
  auto second = scheduler.submit(greedy_request(prompt, 97));
  // Two more steps: the second one's admission was decided after `second` was queued.
  const auto steps = scheduler.counters().steps;
  while (scheduler.counters().steps < steps + 2) std::this_thread::yield();
  // The batch has room (max_batch 4) but the budget has not: it waits in the queue.
  EXPECT_EQ(scheduler.counters().queued, 1u);
  EXPECT_EQ(scheduler.counters().active, 1u);
  try {
    scheduler.submit(greedy_request(prompt, 10));
    ADD_FAILURE() << "the queue (1) is full";
  } catch (const QueueFull& e) {
    EXPECT_NE(std::string(e.what()).find("KV cache"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("free now"), std::string::npos) << e.what();
  }
  first->cancel();
  const auto tokens = drain_tokens(*second);
  EXPECT_NE(second->finish_reason(), FinishReason::error) << second->error();
  EXPECT_EQ(tokens, engine.generate(prompt, 97, {}, nullptr));

  // Three times one request: never fits, refused at once, naming what it needs and what there is.
  try {
    scheduler.submit(greedy_request(prompt, 297));
    ADD_FAILURE() << "a request bigger than the KV room was queued";
  } catch (const InsufficientMemory& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(moed::memtier::format_byte_size(engine.kv_bytes(300))), std::string::npos)
        << what;
    EXPECT_NE(what.find(moed::memtier::format_byte_size(one + one / 2)), std::string::npos) << what;
  }
  scheduler.drain();
  EXPECT_EQ(engine.memory_stats().kv_bytes, 0u);
}

TEST(Engine, ChunkedPrefillKeepsTheTokensOfAWholePrefill) {
  for (const char* model : {"tiny-f32", "tiny-bf16"}) {
    Engine engine(kModels / model, {});
    const auto prompt = long_prompt(70);
    const std::int64_t vocab = engine.spec().vocab_size;
    auto whole_cache = engine.new_cache();
    std::vector<float> whole, chunk;
    engine.forward(prompt, whole_cache, whole, false);
    auto chunked_cache = engine.new_cache();
    for (std::size_t at = 0; at < prompt.size(); at += 16)
      engine.forward(std::span(prompt).subspan(at, std::min<std::size_t>(16, prompt.size() - at)),
                     chunked_cache, chunk, false);
    // Attention sums each row over the same cache positions in the same order, and the engine
    // relies on a matmul row's result not depending on how many rows run with it (as batched
    // decode does), so chunks change nothing.
    EXPECT_EQ(compare(chunk, whole, vocab).argmax_mismatches, 0) << model;
    EXPECT_EQ(chunk, whole) << model;
  }
}

TEST(Scheduler, ChunkedPrefillGivesTheTokensOfAWholePrefill) {
  Engine engine(kModels / "tiny-bf16", {});
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 4; ++i) requests.push_back(greedy_request(long_prompt(40 + 13 * i), 12));
  std::vector<std::vector<std::vector<std::int32_t>>> runs;
  for (const std::size_t chunk : {std::size_t{256}, std::size_t{7}}) {
    Scheduler scheduler(engine, {64, 4, chunk});
    std::vector<std::shared_ptr<Session>> sessions;
    for (const auto& r : requests) sessions.push_back(scheduler.submit(r));
    auto& out = runs.emplace_back();
    for (auto& s : sessions) out.push_back(drain_tokens(*s));
    EXPECT_EQ(scheduler.counters().prompt_tokens, 40u + 53 + 66 + 79);
  }
  EXPECT_EQ(runs[0], runs[1]);
}

TEST(Scheduler, RunningStreamsKeepDecodingWhileALongPromptIsPrefilled) {
  Engine engine(kModels / "tiny-f32", {});
  // 256 prompt tokens in chunks of 8 take 32 steps, each of which also decodes the running
  // stream, so its 30 tokens are all out before the long prompt's first one. Prefilled in one
  // piece, the long prompt would be answered at the second step.
  Scheduler scheduler(engine, {64, 4, 8});
  auto stream = scheduler.submit(greedy_request({1, 17, 42}, 30));
  auto long_one = scheduler.submit(greedy_request(long_prompt(256), 1));
  drain_tokens(*long_one);
  EXPECT_NE(stream->finish_reason(), FinishReason::running)
      << "the stream stalled while the long prompt was prefilled";
  EXPECT_EQ(long_one->finish_reason(), FinishReason::length) << long_one->error();
}
