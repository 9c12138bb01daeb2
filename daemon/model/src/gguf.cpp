#include "moed/model/gguf.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <numeric>
#include <regex>
#include <stdexcept>

namespace moed::model {
namespace {

constexpr std::uint32_t kGgufMagic = 0x46554747;  // "GGUF" read as a little-endian u32
// ggml's GGML_MAX_DIMS.
constexpr std::uint32_t kMaxDims = 4;
// The spec sets no bound on arrays of arrays; a bound keeps a hostile file off the stack.
constexpr int kMaxArrayDepth = 16;

constexpr std::string_view kSplitNo = "split.no";
constexpr std::string_view kSplitCount = "split.count";
constexpr std::string_view kSplitTensorsCount = "split.tensors.count";

// The fewest bytes a value of the type takes in the file, to refuse counts the file cannot hold
// before allocating for them.
std::uint64_t min_encoded_size(GgufValueType type) {
  switch (type) {
    case GgufValueType::uint8:
    case GgufValueType::int8:
    case GgufValueType::boolean:
      return 1;
    case GgufValueType::uint16:
    case GgufValueType::int16:
      return 2;
    case GgufValueType::uint32:
    case GgufValueType::int32:
    case GgufValueType::float32:
      return 4;
    case GgufValueType::uint64:
    case GgufValueType::int64:
    case GgufValueType::float64:
    case GgufValueType::string:
      return 8;
    case GgufValueType::array:
      return 12;
  }
  return 1;
}

bool is_integer_type(GgufValueType type) {
  switch (type) {
    case GgufValueType::uint8:
    case GgufValueType::int8:
    case GgufValueType::uint16:
    case GgufValueType::int16:
    case GgufValueType::uint32:
    case GgufValueType::int32:
    case GgufValueType::uint64:
    case GgufValueType::int64:
      return true;
    default:
      return false;
  }
}

bool known_value_type(std::uint32_t id) {
  return id <= static_cast<std::uint32_t>(12);
}

// Reads one GGUF file front to back with every read bounds-checked; errors name the file and
// the byte offset.
class Reader {
 public:
  explicit Reader(const memtier::MappedFile& file)
      : path_(file.path().string()), data_(file.bytes(0, file.size()).data()), size_(file.size()) {}

  std::uint64_t position() const { return position_; }
  std::uint64_t remaining() const { return size_ - position_; }

  [[noreturn]] void fail(std::uint64_t at, const std::string& what) const {
    throw std::runtime_error(path_ + ": byte " + std::to_string(at) + ": " + what);
  }

  void need(std::uint64_t bytes, const std::string& what) const {
    if (bytes > remaining())
      fail(position_, "truncated: " + what + " needs " + std::to_string(bytes) + " bytes, " +
                          std::to_string(remaining()) + " remain in the file (" +
                          std::to_string(size_) + " bytes)");
  }

  template <class T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T value;
    std::memcpy(&value, data_ + position_, sizeof(T));
    position_ += sizeof(T);
    return value;
  }

  std::string read_string(const std::string& what) {
    const std::uint64_t start = position_;
    if (remaining() < sizeof(std::uint64_t)) need(sizeof(std::uint64_t), what + " length");
    const auto length = read<std::uint64_t>(what);
    if (length > remaining())
      fail(start, "truncated: " + what + " of " + std::to_string(length) + " bytes runs past the " +
                      "end of the file (" + std::to_string(remaining()) + " bytes remain)");
    std::string text(reinterpret_cast<const char*>(data_ + position_),
                     static_cast<std::size_t>(length));
    position_ += length;
    return text;
  }

  // The count of an array of items each at least `item_size` bytes, refused when the rest of
  // the file cannot hold that many.
  std::uint64_t read_count(const std::string& what, std::uint64_t item_size) {
    const std::uint64_t start = position_;
    const auto count = read<std::uint64_t>(what);
    if (count > remaining() / item_size)
      fail(start, "truncated: " + what + " " + std::to_string(count) + " needs at least " +
                      std::to_string(item_size) + " bytes each, " + std::to_string(remaining()) +
                      " bytes remain in the file");
    return count;
  }

