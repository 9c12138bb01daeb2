#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "moed/model/model_spec.hpp"
#include "moed/model/safetensors.hpp"
#include "moed/model/tensor_names.hpp"

namespace moed::model {

// All safetensors shards of a model directory, read in place and checked against the layer plan:
// every expected tensor present once with the right shape, nothing unexpected.
class Checkpoint {
 public:
  Checkpoint(const std::filesystem::path& model_dir, const ModelSpec& spec);

  const TensorInfo& tensor(const std::string& name) const;
  const std::byte* data(const TensorInfo& tensor) const;
  const SafetensorsFile& file_of(const TensorInfo& tensor) const;
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }
  std::uint64_t total_bytes() const;

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, std::pair<const TensorInfo*, const SafetensorsFile*>> index_;
};

}  // namespace moed::model
