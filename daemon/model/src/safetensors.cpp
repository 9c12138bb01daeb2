#include "moed/model/safetensors.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace moed::model {
namespace {

// The safetensors format caps the header at 100 MB; a larger length means a corrupt file.
constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

[[noreturn]] void fail(const std::filesystem::path& path, const std::string& what) {
  throw std::runtime_error(path.string() + ": " + what);
}

}  // namespace

SafetensorsFile::SafetensorsFile(const std::filesystem::path& path) : file_(path) {
  if (file_.size() < 8)
    fail(path, "too short for a safetensors header (" + std::to_string(file_.size()) + " bytes)");
  std::uint64_t header_len = 0;
  std::memcpy(&header_len, file_.bytes(0, 8).data(), 8);  // little-endian u64, as on x86-64
  if (header_len > kMaxHeaderBytes || header_len > file_.size() - 8)
    fail(path, "header length " + std::to_string(header_len) + " does not fit the file (" +
                   std::to_string(file_.size()) + " bytes); the file is truncated or corrupt");
  const auto raw = file_.bytes(8, header_len);
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(reinterpret_cast<const char*>(raw.data()),
                                   reinterpret_cast<const char*>(raw.data()) + raw.size());
  } catch (const nlohmann::json::exception& e) {
    fail(path, std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) fail(path, "header is not a JSON object");

  const std::uint64_t data_start = 8 + header_len;
  const std::uint64_t data_size = file_.size() - data_start;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    const std::string where = "tensor '" + name + "': ";
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets"))
      fail(path, where + "needs dtype, shape and data_offsets");
    if (!entry["dtype"].is_string()) fail(path, where + "dtype is not a string");
    const std::string dtype_name = entry["dtype"].get<std::string>();
    const auto dtype = kernels::dtype_from_safetensors(dtype_name);
    if (!dtype)
      fail(path,
           where + "dtype " + dtype_name + " is not supported (F32, BF16, F16 and F8_E4M3 are)");
    const auto& shape_json = entry["shape"];
    const auto& offsets = entry["data_offsets"];
    if (!shape_json.is_array()) fail(path, where + "shape is not an array");
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned())
      fail(path, where + "data_offsets must be two non-negative integers");

    TensorInfo info{name, *dtype, {}, 0, 0};
    std::uint64_t elements = 1;
    for (const auto& dim : shape_json) {
      if (!dim.is_number_unsigned()) fail(path, where + "shape has a non-integer dimension");
      const auto d = dim.get<std::uint64_t>();
      if (d != 0 && elements > std::numeric_limits<std::uint64_t>::max() / 8 / d)
        fail(path, where + "shape is too large");
      elements *= d;
      info.shape.push_back(static_cast<std::int64_t>(d));
    }
    const auto begin = offsets[0].get<std::uint64_t>();
    const auto end = offsets[1].get<std::uint64_t>();
    if (begin > end || end > data_size)
      fail(path, where + "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                     ") lie outside the data section (" + std::to_string(data_size) +
                     " bytes); the file is truncated or its header is wrong");
    if (end - begin != elements * kernels::dtype_size(*dtype))
      fail(path, where + "data_offsets span " + std::to_string(end - begin) + " bytes but shape " +
                     shape_json.dump() + " of " + dtype_name + " needs " +
                     std::to_string(elements * kernels::dtype_size(*dtype)));
    info.file_offset = data_start + begin;
    info.nbytes = end - begin;
    ranges.emplace_back(begin, end);
    tensors_.emplace(name, std::move(info));
  }
  std::sort(ranges.begin(), ranges.end());
  for (std::size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second)
      fail(path, "tensors overlap at data offset " + std::to_string(ranges[i].first));
}

const std::byte* SafetensorsFile::data(const TensorInfo& tensor) const {
  return file_.bytes(tensor.file_offset, tensor.nbytes).data();
}

}  // namespace moed::model
