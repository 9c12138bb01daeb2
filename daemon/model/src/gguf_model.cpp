#include "moed/model/gguf_model.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>

#include "config_parse.hpp"
#include "moed/kernels/quant.hpp"
#include "moed/model/tensor_names.hpp"

namespace moed::model {
namespace {

// llama.cpp's llama_expert_gating_func_type.
constexpr std::int64_t kGatingNone = 0;
constexpr std::int64_t kGatingSoftmax = 1;
constexpr std::int64_t kGatingSigmoid = 2;

// Builds the config.json that a GGUF file's metadata stands for, remembering which GGUF key each
// config key came from so that errors name the key the user's file has.
class ConfigTranslator {
 public:
  ConfigTranslator(const GgufFile& file, std::string arch)
      : file_(file), metadata_(file.metadata()), arch_(std::move(arch)) {}

  std::string key(const std::string& suffix) const { return arch_ + "." + suffix; }
  bool has(const std::string& gguf_key) const { return metadata_.contains(gguf_key); }
  std::int64_t integer_or(const std::string& gguf_key, std::int64_t fallback) const {
    return has(gguf_key) ? metadata_.get_integer(gguf_key) : fallback;
  }
  double float_or(const std::string& gguf_key, double fallback) const {
    return has(gguf_key) ? metadata_.get_float(gguf_key) : fallback;
  }
  std::string string_or(const std::string& gguf_key, const std::string& fallback) const {
    return has(gguf_key) ? metadata_.get_string(gguf_key) : fallback;
  }
  bool bool_or(const std::string& gguf_key, bool fallback) const {
    return has(gguf_key) ? metadata_.get_bool(gguf_key) : fallback;
  }

  // config[config_key] = the value at gguf_key, when the file has it (parse_config reports a
  // required key that is absent, under the GGUF name).
  void integer(const std::string& config_key, const std::string& gguf_key) {
    names_[config_key] = gguf_key;
    if (has(gguf_key)) config_[config_key] = metadata_.get_integer(gguf_key);
  }
  void set(const std::string& config_key, nlohmann::json value, const std::string& gguf_key) {
    names_[config_key] = gguf_key;
    config_[config_key] = std::move(value);
  }
  // Names a nested config key ("rope_scaling.beta_fast") after the GGUF key it came from.
  void name(const std::string& config_path, const std::string& gguf_key) {
    names_[config_path] = gguf_key;
  }
  // A float that must be finite (GGUF floats may be inf or NaN, which JSON configs cannot be).
  double finite_or(const std::string& gguf_key, double fallback) const {
    const double value = float_or(gguf_key, fallback);
    if (!std::isfinite(value))
      fail(gguf_key, "expected a finite number, got " + std::to_string(value));
    return value;
  }

  [[noreturn]] void fail(const std::string& gguf_key, const std::string& what) const {
    throw std::runtime_error(source() + ": key '" + gguf_key + "': " + what);
  }
  std::string source() const { return file_.files().front().path().string(); }
  const GgufTensor* tensor(const std::string& name) const { return file_.find_tensor(name); }

  ModelSpec parse() const { return parse_config(config_, source(), names_); }

