// GGUF files as models: the layer plan read from llama.cpp's metadata keys, the tensors mapped
// onto the plan (experts as slices of merged tensors), logits against scripts/reference.py on the
// dequantized weights, every host budget bit-identical, batched rows equal to solo rows, and the
// files moed must refuse named with the key or tensor at fault.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

#include "gguf_builder.hpp"
#include "golden_files.hpp"
#include "moed/engine/engine.hpp"
#include "moed/model/checkpoint.hpp"
#include "moed/model/gguf_model.hpp"

using namespace moed::engine;
namespace model = moed::model;
namespace test = moed::test;

namespace {

// Logits of moed against the float64 reference on the dequantized weights. f32 files agree to
// float rounding. For quantized weights moed also quantizes each activation row to int8 per block
// (scale max|x| / 127, so each element moves by up to 1/254 of its block's largest), which moves
// these random-weight models' logits by 1-4% of the largest; where a router's top-k margin is
// smaller than that (tests/golden/README.md lists margins down to 0.0003), a position takes
// other experts and its row moves further. So: every row within 1e-5 (f32), or all but
// `unsettled` rows within 5%, and the same top token on all but those.
struct GgufCase {
  const char* file;  // under the test models
  bool quantized;
  int unsettled = 2;
};

class GgufModel : public ::testing::TestWithParam<GgufCase> {
 protected:
  std::filesystem::path path() const { return kModels / GetParam().file; }
  std::string stem() const { return std::filesystem::path(GetParam().file).stem().string(); }
};

std::string case_name(const ::testing::TestParamInfo<GgufCase>& info) {
  std::string name = std::filesystem::path(info.param.file).stem().string();
  for (auto& c : name)
    if (c == '-' || c == '.') c = '_';
  return name;
}

// Rows of `got` further than `tolerance` (of the reference's largest magnitude) from `want`.
int rows_beyond(const std::vector<float>& got, const std::vector<float>& want, std::int64_t vocab,
                double tolerance) {
  double largest = 0;
  for (const float w : want) largest = std::max(largest, static_cast<double>(std::abs(w)));
  int far = 0;
  for (std::size_t row = 0; row < want.size() / static_cast<std::size_t>(vocab); ++row) {
    double diff = 0;
    for (std::int64_t i = 0; i < vocab; ++i) {
      const std::size_t at = row * static_cast<std::size_t>(vocab) + static_cast<std::size_t>(i);
      diff = std::max(diff, static_cast<double>(std::abs(got[at] - want[at])));
    }
    far += diff > tolerance * largest;
  }
  return far;
}

TEST_P(GgufModel, LogitsMatchTheReferenceOnTheDequantizedWeights) {
  EngineOptions options;
  options.kv_dtype = KvDtype::f32;
  Engine engine(path(), options);
  const auto tokens = read_tokens(kGolden / "prompt-tokens.txt");
  const auto golden = read_npy(kGolden / "gguf" / (stem() + ".logits.npy"));
  const std::int64_t vocab = engine.spec().vocab_size;
  ASSERT_EQ(golden.shape,
            (std::vector<std::int64_t>{static_cast<std::int64_t>(tokens.size()), vocab}));
  const double tolerance = GetParam().quantized ? 0.05 : 1e-5;
  const int allowed = GetParam().quantized ? GetParam().unsettled : 0;
  for (const auto& logits : {prefill_logits(engine, tokens), prefill_then_decode(engine, tokens)}) {
    EXPECT_LE(rows_beyond(logits, golden.data, vocab, tolerance), allowed);
    EXPECT_LE(compare(logits, golden.data, vocab).argmax_mismatches, allowed);
  }
}

TEST_P(GgufModel, EveryHostBudgetGivesBitIdenticalLogits) {
  const auto tokens = read_tokens(kGolden / "prompt-tokens.txt");
  EngineOptions resident;
  resident.threads = 2;  // an even top-k decodes in one region while every expert is resident
  Engine unlimited(path(), resident);
  const auto want = prefill_then_decode(unlimited, tokens);
  for (const double share : {0.25, 0.5}) {
    EngineOptions options;
    options.host_budget = {0, share};
    Engine engine(path(), options);
    EXPECT_EQ(prefill_then_decode(engine, tokens), want) << "share " << share;
    EXPECT_GT(engine.memory_stats().host.misses, 0u);
    EXPECT_GT(engine.memory_stats().disk.bytes_read, 0u);
  }
  const std::uint64_t working_set = static_cast<std::uint64_t>(unlimited.spec().experts_per_token) *
                                    unlimited.expert_block_bytes();
  EngineOptions streamed;
  streamed.host_budget = {unlimited.memory_stats().fixed_bytes + working_set - 1, 0};
  Engine ring(path(), streamed);
  EXPECT_TRUE(ring.memory_stats().dense_streamed);
  EXPECT_EQ(prefill_then_decode(ring, tokens), want) << "dense layers streamed";
}

TEST_P(GgufModel, BatchedDecodeRowsEqualSoloRows) {
  // Two threads whatever the machine: a solo row of a quantized model with an even top-k then
  // runs its experts in one region (CpuMatmul::expert_ffns), the batched rows one by one.
  EngineOptions options;
  options.threads = 2;
  Engine engine(path(), options);
  const auto [batched, solo] = batched_and_solo_rows(engine);
  for (std::size_t i = 0; i < solo.size(); ++i) EXPECT_EQ(batched[i], solo[i]) << "row " << i;
}

// Mixtral as llama (hidden 256: real K-quant blocks; q3_K, iq3_s, iq3_xxs, iq1_s and iq1_m
// computed as q6_K; q2_K; iq4_xs; iq2_xxs, iq2_xs and iq2_s in their own tiles), its
// legacy split-expert form, and each family as llama.cpp converts it (hidden 128: q4_K_M falls back
// to q5_0/q5_1/q8_0 there).
const GgufCase kFiles[] = {
    GgufCase{"tiny-f32.gguf", false}, GgufCase{"tiny-q8_0.gguf", true},
    GgufCase{"tiny-q4_k_m.gguf", true}, GgufCase{"tiny-q3_k.gguf", true},
    GgufCase{"tiny-q2_k.gguf", true}, GgufCase{"tiny-iq4_xs.gguf", true},
    GgufCase{"tiny-iq3_s.gguf", true}, GgufCase{"tiny-iq3_xxs.gguf", true},
    GgufCase{"tiny-iq1_s.gguf", true}, GgufCase{"tiny-iq1_m.gguf", true},
    GgufCase{"tiny-iq2_xxs.gguf", true}, GgufCase{"tiny-iq2_xs.gguf", true},
    GgufCase{"tiny-iq2_s.gguf", true}, GgufCase{"tiny-split-experts-q8_0.gguf", true},
    GgufCase{"tiny-qwen2_moe-f32.gguf", false}, GgufCase{"tiny-qwen2_moe-q8_0.gguf", true},
    GgufCase{"tiny-qwen2_moe-q4_k_m.gguf", true}, GgufCase{"tiny-qwen3_moe-f32.gguf", false},
    GgufCase{"tiny-qwen3_moe-q8_0.gguf", true}, GgufCase{"tiny-qwen3_moe-q4_k_m.gguf", true},
    GgufCase{"tiny-olmoe-f32.gguf", false}, GgufCase{"tiny-olmoe-q8_0.gguf", true},
    GgufCase{"tiny-olmoe-q4_k_m.gguf", true}, GgufCase{"tiny-deepseek_v2-f32.gguf", false},
    GgufCase{"tiny-deepseek_v2-q8_0.gguf", true}, GgufCase{"tiny-deepseek_v2-q4_k_m.gguf", true},
    GgufCase{"tiny-deepseek_v3-f32.gguf", false}, GgufCase{"tiny-deepseek_v3-q8_0.gguf", true},
    // Its smallest routing margin, 0.0003, is a tenth of the activation rounding: a flip at one
    // position reaches the later positions through the KV cache.
    GgufCase{"tiny-deepseek_v3-q4_k_m.gguf", true, 4}};

INSTANTIATE_TEST_SUITE_P(Files, GgufModel, ::testing::ValuesIn(kFiles), case_name);

TEST(GgufPlan, AnF32FileGivesTheHuggingFaceModelsGreedyTokens) {
  nlohmann::json golden;
  std::ifstream(kGolden / "tiny-f32.greedy.json") >> golden;
  const auto want = golden["generated"].get<std::vector<std::int32_t>>();
  EngineOptions options;
  options.kv_dtype = KvDtype::f32;
  Engine engine(kModels / "tiny-f32.gguf", options);
  EXPECT_EQ(greedy_tokens(engine, golden["prompt"].get<std::vector<std::int32_t>>(), want.size()),
            want);
}

// Each family's f32 GGUF against the config.json it was converted from: the same plan, save
// where llama.cpp's semantics are not transformers' (renormalisation fixed per architecture, V2's
// group score a top-2 sum, Mixtral's q/k rows permuted for adjacent-pair RoPE) and the names of
// things.
class GgufFamilyPlan : public ::testing::TestWithParam<const char*> {};

TEST_P(GgufFamilyPlan, MatchesItsHuggingFaceConfig) {
  const std::string family = GetParam();
  const bool mixtral = family == "mixtral";
  const auto hf =
      model::ModelSpec::from_config(kModels / (mixtral ? "tiny-f32" : "tiny-" + family));
  const auto gguf = model::read_model_spec(
      kModels / (mixtral ? "tiny-f32.gguf" : "tiny-" + family + "-f32.gguf"));
  EXPECT_EQ(gguf.family, hf.family);
  EXPECT_EQ(gguf.model_type, mixtral                 ? "llama"
                             : family == "qwen2_moe" ? "qwen2moe"
                             : family == "qwen3_moe" ? "qwen3moe"
                             : family == "olmoe"     ? "olmoe"
                                                     : "deepseek2");
  EXPECT_EQ(gguf.vocab_size, hf.vocab_size);
  EXPECT_EQ(gguf.hidden_size, hf.hidden_size);
  EXPECT_EQ(gguf.num_layers, hf.num_layers);
  ASSERT_EQ(gguf.layers.size(), hf.layers.size());
  for (std::size_t l = 0; l < hf.layers.size(); ++l) {
    EXPECT_EQ(gguf.layers[l].attention, hf.layers[l].attention) << l;
    EXPECT_EQ(gguf.layers[l].ffn, hf.layers[l].ffn) << l;
  }
  const auto &a = gguf.attention, &b = hf.attention;
  EXPECT_EQ(a.kind, b.kind);
  EXPECT_EQ(a.heads, b.heads);
  EXPECT_EQ(a.kv_heads, b.kv_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.qkv_bias, b.qkv_bias);
  EXPECT_EQ(a.qk_norm, b.qk_norm);
  EXPECT_EQ(a.q_lora_rank, b.q_lora_rank);
  EXPECT_EQ(a.kv_lora_rank, b.kv_lora_rank);
  EXPECT_EQ(a.qk_nope_head_dim, b.qk_nope_head_dim);
  EXPECT_EQ(a.qk_rope_head_dim, b.qk_rope_head_dim);
  EXPECT_EQ(a.v_head_dim, b.v_head_dim);
  EXPECT_EQ(a.split_kv_b, a.kind == model::AttentionKind::mla);
  EXPECT_NEAR(a.softmax_scale, b.softmax_scale, 1e-6 * b.softmax_scale);
  EXPECT_FLOAT_EQ(gguf.rms_norm_eps, hf.rms_norm_eps);  // an f32 in GGUF
  EXPECT_EQ(gguf.max_position_embeddings, hf.max_position_embeddings);
  EXPECT_EQ(gguf.rope.style, mixtral ? model::RopeStyle::interleaved : hf.rope.style);
  EXPECT_EQ(gguf.rope.dim, hf.rope.dim);
  EXPECT_FLOAT_EQ(gguf.rope.theta, hf.rope.theta);
  EXPECT_FLOAT_EQ(gguf.rope.yarn_factor, hf.rope.yarn_factor);
  EXPECT_NEAR(gguf.rope.attention_factor, hf.rope.attention_factor, 1e-6);
  EXPECT_EQ(gguf.num_experts, hf.num_experts);
  EXPECT_EQ(gguf.experts_per_token, hf.experts_per_token);
  EXPECT_EQ(gguf.intermediate_size, hf.intermediate_size);
  EXPECT_EQ(gguf.shared_intermediate_size, hf.shared_intermediate_size);
  EXPECT_EQ(gguf.shared_expert_gate, hf.shared_expert_gate);
  EXPECT_EQ(gguf.router.scoring, hf.router.scoring);
  EXPECT_EQ(gguf.router.correction_bias, hf.router.correction_bias);
  EXPECT_EQ(gguf.router.n_group, hf.router.n_group);
  EXPECT_EQ(gguf.router.topk_group, hf.router.topk_group);
  EXPECT_EQ(gguf.router.group_top2_sum, hf.router.group_top2_sum || hf.router.n_group > 1);
  EXPECT_FLOAT_EQ(gguf.router.scaling, hf.router.scaling);
  EXPECT_EQ(gguf.router.fp32_logits, hf.router.fp32_logits);
  const bool renormalised_by_llama_cpp =
      mixtral || family == "qwen3_moe" || family == "deepseek_v3";
  EXPECT_EQ(gguf.router.normalize, renormalised_by_llama_cpp);
  EXPECT_EQ(hf.router.masked_group_score, 0.0f);
  EXPECT_EQ(gguf.router.masked_group_score, -std::numeric_limits<float>::infinity());
  EXPECT_FALSE(hf.router.clamp_weight_sum);
  EXPECT_TRUE(gguf.router.clamp_weight_sum);
  EXPECT_EQ(gguf.tie_word_embeddings, hf.tie_word_embeddings);
}

INSTANTIATE_TEST_SUITE_P(Families, GgufFamilyPlan,
                         ::testing::Values("mixtral", "qwen2_moe", "qwen3_moe", "olmoe",
                                           "deepseek_v2", "deepseek_v3"));

TEST(GgufPlan, ExpertsAreSlicesOfTheMergedTensors) {
  const auto spec = model::read_model_spec(kModels / "tiny-q4_k_m.gguf");
  const auto checkpoint = model::open_checkpoint(kModels / "tiny-q4_k_m.gguf", spec);
  const auto& e0 = checkpoint.tensor(model::expert_tensor(spec, 1, 0, model::ExpertMatrix::up));
  const auto& e5 = checkpoint.tensor(model::expert_tensor(spec, 1, 5, model::ExpertMatrix::up));
  EXPECT_EQ(e0.name, "blk.1.ffn_up_exps.weight [expert 0]");
  EXPECT_EQ(e0.shape, (std::vector<std::int64_t>{spec.intermediate_size, spec.hidden_size}));
  EXPECT_EQ(e0.dtype, moed::kernels::DType::q4_k);
  EXPECT_EQ(e0.nbytes, static_cast<std::uint64_t>(spec.intermediate_size) *
                           moed::kernels::row_bytes(e0.dtype, spec.hidden_size));
  EXPECT_EQ(e5.file_offset, e0.file_offset + 5 * e0.nbytes);
  // llama-quantize's q4_K_M keeps the LM head in q6_K.
  EXPECT_EQ(checkpoint.tensor("lm_head.weight").dtype, moed::kernels::DType::q6_k);
}

// A one-layer llama file with two experts, every tensor present and zero, for the refusals.
struct TinyLlama {
  test::GgufSpec spec;
  TinyLlama() {
    using namespace test::gguf_bytes;
    spec.add("general.architecture", test::kString, str("llama"));
    for (const auto& [key, value] :
         std::vector<std::pair<std::string, std::uint32_t>>{{"llama.embedding_length", 32},
                                                            {"llama.block_count", 1},
                                                            {"llama.context_length", 64},
                                                            {"llama.attention.head_count", 2},
                                                            {"llama.attention.head_count_kv", 1},
                                                            {"llama.feed_forward_length", 32},
                                                            {"llama.expert_count", 2},
                                                            {"llama.expert_used_count", 1},
                                                            {"llama.rope.dimension_count", 16}})
      spec.add(key, test::kU32, u32(value));
    spec.add("llama.attention.layer_norm_rms_epsilon", test::kF32, scalar(1e-5f));
    tensor("token_embd.weight", {32, 8});
    tensor("output_norm.weight", {32});
    tensor("output.weight", {32, 8});
    tensor("blk.0.attn_norm.weight", {32});
    tensor("blk.0.attn_q.weight", {32, 32});
    tensor("blk.0.attn_k.weight", {32, 16});
    tensor("blk.0.attn_v.weight", {32, 16});
    tensor("blk.0.attn_output.weight", {32, 32});
    tensor("blk.0.ffn_norm.weight", {32});
    tensor("blk.0.ffn_gate_inp.weight", {32, 2});
    tensor("blk.0.ffn_gate_exps.weight", {32, 32, 2});
    tensor("blk.0.ffn_up_exps.weight", {32, 32, 2});
    tensor("blk.0.ffn_down_exps.weight", {32, 32, 2});
  }
  void tensor(const std::string& name, std::vector<std::uint64_t> dims, std::uint32_t type = 0,
              std::size_t bytes = 0) {
    std::uint64_t elements = 1;
    for (const auto d : dims) elements *= d;
    spec.tensors.push_back({name,
                            std::move(dims),
                            type,
                            std::string(bytes ? bytes : elements * sizeof(float), '\0'),
                            {}});
  }
  test::GgufSpec& change(const std::function<void(test::GgufSpec&)>& edit) {
    edit(spec);
    return spec;
  }
};

struct TempGguf {
  std::filesystem::path path;
  explicit TempGguf(const test::GgufSpec& spec) {
    path = std::filesystem::temp_directory_path() /
           ("moed-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".gguf");
    std::ofstream(path, std::ios::binary) << spec.encode();
  }
  ~TempGguf() { std::filesystem::remove(path); }
};

void expect_refused(const test::GgufSpec& spec, const std::vector<std::string>& parts) {
  TempGguf file(spec);
  try {
    Engine engine(file.path, {});
    ADD_FAILURE() << "accepted";
  } catch (const std::exception& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(file.path.filename().string()), std::string::npos) << what;
    for (const auto& part : parts) EXPECT_NE(what.find(part), std::string::npos) << what;
  }
}

TEST(GgufPlan, TheTinyLlamaLoadsAndRuns) {
  TinyLlama tiny;
  TempGguf file(tiny.spec);
  Engine engine(file.path, {});
  EXPECT_EQ(engine.spec().num_experts, 2);
  auto cache = engine.new_cache();
  std::vector<float> logits;
  engine.forward(std::vector<std::int32_t>{1, 2, 3}, cache, logits, false);
  EXPECT_EQ(logits, std::vector<float>(8, 0.0f));  // zero weights
}

TEST(GgufPlan, RefusalsNameTheKeyOrTensor) {
  auto edit_kv = [](const std::string& key, std::uint32_t type, std::string value) {
    TinyLlama tiny;
    for (auto& kv : tiny.spec.kvs)
      if (kv.key == key) {
        kv.type = type;
        kv.value = std::move(value);
      }
    return tiny.spec;
  };
  using namespace test::gguf_bytes;
  expect_refused(edit_kv("general.architecture", test::kString, str("gemma")),
                 {"general.architecture", "'gemma' is not supported"});
  expect_refused(edit_kv("llama.expert_count", test::kU32, u32(0)),
                 {"llama.expert_count", "not a MoE model"});
  expect_refused(edit_kv("llama.rope.dimension_count", test::kU32, u32(8)),
                 {"llama.rope.dimension_count", "partial RoPE"});
  expect_refused(edit_kv("llama.expert_used_count", test::kU32, u32(3)),
                 {"llama.expert_used_count", "exceeds"});
  expect_refused(edit_kv("llama.block_count", test::kString, str("one")),
                 {"llama.block_count", "string"});

  TinyLlama missing;
  missing.spec.tensors.erase(missing.spec.tensors.begin() + 5);  // blk.0.attn_k.weight
  expect_refused(missing.spec, {"blk.0.attn_k.weight", "missing"});

  TinyLlama extra;
  extra.tensor("blk.0.attn_output.bias", {32});
  expect_refused(extra.spec, {"unexpected tensor 'blk.0.attn_output.bias'"});

  TinyLlama misshapen;
  misshapen.spec.tensors[4].dims = {32, 16};  // attn_q with half its rows
  misshapen.spec.tensors[4].data.resize(32 * 16 * 4);
  expect_refused(misshapen.spec, {"blk.0.attn_q.weight", "has shape [16, 32]"});

  // q8_1: a ggml type the reader knows and moed does not compute (36 bytes per 32).
  TinyLlama q8_1;
  q8_1.spec.tensors.pop_back();
  q8_1.tensor("blk.0.ffn_down_exps.weight", {32, 32, 2}, 9, 36 * 64);
  expect_refused(q8_1.spec, {"blk.0.ffn_down_exps.weight", "q8_1", "does not compute"});
}

TEST(GgufPlan, TheLlamaArchitectureSizesExpertsByFeedForwardLengthAlone) {
  // llama.cpp's model saver writes llama.expert_feed_forward_length = 0; its loader never reads
  // the key for llama, whatever it holds.
  for (const std::uint32_t width : {0u, 7u}) {
    TinyLlama tiny;
    tiny.spec.add("llama.expert_feed_forward_length", test::kU32, test::gguf_bytes::u32(width));
    TempGguf file(tiny.spec);
    Engine engine(file.path, {});
    EXPECT_EQ(engine.spec().intermediate_size, 32) << width;
  }
}

TEST(GgufPlan, QwenExpertWidthZeroMeansFeedForwardLengthOverExpertsUsed) {
  // llama.cpp's qwen2moe / qwen3moe: n_ff_exp when set and not 0, else n_ff / n_expert_used.
  for (const std::uint32_t width : {0u, 16u}) {
    TinyLlama tiny;
    for (auto& kv : tiny.spec.kvs) {
      if (kv.key == "general.architecture") kv.value = test::gguf_bytes::str("qwen3moe");
      if (kv.key.starts_with("llama.")) kv.key = "qwen3moe." + kv.key.substr(6);
      if (kv.key == "qwen3moe.feed_forward_length") kv.value = test::gguf_bytes::u32(16);
    }
    tiny.spec.add("qwen3moe.expert_feed_forward_length", test::kU32, test::gguf_bytes::u32(width));
    tiny.tensor("blk.0.attn_q_norm.weight", {16});
    tiny.tensor("blk.0.attn_k_norm.weight", {16});
    for (auto& tensor : tiny.spec.tensors)
      if (tensor.name.find("_exps.") != std::string::npos) {
        tensor.dims = tensor.name.find("down") != std::string::npos
                          ? std::vector<std::uint64_t>{16, 32, 2}
                          : std::vector<std::uint64_t>{32, 16, 2};
        tensor.data.resize(16 * 32 * 2 * 4);
      }
    TempGguf file(tiny.spec);
    Engine engine(file.path, {});
    EXPECT_EQ(engine.spec().intermediate_size, 16) << width;
  }
}

TEST(GgufPlan, HostileAndUnsupportedValuesAreRefusedByKey) {
  auto with = [](const std::string& key, std::uint32_t type, std::string value) {
    TinyLlama tiny;
    tiny.spec.add(key, type, std::move(value));
    return tiny.spec;
  };
  using namespace test::gguf_bytes;
  const float inf = std::numeric_limits<float>::infinity();
  TinyLlama eps;
  for (auto& kv : eps.spec.kvs)
    if (kv.key == "llama.attention.layer_norm_rms_epsilon") kv.value = scalar(inf);
  expect_refused(eps.spec, {"llama.attention.layer_norm_rms_epsilon", "finite"});
  expect_refused(with("llama.rope.freq_base", test::kF32, scalar(-inf)),
                 {"llama.rope.freq_base", "finite"});
  // llama.cpp's default scaling type is linear: a bare factor scales positions.
  expect_refused(with("llama.rope.scaling.factor", test::kF32, scalar(4.0f)),
                 {"llama.rope.scaling.type", "'linear' with factor 4"});
  expect_refused(with("llama.rope.scale_linear", test::kF32, scalar(2.0f)),
                 {"llama.rope.scale_linear", "not supported"});
  TinyLlama ext;
  ext.spec.add("llama.rope.scaling.type", test::kString, str("yarn"));
  ext.spec.add("llama.rope.scaling.factor", test::kF32, scalar(4.0f));
  ext.spec.add("llama.rope.scaling.yarn_ext_factor", test::kF32, scalar(0.5f));
  expect_refused(ext.spec, {"llama.rope.scaling.yarn_ext_factor", "0.5"});
  TinyLlama beta;
  beta.spec.add("llama.rope.scaling.type", test::kString, str("yarn"));
  beta.spec.add("llama.rope.scaling.factor", test::kF32, scalar(4.0f));
  beta.spec.add("llama.rope.scaling.yarn_beta_fast", test::kF32, scalar(-1.0f));
  expect_refused(beta.spec, {"llama.rope.scaling.yarn_beta_fast", "positive"});
}

TEST(GgufPlan, SplitExpertTensorsOfOldFilesAreAccepted) {
  TinyLlama old;
  old.spec.tensors.resize(old.spec.tensors.size() - 3);
  for (const char* matrix : {"ffn_gate", "ffn_up", "ffn_down"})
    for (int e = 0; e < 2; ++e)
      old.tensor("blk.0." + std::string(matrix) + "." + std::to_string(e) + ".weight", {32, 32});
  TempGguf file(old.spec);
  const auto spec = model::read_model_spec(file.path);
  const auto checkpoint = model::open_checkpoint(file.path, spec);
  EXPECT_EQ(checkpoint.tensor(model::expert_tensor(spec, 0, 1, model::ExpertMatrix::down)).name,
            "blk.0.ffn_down.1.weight");
}

}  // namespace
