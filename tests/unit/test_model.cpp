#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "moed/model/chat_template.hpp"
#include "moed/model/checkpoint.hpp"
#include "moed/model/model_spec.hpp"
#include "moed/model/safetensors.hpp"
#include "moed/model/tokenizer.hpp"

namespace fs = std::filesystem;
using namespace moed::model;
using nlohmann::json;

namespace {

const fs::path kModels = MOED_TEST_MODELS;

// A scratch directory removed when the test ends.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name) {
    path = fs::temp_directory_path() / ("moed-test-" + name + "-" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

void write_safetensors(const fs::path& path, const std::string& header, std::size_t data_bytes) {
  std::ofstream out(path, std::ios::binary);
  const std::uint64_t len = header.size();
  out.write(reinterpret_cast<const char*>(&len), 8);
  out << header << std::string(data_bytes, '\0');
}

// Runs f, expects a std::exception whose message contains every one of `parts`.
template <typename F>
void expect_error(F&& f, std::initializer_list<std::string> parts) {
  try {
    f();
    ADD_FAILURE() << "expected an error";
  } catch (const std::exception& e) {
    for (const auto& part : parts)
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos)
          << "message '" << e.what() << "' lacks '" << part << "'";
  }
}

fs::path copy_model(const std::string& name, const fs::path& to) {
  fs::copy(kModels / name, to, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  return to;
}

void edit_config(const fs::path& dir, const std::function<void(json&)>& edit) {
  json config;
  std::ifstream(dir / "config.json") >> config;
  edit(config);
  std::ofstream(dir / "config.json") << config.dump(2);
}

}  // namespace

TEST(Safetensors, ReadsAValidFile) {
  TempDir dir("st-valid");
  write_safetensors(
      dir.path / "a.safetensors",
      R"({"__metadata__":{"format":"pt"},"w":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,12]}})",
      12);
  SafetensorsFile file(dir.path / "a.safetensors");
  const auto& w = file.tensors().at("w");
  EXPECT_EQ(w.dtype, moed::kernels::DType::bf16);
  EXPECT_EQ(w.shape, (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(w.nbytes, 12u);
}

TEST(Safetensors, CorruptFilesGiveClearErrors) {
  TempDir dir("st-corrupt");
  const auto p = dir.path / "bad.safetensors";
  auto check = [&](const std::string& header, std::size_t data,
                   std::initializer_list<std::string> parts) {
    write_safetensors(p, header, data);
    expect_error([&] { SafetensorsFile file(p); }, parts);
  };
  check(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8,
        {"bad.safetensors", "'w'", "outside the data section"});
  check(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,12]}})", 16, {"'w'", "needs 16"});
  check(R"({"w":{"dtype":"I9","shape":[4],"data_offsets":[0,16]}})", 16,
        {"'w'", "dtype I9 is not supported"});
  check(
      R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
      16, {"overlap"});
  check(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16})", 16, {"not valid JSON"});
  check(R"({"w":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})", 16,
        {"non-integer dimension"});
  check(R"([1,2,3])", 0, {"not a JSON object"});

  std::ofstream(p, std::ios::binary) << "abc";
  expect_error([&] { SafetensorsFile file(p); }, {"too short"});
  {
    std::ofstream out(p, std::ios::binary);
    const std::uint64_t huge = 1ull << 40;
    out.write(reinterpret_cast<const char*>(&huge), 8);
    out << "{}";
  }
  expect_error([&] { SafetensorsFile file(p); }, {"header length", "truncated or corrupt"});
}

TEST(Safetensors, TruncatedModelFileIsRejected) {
  TempDir dir("truncated");
  copy_model("tiny-f32", dir.path / "m");
  const auto file = dir.path / "m" / "model.safetensors";
  fs::resize_file(file, fs::file_size(file) / 2);
  const auto spec = ModelSpec::from_config(dir.path / "m");
  expect_error([&] { Checkpoint c(dir.path / "m", spec); }, {"model.safetensors", "truncated"});
}

TEST(ModelSpec, ReadsTheTinyConfig) {
  const auto spec = ModelSpec::from_config(kModels / "tiny-f32");
  EXPECT_EQ(spec.vocab_size, 512);
  EXPECT_EQ(spec.hidden_size, 256);
  EXPECT_EQ(spec.num_layers, 4);
  EXPECT_EQ(spec.num_experts, 8);
  EXPECT_EQ(spec.experts_per_token, 2);
  EXPECT_EQ(spec.attention.kv_heads, 4);
  EXPECT_EQ(spec.attention.head_dim, 32);
  EXPECT_EQ(spec.eos_token_ids, std::vector<std::int64_t>{2});
}

TEST(ModelSpec, BadConfigsNameTheKey) {
  TempDir dir("config");
  copy_model("tiny-f32", dir.path);
  auto expect_config_error = [&](const std::function<void(json&)>& edit,
                                 std::initializer_list<std::string> parts) {
    TempDir copy("config-copy");
    copy_model("tiny-f32", copy.path);
    edit_config(copy.path, edit);
    expect_error([&] { ModelSpec::from_config(copy.path); }, parts);
  };
  expect_config_error([](json& c) { c["model_type"] = "llama"; }, {"model_type", "'llama'"});
  expect_config_error([](json& c) { c["hidden_size"] = -3; },
                      {"config.json", "'hidden_size'", "-3"});
  expect_config_error([](json& c) { c.erase("num_local_experts"); },
                      {"'num_local_experts'", "missing"});
  expect_config_error([](json& c) { c["num_key_value_heads"] = 3; }, {"'num_key_value_heads'"});
  expect_config_error([](json& c) { c["num_experts_per_tok"] = 9; }, {"'num_experts_per_tok'"});
  expect_config_error([](json& c) { c["eos_token_id"] = 100000; }, {"'eos_token_id'"});
  std::ofstream(dir.path / "config.json") << "{ not json";
  expect_error([&] { ModelSpec::from_config(dir.path); }, {"config.json", "not valid JSON"});
  expect_error([&] { ModelSpec::from_config("/nonexistent"); },
               {"/nonexistent: no such directory"});
}

