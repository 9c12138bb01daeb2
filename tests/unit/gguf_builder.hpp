#pragma once

// Builds GGUF files byte by byte for tests, including malformed ones: each part of the file is
// spelled out so a test can change one field and expect the reader to name it.

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

namespace moed::test {

// Little-endian encodings of GGUF's scalar and string values.
namespace gguf_bytes {

template <class T>
std::string scalar(T value) {
  std::string bytes(sizeof(T), '\0');
  std::memcpy(bytes.data(), &value, sizeof(T));
  return bytes;
}
inline std::string u32(std::uint32_t value) {
  return scalar(value);
}
inline std::string u64(std::uint64_t value) {
  return scalar(value);
}
inline std::string str(const std::string& text) {
  return u64(text.size()) + text;
}
// An array value: element type, count, then the encoded elements.
inline std::string array(std::uint32_t element_type, const std::vector<std::string>& elements) {
  std::string bytes = u32(element_type) + u64(elements.size());
  for (const auto& element : elements) bytes += element;
  return bytes;
}

}  // namespace gguf_bytes

// Value type ids (gguf_metadata_value_type).
enum GgufTypeId : std::uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};

struct GgufKv {
  std::string key;
  std::uint32_t type;
  std::string value;  // encoded
};

struct GgufTensorSpec {
  std::string name;
  std::vector<std::uint64_t> dims;
  std::uint32_t ggml_type;
  std::string data;                     // placed at the offset in the data section
  std::optional<std::uint64_t> offset;  // default: after the previous tensor, aligned
};

struct GgufSpec {
  std::uint32_t magic = 0x46554747;
  std::uint32_t version = 3;
  std::uint32_t alignment = 32;  // for placing data; write general.alignment as a kv to change it
  std::vector<GgufKv> kvs;
  std::vector<GgufTensorSpec> tensors;

  void add(std::string key, std::uint32_t type, std::string value) {
    kvs.push_back({std::move(key), type, std::move(value)});
  }

  // Byte offset where the tensor infos start (after the header and all key/values).
  std::size_t tensor_infos_offset() const {
    std::size_t offset = 24;
    for (const auto& kv : kvs) offset += 8 + kv.key.size() + 4 + kv.value.size();
    return offset;
  }

  std::string encode() const {
    using namespace gguf_bytes;
    std::string out = u32(magic) + u32(version) + u64(tensors.size()) + u64(kvs.size());
    for (const auto& kv : kvs) out += str(kv.key) + u32(kv.type) + kv.value;
    std::vector<std::uint64_t> offsets;
    std::uint64_t next = 0;
    for (const auto& tensor : tensors) {
      const std::uint64_t offset = tensor.offset.value_or(next);
      offsets.push_back(offset);
      next = (offset + tensor.data.size() + alignment - 1) / alignment * alignment;
      out += str(tensor.name) + u32(static_cast<std::uint32_t>(tensor.dims.size()));
      for (const auto dim : tensor.dims) out += u64(dim);
      out += u32(tensor.ggml_type) + u64(offset);
    }
    if (tensors.empty()) return out;
    const std::size_t data_start = (out.size() + alignment - 1) / alignment * alignment;
    out.resize(data_start, '\0');
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      if (tensors[i].data.empty()) continue;
      const std::size_t at = data_start + offsets[i];
      if (out.size() < at + tensors[i].data.size()) out.resize(at + tensors[i].data.size(), '\0');
      out.replace(at, tensors[i].data.size(), tensors[i].data);
    }
    return out;
  }
};

}  // namespace moed::test