 private:
  const GgufFile& file_;
  const GgufMetadata& metadata_;
  std::string arch_;
  nlohmann::json config_ = nlohmann::json::object();
  std::map<std::string, std::string> names_;
};

// YaRN from {arch}.rope.scaling.*; other scaling types are refused by name. ggml scales cos and
// sin by attn_factor times YaRN's 1 + 0.1 ln(factor), except that deepseek2's graph cancels the
// latter (its softmax scale carries mscale instead).
void translate_rope_scaling(ConfigTranslator& t, bool deepseek) {
  const std::string type_key = t.key("rope.scaling.type");
  const std::string factor_key = t.key("rope.scaling.factor");
  // llama.cpp's default type is linear, and older files carry the factor as rope.scale_linear.
  const std::string type = t.string_or(type_key, "linear");
  const double factor = t.finite_or(factor_key, 0);
  const std::string old_linear_key = t.key("rope.scale_linear");
  if (t.finite_or(old_linear_key, 1) != 1)
    t.fail(old_linear_key, "linear RoPE scaling is not supported");
  if (type == "none" || (type == "linear" && (factor == 0 || factor == 1))) return;
  if (type != "yarn")
    t.fail(type_key, "'" + type + "' with factor " + std::to_string(factor) +
                         " is not supported (supported: none, yarn)");
  if (!(factor > 0)) t.fail(factor_key, "YaRN needs a positive factor");
  // ext_factor -1 means "from the type" (1 for YaRN); other ramps are not implemented.
  const std::string ext_key = t.key("rope.scaling.yarn_ext_factor");
  if (const double ext = t.finite_or(ext_key, -1); ext != -1 && ext != 1)
    t.fail(ext_key, std::to_string(ext) + " is not supported (supported: 1, or -1 for YaRN's)");
  nlohmann::json yarn = {{"type", "yarn"}, {"factor", factor}};
  const std::string original_key = t.key("rope.scaling.original_context_length");
  if (t.has(original_key)) yarn["original_max_position_embeddings"] = t.integer_or(original_key, 0);
  t.name("rope_scaling.original_max_position_embeddings", original_key);
  yarn["beta_fast"] = t.finite_or(t.key("rope.scaling.yarn_beta_fast"), 32);
  t.name("rope_scaling.beta_fast", t.key("rope.scaling.yarn_beta_fast"));
  yarn["beta_slow"] = t.finite_or(t.key("rope.scaling.yarn_beta_slow"), 1);
  t.name("rope_scaling.beta_slow", t.key("rope.scaling.yarn_beta_slow"));
  t.name("rope_scaling.factor", factor_key);
  // ggml multiplies cos and sin by attn_factor * yarn_attn_factor, and (outside deepseek2)
  // by YaRN's 1 + 0.1 ln(factor).
  const std::string attn_key = t.key("rope.scaling.attn_factor");
  const double attn_factor =
      t.finite_or(attn_key, 1) * t.finite_or(t.key("rope.scaling.yarn_attn_factor"), 1);
  if (!(attn_factor > 0)) t.fail(attn_key, "expected a positive attention factor");
  if (deepseek) {
    // deepseek2's graph also puts attn_factor squared into the softmax scale; only 1 is
    // implemented (no published DeepSeek file sets it).
    if (attn_factor != 1) t.fail(attn_key, "values other than 1 are not supported for deepseek2");
    // The converter stores 0.1 * mscale_all_dim; llama.cpp divides it back out.
    const std::string log_key = t.key("rope.scaling.yarn_log_multiplier");
    const double log_multiplier = t.finite_or(log_key, 0);
    if (log_multiplier < 0) t.fail(log_key, "expected a number >= 0");
    if (log_multiplier > 0) yarn["mscale_all_dim"] = log_multiplier / 0.1;
    t.name("rope_scaling.mscale_all_dim", log_key);
    yarn["attention_factor"] = 1.0;
  } else {
    yarn["attention_factor"] = attn_factor * (1 + 0.1 * std::log(factor));
  }
  t.name("rope_scaling.attention_factor", attn_key);
  t.set("rope_scaling", yarn, t.key("rope.scaling"));
}

// RoPE over the whole head, as every supported architecture's graph asserts.
void require_full_rotary(const ConfigTranslator& t, std::int64_t head_dim) {
  const std::string key = t.key("rope.dimension_count");
  if (t.has(key) && t.integer_or(key, 0) != head_dim)
    t.fail(key, std::to_string(t.integer_or(key, 0)) + " differs from the head size " +
                    std::to_string(head_dim) + "; partial RoPE is not supported");
}

std::int64_t gqa_head_dim(const ConfigTranslator& t) {
  const std::int64_t heads = t.integer_or(t.key("attention.head_count"), 0);
  const std::int64_t hidden = t.integer_or(t.key("embedding_length"), 0);
  return t.integer_or(t.key("attention.key_length"), heads > 0 ? hidden / heads : 0);
}

void translate_gqa(ConfigTranslator& t) {
  t.integer("num_key_value_heads", t.key("attention.head_count_kv"));
  if (t.has(t.key("attention.key_length"))) t.integer("head_dim", t.key("attention.key_length"));
  const std::string value_key = t.key("attention.value_length");
  if (t.has(value_key) && t.integer_or(value_key, 0) != gqa_head_dim(t))
    t.fail(value_key, "differs from the key length; moed needs equal key and value head sizes");
  require_full_rotary(t, gqa_head_dim(t));
  translate_rope_scaling(t, false);
}

}  // namespace

ModelSpec spec_from_gguf(const GgufFile& file) {
  const auto& metadata = file.metadata();
  const std::string arch = metadata.get_string("general.architecture");
  ConfigTranslator t(file, arch);
  static const char* const kArchitectures[] = {"llama", "qwen2moe", "qwen3moe", "olmoe",
                                               "deepseek2"};
  if (std::find(std::begin(kArchitectures), std::end(kArchitectures), arch) ==
      std::end(kArchitectures))
    t.fail("general.architecture", "'" + arch +
                                       "' is not supported (supported: llama with experts, "
                                       "qwen2moe, qwen3moe, olmoe, deepseek2)");
  const GgufTensor* embedding = t.tensor("token_embd.weight");
  if (!embedding || embedding->dims.size() != 2)
    throw std::runtime_error(t.source() + ": tensor 'token_embd.weight' " +
                             (embedding ? "is not 2-D" : "is missing"));
  t.set("vocab_size", embedding->dims[1], "token_embd.weight (its rows)");
  t.integer("hidden_size", t.key("embedding_length"));
  t.integer("num_hidden_layers", t.key("block_count"));
  t.integer("max_position_embeddings", t.key("context_length"));
  t.integer("num_attention_heads", t.key("attention.head_count"));
  const std::string eps_key = t.key("attention.layer_norm_rms_epsilon");
  if (!t.has(eps_key)) t.fail(eps_key, "is missing");
  t.set("rms_norm_eps", t.finite_or(eps_key, 0), eps_key);
  t.set("rope_theta", t.finite_or(t.key("rope.freq_base"), 10000.0), t.key("rope.freq_base"));
  t.integer("num_experts_per_tok", t.key("expert_used_count"));
  t.set("tie_word_embeddings", t.tensor("output.weight") == nullptr, "output.weight");
  t.integer("bos_token_id", "tokenizer.ggml.bos_token_id");
  t.integer("eos_token_id", "tokenizer.ggml.eos_token_id");
  const std::string expert_count = t.key("expert_count");

  // llama.cpp's routing: softmax over every expert, top-k renormalised or not by architecture.
  bool renormalise = false;
  ModelSpec spec;
  if (arch == "llama") {
    if (t.integer_or(expert_count, 0) <= 0)
      t.fail(expert_count, "is missing or 0: a llama model without experts is not a MoE model");
    t.set("model_type", "mixtral", "general.architecture");
    t.integer("num_local_experts", expert_count);
    // llama.cpp's llama architecture sizes its experts by feed_forward_length and never reads
    // expert_feed_forward_length (its model saver writes a 0 there).
    t.integer("intermediate_size", t.key("feed_forward_length"));
    translate_gqa(t);
    spec = t.parse();
    // The converter permutes q and k rows so that rotate-half partners sit side by side.
    spec.rope.style = RopeStyle::interleaved;
    renormalise = true;
  } else if (arch == "qwen2moe" || arch == "qwen3moe") {
    const bool qwen2 = arch == "qwen2moe";
    t.set("model_type", qwen2 ? "qwen2_moe" : "qwen3_moe", "general.architecture");
    t.integer("num_experts", expert_count);
    const std::string ffn_key = t.key("feed_forward_length");
    const std::string expert_ffn_key = t.key("expert_feed_forward_length");
    const std::int64_t used =
        std::max<std::int64_t>(t.integer_or(t.key("expert_used_count"), 1), 1);
    // llama.cpp: n_ff_exp when set and not 0, else n_ff / n_expert_used.
    if (t.integer_or(expert_ffn_key, 0) != 0) {
      t.integer("moe_intermediate_size", expert_ffn_key);
    } else {
      t.set("moe_intermediate_size", t.integer_or(ffn_key, 0) / used, ffn_key);
    }
    if (t.has(ffn_key)) {
      t.integer("intermediate_size", ffn_key);
    } else {
      t.integer("intermediate_size", expert_ffn_key);
    }
    if (qwen2) {
      const std::string shared_key = t.key("expert_shared_feed_forward_length");
      bool shared = false;
      for (std::int64_t l = 0; l < t.integer_or(t.key("block_count"), 0) && l < kMaxLayers; ++l)
        shared = shared || t.tensor("blk." + std::to_string(l) + ".ffn_gate_shexp.weight");
      // llama.cpp: n_ff_shexp if set, else n_ff.
      const std::int64_t shared_width = t.integer_or(shared_key, 0);
      t.set("shared_expert_intermediate_size",
            shared ? (shared_width > 0 ? shared_width : t.integer_or(ffn_key, 0)) : 0, shared_key);
      t.set("qkv_bias", t.tensor("blk.0.attn_q.bias") != nullptr, "blk.0.attn_q.bias");
    }
    t.set("norm_topk_prob", !qwen2, "general.architecture");
    // Qwen's mlp_only_layers / decoder_sparse_step leave some layers dense: in a GGUF file they
    // are the layers without a router. (llama.cpp itself expects every layer to be MoE.)
    nlohmann::json dense_layers = nlohmann::json::array();
    const std::int64_t layers = t.integer_or(t.key("block_count"), 0);
    for (std::int64_t l = 0; l < layers && l < kMaxLayers; ++l)
      if (!t.tensor("blk." + std::to_string(l) + ".ffn_gate_inp.weight")) dense_layers.push_back(l);
    t.set("mlp_only_layers", dense_layers, "blk.N.ffn_gate_inp.weight");
    translate_gqa(t);
    spec = t.parse();
    renormalise = !qwen2;
  } else if (arch == "olmoe") {
    t.set("model_type", "olmoe", "general.architecture");
    t.integer("num_experts", expert_count);
    t.integer("intermediate_size", t.key("feed_forward_length"));
    translate_gqa(t);
    spec = t.parse();
  } else {  // deepseek2
    const std::string gating_key = t.key("expert_gating_func");
    const std::int64_t gating = t.integer_or(gating_key, kGatingNone);
    if (gating != kGatingNone && gating != kGatingSoftmax && gating != kGatingSigmoid)
      t.fail(gating_key,
             std::to_string(gating) +
                 " is not supported (supported: 1 softmax, 2 sigmoid; absent: softmax)");
    const bool sigmoid = gating == kGatingSigmoid;
    t.set("model_type", sigmoid ? "deepseek_v3" : "deepseek_v2", gating_key);
    const std::string k_mla = t.key("attention.key_length_mla");
    const std::string v_mla = t.key("attention.value_length_mla");
    const bool split = t.integer_or(k_mla, 0) != 0 && t.integer_or(v_mla, 0) != 0;
    const std::string rope_key = t.key("rope.dimension_count");
    if (!t.has(rope_key)) t.fail(rope_key, "is missing");
    const std::int64_t rope = t.integer_or(rope_key, 0);
    const std::string key_length = split ? k_mla : t.key("attention.key_length");
    const std::string value_length = split ? v_mla : t.key("attention.value_length");
    if (!t.has(key_length)) t.fail(key_length, "is missing");
    // The key holds the no-rope part and the rope part: both must be positive.
    constexpr std::int64_t kInt32Max = 0x7fffffff;
    if (rope <= 0 || rope > kInt32Max)
      t.fail(rope_key, "expected a positive 32-bit integer, got " + std::to_string(rope));
    if (const std::int64_t length = t.integer_or(key_length, 0);
        length <= rope || length > kInt32Max)
      t.fail(key_length, std::to_string(length) + " must exceed " + rope_key + " (" +
                             std::to_string(rope) + ")");
    t.set("qk_rope_head_dim", rope, rope_key);
    t.set("qk_nope_head_dim", t.integer_or(key_length, 0) - rope, key_length);
    t.integer("v_head_dim", value_length);
    t.integer("kv_lora_rank", t.key("attention.kv_lora_rank"));
    const std::string q_lora = t.key("attention.q_lora_rank");
    // Absent or 0 (llama.cpp's default): a plain q projection (V2-Lite).
    if (t.integer_or(q_lora, 0) < 0)
      t.fail(q_lora, "expected an integer >= 0, got " + std::to_string(t.integer_or(q_lora, 0)));
    t.set("q_lora_rank",
          t.integer_or(q_lora, 0) > 0 ? nlohmann::json(t.integer_or(q_lora, 0)) : nlohmann::json(),
          q_lora);
    t.integer("n_routed_experts", expert_count);
    t.integer("moe_intermediate_size", t.key("expert_feed_forward_length"));
    t.integer("intermediate_size", t.key("feed_forward_length"));
    t.set("n_shared_experts", t.integer_or(t.key("expert_shared_count"), 0),
          t.key("expert_shared_count"));
    t.set("first_k_dense_replace", t.integer_or(t.key("leading_dense_block_count"), 0),
          t.key("leading_dense_block_count"));
    const std::string groups_key = t.key("expert_group_count");
    const std::int64_t groups = std::max<std::int64_t>(t.integer_or(groups_key, 1), 1);
    t.set("n_group", groups, groups_key);
    t.set("topk_group", groups > 1 ? t.integer_or(t.key("expert_group_used_count"), 0) : 1,
          t.key("expert_group_used_count"));
    // llama.cpp scores a group by its two best experts whatever the model's HF method.
    if (!sigmoid && groups > 1) t.set("topk_method", "noaux_tc", groups_key);
    const std::string scale_key = t.key("expert_weights_scale");
    const double scale = t.finite_or(scale_key, 0);  // 0: no scaling
    if (scale < 0) t.fail(scale_key, "expected a number >= 0, got " + std::to_string(scale));
    t.set("routed_scaling_factor", scale > 0 ? scale : 1.0, scale_key);
    renormalise = t.bool_or(t.key("expert_weights_norm"), false);
    t.set("norm_topk_prob", renormalise, t.key("expert_weights_norm"));
    translate_rope_scaling(t, true);
    spec = t.parse();
    spec.attention.split_kv_b = split;
    spec.router.correction_bias = false;
    for (std::int64_t l = 0; l < spec.num_layers; ++l)
      if (t.tensor("blk." + std::to_string(l) + ".exp_probs_b.bias")) {
        spec.router.correction_bias = true;
        break;
      }
  }
  spec.router.normalize = renormalise;
  // llama.cpp's build_moe_ffn: groups not kept are filled with -inf, and the sum that
  // renormalises the top-k weights is clamped below at 2^-14.
  spec.router.masked_group_score = -std::numeric_limits<float>::infinity();
  spec.router.clamp_weight_sum = true;
  spec.model_type = arch;
  return spec;
}

namespace {

std::string gguf_dense_name(const ModelSpec& spec, std::int64_t layer, DenseRole role) {
  const std::string p = "blk." + std::to_string(layer) + ".";
  const bool moe = spec.has_experts(layer);
  switch (role) {
    case DenseRole::attention_norm:
      return p + "attn_norm.weight";
    case DenseRole::ffn_norm:
      return p + "ffn_norm.weight";
    case DenseRole::q:
      return p + "attn_q.weight";
    case DenseRole::k:
      return p + "attn_k.weight";
    case DenseRole::v:
      return p + "attn_v.weight";
    case DenseRole::q_bias:
      return p + "attn_q.bias";
    case DenseRole::k_bias:
      return p + "attn_k.bias";
    case DenseRole::v_bias:
      return p + "attn_v.bias";
    case DenseRole::q_norm:
      return p + "attn_q_norm.weight";
    case DenseRole::k_norm:
      return p + "attn_k_norm.weight";
    case DenseRole::q_a:
      return p + "attn_q_a.weight";
    case DenseRole::q_a_norm:
      return p + "attn_q_a_norm.weight";
    case DenseRole::q_b:
      return p + "attn_q_b.weight";
    case DenseRole::kv_a:
      return p + "attn_kv_a_mqa.weight";
    case DenseRole::kv_a_norm:
      return p + "attn_kv_a_norm.weight";
    case DenseRole::kv_b:
      return p + "attn_kv_b.weight";
    case DenseRole::k_b:
      return p + "attn_k_b.weight";
    case DenseRole::v_b:
      return p + "attn_v_b.weight";
    case DenseRole::o:
      return p + "attn_output.weight";
    case DenseRole::router:
      return p + "ffn_gate_inp.weight";
    case DenseRole::router_bias:
      return p + "exp_probs_b.bias";
    case DenseRole::mlp_gate:
      return p + (moe ? "ffn_gate_shexp.weight" : "ffn_gate.weight");
    case DenseRole::mlp_up:
      return p + (moe ? "ffn_up_shexp.weight" : "ffn_up.weight");
    case DenseRole::mlp_down:
      return p + (moe ? "ffn_down_shexp.weight" : "ffn_down.weight");
    case DenseRole::shared_expert_gate:
      return p + "ffn_gate_inp_shexp.weight";
  }
  return p;
}

// A shape without its leading 1s: GGUF dims may add or drop trailing 1s (ne [hidden, 1] for a
// [1, hidden] gate), as llama.cpp's check_tensor_dims allows; the row length ne0 must match.
std::vector<std::int64_t> without_leading_ones(std::vector<std::int64_t> shape) {
  const auto first =
      std::find_if(shape.begin(), shape.end(), [](std::int64_t d) { return d != 1; });
  shape.erase(shape.begin(), first);
  return shape;
}

class TensorMapper {
 public:
  TensorMapper(const GgufFile& file, const ModelSpec& spec) : file_(file), spec_(spec) {}