TEST(ModelSpec, FamilyKeysAreValidatedByName) {
  auto expect_family_error = [&](const char* model, const std::function<void(json&)>& edit,
                                 std::initializer_list<std::string> parts) {
    TempDir copy("family-config");
    copy_model(model, copy.path);
    edit_config(copy.path, edit);
    expect_error([&] { ModelSpec::from_config(copy.path); }, parts);
  };
  expect_family_error("tiny-deepseek_v3", [](json& c) { c["n_group"] = 3; },
                      {"'n_group'", "does not divide", "n_routed_experts"});
  expect_family_error("tiny-deepseek_v3", [](json& c) { c["topk_group"] = 9; },
                      {"'topk_group'", "exceeds n_group"});
  expect_family_error("tiny-deepseek_v2", [](json& c) { c["topk_method"] = "noaux"; },
                      {"'topk_method'", "'noaux'"});
  expect_family_error("tiny-deepseek_v2", [](json& c) { c.erase("kv_lora_rank"); },
                      {"'kv_lora_rank'", "missing"});
  expect_family_error("tiny-deepseek_v3", [](json& c) { c["rope_scaling"]["type"] = "linear"; },
                      {"rope_scaling.type", "'linear'"});
  expect_family_error("tiny-deepseek_v3", [](json& c) { c["rope_scaling"]["factor"] = -1; },
                      {"rope_scaling.factor", "-1"});
  expect_family_error("tiny-deepseek_v3", [](json& c) { c["attention_bias"] = true; },
                      {"'attention_bias'", "not supported"});
  expect_family_error("tiny-qwen3_moe", [](json& c) { c["mlp_only_layers"] = {7}; },
                      {"'mlp_only_layers'", "[0, 3)"});
  expect_family_error("tiny-qwen3_moe", [](json& c) { c["use_sliding_window"] = true; },
                      {"'use_sliding_window'"});
  expect_family_error("tiny-qwen2_moe", [](json& c) { c.erase("moe_intermediate_size"); },
                      {"'moe_intermediate_size'", "missing"});
  expect_family_error("tiny-olmoe", [](json& c) { c["num_experts_per_tok"] = 99; },
                      {"'num_experts_per_tok'", "num_experts"});
  expect_family_error("tiny-f32",
                      [](json& c) {
                        c["rope_scaling"] = {{"rope_type", "dynamic"}};
                      },
                      {"rope_scaling.type", "'dynamic'"});
}

// Keys left out take the config classes' defaults; null where transformers tests `is not None`.
TEST(ModelSpec, FamilyDefaultsFollowTheConfigClasses) {
  auto spec_after = [](const char* model, const std::function<void(json&)>& edit) {
    TempDir copy("family-defaults");
    copy_model(model, copy.path);
    edit_config(copy.path, edit);
    return ModelSpec::from_config(copy.path);
  };
  const auto v3 = spec_after("tiny-deepseek_v3", [](json& c) {
    c.erase("n_group");
    c.erase("topk_group");
    c.erase("first_k_dense_replace");
    c["n_shared_experts"] = nullptr;
  });
  EXPECT_EQ(v3.router.n_group, 8);
  EXPECT_EQ(v3.router.topk_group, 4);
  EXPECT_EQ(v3.layers[2].ffn, FfnKind::dense);  // first_k_dense_replace 3
  EXPECT_EQ(v3.shared_intermediate_size, 0);
  EXPECT_EQ(
      spec_after("tiny-deepseek_v2", [](json& c) { c.erase("q_lora_rank"); }).attention.q_lora_rank,
      1536);
  // transformers reads YaRN's betas and mscales with `or`: 0 is the default.
  const auto zero_beta =
      spec_after("tiny-deepseek_v3", [](json& c) { c["rope_scaling"]["beta_fast"] = 0; });
  EXPECT_EQ(zero_beta.rope.yarn_beta_fast, 32);
}

// transformers' _compute_yarn_parameters on DeepSeek's numbers (dim 64, base 1e4, original
// context 4096, factor 40, betas 32/1): the ramp runs from 10 to 23; below it frequencies are
// kept, above it divided by the factor (values computed by hand from the formula).
TEST(ModelSpec, YarnFrequenciesFollowTransformers) {
  RopeSpec rope;
  rope.dim = 64;
  rope.theta = 1e4;
  rope.yarn_factor = 40;
  rope.yarn_original_max_positions = 4096;
  const auto inv = rope.inverse_frequencies();
  ASSERT_EQ(inv.size(), 32u);
  EXPECT_DOUBLE_EQ(inv[0], 1.0);
  EXPECT_NEAR(inv[10], std::pow(1e4, -20.0 / 64), 1e-15);
  EXPECT_NEAR(inv[10], 5.623413e-2, 1e-8);
  EXPECT_NEAR(inv[11], 3.900693e-2, 1e-8);  // 1/13 of the way down the ramp
  EXPECT_NEAR(inv[31], std::pow(1e4, -62.0 / 64) / 40, 1e-18);
  EXPECT_NEAR(inv[31], 3.333804e-6, 1e-12);
}

