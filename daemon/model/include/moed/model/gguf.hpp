#pragma once

// GGUF files (ggml's docs/gguf.md, versions 2 and 3) read in place: the metadata parsed into
// values, the tensors left in the mapping and handed out as pointers with their ggml type.
// Split files (llama.cpp's gguf-split: NAME-00001-of-0000N.gguf with split.no / split.count /
// split.tensors.count) open from the first; the rest are found by name and checked.

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "moed/kernels/quant.hpp"
#include "moed/memtier/mapped_file.hpp"

namespace moed::model {

// gguf_metadata_value_type.
enum class GgufValueType : std::uint32_t {
  uint8 = 0,
  int8 = 1,
  uint16 = 2,
  int16 = 3,
  uint32 = 4,
  int32 = 5,
  float32 = 6,
  boolean = 7,
  string = 8,
  array = 9,
  uint64 = 10,
  int64 = 11,
  float64 = 12,
};

std::string_view gguf_value_type_name(GgufValueType type);

struct GgufValue;

// An array value: its element type (for an empty array too) and its elements. Arrays of arrays
// are allowed, as the spec allows.
struct GgufArray {
  GgufValueType element_type;
  std::vector<GgufValue> elements;
};

struct GgufValue {
  // Alternatives in GgufValueType order, so index() is the value type id.
  using Data = std::variant<std::uint8_t, std::int8_t, std::uint16_t, std::int16_t, std::uint32_t,
                            std::int32_t, float, bool, std::string, GgufArray, std::uint64_t,
                            std::int64_t, double>;
  Data data;

  GgufValueType type() const { return static_cast<GgufValueType>(data.index()); }
  // "uint32", "array of string", "array of array of int32".
  std::string type_description() const;
  bool is_integer() const;
};

// The key/value metadata of a GGUF file, in file order, with typed getters whose errors name
// the file, the key, and the expected against the actual type.
class GgufMetadata {
 public:
  GgufMetadata() = default;
  explicit GgufMetadata(std::string source) : source_(std::move(source)) {}

  // False when the key was already present.
  bool add(std::string key, GgufValue value);
  const GgufValue* find(std::string_view key) const;
  bool contains(std::string_view key) const { return find(key) != nullptr; }
  const std::vector<std::pair<std::string, GgufValue>>& entries() const { return entries_; }

  // The value, which must exist and have exactly this type.
  const std::string& get_string(std::string_view key) const;
  bool get_bool(std::string_view key) const;
  std::uint32_t get_uint32(std::string_view key) const;
  float get_float32(std::string_view key) const;
  // Any integer type, when the value fits an int64 (converters differ in the width they write).
  std::int64_t get_integer(std::string_view key) const;
  // float32 or float64.
  double get_float(std::string_view key) const;
  const GgufArray& get_array(std::string_view key) const;
  std::vector<std::string> get_string_array(std::string_view key) const;
  std::vector<float> get_float32_array(std::string_view key) const;
  std::vector<std::int64_t> get_integer_array(std::string_view key) const;

 private:
  const GgufValue& require(std::string_view key, std::string_view expected) const;
  [[noreturn]] void wrong_type(std::string_view key, std::string_view expected,
                               const GgufValue& value) const;

  std::string source_;  // the file the metadata came from, for errors
  std::vector<std::pair<std::string, GgufValue>> entries_;
  std::map<std::string, std::size_t, std::less<>> index_;
};

struct GgufTensor {
  std::string name;
  kernels::GgmlType type;
  std::vector<std::uint64_t> dims;  // GGUF order: dims[0] = ne[0], the innermost (contiguous)
  std::size_t file_index;           // which split holds it (0 for a single file)
  std::uint64_t offset;             // from the start of that file's data section
  std::uint64_t file_offset;        // absolute, in that file
  std::uint64_t nbytes;
  const std::byte* data;  // in the mapping, valid while the GgufFile lives

  std::uint64_t elements() const;
};

inline constexpr std::uint32_t kGgufDefaultAlignment = 32;

// A GGUF model, one file or all splits of one, validated on open. Every error names the file,
// the key or tensor at fault and the byte offset where the reader found it.
class GgufFile {
 public:
  explicit GgufFile(const std::filesystem::path& path);  // throws std::runtime_error

  std::uint32_t version() const { return version_; }
  // The metadata of the first file (the others carry only their split.* keys).
  const GgufMetadata& metadata() const { return metadata_; }
  // All tensors of all splits, in file order.
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const GgufTensor* find_tensor(std::string_view name) const;
  const std::vector<memtier::MappedFile>& files() const { return files_; }
  std::uint32_t alignment() const { return alignment_; }

 private:
  std::vector<memtier::MappedFile> files_;
  std::uint32_t version_ = 0;
  std::uint32_t alignment_ = kGgufDefaultAlignment;
  GgufMetadata metadata_;
  std::vector<GgufTensor> tensors_;
  std::map<std::string, std::size_t, std::less<>> tensor_index_;
};

}  // namespace moed::model