 private:
  std::string path_;
  const std::byte* data_;
  std::uint64_t size_;
  std::uint64_t position_ = 0;
};

GgufValue read_value(Reader& reader, GgufValueType type, const std::string& where, int depth) {
  switch (type) {
    case GgufValueType::uint8:
      return {reader.read<std::uint8_t>(where)};
    case GgufValueType::int8:
      return {reader.read<std::int8_t>(where)};
    case GgufValueType::uint16:
      return {reader.read<std::uint16_t>(where)};
    case GgufValueType::int16:
      return {reader.read<std::int16_t>(where)};
    case GgufValueType::uint32:
      return {reader.read<std::uint32_t>(where)};
    case GgufValueType::int32:
      return {reader.read<std::int32_t>(where)};
    case GgufValueType::float32:
      return {reader.read<float>(where)};
    case GgufValueType::uint64:
      return {reader.read<std::uint64_t>(where)};
    case GgufValueType::int64:
      return {reader.read<std::int64_t>(where)};
    case GgufValueType::float64:
      return {reader.read<double>(where)};
    case GgufValueType::boolean: {
      const std::uint64_t at = reader.position();
      const auto byte = reader.read<std::uint8_t>(where);
      if (byte > 1)
        reader.fail(at, where + ": bool value " + std::to_string(byte) + " is neither 0 nor 1");
      return {byte == 1};
    }
    case GgufValueType::string:
      return {reader.read_string(where)};
    case GgufValueType::array: {
      if (depth >= kMaxArrayDepth)
        reader.fail(reader.position(), where + ": arrays nest deeper than " +
                                           std::to_string(kMaxArrayDepth) + " levels");
      const std::uint64_t type_at = reader.position();
      const auto element_id = reader.read<std::uint32_t>(where + " element type");
      if (!known_value_type(element_id))
        reader.fail(type_at, where + ": unknown array element type " + std::to_string(element_id));
      const auto element_type = static_cast<GgufValueType>(element_id);
      const auto count =
          reader.read_count(where + " element count", min_encoded_size(element_type));
      GgufArray array{element_type, {}};
      array.elements.reserve(static_cast<std::size_t>(count));
      // One description for all elements (vocabularies hold 10^5 strings); errors carry the
      // byte offset, which finds the element.
      const std::string element = where + " element";
      for (std::uint64_t i = 0; i < count; ++i)
        array.elements.push_back(read_value(reader, element_type, element, depth + 1));
      return {std::move(array)};
    }
  }
  reader.fail(reader.position(), where + ": unknown value type");
}

// One file's header, metadata and tensor infos, checked on their own; the data section's
// placement checks come after, once the alignment is known.
struct ParsedFile {
  std::uint32_t version = 0;
  std::uint32_t alignment = kGgufDefaultAlignment;
  GgufMetadata metadata;
  std::vector<GgufTensor> tensors;
};

// The product a * b, or nullopt past `limit`.
std::optional<std::uint64_t> checked_multiply(std::uint64_t a, std::uint64_t b,
                                              std::uint64_t limit) {
  if (a != 0 && b > limit / a) return std::nullopt;
  return a * b;
}

GgufTensor read_tensor_info(Reader& reader, std::size_t index, std::size_t file_index) {
  GgufTensor tensor{};
  tensor.file_index = file_index;
  tensor.name = reader.read_string("tensor " + std::to_string(index) + " name");
  const std::string where = "tensor '" + tensor.name + "'";
  const std::uint64_t dims_at = reader.position();
  const auto n_dims = reader.read<std::uint32_t>(where + " n_dims");
  if (n_dims > kMaxDims)
    reader.fail(dims_at, where + ": " + std::to_string(n_dims) +
                             " dimensions; ggml allows at most " + std::to_string(kMaxDims));
  std::uint64_t elements = 1;
  for (std::uint32_t d = 0; d < n_dims; ++d) {
    const std::uint64_t at = reader.position();
    const auto dim = reader.read<std::uint64_t>(where + " dimension " + std::to_string(d));
    if (dim == 0) reader.fail(at, where + ": dimension " + std::to_string(d) + " is zero");
    const auto product = checked_multiply(
        elements, dim, static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()));
    if (!product)
      reader.fail(at, where + ": element count overflows at dimension " + std::to_string(d) + " (" +
                          std::to_string(dim) + ")");
    elements = *product;
    tensor.dims.push_back(dim);
  }
  const std::uint64_t type_at = reader.position();
  const auto type_id = reader.read<std::uint32_t>(where + " type");
  const auto traits = kernels::ggml_type_traits(type_id);
  if (!traits) reader.fail(type_at, where + ": unknown ggml type id " + std::to_string(type_id));
  tensor.type = static_cast<kernels::GgmlType>(type_id);
  const std::uint64_t row = tensor.dims.empty() ? 1 : tensor.dims[0];
  if (row % traits->block_size != 0)
    reader.fail(dims_at, where + ": first dimension " + std::to_string(row) +
                             " is not a multiple of the " + std::string(traits->name) +
                             " block size " + std::to_string(traits->block_size));
  const auto nbytes = checked_multiply(elements / traits->block_size, traits->type_size,
                                       std::numeric_limits<std::uint64_t>::max());
  if (!nbytes) reader.fail(dims_at, where + ": byte size overflows");
  tensor.nbytes = *nbytes;
  tensor.offset = reader.read<std::uint64_t>(where + " offset");
  return tensor;
}