// Checked deliberately with fuzz_model_config: each of these got past from_config as something
// other than an error naming the key (a json type_error, a zero head_dim, sizes whose products
// overflow int64 later, a stack overflow writing a deeply nested value into the message).
TEST(ModelSpec, HostileValuesAreErrorsNamingTheKey) {
  auto expect_config_error = [&](const std::function<void(json&)>& edit,
                                 std::initializer_list<std::string> parts) {
    TempDir copy("config-hostile");
    copy_model("tiny-f32", copy.path);
    edit_config(copy.path, edit);
    try {
      ModelSpec::from_config(copy.path);
      ADD_FAILURE() << "accepted";
    } catch (const std::runtime_error& e) {
      for (const auto& part : parts)
        EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  expect_config_error([](json& c) { c["tie_word_embeddings"] = 1; },
                      {"'tie_word_embeddings'", "true or false"});
  expect_config_error([](json& c) { c["num_attention_heads"] = 512; }, {"'head_dim'"});
  expect_config_error([](json& c) { c["vocab_size"] = 4294967296; }, {"'vocab_size'", "2^31"});
  expect_config_error([](json& c) { c["num_local_experts"] = 4294967296; },
                      {"'num_local_experts'"});
  expect_config_error([](json& c) { c["intermediate_size"] = 4611686018427387904; },
                      {"'intermediate_size'", "2^31"});
  expect_config_error(
      [](json& c) {
        c["intermediate_size"] = 2147483647;
        c["hidden_size"] = 2147483646;
        c["num_attention_heads"] = 1;
        c["num_key_value_heads"] = 1;
        c["head_dim"] = 2;
      },
      {"'intermediate_size'", "2^63"});
  expect_config_error([](json& c) { c["num_hidden_layers"] = 100000; },
                      {"'num_hidden_layers'", "exceeds 65536"});
  expect_config_error(
      [](json& c) {
        c["num_hidden_layers"] = 60000;
        c["num_local_experts"] = 1000;
      },
      {"'num_local_experts'", "expert blocks"});
  expect_config_error([](json& c) { c["hidden_act"] = "gelu"; }, {"'hidden_act'", "'gelu'"});
  expect_config_error(
      [](json& c) {
        c["num_attention_heads"] = 1;
        c["num_key_value_heads"] = 1;
        c["head_dim"] = 4611686018427387904;
      },
      {"'head_dim'", "2^31"});
  TempDir deep("config-deep");
  copy_model("tiny-f32", deep.path);
  const std::size_t depth = 1000000;
  std::ofstream(deep.path / "config.json")
      << R"({"model_type": "mixtral", "vocab_size": )" << std::string(depth, '[')
      << std::string(depth, ']') << "}";
  expect_error([&] { ModelSpec::from_config(deep.path); }, {"'vocab_size'", "an array"});
}

TEST(Checkpoint, ConfigThatDisagreesWithTensorsNamesTheTensor) {
  TempDir dir("disagree");
  copy_model("tiny-f32", dir.path);
  edit_config(dir.path, [](json& c) { c["intermediate_size"] = 384; });
  auto spec = ModelSpec::from_config(dir.path);
  expect_error([&] { Checkpoint c(dir.path, spec); },
               {"model.safetensors", "block_sparse_moe.experts.", "[512, 256]", "[384, 256]"});

  edit_config(dir.path, [](json& c) {
    c["intermediate_size"] = 512;
    c["num_hidden_layers"] = 5;
  });
  spec = ModelSpec::from_config(dir.path);
  expect_error([&] { Checkpoint c(dir.path, spec); }, {"model.layers.4.", "missing"});

  edit_config(dir.path, [](json& c) { c["num_hidden_layers"] = 3; });
  spec = ModelSpec::from_config(dir.path);
  expect_error([&] { Checkpoint c(dir.path, spec); }, {"unexpected tensor", "model.layers.3."});
}

TEST(Checkpoint, ReadsShardsThroughTheIndex) {
  const auto spec = ModelSpec::from_config(kModels / "tiny-f32-sharded");
  Checkpoint sharded(kModels / "tiny-f32-sharded", spec);
  EXPECT_EQ(sharded.paths().size(), 3u);
  Checkpoint single(kModels / "tiny-f32", spec);
  EXPECT_EQ(sharded.total_bytes(), single.total_bytes());
  const auto& a = sharded.tensor("model.layers.3.block_sparse_moe.experts.7.w2.weight");
  const auto& b = single.tensor("model.layers.3.block_sparse_moe.experts.7.w2.weight");
  EXPECT_EQ(std::memcmp(sharded.data(a), single.data(b), a.nbytes), 0);
}

// Rewrites a safetensors file's header (tensor names, shapes), keeping its data as it is.
void edit_header(const fs::path& file, const std::function<void(json&)>& edit) {
  std::ifstream in(file, std::ios::binary);
  std::uint64_t len = 0;
  in.read(reinterpret_cast<char*>(&len), 8);
  std::string header(len, '\0');
  in.read(header.data(), static_cast<std::streamsize>(len));
  const std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  in.close();
  json parsed = json::parse(header);
  edit(parsed);
  header = parsed.dump();
  len = header.size();
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(&len), 8);
  out << header << data;
}

void rename_tensor(json& header, const std::string& from, const std::string& to) {
  header[to] = header[from];
  header.erase(from);
}

TEST(Checkpoint, Fp8WeightsComeWithTheirBlockScales) {
  const auto spec = ModelSpec::from_config(kModels / "tiny-qwen3_moe-fp8");
  EXPECT_EQ(spec.fp8_block_rows, 32);
  EXPECT_EQ(spec.fp8_block_cols, 48);
  Checkpoint checkpoint(kModels / "tiny-qwen3_moe-fp8", spec);
  const auto& down = checkpoint.tensor("model.layers.0.mlp.experts.3.down_proj.weight");
  EXPECT_EQ(down.dtype, moed::kernels::DType::f8_e4m3);
  const auto* scales = checkpoint.block_scales(down);
  ASSERT_NE(scales, nullptr);
  EXPECT_EQ(scales->name, "model.layers.0.mlp.experts.3.down_proj.weight_scale_inv");
  EXPECT_EQ(scales->dtype, moed::kernels::DType::bf16);
  EXPECT_EQ(scales->shape, (std::vector<std::int64_t>{4, 2}));  // [128, 64] in [32, 48] blocks
  EXPECT_EQ(checkpoint.block_scales(checkpoint.tensor("model.layers.0.mlp.gate.weight")), nullptr);
}

TEST(Checkpoint, Fp8WeightsWithoutUsableScalesAreRefusedByName) {
  TempDir dir("fp8");
  const fs::path model = copy_model("tiny-qwen3_moe-fp8", dir.path / "m");
  const fs::path weights = model / "model.safetensors";
  const std::string down = "model.layers.0.mlp.experts.3.down_proj.weight";

  // The config says how the scales are laid out; without it they cannot be read.
  edit_config(model, [](json& c) { c.erase("quantization_config"); });
  expect_error([&] { Checkpoint c(model, ModelSpec::from_config(model)); },
               {"model.safetensors", "F8_E4M3", "quantization_config"});
  copy_model("tiny-qwen3_moe-fp8", model);
  // Blocks the scales' grid does not fit.
  edit_config(model, [](json& c) { c["quantization_config"]["weight_block_size"] = {64, 48}; });
  expect_error([&] { Checkpoint c(model, ModelSpec::from_config(model)); },
               {"_scale_inv", "weight_block_size", "[64, 48]"});
  copy_model("tiny-qwen3_moe-fp8", model);
  const auto spec = ModelSpec::from_config(model);
  edit_header(weights, [&](json& h) { rename_tensor(h, down + "_scale_inv", down + "_scale"); });
  expect_error([&] { Checkpoint c(model, spec); }, {down, down + "_scale_inv", "missing"});
  copy_model("tiny-qwen3_moe-fp8", model);
  // Scales whose weight is not in FP8.
  edit_header(weights, [&](json& h) {
    rename_tensor(h, down + "_scale_inv", "model.embed_tokens.weight_scale_inv");
  });
  expect_error([&] { Checkpoint c(model, spec); },
               {"model.embed_tokens.weight_scale_inv", "not an F8_E4M3 tensor"});
}

TEST(ModelSpec, QuantizationOtherThanFineGrainedFp8IsRefusedByKey) {
  TempDir dir("quant");
  const fs::path model = copy_model("tiny-qwen3_moe-fp8", dir.path / "m");
  edit_config(model, [](json& c) { c["quantization_config"]["quant_method"] = "gptq"; });
  expect_error([&] { ModelSpec::from_config(model); },
               {"'quantization_config.quant_method'", "'gptq'", "GGUF"});
  edit_config(model, [](json& c) {
    c["quantization_config"]["quant_method"] = "fp8";
    c["quantization_config"].erase("weight_block_size");
  });
  expect_error([&] { ModelSpec::from_config(model); },
               {"'quantization_config.weight_block_size'", "per-tensor"});
  edit_config(model, [](json& c) {
    c["quantization_config"]["weight_block_size"] = {128, 128};
    c["quantization_config"]["fmt"] = "e5m2";
  });
  expect_error([&] { ModelSpec::from_config(model); }, {"'quantization_config.fmt'", "e5m2"});
  edit_config(model, [](json& c) {
    c["quantization_config"]["fmt"] = "e4m3";
    c["quantization_config"]["weight_block_size"] = {0, 128};
  });
  expect_error([&] { ModelSpec::from_config(model); },
               {"'quantization_config.weight_block_size'", "positive"});
}

TEST(Checkpoint, MissingWeightsAreReported) {
  TempDir dir("noweights");
  fs::copy_file(kModels / "tiny-f32" / "config.json", dir.path / "config.json");
  const auto spec = ModelSpec::from_config(dir.path);
  expect_error([&] { Checkpoint c(dir.path, spec); }, {"no *.safetensors"});
}

// Llama-style: SentencePiece BPE with byte fallback, Prepend/Replace normalizer, BOS template.
std::string llama_tokenizer_json() {
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    vocab[name] = 3 + b;
  }
  int next = 259;
  for (const char* piece : {"\u2581", "h", "e", "l", "o", "w", "r", "d", "\u2581h", "ll",
                            "\u2581he", "\u2581hell", "\u2581hello"})
    vocab[piece] = next++;
  json t = {{"added_tokens",
             {{{"id", 0}, {"content", "<unk>"}, {"special", true}},
              {{"id", 1}, {"content", "<s>"}, {"special", true}},
              {{"id", 2}, {"content", "</s>"}, {"special", true}}}},
            {"normalizer",
             {{"type", "Sequence"},
              {"normalizers",
               {{{"type", "Prepend"}, {"prepend", "\u2581"}},
                {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}}}}}},
            {"pre_tokenizer", nullptr},
            {"post_processor",
             {{"type", "TemplateProcessing"},
              {"single",
               {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
              {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
            {"decoder",
             {{"type", "Sequence"},
              {"decoders",
               {{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}},
                {{"type", "ByteFallback"}},
                {{"type", "Fuse"}},
                {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
            {"model",
             {{"type", "BPE"},
              {"unk_token", "<unk>"},
              {"byte_fallback", true},
              {"fuse_unk", true},
              {"vocab", vocab},
              {"merges", {"\u2581 h", "l l", "\u2581h e", "\u2581he ll", "\u2581hell o"}}}}};
  return t.dump();
}

TEST(Tokenizer, LlamaStyleEncodesKnownStrings) {
  const auto tok = Tokenizer::from_json(llama_tokenizer_json());
  EXPECT_EQ(tok.encode("hello"), (std::vector<std::int32_t>{1, 271}));
  // "▁hello▁world": merges build ▁hello; "world" has no merges, so it stays in characters.
  EXPECT_EQ(tok.encode("hello world"),
            (std::vector<std::int32_t>{1, 271, 259, 264, 263, 265, 262, 266}));
  // é is not in the vocabulary: byte fallback to <0xC3><0xA9>.
  EXPECT_EQ(tok.encode("h\xc3\xa9", false), (std::vector<std::int32_t>{267, 3 + 0xc3, 3 + 0xa9}));
  // Special tokens in the text are matched before the model runs.
  EXPECT_EQ(tok.encode("<s>hello</s>", false), (std::vector<std::int32_t>{1, 271, 2}));
  EXPECT_EQ(tok.encode("", true), (std::vector<std::int32_t>{1}));
}

TEST(Tokenizer, TextOutsideAStrictVocabularyIsUnencodable) {
  auto t = json::parse(llama_tokenizer_json());
  t["model"]["byte_fallback"] = false;
  t["model"]["unk_token"] = nullptr;
  const auto tok = Tokenizer::from_json(t.dump());
  EXPECT_EQ(tok.encode("hello", false), (std::vector<std::int32_t>{271}));
  try {
    tok.encode("h\xc3\xa9", false);
    ADD_FAILURE() << "expected UnencodableText";
  } catch (const UnencodableText& e) {
    EXPECT_NE(std::string(e.what()).find("'\xc3\xa9' is not in the vocabulary"), std::string::npos)
        << e.what();
  }
}

TEST(Tokenizer, LlamaStyleDecodes) {
  const auto tok = Tokenizer::from_json(llama_tokenizer_json());
  const std::vector<std::int32_t> ids = {1, 271, 259, 264, 263, 265, 262, 266};
  EXPECT_EQ(tok.decode(ids), "hello world");
  EXPECT_EQ(tok.decode(ids, false), "<s> hello world");
  EXPECT_EQ(tok.decode(std::vector<std::int32_t>{267, 3 + 0xc3, 3 + 0xa9}), "h\xc3\xa9");
  // A lone continuation byte is invalid UTF-8 and decodes to U+FFFD.
  EXPECT_EQ(tok.decode(std::vector<std::int32_t>{3 + 0xa9}), "\xef\xbf\xbd");
  // Ids past the tokenizer's vocabulary (a model's padded embedding rows) decode to nothing.
  EXPECT_EQ(tok.decode(std::vector<std::int32_t>{267, 9999, 3 + 0xc3, 3 + 0xa9}), "h\xc3\xa9");
}

std::string bytelevel_tokenizer_json() {
  // GPT-2's byte map: printable bytes map to themselves; 'Ġ' (U+0120) stands for the space.
  json vocab;
  std::vector<char32_t> chars(256);
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
    chars[b] = printable ? b : next++;
  }
  for (int b = 0; b < 256; ++b) {
    std::string s;
    const char32_t c = chars[b];
    if (c < 0x80) {
      s += static_cast<char>(c);
    } else {
      s += static_cast<char>(0xc0 | (c >> 6));
      s += static_cast<char>(0x80 | (c & 0x3f));
    }
    vocab[s] = b;
  }
  vocab["\u0120t"] = 256;
  vocab["he"] = 257;
  vocab["\u0120the"] = 258;
  vocab["<|endoftext|>"] = 259;
  json t = {
      {"added_tokens", {{{"id", 259}, {"content", "<|endoftext|>"}, {"special", true}}}},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"post_processor", {{"type", "ByteLevel"}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model",
       {{"type", "BPE"},
        {"vocab", vocab},
        {"merges", json::array({json::array({"\u0120", "t"}), json::array({"h", "e"}),
                                json::array({"\u0120t", "he"})})}}}};
  return t.dump();
}

TEST(Tokenizer, ByteLevelEncodesAndDecodes) {
  const auto tok =
      Tokenizer::from_json(bytelevel_tokenizer_json(), R"({"eos_token":"<|endoftext|>"})");
  // "the" -> t + he ; " the" -> Ġthe
  EXPECT_EQ(tok.encode("the the"), (std::vector<std::int32_t>{'t', 257, 258}));
  EXPECT_EQ(tok.encode("the<|endoftext|>"), (std::vector<std::int32_t>{'t', 257, 259}));
  EXPECT_EQ(tok.eos_id(), 259);
  EXPECT_EQ(tok.decode(std::vector<std::int32_t>{'t', 257, 258}), "the the");
  const std::string text = "Caf\xc3\xa9 \xe2\x82\xac 42!\n";
  EXPECT_EQ(tok.decode(tok.encode(text)), text);
}

// transformers' LlamaTokenizerFast / GPTNeoXTokenizerFast rebuild the post-processor from
// add_bos_token / add_eos_token (DeepSeek-V3's tokenizer.json has a ByteLevel one and gets its
// BOS this way); other classes keep the file's post-processor.
TEST(Tokenizer, LlamaAndGptNeoXClassesTakeBosAndEosFromTheirFlags) {
  const std::string file = bytelevel_tokenizer_json();
  auto encode = [&](const std::string& config) {
    return Tokenizer::from_json(file, config).encode("the", true);
  };
  const std::vector<std::int32_t> text{'t', 257};
  const std::vector<std::int32_t> with_bos{259, 't', 257};
  const std::string tokens = R"("bos_token":"<|endoftext|>","eos_token":"<|endoftext|>")";
  auto with = [&](const std::string& rest) { return "{" + tokens + "," + rest + "}"; };
  EXPECT_EQ(encode(with(R"("tokenizer_class":"LlamaTokenizerFast")")), with_bos);
  EXPECT_EQ(encode(with(R"("tokenizer_class":"LlamaTokenizer")")), with_bos);
  EXPECT_EQ(encode(with(R"("tokenizer_class":"LlamaTokenizer","add_bos_token":false)")), text);
  EXPECT_EQ(encode(with(R"("tokenizer_class":"LlamaTokenizerFast","add_bos_token":null)")), text);
  EXPECT_EQ(encode(with(R"("tokenizer_class":"GPTNeoXTokenizerFast")")), text);
  EXPECT_EQ(encode(with(R"("tokenizer_class":"GPTNeoXTokenizer","add_eos_token":true)")),
            (std::vector<std::int32_t>{'t', 257, 259}));
  EXPECT_EQ(encode(with(R"("tokenizer_class":"Qwen2Tokenizer","add_bos_token":true)")), text);
  EXPECT_EQ(encode(with(R"("tokenizer_class":null)")), text);
  // Left out, the special tokens are the class's defaults (GPT-NeoX's <|endoftext|>).
  EXPECT_EQ(encode(R"({"tokenizer_class":"GPTNeoXTokenizer","add_eos_token":true})"),
            (std::vector<std::int32_t>{'t', 257, 259}));
  EXPECT_EQ(Tokenizer::from_json(file, with(R"("tokenizer_class":"LlamaTokenizerFast")"))
                .encode("the", false),
            text);
  // The rule replaces a post-processor that adds BOS, too; other classes keep it.
  auto templated = nlohmann::json::parse(file);
  templated["post_processor"] = nlohmann::json::parse(R"({"type": "TemplateProcessing",
      "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                 {"Sequence": {"id": "A", "type_id": 0}}],
      "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [259]}}})");
  const auto by_template = [&](const std::string& config) {
    return Tokenizer::from_json(templated.dump(), config).encode("the", true);
  };
  EXPECT_EQ(by_template(with(R"("tokenizer_class":"Qwen2Tokenizer")")), with_bos);
  EXPECT_EQ(by_template(with(R"("tokenizer_class":"LlamaTokenizerFast","add_bos_token":false)")),
            text);
  auto rejected = [&](const std::string& config, const std::string& key) {
    try {
      Tokenizer::from_json(file, config);
      ADD_FAILURE() << "accepted " << config;
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
    }
  };
  rejected(R"({"tokenizer_class":"LlamaTokenizerFast","bos_token":"<missing>"})", "add_bos_token");
  // Llama's default BOS, <s>, is not in this vocabulary.
  rejected(R"({"tokenizer_class":"LlamaTokenizerFast"})", "bos_token '<s>'");
  rejected(with(R"("tokenizer_class":"LlamaTokenizerFast","add_eos_token":"yes")"),
           "add_eos_token");
}

// GPT-2's split (what ByteLevel with use_regex runs) as a Split pre-tokenizer, so the pieces
// come out unmapped.
std::vector<std::string> gpt2_split(std::string_view text) {
  const nlohmann::json tokenizer = {
      {"model", {{"type", "BPE"}, {"vocab", {{"a", 0}}}, {"merges", nlohmann::json::array()}}},
      {"pre_tokenizer",
       {{"type", "Split"}, {"pattern", {{"Regex", kGpt2SplitPattern}}}, {"behavior", "Isolated"}}}};
  return Tokenizer::from_json(tokenizer.dump()).pre_tokenize(text);
}

TEST(Tokenizer, Gpt2SplitMatchesTheRegex) {
  const auto split = gpt2_split;
  EXPECT_EQ(
      split("Hello world! It's  fine.\n"),
      (std::vector<std::string>{"Hello", " world", "!", " It", "'s", " ", " fine", ".", "\n"}));
  EXPECT_EQ(split("abc123 x  "), (std::vector<std::string>{"abc", "123", " x", "  "}));
  EXPECT_EQ(split("we'll ?!"), (std::vector<std::string>{"we", "'ll", " ?!"}));
  EXPECT_EQ(split("\xc3\xa9t\xc3\xa9 caf\xc3\xa9"),
            (std::vector<std::string>{"\xc3\xa9t\xc3\xa9", " caf\xc3\xa9"}));
}

// The pieces the pre-tokenizers of each family (their published tokenizer.json patterns, typed
// into the script) cut tricky text into (contractions, digit
// runs, CJK, Devanagari, emoji, whitespace runs, \r\n, decomposed accents), as Python's regex
// module computes them from the same patterns (scripts/make-pretokenizer-golden.py).
TEST(Tokenizer, SplitPreTokenizersMatchAnIndependentUnicodeRegex) {
  nlohmann::json golden;
  std::ifstream(fs::path(MOED_GOLDEN_DIR) / "pretokenizer-splits.json") >> golden;
  ASSERT_GE(golden.size(), 5u);
  for (const auto& [family, entry] : golden.items()) {
    // Every piece is then encodable byte by byte: a vocabulary of the 256 mapped bytes.
    nlohmann::json vocab = nlohmann::json::object();
    int next_id = 0;
    for (const auto& c : entry["cases"])
      for (const auto& piece : c["pieces"]) {
        const auto text = piece.get<std::string>();
        for (std::size_t i = 0; i < text.size();) {
          const auto lead = static_cast<unsigned char>(text[i]);
          const std::size_t n = lead < 0x80 ? 1 : lead < 0xe0 ? 2 : lead < 0xf0 ? 3 : 4;
          const auto ch = text.substr(i, n);
          if (!vocab.contains(ch)) vocab[ch] = next_id++;
          i += n;
        }
      }
    const nlohmann::json tokenizer = {
        {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}},
        {"normalizer", entry["normalizer"]},
        {"pre_tokenizer", entry["pre_tokenizer"]},
        {"decoder", {{"type", "ByteLevel"}}}};
    const auto tok = Tokenizer::from_json(tokenizer.dump());
    for (const auto& c : entry["cases"]) {
      const auto text = c["text"].get<std::string>();
      EXPECT_EQ(tok.pre_tokenize(text), c["pieces"].get<std::vector<std::string>>())
          << family << ": " << text;
    }
  }
}

TEST(Tokenizer, SplitBehaviorsAndNormalizers) {
  auto with = [](const std::string& pre, const std::string& normalizer = "null") {
    return Tokenizer::from_json(R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]},
        "normalizer":)" + normalizer +
                                R"(,"pre_tokenizer":)" + pre + "}");
  };
  using Pieces = std::vector<std::string>;
  const std::string text = "a1b22c";
  auto split = [&](const char* behavior, bool invert = false) {
    return with(std::string(R"({"type":"Split","pattern":{"Regex":"\\d+"},"behavior":")") +
                behavior + R"(","invert":)" + (invert ? "true" : "false") + "}")
        .pre_tokenize(text);
  };
  EXPECT_EQ(split("Isolated"), (Pieces{"a", "1", "b", "22", "c"}));
  EXPECT_EQ(split("Removed"), (Pieces{"a", "b", "c"}));
  EXPECT_EQ(split("MergedWithPrevious"), (Pieces{"a1", "b22", "c"}));
  EXPECT_EQ(split("MergedWithNext"), (Pieces{"a", "1b", "22c"}));
  EXPECT_EQ(split("Removed", true), (Pieces{"1", "22"}));
  EXPECT_EQ(split("Isolated", true), (Pieces{"a", "1", "b", "22", "c"}));
  // One digit a match, so "22" is two adjacent matches: the MergedWith* rules merge only the
  // first of a run into its neighbour, Contiguous merges the run.
  auto single = [&](const char* behavior) {
    return with(std::string(R"({"type":"Split","pattern":{"Regex":"\\d"},"behavior":")") +
                behavior + "\"}")
        .pre_tokenize(text);
  };
  EXPECT_EQ(single("MergedWithPrevious"), (Pieces{"a1", "b2", "2", "c"}));
  EXPECT_EQ(single("MergedWithNext"), (Pieces{"a", "1b", "2", "2c"}));
  EXPECT_EQ(single("Contiguous"), (Pieces{"a", "1", "b", "22", "c"}));
  EXPECT_EQ(with(R"({"type":"Split","pattern":{"String":"."},"behavior":"Removed"})")
                .pre_tokenize("x.y.z"),
            (Pieces{"x", "y", "z"}));
  EXPECT_EQ(with(R"({"type":"Digits","individual_digits":true})").pre_tokenize("ab123"),
            (Pieces{"ab", "1", "2", "3"}));
  EXPECT_EQ(with(R"({"type":"Digits","individual_digits":false})").pre_tokenize("ab123c"),
            (Pieces{"ab", "123", "c"}));
  // Unicode numbers, as char::is_numeric: Arabic-Indic digits, superscript two, one half.
  EXPECT_EQ(with(R"({"type":"Digits","individual_digits":false})")
                .pre_tokenize("x\xd9\xa1\xd9\xa2y\xc2\xb2\xc2\xbd"),
            (Pieces{"x", "\xd9\xa1\xd9\xa2", "y", "\xc2\xb2\xc2\xbd"}));
  // An empty text gets no prefix space, as tokenizers prepends nothing to an empty string.
  EXPECT_TRUE(with(R"({"type":"ByteLevel","add_prefix_space":true})").pre_tokenize("").empty());
  // NFC composes e + U+0301 into U+00E9; NFKC also folds the superscript two and the ligature.
  const std::string decomposed = "cafe\xcc\x81 x\xc2\xb2 \xef\xac\x81";
  EXPECT_EQ(with("null", R"({"type":"NFC"})").pre_tokenize(decomposed),
            (Pieces{"caf\xc3\xa9 x\xc2\xb2 \xef\xac\x81"}));
  EXPECT_EQ(with("null", R"({"type":"NFKC"})").pre_tokenize(decomposed),
            (Pieces{"caf\xc3\xa9 x2 fi"}));
  EXPECT_EQ(with("null", R"({"type":"NFD"})").pre_tokenize("caf\xc3\xa9"),
            (Pieces{"cafe\xcc\x81"}));
  // Unicode classes, not the C library's: U+093E (a vowel sign, Mc) is not a letter, U+0966
  // (Devanagari zero, Nd) and U+00B2 (superscript two, No) are numbers.
  EXPECT_EQ(gpt2_split("\xe0\xa4\x95\xe0\xa4\xbe x\xc2\xb2 \xe0\xa5\xa6"),
            (std::vector<std::string>{"\xe0\xa4\x95", "\xe0\xa4\xbe", " x", "\xc2\xb2",
                                      " \xe0\xa5\xa6"}));
  // Invalid UTF-8 matches no class but is kept, as a piece of its own.
  EXPECT_EQ(gpt2_split("ab\xff"
                       "cd"),
            (std::vector<std::string>{"ab", "\xff", "cd"}));
}

TEST(Tokenizer, BadSplitPatternIsNamed) {
  try {
    Tokenizer::from_json(R"({"model":{"type":"BPE","vocab":{},"merges":[]},
        "pre_tokenizer":{"type":"Sequence","pretokenizers":[{"type":"Split",
        "pattern":{"Regex":"(unclosed"},"behavior":"Isolated"}]}})");
    FAIL() << "a bad regex loaded";
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("pre_tokenizer.pretokenizers[0].pattern"), std::string::npos) << what;
    EXPECT_NE(what.find("(unclosed"), std::string::npos) << what;
  }
  try {
    Tokenizer::from_json(R"({"model":{"type":"BPE","vocab":{},"merges":[]},
        "pre_tokenizer":{"type":"Split","pattern":{"Regex":"x"},"behavior":"Sideways"}})");
    FAIL() << "an unknown behavior loaded";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("Sideways"), std::string::npos) << e.what();
  }
}

