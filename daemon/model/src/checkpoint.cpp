#include "moed/model/checkpoint.hpp"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>

#include "moed/model/gguf_model.hpp"

namespace moed::model {
namespace {

// Shard files: those the index names when there is one, else every *.safetensors in the folder.
std::vector<std::filesystem::path> shard_paths(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> paths;
  const auto index_path = dir / "model.safetensors.index.json";
  if (std::filesystem::exists(index_path)) {
    std::ifstream in(index_path);
    nlohmann::json index;
    try {
      index = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      throw std::runtime_error(index_path.string() + ": not valid JSON: " + e.what());
    }
    if (!index.contains("weight_map") || !index["weight_map"].is_object())
      throw std::runtime_error(index_path.string() + ": key 'weight_map' is missing");
    std::set<std::string> names;
    for (const auto& [tensor, file] : index["weight_map"].items()) {
      if (!file.is_string())
        throw std::runtime_error(index_path.string() + ": weight_map entry for '" + tensor +
                                 "' is not a file name");
      const auto name = file.get<std::string>();
      if (name.find('/') != std::string::npos)
        throw std::runtime_error(index_path.string() + ": shard name '" + name +
                                 "' must be a plain file name");
      names.insert(name);
    }
    for (const auto& name : names) paths.push_back(dir / name);
  } else if (std::filesystem::is_directory(dir)) {
    for (const auto& entry : std::filesystem::directory_iterator(dir))
      if (entry.path().extension() == ".safetensors") paths.push_back(entry.path());
    std::sort(paths.begin(), paths.end());
  }
  if (paths.empty())
    throw std::runtime_error(dir.string() + ": no *.safetensors files in the model directory");
  return paths;
}

// Fine-grained FP8 checkpoints keep a weight's per-block multipliers beside it under this suffix.
constexpr std::string_view kScalesSuffix = "_scale_inv";

}  // namespace

bool Checkpoint::is_block_scales(const std::string& name) const {
  if (!name.ends_with(kScalesSuffix)) return false;
  return block_scales_.contains(name.substr(0, name.size() - kScalesSuffix.size()));
}

void Checkpoint::pair_block_scales(const ModelSpec& spec, const std::filesystem::path& model_dir) {
  for (const auto& [name, info] : index_) {
    const std::string& file = paths_[info.file].string();
    if (name.ends_with(kScalesSuffix)) {
      const auto weight = index_.find(name.substr(0, name.size() - kScalesSuffix.size()));
      if (weight == index_.end() || weight->second.dtype != kernels::DType::f8_e4m3)
        throw std::runtime_error(file + ": tensor '" + name +
                                 "' holds block scales, but its weight is not an F8_E4M3 tensor "
                                 "of the checkpoint");
      continue;
    }
    if (info.dtype != kernels::DType::f8_e4m3) continue;
    if (spec.fp8_block_rows == 0)
      throw std::runtime_error(
          file + ": tensor '" + name + "' is F8_E4M3, but " + (model_dir / "config.json").string() +
          " has no quantization_config (quant_method fp8, weight_block_size) to say how its "
          "scales are laid out");
    if (info.shape.size() != 2)
      throw std::runtime_error(file + ": tensor '" + name + "' is F8_E4M3 with shape " +
                               shape_string(info.shape) +
                               "; only matrices are stored in 8-bit floats");
    const std::string scales_name = name + std::string(kScalesSuffix);
    const auto scales = index_.find(scales_name);
    if (scales == index_.end())
      throw std::runtime_error(file + ": tensor '" + name + "' is F8_E4M3, but its block scales '" +
                               scales_name + "' are missing from the checkpoint");
    const auto scale_type = scales->second.dtype;
    if (scale_type != kernels::DType::f32 && scale_type != kernels::DType::bf16 &&
        scale_type != kernels::DType::f16)
      throw std::runtime_error(paths_[scales->second.file].string() + ": tensor '" + scales_name +
                               "' has dtype " + std::string(kernels::dtype_name(scale_type)) +
                               "; block scales are F32, BF16 or F16");
    const std::vector<std::int64_t> grid{
        (info.shape[0] + spec.fp8_block_rows - 1) / spec.fp8_block_rows,
        (info.shape[1] + spec.fp8_block_cols - 1) / spec.fp8_block_cols};
    if (scales->second.shape != grid)
      throw std::runtime_error(paths_[scales->second.file].string() + ": tensor '" + scales_name +
                               "' has shape " + shape_string(scales->second.shape) + " but '" +
                               name + "' " + shape_string(info.shape) + " in blocks of [" +
                               std::to_string(spec.fp8_block_rows) + ", " +
                               std::to_string(spec.fp8_block_cols) +
                               "] (weight_block_size) needs " + shape_string(grid));
    block_scales_.emplace(name, &scales->second);
  }
}

const TensorInfo* Checkpoint::block_scales(const TensorInfo& weight) const {
  const auto it = block_scales_.find(weight.name);
  return it == block_scales_.end() ? nullptr : it->second;
}

Checkpoint::Checkpoint(const std::filesystem::path& model_dir, const ModelSpec& spec) {
  for (const auto& path : shard_paths(model_dir)) {
    safetensors_.push_back(std::make_unique<SafetensorsFile>(path));
    const SafetensorsFile& file = *safetensors_.back();
    const auto file_index = static_cast<std::uint32_t>(files_.size());
    files_.push_back(&file.file());
    paths_.push_back(path);
    for (const auto& [name, info] : file.tensors()) {
      TensorInfo indexed = info;
      indexed.file = file_index;
      total_bytes_ += info.nbytes;
      auto [it, inserted] = index_.emplace(name, std::move(indexed));
      if (!inserted)
        throw std::runtime_error(path.string() + ": tensor '" + name + "' also appears in " +
                                 paths_[it->second.file].string());
    }
  }
  for (const auto& [name, shape] : expected_tensors(spec)) {
    auto it = index_.find(name);
    if (it == index_.end())
      throw std::runtime_error(model_dir.string() + ": tensor '" + name +
                               "' is missing from the checkpoint");
    if (it->second.shape != shape)
      throw std::runtime_error(paths_[it->second.file].string() + ": tensor '" + name +
                               "' has shape " + shape_string(it->second.shape) +
                               " but config.json implies " + shape_string(shape));
  }
  pair_block_scales(spec, model_dir);
  const auto expected = expected_tensors(spec);
  for (const auto& [name, info] : index_) {
    if (ignored_tensor(spec, name) || is_block_scales(name)) continue;
    if (!expected.contains(name))
      throw std::runtime_error(paths_[info.file].string() + ": unexpected tensor '" + name +
                               "' for a " + spec.model_type + " model with this config.json");
  }
}

Checkpoint::Checkpoint(std::shared_ptr<const GgufFile> gguf, const ModelSpec& spec)
    : gguf_(std::move(gguf)) {
  for (const auto& file : gguf_->files()) {
    files_.push_back(&file);
    paths_.push_back(file.path());
  }
  for (const auto& t : gguf_->tensors()) total_bytes_ += t.nbytes;
  // gguf_plan_tensors checks each tensor against the plan as it maps it.
  index_ = gguf_plan_tensors(*gguf_, spec);
}

const TensorInfo& Checkpoint::tensor(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end())
    throw std::runtime_error("tensor '" + name + "' is not in the checkpoint");
  return it->second;
}