ParsedFile parse_file(const memtier::MappedFile& file, std::size_t file_index) {
  Reader reader(file);
  ParsedFile parsed;
  parsed.metadata = GgufMetadata(file.path().string());
  const auto magic = reader.read<std::uint32_t>("magic");
  if (magic != kGgufMagic) {
    char shown[5] = {};
    std::memcpy(shown, &magic, 4);
    for (char& c : shown)
      if (c != 0 && (c < 0x20 || c > 0x7e)) c = '?';
    reader.fail(0, "bad magic '" + std::string(shown) + "': not a GGUF file");
  }
  parsed.version = reader.read<std::uint32_t>("version");
  if (parsed.version == 1)
    reader.fail(4,
                "GGUF version 1 is not supported (it predates 64-bit counts); convert the "
                "model again with a current llama.cpp");
  if (parsed.version != 2 && parsed.version != 3) {
    const std::uint32_t swapped = __builtin_bswap32(parsed.version);
    reader.fail(4, "GGUF version " + std::to_string(parsed.version) +
                       " is not supported (2 and 3 are)" +
                       (swapped == 2 || swapped == 3 ? "; the file looks big-endian" : ""));
  }
  // Smallest tensor info: an empty name (8), n_dims (4), type (4), offset (8).
  const auto tensor_count = reader.read_count("tensor count", 24);
  // Smallest key/value: an empty key (8), a type (4), a one-byte value.
  const auto kv_count = reader.read_count("metadata key/value count", 13);

  std::uint64_t alignment_key_at = 0;
  for (std::uint64_t i = 0; i < kv_count; ++i) {
    const std::uint64_t key_at = reader.position();
    std::string key = reader.read_string("metadata key " + std::to_string(i));
    const std::string where = "key '" + key + "'";
    const std::uint64_t type_at = reader.position();
    const auto type_id = reader.read<std::uint32_t>(where + " value type");
    if (!known_value_type(type_id))
      reader.fail(type_at, where + ": unknown value type " + std::to_string(type_id));
    GgufValue value = read_value(reader, static_cast<GgufValueType>(type_id), where, 0);
    if (!parsed.metadata.add(key, std::move(value))) reader.fail(key_at, where + " appears twice");
    if (key == "general.alignment") alignment_key_at = key_at;
  }

  if (const GgufValue* alignment = parsed.metadata.find("general.alignment")) {
    if (alignment->type() != GgufValueType::uint32)
      reader.fail(alignment_key_at,
                  "key 'general.alignment' must be uint32, not " + alignment->type_description());
    const auto value = std::get<std::uint32_t>(alignment->data);
    if (!std::has_single_bit(value))
      reader.fail(alignment_key_at,
                  "key 'general.alignment' = " + std::to_string(value) + " is not a power of two");
    parsed.alignment = value;
  }

  std::map<std::string, std::uint64_t, std::less<>> seen;
  parsed.tensors.reserve(static_cast<std::size_t>(tensor_count));
  std::vector<std::uint64_t> info_offsets;
  for (std::uint64_t i = 0; i < tensor_count; ++i) {
    const std::uint64_t at = reader.position();
    GgufTensor tensor = read_tensor_info(reader, static_cast<std::size_t>(i), file_index);
    if (!seen.emplace(tensor.name, at).second)
      reader.fail(at, "tensor '" + tensor.name + "' appears twice");
    if (tensor.offset % parsed.alignment != 0)
      reader.fail(reader.position() - 8,
                  "tensor '" + tensor.name + "': offset " + std::to_string(tensor.offset) +
                      " is not a multiple of the alignment " + std::to_string(parsed.alignment));
    info_offsets.push_back(at);
    parsed.tensors.push_back(std::move(tensor));
  }
  if (parsed.tensors.empty()) return parsed;

  // The data section starts at the first multiple of the alignment past the tensor infos.
  const std::uint64_t header_end = reader.position();
  const std::uint64_t data_start =
      (header_end + parsed.alignment - 1) / parsed.alignment * parsed.alignment;
  const std::uint64_t file_size = file.size();
  const std::uint64_t data_size = data_start <= file_size ? file_size - data_start : 0;
  for (std::size_t i = 0; i < parsed.tensors.size(); ++i) {
    GgufTensor& tensor = parsed.tensors[i];
    if (data_start > file_size || tensor.offset > data_size ||
        tensor.nbytes > data_size - tensor.offset)
      reader.fail(info_offsets[i],
                  "tensor '" + tensor.name + "': data [" + std::to_string(tensor.offset) + ", " +
                      std::to_string(tensor.offset + tensor.nbytes) +
                      ") of the data section at byte " + std::to_string(data_start) +
                      " runs past the end of the file (" + std::to_string(file_size) +
                      " bytes); the file is truncated or corrupt");
    tensor.file_offset = data_start + tensor.offset;
    tensor.data = file.bytes(tensor.file_offset, tensor.nbytes).data();
  }
  std::vector<std::size_t> order(parsed.tensors.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return parsed.tensors[a].offset < parsed.tensors[b].offset;
  });
  for (std::size_t i = 1; i < order.size(); ++i) {
    const GgufTensor& before = parsed.tensors[order[i - 1]];
    const GgufTensor& after = parsed.tensors[order[i]];
    if (after.offset < before.offset + before.nbytes)
      reader.fail(after.file_offset,
                  "tensor '" + after.name + "' at data offset " + std::to_string(after.offset) +
                      " overlaps tensor '" + before.name + "' [" + std::to_string(before.offset) +
                      ", " + std::to_string(before.offset + before.nbytes) + ")");
  }
  return parsed;
}