TEST(Tokenizer, GeneratedTokenizersRoundTrip) {
  for (const char* model : {"tiny-f32", "tiny-bytelevel"}) {
    const auto tok = Tokenizer::from_model_dir(kModels / model);
    for (const std::string text : {"The capital of France is Paris.", "Hello world! How are you?",
                                   "unseen w\xc3\xb6rds \xe2\x9c\x93 and 12345"}) {
      const auto ids = tok.encode(text);
      EXPECT_EQ(tok.decode(ids), text) << model;
      for (auto id : ids) EXPECT_LT(id, 512);
    }
  }
}

// token_bytes is what each token adds to the text: joined, they give the decoded text (a
// decoder may drop a leading space, nothing else), byte-fallback tokens included.
TEST(Tokenizer, TokenBytesJoinIntoTheDecodedText) {
  for (const char* model :
       {"tiny-f32", "tiny-bytelevel", "tiny-qwen3_moe", "tiny-f32.gguf", "tiny-olmoe-f32.gguf"}) {
    const auto tok = load_tokenizer(kModels / model);
    const std::string text = "Hello {\"a\": [1, 2]}  w\xc3\xb6rds \xe2\x9c\x93 and 12345";
    const auto ids = tok.encode(text, false);
    std::string joined;
    for (const auto id : ids) joined += tok.token_bytes(id);
    EXPECT_EQ(tok.decode(ids), text) << model;
    EXPECT_TRUE(joined == text || joined == " " + text) << model << ": " << joined;
  }
}