const memtier::MappedFile& Checkpoint::file_of(const TensorInfo& tensor) const {
  return *files_.at(tensor.file);
}

const std::byte* Checkpoint::data(const TensorInfo& tensor) const {
  return file_of(tensor).bytes(tensor.file_offset, tensor.nbytes).data();
}

bool is_gguf_path(const std::filesystem::path& model) {
  return model.extension() == ".gguf" && !std::filesystem::is_directory(model);
}

void require_model(const std::filesystem::path& model) {
  if (!is_gguf_path(model)) return require_model_dir(model);
  std::error_code ec;
  if (!std::filesystem::is_regular_file(model, ec))
    throw std::runtime_error(model.string() + ": no such GGUF file");
}

std::shared_ptr<const GgufFile> open_gguf(const std::filesystem::path& model) {
  return is_gguf_path(model) ? std::make_shared<const GgufFile>(model) : nullptr;
}

ModelSpec read_model_spec(const std::filesystem::path& model) {
  const auto gguf = open_gguf(model);
  return gguf ? spec_from_gguf(*gguf) : ModelSpec::from_config(model);
}

Checkpoint open_checkpoint(const std::filesystem::path& model, const ModelSpec& spec) {
  auto gguf = open_gguf(model);
  return gguf ? Checkpoint(std::move(gguf), spec) : Checkpoint(model, spec);
}

}  // namespace moed::model