struct SplitName {
  std::string prefix;  // the path up to "-NNNNN-of-MMMMM.gguf"
  int number;          // 1-based, as in the name
  int count;
};

std::optional<SplitName> parse_split_name(const std::filesystem::path& path) {
  static const std::regex pattern(R"(^(.*)-(\d{5})-of-(\d{5})\.gguf$)");
  std::smatch match;
  const std::string text = path.string();
  if (!std::regex_match(text, match, pattern)) return std::nullopt;
  return SplitName{match[1].str(), std::stoi(match[2].str()), std::stoi(match[3].str())};
}

// "-00001-of-00003.gguf", as llama.cpp's llama_split_path writes it.
std::string split_suffix(std::int64_t number, std::int64_t count) {
  char suffix[40];
  std::snprintf(suffix, sizeof suffix, "-%05lld-of-%05lld.gguf", static_cast<long long>(number),
                static_cast<long long>(count));
  return suffix;
}

// The split.* key as an integer, or nullopt when absent; any integer type is accepted
// (gguf-split writes u16 / u16 / i32).
std::optional<std::int64_t> split_key(const GgufMetadata& metadata, std::string_view key) {
  if (!metadata.contains(key)) return std::nullopt;
  return metadata.get_integer(key);
}

}  // namespace

std::string_view gguf_value_type_name(GgufValueType type) {
  switch (type) {
    case GgufValueType::uint8:
      return "uint8";
    case GgufValueType::int8:
      return "int8";
    case GgufValueType::uint16:
      return "uint16";
    case GgufValueType::int16:
      return "int16";
    case GgufValueType::uint32:
      return "uint32";
    case GgufValueType::int32:
      return "int32";
    case GgufValueType::float32:
      return "float32";
    case GgufValueType::boolean:
      return "bool";
    case GgufValueType::string:
      return "string";
    case GgufValueType::array:
      return "array";
    case GgufValueType::uint64:
      return "uint64";
    case GgufValueType::int64:
      return "int64";
    case GgufValueType::float64:
      return "float64";
  }
  return "unknown";
}

bool GgufValue::is_integer() const {
  return is_integer_type(type());
}

std::string GgufValue::type_description() const {
  if (const auto* array = std::get_if<GgufArray>(&data)) {
    if (array->element_type == GgufValueType::array && !array->elements.empty())
      return "array of " + array->elements.front().type_description();
    return "array of " + std::string(gguf_value_type_name(array->element_type));
  }
  return std::string(gguf_value_type_name(type()));
}