  // The tensor named `gguf_name`, whose shape in Hugging Face order (reversed GGUF dims) must be
  // `expected` up to dimensions of 1 (the converter writes a [1, hidden] gate as ne [hidden, 1]).
  TensorInfo whole(const std::string& gguf_name, const std::vector<std::int64_t>& expected) {
    const GgufTensor& t = find(gguf_name);
    const auto shape = hf_shape(t);
    if (without_leading_ones(shape) != without_leading_ones(expected))
      fail(t, "has shape " + shape_string(shape) +
                  " (GGUF dims reversed) but the metadata implies " + shape_string(expected));
    return info(t, t.name, expected, t.file_offset, t.nbytes);
  }

  // Expert `expert` of a merged [experts, rows, cols] tensor.
  TensorInfo slice(const std::string& gguf_name, std::int64_t expert,
                   const std::vector<std::int64_t>& expected) {
    const GgufTensor& t = find(gguf_name);
    std::vector<std::int64_t> merged{spec_.num_experts};
    merged.insert(merged.end(), expected.begin(), expected.end());
    if (hf_shape(t) != merged)
      fail(t, "has shape " + shape_string(hf_shape(t)) +
                  " (GGUF dims reversed) but the metadata implies " + shape_string(merged));
    const std::uint64_t bytes = t.nbytes / static_cast<std::uint64_t>(spec_.num_experts);
    return info(t, t.name + " [expert " + std::to_string(expert) + "]", expected,
                t.file_offset + static_cast<std::uint64_t>(expert) * bytes, bytes);
  }

