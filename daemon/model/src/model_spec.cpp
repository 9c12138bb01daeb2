#include "moed/model/model_spec.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <numbers>
#include <stdexcept>

#include "config_parse.hpp"

namespace moed::model {
namespace {

// A value for an error message. Only scalars are written out: writing recurses per level, and a
// value nested a few hundred thousand levels deep would overflow the stack.
std::string describe(const nlohmann::json& v) {
  return v.is_primitive() ? v.dump() : std::string("an ") + v.type_name();
}

class ConfigReader {
 public:
  ConfigReader(const std::string& source, const nlohmann::json& json,
               const std::map<std::string, std::string>& key_names)
      : source_(source), json_(json), key_names_(key_names) {}

  // Names the key as the user's file spells it: a GGUF metadata key for a translated config.
  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    const std::string top = key.substr(0, key.find('.'));
    auto it = key_names_.find(key);
    if (it == key_names_.end()) it = key_names_.find(top);
    const std::string name = it == key_names_.end() ? key
                             : it->first == key     ? it->second
                                                    : it->second + key.substr(top.size());
    throw std::runtime_error(source_ + ": key '" + name + "': " + what);
  }

  bool has(const std::string& key) const { return json_.contains(key) && !json_[key].is_null(); }
  const nlohmann::json& at(const std::string& key) const { return json_[key]; }

  // Every size is bounded by int32 (token ids, layers and experts are int32 downstream), so that
  // sums and products of a few of them stay in int64 and fits() can check the tensors they size.
  std::int64_t positive(const std::string& key) const {
    if (!json_.contains(key)) fail(key, "is missing");
    const auto& v = json_[key];
    if (!v.is_number_integer() || v.get<std::int64_t>() <= 0)
      fail(key, "expected a positive integer, got " + describe(v));
    return bounded(key, v.get<std::int64_t>());
  }

  std::int64_t bounded(const std::string& key, std::int64_t value) const {
    if (value > std::numeric_limits<std::int32_t>::max())
      fail(key, std::to_string(value) + " exceeds 2^31 - 1");
    return value;
  }

  std::int64_t positive_or(const std::string& key, std::int64_t fallback) const {
    return has(key) ? positive(key) : fallback;
  }

  std::int64_t non_negative_or(const std::string& key, std::int64_t fallback) const {
    if (!has(key)) return fallback;
    const auto& v = json_[key];
    if (!v.is_number_integer() || v.get<std::int64_t>() < 0)
      fail(key, "expected an integer >= 0, got " + describe(v));
    return bounded(key, v.get<std::int64_t>());
  }

  double number_or(const std::string& key, double fallback) const {
    if (!has(key)) return fallback;
    if (!json_[key].is_number() || !(json_[key].get<double>() > 0) ||
        !std::isfinite(json_[key].get<double>()))
      fail(key, "expected a positive number, got " + describe(json_[key]));
    return json_[key].get<double>();
  }

  bool boolean_or(const std::string& key, bool fallback) const {
    if (!has(key)) return fallback;
    if (!json_[key].is_boolean()) fail(key, "expected true or false, got " + describe(json_[key]));
    return json_[key].get<bool>();
  }

  std::string string_or(const std::string& key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    if (!json_[key].is_string()) fail(key, "expected a string, got " + describe(json_[key]));
    return json_[key].get<std::string>();
  }

  // Keys a family's attention does not implement: refused rather than silently ignored.
  void refuse_true(const std::string& key, const std::string& why) const {
    if (boolean_or(key, false)) fail(key, "true is not supported: " + why);
  }