TEST(Tokenizer, MissingOrBadTokenizerIsAClearError) {
  TempDir dir("notok");
  expect_error([&] { Tokenizer::from_model_dir(dir.path); }, {"tokenizer.json", "missing"});
  std::ofstream(dir.path / "tokenizer.json") << "{";
  expect_error([&] { Tokenizer::from_model_dir(dir.path); }, {"tokenizer.json", "not valid JSON"});
  expect_error([] { Tokenizer::from_json(R"({"model":{"type":"Unigram","vocab":[]}})"); },
               {"model.type", "Unigram"});
  expect_error(
      [] {
        Tokenizer::from_json(
            R"({"model":{"type":"BPE","vocab":{},"merges":[]},"pre_tokenizer":{"type":"Whitespace"}})");
      },
      {"pre_tokenizer", "Whitespace"});
}

// Found by fuzz_tokenizer: an id of 1121474836470 in the vocabulary was narrowed to int32 and
// sized the id table (gigabytes, then out of memory); a negative one indexed before it.
TEST(Tokenizer, IdsOutsideTheVocabularyAreRejectedBeforeAllocating) {
  for (const char* vocab : {R"({"a": 0, "b": 1121474836470})", R"({"a": 0, "b": 2147483647})",
                            R"({"a": 0, "b": -1})", R"({"a": 0, "b": "1"})"}) {
    const std::string tokenizer =
        std::string(R"({"model":{"type":"BPE","vocab":)") + vocab + R"(,"merges":[]}})";
    expect_error([&] { Tokenizer::from_json(tokenizer); }, {"model.vocab['b']", "not in [0, 2)"});
  }
  expect_error(
      [] {
        Tokenizer::from_json(
            R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"added_tokens":[{"id":5,"content":"<s>"}]})");
      },
      {"added_tokens", "id 5"});
}

