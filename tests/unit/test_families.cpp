// The MoE families beside Mixtral (qwen2_moe, qwen3_moe, olmoe, deepseek_v2, deepseek_v3), each
// run from a tiny checkpoint in Hugging Face's format against scripts/reference.py's goldens,
// under every host budget and batched as well as alone.

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "golden_files.hpp"
#include "moed/engine/engine.hpp"

using namespace moed::engine;
namespace model = moed::model;
namespace memtier = moed::memtier;

namespace {

class Family : public ::testing::TestWithParam<const char*> {
 protected:
  std::string f32_model() const { return std::string("tiny-") + GetParam(); }
  std::string bf16_model() const { return f32_model() + "-bf16"; }
};

std::string test_name(const ::testing::TestParamInfo<const char*>& info) {
  return info.param;
}

// Logits of a prefill, then of each decode step over the rest of the tokens.
std::vector<float> prefill_then_decode(Engine& engine, const std::vector<std::int32_t>& tokens) {
  auto cache = engine.new_cache();
  std::vector<float> logits, all;
  engine.forward(std::span(tokens).first(4), cache, logits, true);
  all = logits;
  for (std::size_t i = 4; i < tokens.size(); ++i) {
    engine.forward(std::span(tokens).subspan(i, 1), cache, logits, false);
    all.insert(all.end(), logits.begin(), logits.end());
  }
  return all;
}

}  // namespace

TEST_P(Family, F32LogitsMatchTheNumpyReference) {
  EngineOptions options;
  options.kv_dtype = KvDtype::f32;
  Engine engine(kModels / f32_model(), options);
  const auto tokens = read_tokens(kGolden / "prompt-tokens.txt");
  const auto golden = read_npy(kGolden / (std::string(GetParam()) + ".logits.npy"));
  ASSERT_EQ(golden.shape, (std::vector<std::int64_t>{static_cast<std::int64_t>(tokens.size()),
                                                     engine.spec().vocab_size}));
  const auto c = compare(prefill_logits(engine, tokens), golden.data, engine.spec().vocab_size);
  EXPECT_LE(c.relative_error, 1e-5);
  EXPECT_EQ(c.argmax_mismatches, 0);
  // Decoding step by step reads the cache as the prefill wrote it.
  const auto stepped = prefill_then_decode(engine, tokens);
  const auto s = compare(stepped, golden.data, engine.spec().vocab_size);
  EXPECT_LE(s.relative_error, 1e-5);
}

// Both KV dtypes: bf16 keys and values (the default) keep the reference's greedy tokens.
TEST_P(Family, Bf16GreedyTokensMatchTheReference) {
  nlohmann::json golden;
  std::ifstream(kGolden / (std::string(GetParam()) + "-bf16.greedy.json")) >> golden;
  const auto prompt = golden["prompt"].get<std::vector<std::int32_t>>();
  const auto want = golden["generated"].get<std::vector<std::int32_t>>();
  for (const KvDtype kv_dtype : {KvDtype::f32, KvDtype::bf16}) {
    EngineOptions options;
    options.kv_dtype = kv_dtype;
    Engine engine(kModels / bf16_model(), options);
    auto cache = engine.new_cache();
    std::vector<float> logits;
    std::vector<std::int32_t> got;
    engine.forward(prompt, cache, logits, false);
    while (got.size() < want.size()) {
      got.push_back(static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) -
                                              logits.begin()));
      engine.forward(std::span(&got.back(), 1), cache, logits, false);
    }
    EXPECT_EQ(got, want) << to_string(kv_dtype) << " KV; reference's smallest top-1 margin "
                         << golden["min_margin"].get<double>();
  }
}

TEST_P(Family, EveryHostBudgetGivesBitIdenticalLogits) {
  const auto tokens = read_tokens(kGolden / "prompt-tokens.txt");
  for (const auto& name : {f32_model(), bf16_model()}) {
    Engine unlimited(kModels / name, {});
    const auto want = prefill_then_decode(unlimited, tokens);
    for (const bool prefetch : {true, false})
      for (const double share : {0.25, 0.5}) {
        EngineOptions options;
        options.host_budget = {0, share};
        options.prefetch = prefetch;
        Engine engine(kModels / name, options);
        EXPECT_EQ(prefill_then_decode(engine, tokens), want)
            << name << " share " << share << " prefetch " << prefetch;
        EXPECT_GT(engine.memory_stats().host.misses, 0u) << name;
      }
    // A byte short of the dense weights plus one token's experts: the dense weights stream
    // through the ring of sections.
    const std::uint64_t working_set =
        static_cast<std::uint64_t>(unlimited.spec().experts_per_token) *
        unlimited.expert_block_bytes();
    EngineOptions streamed;
    streamed.host_budget = {unlimited.memory_stats().fixed_bytes + working_set - 1, 0};
    Engine ring(kModels / name, streamed);
    EXPECT_TRUE(ring.memory_stats().dense_streamed) << name;
    EXPECT_EQ(prefill_then_decode(ring, tokens), want) << name << " streamed";
  }
}