 private:
  const std::string& source_;
  const nlohmann::json& json_;
  const std::map<std::string, std::string>& key_names_;
};

// quantization_config as transformers' FineGrainedFP8Config writes it (DeepSeek-V3/R1, Qwen3's
// FP8 releases): e4m3 weights, each with a `_scale_inv` tensor of per-block multipliers, and
// activations left to the engine (dynamic). Other methods store weights moed does not read.
void read_fp8_blocks(const ConfigReader& r, ModelSpec& s) {
  const auto& q = r.at("quantization_config");
  if (!q.is_object()) r.fail("quantization_config", "expected an object, got " + describe(q));
  const auto text = [&](const char* key, const char* fallback) {
    if (!q.contains(key)) return std::string(fallback);
    if (!q[key].is_string())
      r.fail(std::string("quantization_config.") + key,
             "expected a string, got " + describe(q[key]));
    return q[key].get<std::string>();
  };
  if (!q.contains("quant_method")) r.fail("quantization_config.quant_method", "is missing");
  const std::string method = text("quant_method", "");
  if (method != "fp8")
    r.fail("quantization_config.quant_method",
           "'" + method +
               "' is not supported (fine-grained 'fp8' is; for other quantizations, convert the "
               "model to GGUF)");
  if (text("fmt", "e4m3") != "e4m3")
    r.fail("quantization_config.fmt", "'" + text("fmt", "") + "' is not supported (e4m3 is)");
  if (text("activation_scheme", "dynamic") != "dynamic")
    r.fail("quantization_config.activation_scheme",
           "'" + text("activation_scheme", "") +
               "' is not supported (dynamic is: moed computes with the weights widened to bf16 and "
               "takes no activation scales)");
  const char* const block_key = "quantization_config.weight_block_size";
  if (!q.contains("weight_block_size"))
    r.fail(block_key, "is missing: per-tensor FP8 scales are not supported, only block scales");
  const auto& block = q["weight_block_size"];
  if (!block.is_array() || block.size() != 2 || !block[0].is_number_integer() ||
      !block[1].is_number_integer() || block[0].get<std::int64_t>() <= 0 ||
      block[1].get<std::int64_t>() <= 0)
    r.fail(block_key, "expected two positive integers [rows, cols], got " + block.dump());
  s.fp8_block_rows = r.bounded(block_key, block[0].get<std::int64_t>());
  s.fp8_block_cols = r.bounded(block_key, block[1].get<std::int64_t>());
}

// Far above any released model (DeepSeek-V3: 15,616 expert blocks).
constexpr std::int64_t kMaxExpertBlocks = 1 << 22;

Family parse_family(const ConfigReader& r, const std::string& model_type) {
  static const std::pair<const char*, Family> kFamilies[] = {
      {"mixtral", Family::mixtral},         {"qwen2_moe", Family::qwen2_moe},
      {"qwen3_moe", Family::qwen3_moe},     {"olmoe", Family::olmoe},
      {"deepseek_v2", Family::deepseek_v2}, {"deepseek_v3", Family::deepseek_v3}};
  for (const auto& [name, family] : kFamilies)
    if (model_type == name) return family;
  r.fail("model_type", "'" + model_type +
                           "' is not supported (supported: mixtral, qwen2_moe, qwen3_moe, olmoe, "
                           "deepseek_v2, deepseek_v3)");
}

// YaRN's magnitude correction (transformers' get_mscale / DeepSeek's yarn_get_mscale).
double yarn_mscale(double factor, double mscale) {
  return factor <= 1 ? 1.0 : 0.1 * mscale * std::log(factor) + 1.0;
}

// rope_scaling (transformers v4) or rope_parameters (v5): the theta and, for "yarn", its
// parameters. Returns mscale_all_dim for DeepSeek's softmax scale (0 when absent).
double read_rope(const ConfigReader& r, const nlohmann::json& config, RopeSpec& rope,
                 std::int64_t max_positions, double default_theta) {
  rope.theta = r.number_or("rope_theta", default_theta);
  const char* key = r.has("rope_parameters") ? "rope_parameters"
                    : r.has("rope_scaling")  ? "rope_scaling"
                                             : nullptr;
  if (!key) return 0;
  const auto& scaling = config[key];
  if (!scaling.is_object()) r.fail(key, "expected an object, got " + describe(scaling));
  auto fail = [&](const std::string& sub, const std::string& what) {
    r.fail(std::string(key) + "." + sub, what);
  };
  // transformers reads these with `rope.get(key) or default`: 0 counts as absent.
  auto number = [&](const std::string& sub, double fallback) {
    if (!scaling.contains(sub) || scaling[sub].is_null() ||
        (scaling[sub].is_number() && scaling[sub].get<double>() == 0))
      return fallback;
    if (!scaling[sub].is_number() || !(scaling[sub].get<double>() > 0) ||
        !std::isfinite(scaling[sub].get<double>()))
      fail(sub, "expected a positive number, got " + describe(scaling[sub]));
    return scaling[sub].get<double>();
  };
  if (scaling.contains("rope_theta")) rope.theta = number("rope_theta", rope.theta);
  std::string type = "default";
  for (const char* type_key : {"rope_type", "type"})
    if (scaling.contains(type_key) && !scaling[type_key].is_null()) {
      if (!scaling[type_key].is_string())
        fail(type_key, "expected a string, got " + describe(scaling[type_key]));
      type = scaling[type_key].get<std::string>();
      break;
    }
  if (type == "default") return 0;
  if (type != "yarn")
    fail("type", "RoPE scaling '" + type + "' is not supported (supported: default, yarn)");
  rope.yarn_original_max_positions =
      number("original_max_position_embeddings", static_cast<double>(max_positions));
  rope.yarn_factor =
      number("factor", static_cast<double>(max_positions) / rope.yarn_original_max_positions);
  rope.yarn_beta_fast = number("beta_fast", 32);
  rope.yarn_beta_slow = number("beta_slow", 1);
  if (scaling.contains("truncate") && scaling["truncate"].is_boolean() &&
      !scaling["truncate"].get<bool>())
    fail("truncate", "false is not supported");
  const double mscale = number("mscale", 0);
  const double mscale_all_dim = number("mscale_all_dim", 0);
  if (scaling.contains("attention_factor") && !scaling["attention_factor"].is_null())
    rope.attention_factor = number("attention_factor", 1);
  else if (mscale > 0 && mscale_all_dim > 0)
    rope.attention_factor =
        yarn_mscale(rope.yarn_factor, mscale) / yarn_mscale(rope.yarn_factor, mscale_all_dim);
  else
    rope.attention_factor = yarn_mscale(rope.yarn_factor, 1);
  return mscale_all_dim;
}

// Reads a list of layer indices (Qwen's mlp_only_layers).
std::vector<std::int64_t> layer_list(const ConfigReader& r, const std::string& key,
                                     std::int64_t layers) {
  std::vector<std::int64_t> out;
  if (!r.has(key)) return out;
  if (!r.at(key).is_array())
    r.fail(key, "expected a list of layer indices, got " + describe(r.at(key)));
  for (const auto& v : r.at(key)) {
    if (!v.is_number_integer() || v.get<std::int64_t>() < 0 || v.get<std::int64_t>() >= layers)
      r.fail(key,
             "expected layer indices in [0, " + std::to_string(layers) + "), got " + describe(v));
    out.push_back(v.get<std::int64_t>());
  }
  return out;
}

}  // namespace