// Found by fuzz_tokenizer: a vocabulary token shaped like a byte but not hex ("<0xZZ>") made
// the byte-fallback decoder throw std::invalid_argument from stoi; tokenizers decodes it as text.
TEST(Tokenizer, ByteFallbackDecodesNonHexByteTokensAsText) {
  const auto tok = Tokenizer::from_json(
      R"({"model":{"type":"BPE","vocab":{"<0xZZ>":0,"<0x41>":1,"<0x-1>":2,"b":3},"merges":[],)"
      R"("byte_fallback":true},"decoder":{"type":"ByteFallback"}})");
  const std::int32_t ids[] = {0, 1, 2, 3};
  EXPECT_EQ(tok.decode(ids), "<0xZZ>A<0x-1>b");
}

// Every template and conversation in chat-templates.json, rendered by Python's jinja2 the way
// transformers does (scripts/make-chat-golden.py): same text, or the same raise_exception.
TEST(ChatTemplate, MatchesJinja2OnPublishedTemplates) {
  nlohmann::ordered_json golden;
  std::ifstream(fs::path(MOED_GOLDEN_DIR) / "chat-templates.json") >> golden;
  ASSERT_GE(golden["cases"].size(), 40u);
  for (const auto& c : golden["cases"]) {
    const std::string name = c["template"].get<std::string>() + "/" + c["case"].get<std::string>();
    const ChatTemplate chat(
        golden["templates"][c["template"].get<std::string>()].get<std::string>(), name);
    if (c.contains("error")) {
      try {
        chat.render(c["context"]);
        ADD_FAILURE() << name << ": expected the template to raise";
      } catch (const ChatTemplateRejected& e) {
        EXPECT_EQ(e.what(), c["error"].get<std::string>()) << name;
      }
    } else {
      EXPECT_EQ(chat.render(c["context"]), c["expected"].get<std::string>()) << name;
    }
  }
}