  bool has(const std::string& gguf_name) const { return file_.find_tensor(gguf_name) != nullptr; }

  // Every tensor of the file must have been used.
  void check_all_used() const {
    for (const auto& t : file_.tensors())
      if (!used_.contains(t.name))
        throw std::runtime_error(source(t) + ": unexpected tensor '" + t.name + "' for a " +
                                 spec_.model_type + " model with this metadata");
  }

 private:
  const GgufTensor& find(const std::string& name) {
    const GgufTensor* t = file_.find_tensor(name);
    if (!t)
      throw std::runtime_error(file_.files().front().path().string() + ": tensor '" + name +
                               "' is missing (the " + spec_.model_type + " metadata implies it)");
    used_.insert(name);
    return *t;
  }

  static std::vector<std::int64_t> hf_shape(const GgufTensor& t) {
    std::vector<std::int64_t> shape;
    for (auto it = t.dims.rbegin(); it != t.dims.rend(); ++it)
      shape.push_back(static_cast<std::int64_t>(*it));
    return shape;
  }

  std::string source(const GgufTensor& t) const {
    return file_.files().at(t.file_index).path().string();
  }

  [[noreturn]] void fail(const GgufTensor& t, const std::string& what) const {
    throw std::runtime_error(source(t) + ": tensor '" + t.name + "' " + what);
  }