const char* to_string(Family family) {
  switch (family) {
    case Family::mixtral:
      return "mixtral";
    case Family::qwen2_moe:
      return "qwen2_moe";
    case Family::qwen3_moe:
      return "qwen3_moe";
    case Family::olmoe:
      return "olmoe";
    case Family::deepseek_v2:
      return "deepseek_v2";
    case Family::deepseek_v3:
      return "deepseek_v3";
  }
  return "?";
}

const char* to_string(AttentionKind kind) {
  return kind == AttentionKind::gqa ? "gqa" : "mla";
}

const char* to_string(FfnKind kind) {
  return kind == FfnKind::dense ? "dense" : "moe";
}

std::int64_t AttentionSpec::cache_elements() const {
  return kind == AttentionKind::gqa ? 2 * kv_heads * head_dim : kv_lora_rank + qk_rope_head_dim;
}

std::int64_t AttentionSpec::query_width() const {
  return kind == AttentionKind::gqa ? heads * head_dim
                                    : heads * (qk_nope_head_dim + qk_rope_head_dim);
}

std::int64_t AttentionSpec::output_width() const {
  return kind == AttentionKind::gqa ? heads * head_dim : heads * v_head_dim;
}

std::vector<double> RopeSpec::inverse_frequencies() const {
  const std::int64_t half = dim / 2;
  std::vector<double> inv(static_cast<std::size_t>(half));
  for (std::int64_t i = 0; i < half; ++i)
    inv[static_cast<std::size_t>(i)] =
        1.0 / std::pow(theta, static_cast<double>(2 * i) / static_cast<double>(dim));
  if (yarn_factor <= 0) return inv;
  // transformers' _compute_yarn_parameters (truncate = true): frequencies below the correction
  // range are interpolated by the factor, those above kept, a linear ramp in between.
  const auto d = static_cast<double>(dim);
  auto correction_dim = [&](double rotations) {
    return d * std::log(yarn_original_max_positions / (rotations * 2 * std::numbers::pi)) /
           (2 * std::log(theta));
  };
  double low = std::max(std::floor(correction_dim(yarn_beta_fast)), 0.0);
  double high = std::min(std::ceil(correction_dim(yarn_beta_slow)), d - 1);
  if (low == high) high += 0.001;
  for (std::int64_t i = 0; i < half; ++i) {
    const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
    const double extrapolation = 1 - ramp;
    const double original = inv[static_cast<std::size_t>(i)];
    inv[static_cast<std::size_t>(i)] =
        original / yarn_factor * (1 - extrapolation) + original * extrapolation;
  }
  return inv;
}

