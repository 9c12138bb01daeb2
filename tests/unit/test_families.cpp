// The MoE families beside Mixtral (qwen2_moe, qwen3_moe, olmoe, deepseek_v2, deepseek_v3), each
// run from a tiny checkpoint in Hugging Face's format against scripts/reference.py's goldens,
// under every host budget and batched as well as alone.

#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

#include "golden_files.hpp"
#include "moed/engine/engine.hpp"
#include "moed/engine/router.hpp"
#include "moed/kernels/cpu_matmul.hpp"
#include "moed/model/safetensors.hpp"

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

// DeepSeek-V3's router as transformers computes it: sigmoid scores, a correction bias, groups
// scored by their top two.
model::RouterSpec deepseek_v3_router(std::int64_t groups, std::int64_t kept_groups) {
  model::RouterSpec v3;
  v3.scoring = model::Scoring::sigmoid;
  v3.correction_bias = true;
  v3.n_group = groups;
  v3.topk_group = kept_groups;
  v3.group_top2_sum = true;
  return v3;
}

// Both KV dtypes: bf16 keys and values (the default) keep the reference's greedy tokens.
void expect_reference_greedy_tokens(const std::string& model, const std::string& golden_file) {
  nlohmann::json golden;
  std::ifstream(kGolden / golden_file) >> golden;
  const auto prompt = golden["prompt"].get<std::vector<std::int32_t>>();
  const auto want = golden["generated"].get<std::vector<std::int32_t>>();
  for (const KvDtype kv_dtype : {KvDtype::f32, KvDtype::bf16}) {
    EngineOptions options;
    options.kv_dtype = kv_dtype;
    Engine engine(kModels / model, options);
    EXPECT_EQ(greedy_tokens(engine, prompt, want.size()), want)
        << model << ", " << to_string(kv_dtype) << " KV; reference's smallest top-1 margin "
        << golden["min_margin"].get<double>();
  }
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

TEST_P(Family, Bf16GreedyTokensMatchTheReference) {
  expect_reference_greedy_tokens(bf16_model(), std::string(GetParam()) + "-bf16.greedy.json");
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
  const auto [batched, solo] = batched_and_solo_rows(engine);
  for (std::size_t i = 0; i < solo.size(); ++i) EXPECT_EQ(batched[i], solo[i]) << "row " << i;
}

INSTANTIATE_TEST_SUITE_P(TinyModels, Family,
                         ::testing::Values("qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2",
                                           "deepseek_v3"),
                         test_name);

// Fine-grained FP8 checkpoints (make-test-models.sh: DeepSeek-V3 with F32 scales in blocks of
// [32, 32], Qwen3-MoE with BF16 scales in [32, 48], whose last column block is partial): the
// reference's greedy tokens, from the weights fp8_cast_bf16 would write, and the same bits at
// every host budget, where experts and the ring's dense layers are read with their scales.
class Fp8Family : public ::testing::TestWithParam<const char*> {
 protected:
  std::string model() const { return std::string("tiny-") + GetParam() + "-fp8"; }
};

// An FP8 test model's expert gate and up as parts to size, from its config.json.
struct FirstExpert {
  std::int64_t hidden = 0;
  std::array<moed::kernels::WeightPart, 2> gate_up{};
  explicit FirstExpert(const std::string& model) {
    const auto config = nlohmann::json::parse(std::ifstream(kModels / model / "config.json"));
    hidden = config["hidden_size"];
    const std::int64_t ffn = config["moe_intermediate_size"];
    const moed::kernels::BlockScales blocks{nullptr, moed::kernels::DType::f32,
                                            config["quantization_config"]["weight_block_size"][0],
                                            config["quantization_config"]["weight_block_size"][1]};
    for (auto& part : gate_up) part = {nullptr, moed::kernels::DType::f8_e4m3, ffn, blocks};
  }
};

TEST_P(Fp8Family, GreedyTokensMatchTheReference) {
  expect_reference_greedy_tokens(model(), std::string(GetParam()) + "-fp8.greedy.json");
}

TEST_P(Fp8Family, EveryHostBudgetGivesBitIdenticalLogits) {
  const auto tokens = read_tokens(kGolden / "prompt-tokens.txt");
  Engine unlimited(kModels / model(), {});
  const auto want = prefill_then_decode(unlimited, tokens);
  for (const double share : {0.25, 0.5}) {
    EngineOptions options;
    options.host_budget = {0, share};
    Engine engine(kModels / model(), options);
    EXPECT_EQ(prefill_then_decode(engine, tokens), want) << "share " << share;
    EXPECT_GT(engine.memory_stats().host.misses, 0u);
    // Under a cap, FP8 panels (where this CPU has them) hold about half the unlimited engine's
    // widened bf16: the same bits from either form.
    const FirstExpert expert(model());
    moed::kernels::CpuMatmul probe;
    if (!probe.keeps_fp8_rows(expert.gate_up, expert.hidden) &&
        probe.keeps_fp8_panels(expert.gate_up)) {
      EXPECT_LT(engine.memory_stats().expert_bytes_total * 10,
                unlimited.memory_stats().expert_bytes_total * 6);
    }
  }
  // Sized as a capped engine holds the weights (FP8 panels, where this CPU keeps them only under
  // a host budget, take half the bytes of the unlimited engine's bf16).
  EngineOptions capped;
  capped.host_budget = {0, 0.5};
  const Engine sizes(kModels / model(), capped);
  const std::uint64_t working_set =
      static_cast<std::uint64_t>(sizes.spec().experts_per_token) * sizes.expert_block_bytes();
  EngineOptions streamed;
  streamed.host_budget = {sizes.memory_stats().fixed_bytes + working_set - 1, 0};
  Engine ring(kModels / model(), streamed);
  EXPECT_TRUE(ring.memory_stats().dense_streamed);
  EXPECT_EQ(prefill_then_decode(ring, tokens), want) << "streamed";
}

// The bf16 model fp8_cast_bf16.py makes of the FP8 one (make-tiny-model.py --dtype fp8-cast):
// moed computes an FP8 weight as that cast, so the logits are the same bits, MLA's kv_b and the
// routers included.
TEST_P(Fp8Family, LogitsEqualThoseOfItsBf16Cast) {
  const auto tokens = read_tokens(kGolden / "prompt-tokens.txt");
  EngineOptions options;
  options.kv_dtype = KvDtype::f32;
  Engine fp8(kModels / model(), options);
  Engine cast(kModels / (model() + "-cast"), options);
  EXPECT_EQ(prefill_then_decode(fp8, tokens), prefill_then_decode(cast, tokens));
  // Host RAM: where this CPU keeps an expert's gate and up as FP8 rows, about one byte a weight
  // (the cast's bf16 takes two); else the cast's own bytes.
  const FirstExpert expert(model());
  const std::uint64_t fp8_bytes = fp8.memory_stats().expert_bytes_total;
  const std::uint64_t cast_bytes = cast.memory_stats().expert_bytes_total;
  // (FP8 panels only under a host budget: Engine's rule.)
  if (moed::kernels::CpuMatmul().keeps_fp8_rows(expert.gate_up, expert.hidden)) {
    EXPECT_LT(fp8_bytes * 10, cast_bytes * 6) << fp8_bytes << " against " << cast_bytes;
  } else {
    EXPECT_EQ(fp8_bytes, cast_bytes);
  }
}

// A copy of a test model, removed when the test ends, whose scales a test may corrupt.
struct ScratchModel {
  std::filesystem::path path;
  explicit ScratchModel(const std::string& model)
      : path(std::filesystem::temp_directory_path() /
             ("moed-test-" + model + "-" + std::to_string(::getpid()))) {
    std::filesystem::remove_all(path);
    std::filesystem::copy(kModels / model, path);
  }
  ~ScratchModel() { std::filesystem::remove_all(path); }

  // Writes bf16 NaN over scale `index` of a BF16 scale tensor.
  void poison_scale(const std::string& tensor, std::uint64_t index) const {
    std::uint64_t offset = 0;
    {
      const model::SafetensorsFile file(path / "model.safetensors");
      const auto& scales = file.tensors().at(tensor);
      ASSERT_EQ(scales.dtype, moed::kernels::DType::bf16);
      offset = scales.file_offset + 2 * index;
    }
    std::fstream patch(path / "model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    patch.seekp(static_cast<std::streamoff>(offset));
    const std::uint16_t nan = 0x7fc0;
    patch.write(reinterpret_cast<const char*>(&nan), 2);
  }
};

template <typename F>
void expect_error_containing(F&& f, const std::string& part) {
  try {
    f();
    ADD_FAILURE() << "expected an error containing '" << part << "'";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

// A scale that is not a number would turn its block into NaN: the weight is refused naming the
// scale tensor and where in its grid the value lies, at load for a dense layer, and when a
// streamed expert is read for a request.
TEST(Fp8Checkpoint, NonFiniteScaleIsRefusedNamingTheTensor) {
  {
    const ScratchModel dense("tiny-qwen3_moe-fp8");
    const std::string name = "model.layers.1.self_attn.o_proj.weight_scale_inv";
    dense.poison_scale(name, 5);  // [1, 1] of its [4, 4] grid
    expect_error_containing([&] { Engine engine(dense.path, {}); },
                            "tensor '" + name + "' holds a scale of nan at [1, 1]");
  }
  const ScratchModel experts("tiny-qwen3_moe-fp8");
  const auto spec = model::ModelSpec::from_config(experts.path);
  for (std::int64_t e = 0; e < spec.num_experts; ++e)
    experts.poison_scale(
        "model.layers.0.mlp.experts." + std::to_string(e) + ".gate_proj.weight_scale_inv", 0);
  EngineOptions options;
  options.host_budget = {0, 0.25};
  Engine engine(experts.path, options);  // the experts stream: none is read yet
  expect_error_containing(
      [&] { prefill_logits(engine, read_tokens(kGolden / "prompt-tokens.txt")); },
      ".gate_proj.weight_scale_inv' holds a scale of nan at [0, 0]");
}

INSTANTIATE_TEST_SUITE_P(TinyModels, Fp8Family, ::testing::Values("qwen3_moe", "deepseek_v3"),
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

// route() on cases worked by hand from transformers' routers.
TEST(Router, SoftmaxTopKRenormalisedOrNot) {
  const float logits[] = {1, 2, 3, 0};
  int ids[2];
  float weights[2];
  model::RouterSpec mixtral;
  route(mixtral, logits, nullptr, 4, 2, ids, weights);
  EXPECT_EQ(ids[0], 2);
  EXPECT_EQ(ids[1], 1);
  EXPECT_NEAR(weights[0], 0.7310586, 1e-6);  // e^3 / (e^2 + e^3)
  EXPECT_NEAR(weights[1], 0.2689414, 1e-6);
  model::RouterSpec qwen2;
  qwen2.normalize = false;
  route(qwen2, logits, nullptr, 4, 2, ids, weights);
  EXPECT_NEAR(weights[0], 0.6439143, 1e-6);  // e^3 / (1 + e + e^2 + e^3)
  EXPECT_NEAR(weights[1], 0.2368828, 1e-6);
}

// DeepSeek-V3: sigmoid scores, the bias moves the choice (and the groups) but the weights are the
// unbiased scores, renormalised, times the scaling factor.
TEST(Router, DeepSeekV3BiasChoosesButDoesNotWeigh) {
  model::RouterSpec v3 = deepseek_v3_router(4, 2);
  v3.scaling = 2.5;
  // Scores: 0.75 for expert 3 (logit ln 3), 0.5 for the rest. With the bias the choice scores
  // are [.5 .5 .8 .85 .5 .55 .7 .7]; group sums 1.0, 1.65, 1.05, 1.4 keep groups 1 and 3.
  const float logits[] = {0, 0, 0, static_cast<float>(std::log(3.0)), 0, 0, 0, 0};
  const float bias[] = {0, 0, 0.3f, 0.1f, 0, 0.05f, 0.2f, 0.2f};
  int ids[2];
  float weights[2];
  route(v3, logits, bias, 8, 2, ids, weights);
  EXPECT_EQ(ids[0], 3);
  EXPECT_EQ(ids[1], 2);
  EXPECT_NEAR(weights[0], 0.75 / 1.25 * 2.5, 1e-6);
  EXPECT_NEAR(weights[1], 0.5 / 1.25 * 2.5, 1e-6);
  // Without the bias expert 2 loses to expert 0 (same score, lower id).
  route(v3, logits, nullptr, 8, 2, ids, weights);
  EXPECT_EQ(ids[0], 3);
  EXPECT_EQ(ids[1], 0);
}

// Masking the groups not kept: transformers fills them with 0.0, so when every kept expert's
// biased score is negative a masked expert wins; llama.cpp fills them with -inf.
TEST(Router, MaskedGroupsScoreZeroInTransformersAndMinusInfinityInLlamaCpp) {
  model::RouterSpec v3 = deepseek_v3_router(2, 1);
  // Scores all 0.5. Biased choice: group 0 [-0.6 -0.7], group 1 [-0.9 -0.9]: group 0 is kept.
  const float logits[] = {0, 0, 0, 0};
  const float bias[] = {-1.1f, -1.2f, -1.4f, -1.4f};
  int ids[2];
  float weights[2];
  route(v3, logits, bias, 4, 2, ids, weights);
  EXPECT_EQ(ids[0], 2);  // a masked expert at 0.0 beats the kept ones at -0.6 and -0.7
  EXPECT_EQ(ids[1], 3);
  v3.masked_group_score = -std::numeric_limits<float>::infinity();
  route(v3, logits, bias, 4, 2, ids, weights);
  EXPECT_EQ(ids[0], 0);
  EXPECT_EQ(ids[1], 1);
  EXPECT_NEAR(weights[0], 0.5, 1e-6);
}

// The renormalising sum: transformers' sigmoid router adds 1e-20, llama.cpp clamps it at 2^-14.
TEST(Router, LlamaCppClampsTheWeightSum) {
  model::RouterSpec v3;
  v3.scoring = model::Scoring::sigmoid;
  const float logits[] = {-20, -20, -30, -30};  // scores about 2.06e-9
  int ids[2];
  float weights[2];
  route(v3, logits, nullptr, 4, 2, ids, weights);
  EXPECT_NEAR(weights[0], 0.5, 1e-6);
  v3.clamp_weight_sum = true;
  route(v3, logits, nullptr, 4, 2, ids, weights);
  EXPECT_NEAR(weights[0], 2.0611536e-9 / 0x1p-14, 1e-9);
}

// DeepSeek-V2 group_limited_greedy: groups scored by their best softmax probability, the others
// masked, no renormalisation, times routed_scaling_factor.
TEST(Router, DeepSeekV2GroupLimitedGreedy) {
  model::RouterSpec v2;
  v2.n_group = 2;
  v2.topk_group = 1;
  v2.normalize = false;
  v2.scaling = 16;
  const float logits[] = {3, 0, 2.9f, 2.8f};
  int ids[2];
  float weights[2];
  route(v2, logits, nullptr, 4, 2, ids, weights);
  // Group 0 (best 3) beats group 1 (best 2.9): experts 2 and 3 are out although they outscore 1.
  EXPECT_EQ(ids[0], 0);
  EXPECT_EQ(ids[1], 1);
  EXPECT_NEAR(weights[0], 5.7691852, 1e-5);
  EXPECT_NEAR(weights[1], 0.2872308, 1e-6);
}
