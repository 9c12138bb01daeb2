#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "moed/memtier/mapped_file.hpp"
#include "moed/model/gguf.hpp"
#include "moed/model/model_spec.hpp"
#include "moed/model/safetensors.hpp"
#include "moed/model/tensor_names.hpp"

namespace moed::model {

// The weights of a model, read in place, under the Hugging Face tensor names of its layer plan
// whatever the file format: the safetensors shards of a model directory, or a GGUF file (with
// its splits), whose llama.cpp names and merged expert tensors are mapped onto the plan's names
// (an expert is a slice of its merged tensor). Checked against the plan on open: every expected
// tensor present once with the right shape, nothing unexpected.
class Checkpoint {
 public:
  Checkpoint(const std::filesystem::path& model_dir, const ModelSpec& spec);
  Checkpoint(std::shared_ptr<const GgufFile> gguf, const ModelSpec& spec);

  const TensorInfo& tensor(const std::string& name) const;
  // The block scales of an f8_e4m3 weight (its `<name>_scale_inv` tensor, of ModelSpec's
  // fp8_block_rows x fp8_block_cols blocks), checked on open; null for any other tensor.
  const TensorInfo* block_scales(const TensorInfo& weight) const;
  const std::byte* data(const TensorInfo& tensor) const;
  const memtier::MappedFile& file_of(const TensorInfo& tensor) const;
  // The files TensorInfo::file indexes, as the disk tier reads them.
  const std::vector<std::filesystem::path>& paths() const { return paths_; }
  std::uint64_t total_bytes() const { return total_bytes_; }
  bool is_gguf() const { return gguf_ != nullptr; }

 private:
  // Finds each f8_e4m3 weight's scales and checks them against the config's blocks; a scales
  // tensor without its weight is refused by name.
  void pair_block_scales(const ModelSpec& spec, const std::filesystem::path& model_dir);
  bool is_block_scales(const std::string& name) const;

  std::vector<std::unique_ptr<SafetensorsFile>> safetensors_;
  std::shared_ptr<const GgufFile> gguf_;
  std::vector<const memtier::MappedFile*> files_;  // by TensorInfo::file
  std::vector<std::filesystem::path> paths_;
  std::map<std::string, TensorInfo> index_;
  std::map<std::string, const TensorInfo*> block_scales_;  // f8_e4m3 weight -> its scales
  std::uint64_t total_bytes_ = 0;
};

// True when --model names a GGUF file (NAME.gguf, or the first of its splits) rather than a
// Hugging Face model directory.
bool is_gguf_path(const std::filesystem::path& model);
// Throws std::runtime_error naming the path unless it is a model directory or a .gguf file, so
// that a mistyped --model is reported as such, not as the first file missing from it.
void require_model(const std::filesystem::path& model);
// The GGUF file --model names, opened and validated; null for a model directory.
std::shared_ptr<const GgufFile> open_gguf(const std::filesystem::path& model);
// The layer plan of a model as --model names it: a directory's config.json or a GGUF file's
// metadata.
ModelSpec read_model_spec(const std::filesystem::path& model);
// Its weights under that plan.
Checkpoint open_checkpoint(const std::filesystem::path& model, const ModelSpec& spec);

}  // namespace moed::model
