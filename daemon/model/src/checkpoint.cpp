#include "moed/model/checkpoint.hpp"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>

namespace moed::model {
namespace {

std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

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

}  // namespace

Checkpoint::Checkpoint(const std::filesystem::path& model_dir, const ModelSpec& spec) {
  for (const auto& path : shard_paths(model_dir)) {
    files_.push_back(std::make_unique<SafetensorsFile>(path));
    const SafetensorsFile* file = files_.back().get();
    for (const auto& [name, info] : file->tensors()) {
      auto [it, inserted] = index_.emplace(name, std::make_pair(&info, file));
      if (!inserted)
        throw std::runtime_error(path.string() + ": tensor '" + name + "' also appears in " +
                                 it->second.second->path().string());
    }
  }
  const auto expected = expected_tensors(spec);
  for (const auto& [name, shape] : expected) {
    auto it = index_.find(name);
    if (it == index_.end())
      throw std::runtime_error(model_dir.string() + ": tensor '" + name +
                               "' is missing from the checkpoint");
    if (it->second.first->shape != shape)
      throw std::runtime_error(it->second.second->path().string() + ": tensor '" + name +
                               "' has shape " + shape_string(it->second.first->shape) +
                               " but config.json implies " + shape_string(shape));
  }
  for (const auto& [name, where] : index_) {
    if (ignored_tensor(spec, name)) continue;
    if (!expected.contains(name))
      throw std::runtime_error(where.second->path().string() + ": unexpected tensor '" + name +
                               "' for a " + spec.model_type + " model with this config.json");
  }
}

const TensorInfo& Checkpoint::tensor(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end())
    throw std::runtime_error("tensor '" + name + "' is not in the checkpoint");
  return *it->second.first;
}

const SafetensorsFile& Checkpoint::file_of(const TensorInfo& tensor) const {
  return *index_.at(tensor.name).second;
}

const std::byte* Checkpoint::data(const TensorInfo& tensor) const {
  return file_of(tensor).data(tensor);
}

std::uint64_t Checkpoint::total_bytes() const {
  std::uint64_t total = 0;
  for (const auto& [name, where] : index_) total += where.first->nbytes;
  return total;
}

}  // namespace moed::model
