#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "moed/kernels/dtype.hpp"
#include "moed/memtier/mapped_file.hpp"

namespace moed::model {

struct TensorInfo {
  std::string name;
  kernels::DType dtype;
  std::vector<std::int64_t> shape;
  std::uint64_t file_offset;  // absolute offset of the first byte in the file
  std::uint64_t nbytes;
  std::uint32_t file = 0;  // which of its checkpoint's files (Checkpoint::paths) holds it
};

// One safetensors file, validated on open: header length and JSON, known dtypes, shapes that
// match their byte ranges, ranges inside the data section and not overlapping. Every error names
// the file and, where there is one, the tensor.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return file_.path(); }
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const memtier::MappedFile& file() const { return file_; }
  const std::byte* data(const TensorInfo& tensor) const;

 private:
  memtier::MappedFile file_;
  std::map<std::string, TensorInfo> tensors_;
};

}  // namespace moed::model
