#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "moed/model/model_spec.hpp"

namespace moed::model {

// Far above any released model (DeepSeek-V3: 61 layers).
inline constexpr std::int64_t kMaxLayers = 1 << 16;

// A Hugging Face config.json as a layer plan, with transformers' semantics and defaults. GGUF
// metadata is translated into one first, so both formats share every check; key_names maps a
// config key to the key the user's file spells (a GGUF key), for errors. Errors name `source`.
ModelSpec parse_config(const nlohmann::json& config, const std::string& source,
                       const std::map<std::string, std::string>& key_names);

}  // namespace moed::model