TEST_P(Family, BatchedDecodeRowsEqualSoloRows) {
  Engine engine(kModels / bf16_model(), {});
  const std::vector<std::vector<std::int32_t>> prompts = {{1, 17, 42}, {5, 6, 7, 8, 9}, {300}};
  std::vector<KvCache> caches;
  std::vector<std::int32_t> next;
  std::vector<std::vector<float>> solo;
  std::vector<float> logits;
  for (const auto& prompt : prompts) {
    caches.push_back(engine.new_cache());
    engine.forward(prompt, caches.back(), logits, false);
    next.push_back(
        static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin()));
    auto alone = engine.new_cache();
    engine.forward(prompt, alone, logits, false);
    engine.forward(std::span(&next.back(), 1), alone, logits, false);
    solo.push_back(logits);
  }
  std::vector<KvCache*> pointers;
  for (auto& c : caches) pointers.push_back(&c);
  engine.decode(next, pointers, logits);
  const auto vocab = static_cast<std::size_t>(engine.spec().vocab_size);
  for (std::size_t i = 0; i < prompts.size(); ++i)
    EXPECT_EQ(std::vector<float>(logits.begin() + i * vocab, logits.begin() + (i + 1) * vocab),
              solo[i])
        << "row " << i;
}

INSTANTIATE_TEST_SUITE_P(TinyModels, Family,
                         ::testing::Values("qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2",
                                           "deepseek_v3"),
                         test_name);

TEST(LayerPlan, EachFamilysConfigMapsToItsKinds) {
  auto plan = [](const char* family) {
    return model::ModelSpec::from_config(kModels / (std::string("tiny-") + family));
  };
  const auto qwen2 = plan("qwen2_moe");
  EXPECT_EQ(qwen2.family, model::Family::qwen2_moe);
  EXPECT_TRUE(qwen2.attention.qkv_bias);
  EXPECT_FALSE(qwen2.router.normalize);
  EXPECT_TRUE(qwen2.shared_expert_gate);
  std::vector<model::FfnKind> ffn;
  for (const auto& layer : qwen2.layers) ffn.push_back(layer.ffn);
  EXPECT_EQ(ffn, (std::vector<model::FfnKind>{model::FfnKind::dense, model::FfnKind::moe,
                                              model::FfnKind::dense, model::FfnKind::moe}));
  const auto qwen3 = plan("qwen3_moe");
  EXPECT_EQ(qwen3.attention.qk_norm, model::QkNorm::per_head);
  EXPECT_NE(qwen3.attention.head_dim, qwen3.hidden_size / qwen3.attention.heads);
  EXPECT_EQ(plan("olmoe").attention.qk_norm, model::QkNorm::whole);
  const auto v2 = plan("deepseek_v2");
  EXPECT_EQ(v2.attention.kind, model::AttentionKind::mla);
  EXPECT_EQ(v2.attention.q_lora_rank, 0);
  EXPECT_EQ(v2.rope.style, model::RopeStyle::interleaved);
  EXPECT_EQ(v2.layers[0].ffn, model::FfnKind::dense);
  const auto v3 = plan("deepseek_v3");
  EXPECT_EQ(v3.router.scoring, model::Scoring::sigmoid);
  EXPECT_TRUE(v3.router.correction_bias);
  EXPECT_GT(v3.router.n_group, 1);
  // YaRN with mscale_all_dim 1.0 and factor 40 scales the softmax by mscale^2.
  const double qk =
      static_cast<double>(v3.attention.qk_nope_head_dim + v3.attention.qk_rope_head_dim);
  const double mscale = 0.1 * std::log(40.0) + 1.0;
  EXPECT_NEAR(v3.attention.softmax_scale, mscale * mscale / std::sqrt(qk), 1e-12);
}