namespace {

// The value of an integer GgufValue, or nullopt when it does not fit an int64.
std::optional<std::int64_t> integer_value(const GgufValue& value) {
  return std::visit(
      [](const auto& v) -> std::optional<std::int64_t> {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::uint64_t>) {
          if (v > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
            return std::nullopt;
          return static_cast<std::int64_t>(v);
        } else if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
          return static_cast<std::int64_t>(v);
        } else {
          return std::nullopt;
        }
      },
      value.data);
}

}  // namespace

bool GgufMetadata::add(std::string key, GgufValue value) {
  if (index_.contains(key)) return false;
  index_.emplace(key, entries_.size());
  entries_.emplace_back(std::move(key), std::move(value));
  return true;
}

const GgufValue* GgufMetadata::find(std::string_view key) const {
  const auto it = index_.find(key);
  return it == index_.end() ? nullptr : &entries_[it->second].second;
}

void GgufMetadata::wrong_type(std::string_view key, std::string_view expected,
                              const GgufValue& value) const {
  throw std::runtime_error(source_ + ": key '" + std::string(key) + "' should be " +
                           std::string(expected) + " but is " + value.type_description());
}

const GgufValue& GgufMetadata::require(std::string_view key, std::string_view expected) const {
  const GgufValue* value = find(key);
  if (!value)
    throw std::runtime_error(source_ + ": key '" + std::string(key) + "' (" +
                             std::string(expected) + ") is missing");
  return *value;
}

const std::string& GgufMetadata::get_string(std::string_view key) const {
  const GgufValue& value = require(key, "string");
  if (const auto* text = std::get_if<std::string>(&value.data)) return *text;
  wrong_type(key, "string", value);
}

bool GgufMetadata::get_bool(std::string_view key) const {
  const GgufValue& value = require(key, "bool");
  if (const auto* flag = std::get_if<bool>(&value.data)) return *flag;
  wrong_type(key, "bool", value);
}

std::uint32_t GgufMetadata::get_uint32(std::string_view key) const {
  const GgufValue& value = require(key, "uint32");
  if (const auto* number = std::get_if<std::uint32_t>(&value.data)) return *number;
  wrong_type(key, "uint32", value);
}

float GgufMetadata::get_float32(std::string_view key) const {
  const GgufValue& value = require(key, "float32");
  if (const auto* number = std::get_if<float>(&value.data)) return *number;
  wrong_type(key, "float32", value);
}

std::int64_t GgufMetadata::get_integer(std::string_view key) const {
  const GgufValue& value = require(key, "an integer");
  if (!value.is_integer()) wrong_type(key, "an integer", value);
  const auto number = integer_value(value);
  if (!number)
    throw std::runtime_error(source_ + ": key '" + std::string(key) +
                             "' = " + std::to_string(std::get<std::uint64_t>(value.data)) +
                             " does not fit a signed 64-bit integer");
  return *number;
}

double GgufMetadata::get_float(std::string_view key) const {
  const GgufValue& value = require(key, "float32 or float64");
  if (const auto* number = std::get_if<float>(&value.data)) return *number;
  if (const auto* number = std::get_if<double>(&value.data)) return *number;
  wrong_type(key, "float32 or float64", value);
}

const GgufArray& GgufMetadata::get_array(std::string_view key) const {
  const GgufValue& value = require(key, "an array");
  if (const auto* array = std::get_if<GgufArray>(&value.data)) return *array;
  wrong_type(key, "an array", value);
}

std::vector<std::string> GgufMetadata::get_string_array(std::string_view key) const {
  const GgufValue& value = require(key, "array of string");
  const auto* array = std::get_if<GgufArray>(&value.data);
  if (!array || array->element_type != GgufValueType::string)
    wrong_type(key, "array of string", value);
  std::vector<std::string> texts;
  texts.reserve(array->elements.size());
  for (const auto& element : array->elements) texts.push_back(std::get<std::string>(element.data));
  return texts;
}

std::vector<float> GgufMetadata::get_float32_array(std::string_view key) const {
  const GgufValue& value = require(key, "array of float32");
  const auto* array = std::get_if<GgufArray>(&value.data);
  if (!array || array->element_type != GgufValueType::float32)
    wrong_type(key, "array of float32", value);
  std::vector<float> numbers;
  numbers.reserve(array->elements.size());
  for (const auto& element : array->elements) numbers.push_back(std::get<float>(element.data));
  return numbers;
}