std::int64_t ModelSpec::moe_layer_count() const {
  std::int64_t n = 0;
  for (const auto& layer : layers) n += layer.ffn == FfnKind::moe;
  return n;
}

void require_model_dir(const std::filesystem::path& model_dir) {
  std::error_code ec;
  const auto status = std::filesystem::status(model_dir, ec);
  if (status.type() == std::filesystem::file_type::not_found)
    throw std::runtime_error(model_dir.string() + ": no such directory");
  if (ec) throw std::runtime_error(model_dir.string() + ": " + ec.message());
  if (status.type() != std::filesystem::file_type::directory)
    throw std::runtime_error(
        model_dir.string() +
        ": not a directory; --model takes a Hugging Face model directory or a .gguf file");
}

ModelSpec ModelSpec::from_config(const std::filesystem::path& model_dir) {
  require_model_dir(model_dir);
  const auto path = model_dir / "config.json";
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path.string() + ": cannot open (is this a model directory?)");
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(path.string() + ": not valid JSON: " + e.what());
  }
  if (!json.is_object()) throw std::runtime_error(path.string() + ": not a JSON object");
  return parse_config(json, path.string(), {});
}

ModelSpec parse_config(const nlohmann::json& json, const std::string& source,
                       const std::map<std::string, std::string>& key_names) {
  const ConfigReader r(source, json, key_names);
  ModelSpec s;
  if (!json.contains("model_type") || !json["model_type"].is_string())
    r.fail("model_type", "is missing or not a string");
  s.model_type = json["model_type"].get<std::string>();
  s.family = parse_family(r, s.model_type);
  const Family f = s.family;
  const bool deepseek = f == Family::deepseek_v2 || f == Family::deepseek_v3;
  const bool qwen = f == Family::qwen2_moe || f == Family::qwen3_moe;

  s.vocab_size = r.positive("vocab_size");
  s.hidden_size = r.positive("hidden_size");
  s.num_layers = r.positive("num_hidden_layers");
  // Per-layer plans, tensor maps and counters are built for every layer before a tensor is read.
  if (s.num_layers > kMaxLayers)
    r.fail("num_hidden_layers",
           std::to_string(s.num_layers) + " exceeds " + std::to_string(kMaxLayers) + " layers");
  s.rms_norm_eps = r.number_or("rms_norm_eps", qwen || deepseek ? 1e-6 : 1e-5);
  // The config classes' defaults, which YaRN's fallbacks read too.
  const std::int64_t default_context = f == Family::mixtral       ? 131072
                                       : qwen                     ? 32768
                                       : f == Family::deepseek_v2 ? 2048
                                                                  : 4096;
  s.max_position_embeddings = r.positive_or("max_position_embeddings", default_context);
  if (r.string_or("hidden_act", "silu") != "silu")
    r.fail("hidden_act",
           "'" + r.string_or("hidden_act", "") + "' is not supported (the experts' gate is SiLU)");
  if (r.has("partial_rotary_factor") && (!r.at("partial_rotary_factor").is_number() ||
                                         r.at("partial_rotary_factor").get<double>() != 1.0))
    r.fail("partial_rotary_factor", "only 1 (RoPE over the whole head) is supported, got " +
                                        describe(r.at("partial_rotary_factor")));
  if (qwen) r.refuse_true("use_sliding_window", "sliding-window attention is not implemented");

  // Attention.
  auto& a = s.attention;
  a.heads = r.positive("num_attention_heads");
  double mscale_all_dim = 0;
  if (deepseek) {
    a.kind = AttentionKind::mla;
    r.refuse_true("attention_bias", "MLA projections with biases are not implemented");
    // null: a plain q_proj (V2-Lite); absent: the config classes' default.
    a.q_lora_rank = json.contains("q_lora_rank") ? r.non_negative_or("q_lora_rank", 0) : 1536;
    a.kv_lora_rank = r.positive("kv_lora_rank");
    a.qk_nope_head_dim = r.positive("qk_nope_head_dim");
    a.qk_rope_head_dim = r.positive("qk_rope_head_dim");
    a.v_head_dim = r.positive("v_head_dim");
    s.rope.dim = a.qk_rope_head_dim;
    s.rope.style = f == Family::deepseek_v2 || r.boolean_or("rope_interleave", true)
                       ? RopeStyle::interleaved
                       : RopeStyle::half;
    mscale_all_dim = read_rope(r, json, s.rope, s.max_position_embeddings, 1e4);
    const double scale =
        1.0 / std::sqrt(static_cast<double>(a.qk_nope_head_dim + a.qk_rope_head_dim));
    const double m = s.rope.yarn_factor > 0 && mscale_all_dim > 0
                         ? yarn_mscale(s.rope.yarn_factor, mscale_all_dim)
                         : 1.0;
    a.softmax_scale = scale * m * m;
  } else {
    a.kind = AttentionKind::gqa;
    a.kv_heads = r.positive_or("num_key_value_heads", a.heads);
    a.head_dim = r.positive_or("head_dim", s.hidden_size / a.heads);
    if (a.head_dim == 0)
      r.fail("head_dim", "is missing and hidden_size / num_attention_heads is 0");
    if (a.heads % a.kv_heads != 0)
      r.fail("num_key_value_heads", std::to_string(a.kv_heads) + " does not divide " +
                                        "num_attention_heads " + std::to_string(a.heads));
    if (f == Family::qwen2_moe) a.qkv_bias = r.boolean_or("qkv_bias", true);
    if (f != Family::mixtral && f != Family::qwen2_moe)
      r.refuse_true("attention_bias", "attention projections with biases are not implemented");
    if (f == Family::qwen3_moe) a.qk_norm = QkNorm::per_head;
    if (f == Family::olmoe) {
      a.qk_norm = QkNorm::whole;
      a.clip_qkv = r.number_or("clip_qkv", 0);
    }
    s.rope.dim = a.head_dim;
    read_rope(r, json, s.rope, s.max_position_embeddings, f == Family::mixtral ? 1e6 : 1e4);
    a.softmax_scale = 1.0 / std::sqrt(static_cast<double>(a.head_dim));
  }
  if (s.rope.dim % 2 != 0)
    r.fail(deepseek ? "qk_rope_head_dim" : "head_dim", "must be even for RoPE");

  // Experts and the dense/MoE layout.
  s.layers.assign(static_cast<std::size_t>(s.num_layers), LayerKinds{a.kind, FfnKind::moe});
  auto& router = s.router;
  const char* experts_key = "num_experts";
  switch (f) {
    case Family::mixtral:
      experts_key = "num_local_experts";
      s.num_experts = r.positive(experts_key);
      s.intermediate_size = r.positive("intermediate_size");
      break;
    case Family::olmoe:
      s.num_experts = r.positive(experts_key);
      s.intermediate_size = r.positive("intermediate_size");
      router.normalize = r.boolean_or("norm_topk_prob", false);
      break;
    case Family::qwen2_moe:
    case Family::qwen3_moe: {
      s.num_experts = r.positive(experts_key);
      s.intermediate_size = r.positive("moe_intermediate_size");
      s.dense_intermediate_size = r.positive("intermediate_size");
      router.normalize = r.boolean_or("norm_topk_prob", false);
      if (f == Family::qwen2_moe) {
        s.shared_intermediate_size = r.non_negative_or("shared_expert_intermediate_size", 0);
        s.shared_expert_gate = s.shared_intermediate_size > 0;
      }
      const std::int64_t step = r.positive_or("decoder_sparse_step", 1);
      for (const auto l : layer_list(r, "mlp_only_layers", s.num_layers))
        s.layers[static_cast<std::size_t>(l)].ffn = FfnKind::dense;
      for (std::int64_t l = 0; l < s.num_layers; ++l)
        if ((l + 1) % step != 0) s.layers[static_cast<std::size_t>(l)].ffn = FfnKind::dense;
      break;
    }
    case Family::deepseek_v2:
    case Family::deepseek_v3: {
      experts_key = "n_routed_experts";
      s.num_experts = r.positive(experts_key);
      s.intermediate_size = r.positive("moe_intermediate_size");
      s.dense_intermediate_size = r.positive("intermediate_size");
      // null: no shared experts (modeling checks `is not None`); absent: the class default.
      const std::int64_t shared = json.contains("n_shared_experts")
                                      ? r.non_negative_or("n_shared_experts", 0)
                                      : (f == Family::deepseek_v2 ? 2 : 1);
      s.shared_intermediate_size = s.intermediate_size * shared;
      const std::int64_t first_moe =
          std::min(r.non_negative_or("first_k_dense_replace", f == Family::deepseek_v3 ? 3 : 0),
                   s.num_layers);
      for (std::int64_t l = 0; l < first_moe; ++l)
        s.layers[static_cast<std::size_t>(l)].ffn = FfnKind::dense;
      router.fp32_logits = true;
      if (f == Family::deepseek_v2) {
        // transformers' DeepSeek-V2 scores by softmax whatever scoring_func says, and never
        // renormalises the top-k weights (norm_topk_prob is not consulted).
        router.normalize = false;
        router.scaling = r.number_or("routed_scaling_factor", 1.0);
        const std::string method = r.string_or("topk_method", "greedy");
        if (method == "group_limited_greedy" || method == "noaux_tc") {
          router.n_group = r.positive("n_group");
          router.topk_group = r.positive("topk_group");
          // noaux_tc scores a group by its two best experts, as V3 does (and llama.cpp always).
          router.group_top2_sum = method == "noaux_tc";
        } else if (method != "greedy") {
          r.fail("topk_method", "'" + method +
                                    "' is not supported (supported: greedy, group_limited_greedy, "
                                    "noaux_tc)");
        }
      } else {
        // transformers' DeepSeek-V3 always scores by sigmoid, adds e_score_correction_bias for
        // the choice, and limits it to the best groups (scoring_func and topk_method unread).
        router.scoring = Scoring::sigmoid;
        router.correction_bias = true;
        router.group_top2_sum = true;
        router.n_group = r.positive_or("n_group", 8);
        router.topk_group = r.positive_or("topk_group", 4);
        router.normalize = r.boolean_or("norm_topk_prob", true);
        router.scaling = r.number_or("routed_scaling_factor", 2.5);
      }
      break;
    }
  }
  if (s.num_experts * s.num_layers > kMaxExpertBlocks)
    r.fail(experts_key, std::to_string(s.num_experts) + " experts in each of " +
                            std::to_string(s.num_layers) + " layers exceed " +
                            std::to_string(kMaxExpertBlocks) + " expert blocks");
  s.experts_per_token = r.positive("num_experts_per_tok");
  if (s.experts_per_token > s.num_experts)
    r.fail("num_experts_per_tok", std::to_string(s.experts_per_token) + " exceeds " + experts_key +
                                      " " + std::to_string(s.num_experts));
  if (router.n_group > 1) {
    if (s.num_experts % router.n_group != 0)
      r.fail("n_group", std::to_string(router.n_group) + " does not divide " + experts_key + " " +
                            std::to_string(s.num_experts));
    if (router.topk_group > router.n_group)
      r.fail("topk_group", std::to_string(router.topk_group) + " exceeds n_group " +
                               std::to_string(router.n_group));
    const std::int64_t per_group = s.num_experts / router.n_group;
    if (router.group_top2_sum && per_group < 2)
      r.fail("n_group", "groups need at least two experts each (their score is a top-2 sum)");
    if (router.topk_group * per_group < s.experts_per_token)
      r.fail("topk_group", "its groups hold fewer than num_experts_per_tok experts");
  }

  if (r.has("tie_word_embeddings")) {
    if (!json["tie_word_embeddings"].is_boolean())
      r.fail("tie_word_embeddings",
             "expected true or false, got " + describe(json["tie_word_embeddings"]));
    s.tie_word_embeddings = json["tie_word_embeddings"].get<bool>();
  }

  auto fits = [&](const char* key, std::initializer_list<std::int64_t> dims) {
    std::int64_t bytes = 4;  // f32, the widest element
    for (const auto d : dims)
      if (__builtin_mul_overflow(bytes, d, &bytes))
        r.fail(key, "makes a tensor of more than 2^63 bytes");
  };
  fits("vocab_size", {s.vocab_size, s.hidden_size});
  fits(qwen || deepseek ? "moe_intermediate_size" : "intermediate_size",
       {s.intermediate_size, s.hidden_size});
  fits("intermediate_size", {s.dense_intermediate_size, s.hidden_size});
  fits("shared_expert_intermediate_size", {s.shared_intermediate_size, s.hidden_size});
  if (deepseek) {
    fits("q_lora_rank", {a.q_lora_rank + s.hidden_size, a.query_width()});
    fits("kv_lora_rank", {a.kv_lora_rank + a.qk_rope_head_dim, s.hidden_size});
    fits("v_head_dim", {a.heads, a.qk_nope_head_dim + a.v_head_dim, a.kv_lora_rank});
  } else {
    fits("head_dim", {a.heads, a.head_dim, s.hidden_size});
  }

  if (r.has("quantization_config")) read_fp8_blocks(r, s);

  auto token_id = [&](const std::string& key, const nlohmann::json& v) {
    if (!v.is_number_integer() || v.get<std::int64_t>() < 0 ||
        v.get<std::int64_t>() >= s.vocab_size)
      r.fail(key, "expected a token id below vocab_size, got " + describe(v));
    return v.get<std::int64_t>();
  };
  if (r.has("bos_token_id")) s.bos_token_id = token_id("bos_token_id", json["bos_token_id"]);
  if (r.has("eos_token_id")) {
    const auto& eos = json["eos_token_id"];
    if (eos.is_array()) {
      for (const auto& id : eos) s.eos_token_ids.push_back(token_id("eos_token_id", id));
    } else {
      s.eos_token_ids.push_back(token_id("eos_token_id", eos));
    }
  }
  return s;
}

}  // namespace moed::model
