#include "moed/model/model_spec.hpp"

#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace moed::model {
namespace {

// A value for an error message. Only scalars are written out: writing recurses per level, and a
// value nested a few hundred thousand levels deep would overflow the stack.
std::string describe(const nlohmann::json& v) {
  return v.is_primitive() ? v.dump() : std::string("an ") + v.type_name();
}

class ConfigReader {
 public:
  ConfigReader(const std::filesystem::path& path, const nlohmann::json& json)
      : path_(path), json_(json) {}

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw std::runtime_error(path_.string() + ": key '" + key + "': " + what);
  }

  std::int64_t positive(const std::string& key) const {
    if (!json_.contains(key)) fail(key, "is missing");
    const auto& v = json_[key];
    if (!v.is_number_integer() || v.get<std::int64_t>() <= 0)
      fail(key, "expected a positive integer, got " + describe(v));
    return v.get<std::int64_t>();
  }

  std::int64_t positive_or(const std::string& key, std::int64_t fallback) const {
    if (!json_.contains(key) || json_[key].is_null()) return fallback;
    return positive(key);
  }

  double number_or(const std::string& key, double fallback) const {
    if (!json_.contains(key) || json_[key].is_null()) return fallback;
    if (!json_[key].is_number() || json_[key].get<double>() <= 0)
      fail(key, "expected a positive number, got " + describe(json_[key]));
    return json_[key].get<double>();
  }

 private:
  const std::filesystem::path& path_;
  const nlohmann::json& json_;
};

}  // namespace

void require_model_dir(const std::filesystem::path& model_dir) {
  std::error_code ec;
  const auto status = std::filesystem::status(model_dir, ec);
  if (status.type() == std::filesystem::file_type::not_found)
    throw std::runtime_error(model_dir.string() + ": no such directory");
  if (ec) throw std::runtime_error(model_dir.string() + ": " + ec.message());
  if (status.type() != std::filesystem::file_type::directory)
    throw std::runtime_error(model_dir.string() +
                             ": not a directory; --model takes a Hugging Face model directory");
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
  const ConfigReader r(path, json);

  ModelSpec s;
  if (!json.contains("model_type") || !json["model_type"].is_string())
    r.fail("model_type", "is missing or not a string");
  s.model_type = json["model_type"].get<std::string>();
  if (s.model_type != "mixtral")
    r.fail("model_type", "'" + s.model_type + "' is not supported (supported: mixtral)");
  if (json.contains("rope_scaling") && !json["rope_scaling"].is_null())
    r.fail("rope_scaling", "RoPE scaling is not supported yet");

  s.vocab_size = r.positive("vocab_size");
  s.hidden_size = r.positive("hidden_size");
  s.intermediate_size = r.positive("intermediate_size");
  s.num_layers = r.positive("num_hidden_layers");
  s.num_heads = r.positive("num_attention_heads");
  s.num_kv_heads = r.positive_or("num_key_value_heads", s.num_heads);
  s.num_experts = r.positive("num_local_experts");
  s.experts_per_token = r.positive("num_experts_per_tok");
  s.head_dim = r.positive_or("head_dim", s.hidden_size / s.num_heads);
  s.rms_norm_eps = r.number_or("rms_norm_eps", 1e-5);
  s.rope_theta = r.number_or("rope_theta", 1e6);
  s.max_position_embeddings = r.positive_or("max_position_embeddings", 4096);
  if (json.contains("tie_word_embeddings") && !json["tie_word_embeddings"].is_null()) {
    if (!json["tie_word_embeddings"].is_boolean())
      r.fail("tie_word_embeddings",
             "expected true or false, got " + describe(json["tie_word_embeddings"]));
    s.tie_word_embeddings = json["tie_word_embeddings"].get<bool>();
  }

  if (s.num_heads % s.num_kv_heads != 0)
    r.fail("num_key_value_heads", std::to_string(s.num_kv_heads) + " does not divide " +
                                      "num_attention_heads " + std::to_string(s.num_heads));
  if (s.head_dim == 0) r.fail("head_dim", "is missing and hidden_size / num_attention_heads is 0");
  if (s.head_dim % 2 != 0) r.fail("head_dim", "must be even for RoPE");
  // Token ids, layers and experts are int32 downstream, and the products below size tensors:
  // bounding them here keeps every size computed from this file in range.
  for (const auto& [key, value] : {std::pair<const char*, std::int64_t>{"vocab_size", s.vocab_size},
                                   {"num_hidden_layers", s.num_layers},
                                   {"num_local_experts", s.num_experts}})
    if (value > std::numeric_limits<std::int32_t>::max())
      r.fail(key, std::to_string(value) + " exceeds 2^31 - 1");
  auto fits = [&](const char* key, std::initializer_list<std::int64_t> dims) {
    std::int64_t bytes = 4;  // f32, the widest element
    for (const auto d : dims)
      if (__builtin_mul_overflow(bytes, d, &bytes))
        r.fail(key, "makes a tensor of more than 2^63 bytes");
  };
  fits("vocab_size", {s.vocab_size, s.hidden_size});
  fits("intermediate_size", {s.intermediate_size, s.hidden_size});
  fits("head_dim", {s.num_heads, s.head_dim, s.hidden_size});
  if (s.experts_per_token > s.num_experts)
    r.fail("num_experts_per_tok", std::to_string(s.experts_per_token) + " exceeds " +
                                      "num_local_experts " + std::to_string(s.num_experts));

  auto token_id = [&](const std::string& key, const nlohmann::json& v) {
    if (!v.is_number_integer() || v.get<std::int64_t>() < 0 ||
        v.get<std::int64_t>() >= s.vocab_size)
      r.fail(key, "expected a token id below vocab_size, got " + describe(v));
    return v.get<std::int64_t>();
  };
  if (json.contains("bos_token_id") && !json["bos_token_id"].is_null())
    s.bos_token_id = token_id("bos_token_id", json["bos_token_id"]);
  if (json.contains("eos_token_id") && !json["eos_token_id"].is_null()) {
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