TEST(ChatTemplate, BrokenTemplatesNameTheLineAndConstruct) {
  expect_error([] { ChatTemplate("a\n{% if x %}b", "t"); }, {"t line 2", "endif"});
  expect_error([] { ChatTemplate("{{ x | frobnicate }}", "t"); }, {"line 1", "frobnicate"});
  expect_error([] { ChatTemplate("\n\n{% macro m() %}{% endmacro %}", "t"); }, {"line 3", "macro"});
  expect_error([] { ChatTemplate("{{ 'unterminated }}", "t"); }, {"unclosed"});
  expect_error([] { ChatTemplate("{{ x + }}", "t"); }, {"expected a value"});
  expect_error([] { ChatTemplate("{% endfor %}", "t"); }, {"unexpected", "endfor"});
  // Errors while rendering name the line too and are not mistaken for raise_exception().
  const ChatTemplate bad("ok\n{{ messages[0].content.frob() }}", "t");
  nlohmann::ordered_json context = {{"messages", {{{"role", "user"}, {"content", "hi"}}}}};
  expect_error([&] { bad.render(context); }, {"t line 2", "frob"});
  const ChatTemplate undefined_access("{{ nothing.inside }}", "t");
  expect_error([&] { undefined_access.render(context); }, {"undefined"});
}