  TensorInfo info(const GgufTensor& t, std::string name, const std::vector<std::int64_t>& shape,
                  std::uint64_t offset, std::uint64_t bytes) const {
    const auto dtype = kernels::dtype_of(t.type);
    if (!dtype)
      fail(t, "has ggml type " + std::string(kernels::ggml_type_name(t.type)) +
                  ", which moed does not compute (supported: " +
                  kernels::supported_ggml_type_names() + ")");
    return {std::move(name), *dtype, shape,
            offset,          bytes,  static_cast<std::uint32_t>(t.file_index)};
  }

  const GgufFile& file_;
  const ModelSpec& spec_;
  std::set<std::string> used_;
};

}  // namespace

std::map<std::string, TensorInfo> gguf_plan_tensors(const GgufFile& file, const ModelSpec& spec) {
  TensorMapper map(file, spec);
  std::map<std::string, TensorInfo> out;
  out.emplace(embedding_tensor(),
              map.whole("token_embd.weight", {spec.vocab_size, spec.hidden_size}));
  out.emplace(final_norm_tensor(), map.whole("output_norm.weight", {spec.hidden_size}));
  if (!spec.tie_word_embeddings)
    out.emplace(lm_head_tensor(spec),
                map.whole("output.weight", {spec.vocab_size, spec.hidden_size}));
  static const char* const kMerged[] = {"ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"};
  static const char* const kSplit[] = {"ffn_gate", "ffn_up", "ffn_down"};
  for (std::int64_t l = 0; l < spec.num_layers; ++l) {
    for (const auto& t : dense_tensors(spec, l))
      out.emplace(t.name, map.whole(gguf_dense_name(spec, l, t.role), t.shape));
    if (!spec.has_experts(l)) continue;
    const std::string p = "blk." + std::to_string(l) + ".";
    for (const auto m : {ExpertMatrix::gate, ExpertMatrix::up, ExpertMatrix::down}) {
      const auto i = static_cast<std::size_t>(m);
      const std::string merged = p + kMerged[i] + ".weight";
      // Files from before llama.cpp merged the experts (early 2024) hold one tensor each.
      const bool split = !map.has(merged) && map.has(p + kSplit[i] + ".0.weight");
      for (std::int64_t e = 0; e < spec.num_experts; ++e) {
        auto info = split ? map.whole(p + kSplit[i] + "." + std::to_string(e) + ".weight",
                                      expert_shape(spec, m))
                          : map.slice(merged, e, expert_shape(spec, m));
        // Budgets count a layer's experts alike (one merged tensor has one type anyway).
        const auto& first = e == 0 ? info : out.at(expert_tensor(spec, l, 0, m));
        if (info.dtype != first.dtype)
          throw std::runtime_error(file.files().front().path().string() + ": tensor '" + info.name +
                                   "' is " + std::string(kernels::dtype_name(info.dtype)) +
                                   " but '" + first.name + "' is " +
                                   std::string(kernels::dtype_name(first.dtype)) +
                                   "; a layer's experts must share one type");
        out.emplace(expert_tensor(spec, l, e, m), std::move(info));
      }
    }
  }
  map.check_all_used();
  return out;
}

}  // namespace moed::model