std::vector<std::int64_t> GgufMetadata::get_integer_array(std::string_view key) const {
  const GgufValue& value = require(key, "array of integers");
  const auto* array = std::get_if<GgufArray>(&value.data);
  if (!array || !is_integer_type(array->element_type)) wrong_type(key, "array of integers", value);
  std::vector<std::int64_t> numbers;
  numbers.reserve(array->elements.size());
  for (std::size_t i = 0; i < array->elements.size(); ++i) {
    const auto number = integer_value(array->elements[i]);
    if (!number)
      throw std::runtime_error(source_ + ": key '" + std::string(key) + "' element " +
                               std::to_string(i) + " does not fit a signed 64-bit integer");
    numbers.push_back(*number);
  }
  return numbers;
}

std::uint64_t GgufTensor::elements() const {
  std::uint64_t count = 1;
  for (const auto dim : dims) count *= dim;
  return count;
}

GgufFile::GgufFile(const std::filesystem::path& path) {
  files_.emplace_back(path);
  ParsedFile first = parse_file(files_.front(), 0);
  version_ = first.version;
  alignment_ = first.alignment;
  metadata_ = std::move(first.metadata);
  std::vector<GgufTensor> all = std::move(first.tensors);

  const auto count = split_key(metadata_, kSplitCount);
  const auto number = split_key(metadata_, kSplitNo);
  const auto name = parse_split_name(path);
  if (count) {
    if (*count < 1 || *count > 99999)
      throw std::runtime_error(path.string() + ": key 'split.count' = " + std::to_string(*count) +
                               " is out of range (1..99999)");
    if (number.value_or(0) != 0)
      throw std::runtime_error(path.string() + ": is split " + std::to_string(*number + 1) +
                               " of " + std::to_string(*count) +
                               " (key 'split.no'); pass the first split, NAME" +
                               split_suffix(1, *count));
  }
  if (count && *count > 1) {
    if (!name)
      throw std::runtime_error(path.string() + ": key 'split.count' = " + std::to_string(*count) +
                               " but the name does not follow NAME" + split_suffix(1, *count) +
                               ", so the other splits cannot be found");
    if (name->count != *count || name->number != 1)
      throw std::runtime_error(path.string() + ": the name says split " +
                               std::to_string(name->number) + " of " + std::to_string(name->count) +
                               " but key 'split.count' = " + std::to_string(*count) +
                               " and key 'split.no' = " + std::to_string(number.value_or(0)));
    files_.reserve(static_cast<std::size_t>(*count));
    for (int i = 1; i < *count; ++i) {
      const std::filesystem::path split = name->prefix + split_suffix(i + 1, *count);
      if (!std::filesystem::exists(split))
        throw std::runtime_error(path.string() + ": split " + std::to_string(i + 1) + " of " +
                                 std::to_string(*count) + " is missing: " + split.string());
      files_.emplace_back(split);
      ParsedFile part = parse_file(files_.back(), static_cast<std::size_t>(i));
      const auto part_count = split_key(part.metadata, kSplitCount);
      const auto part_number = split_key(part.metadata, kSplitNo);
      if (part_count != count || part_number != i)
        throw std::runtime_error(split.string() + ": keys 'split.no' / 'split.count' say " +
                                 (part_number ? std::to_string(*part_number) : "absent") + " / " +
                                 (part_count ? std::to_string(*part_count) : "absent") +
                                 ", expected " + std::to_string(i) + " / " +
                                 std::to_string(*count));
      for (auto& tensor : part.tensors) all.push_back(std::move(tensor));
    }
  }
  if (const auto expected = split_key(metadata_, kSplitTensorsCount);
      expected && *expected != static_cast<std::int64_t>(all.size()))
    throw std::runtime_error(path.string() +
                             ": key 'split.tensors.count' = " + std::to_string(*expected) +
                             " but the splits hold " + std::to_string(all.size()) + " tensors");
  for (std::size_t i = 0; i < all.size(); ++i)
    if (!tensor_index_.emplace(all[i].name, i).second)
      throw std::runtime_error(
          files_[all[i].file_index].path().string() + ": byte " +
          std::to_string(all[i].file_offset) + ": tensor '" + all[i].name + "' is also in " +
          files_[all[tensor_index_.find(all[i].name)->second].file_index].path().string());
  tensors_ = std::move(all);
}

const GgufTensor* GgufFile::find_tensor(std::string_view name) const {
  const auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace moed::model