// Found by checking deliberately with fuzz_chat_template: parsing recursed once per nested
// bracket, "not", unary minus or block, and rendering once per operator in a chain, so any of
// these overflowed the stack (ASan: stack-overflow). Nesting is now bounded at parse time.
TEST(ChatTemplate, DeepNestingIsAParseErrorNotAStackOverflow) {
  const std::size_t n = 100000;
  auto repeat = [](const std::string& s, std::size_t times) {
    std::string out;
    for (std::size_t i = 0; i < times; ++i) out += s;
    return out;
  };
  for (const std::string& source :
       {"{{ " + repeat("(", n) + "1" + repeat(")", n) + " }}",
        "{{ " + repeat("[", n) + repeat("]", n) + " }}", "{{ " + repeat("not ", n) + "1 }}",
        "{{ " + repeat("-", n) + "1 }}", "{{ 1" + repeat(" + 1", n) + " }}",
        "{{ x" + repeat(".y", n) + " }}", repeat("{% if x %}", n) + "a" + repeat("{% endif %}", n)})
    expect_error([&] { ChatTemplate(source, "t"); }, {"t line 1", "deeper than 128 levels"});
  const ChatTemplate nested("{{ " + repeat("(", 100) + "1 + 2" + repeat(")", 100) + " }}" +
                                repeat("{% if true %}", 100) + "!" + repeat("{% endif %}", 100),
                            "t");
  EXPECT_EQ(nested.render(nlohmann::ordered_json::object()), "3!");
}
// Integer arithmetic past int64 was undefined behaviour (UBSan in fuzz_chat_template), and
// '*' on a string could ask for any amount of memory. Both are render errors now.
TEST(ChatTemplate, ArithmeticOverflowIsARenderError) {
  for (const char* source :
       {"{{ 9223372036854775807 + 1 }}", "{{ -9223372036854775807 - 2 }}",
        "{{ 4611686018427387904 * 2 }}", "{{ -(-9223372036854775807 - 1) }}",
        "{{ (-9223372036854775807 - 1) // -1 }}", "{{ 1e300 | int }}",
        "{{ 'ab' * 9223372036854775807 }}", "{{ (-9223372036854775807 - 1) | abs }}",
        "{{ [1] | tojson(indent=2147483647) }}", "{{ 'a\nb' | indent(9223372036854775807) }}"}) {
    const ChatTemplate chat(source, "t");
    expect_error([&] { chat.render(nlohmann::ordered_json::object()); }, {"t line 1"});
  }
  EXPECT_EQ(ChatTemplate("{{ range(9223372036854775806, 9223372036854775807, 5) | length }}", "t")
                .render(nlohmann::ordered_json::object()),
            "1");
  EXPECT_EQ(ChatTemplate("{{ 9223372036854775806 + 1 }}{{ 'ab' * 2 }}", "t")
                .render(nlohmann::ordered_json::object()),
            "9223372036854775807abab");
  // An empty string repeated any number of times is empty, at once (it used to loop 2^63 times).
  EXPECT_EQ(ChatTemplate("[{{ '' * 9223372036854775807 }}]", "t")
                .render(nlohmann::ordered_json::object()),
            "[]");
}

TEST(ChatTemplate, TinyModelsShipTheirTemplate) {
  const auto tokenizer = Tokenizer::from_model_dir(kModels / "tiny-f32");
  ASSERT_FALSE(tokenizer.chat_template().empty());
  const ChatTemplate chat(tokenizer.chat_template());
  nlohmann::ordered_json context = {{"messages", {{{"role", "user"}, {"content", "Hello"}}}},
                                    {"bos_token", "<s>"},
                                    {"eos_token", "</s>"},
                                    {"add_generation_prompt", true}};
  EXPECT_EQ(chat.render(context), "<s> [INST] Hello [/INST]");
}

TEST(ChatTemplate, FoundInEitherPlaceTransformersKeepsIt) {
  TempDir dir("chat-template");
  copy_model("tiny-f32", dir.path / "m");
  // tokenizer_config.json may hold a list of named templates; "default" is the chat one.
  json config;
  std::ifstream(dir.path / "m" / "tokenizer_config.json") >> config;
  config["chat_template"] = json::array(
      {{{"name", "tool_use"}, {"template", "tools"}}, {{"name", "default"}, {"template", "chat"}}});
  std::ofstream(dir.path / "m" / "tokenizer_config.json") << config.dump();
  EXPECT_EQ(Tokenizer::from_model_dir(dir.path / "m").chat_template(), "chat");
  EXPECT_EQ(Tokenizer::from_model_dir(dir.path / "m").bos_token(), "<s>");
  // A chat_template.jinja file beside it takes precedence (newer transformers write one).
  std::ofstream(dir.path / "m" / "chat_template.jinja") << "{{ messages[0].content }}";
  EXPECT_EQ(Tokenizer::from_model_dir(dir.path / "m").chat_template(), "{{ messages[0].content }}");
  config["chat_template"] = 7;
  std::ofstream(dir.path / "m" / "tokenizer_config.json") << config.dump();
  expect_error([&] { Tokenizer::from_model_dir(dir.path / "m"); }, {"chat_template"});
}
