#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>

#include "gguf_builder.hpp"
#include "moed/model/gguf.hpp"

namespace fs = std::filesystem;
using namespace moed::model;
using namespace moed::test;
using namespace moed::test::gguf_bytes;
using moed::kernels::GgmlType;

namespace {

constexpr std::uint32_t kGgmlF32 = 0;
constexpr std::uint32_t kGgmlQ8_0 = 8;
constexpr std::uint32_t kGgmlQ4_K = 12;

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name) {
    path =
        fs::temp_directory_path() / ("moed-test-gguf-" + name + "-" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  fs::path write(const std::string& name, const std::string& bytes) const {
    std::ofstream out(path / name, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return path / name;
  }
};

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

// Expects opening `bytes` as a GGUF file to fail with a message naming every one of `parts`
// (and, always, the file).
void expect_refused(const std::string& bytes, std::initializer_list<std::string> parts) {
  TempDir dir("refused");
  const auto path = dir.write("model.gguf", bytes);
  const std::string message = error_of([&] { GgufFile file(path); });
  ASSERT_FALSE(message.empty()) << "expected an error naming " << *parts.begin();
  EXPECT_NE(message.find(path.string()), std::string::npos) << message;
  for (const auto& part : parts)
    EXPECT_NE(message.find(part), std::string::npos)
        << "'" << message << "' lacks '" << part << "'";
}

std::string f32_bytes(std::initializer_list<float> values) {
  std::string bytes;
  for (float v : values) bytes += scalar(v);
  return bytes;
}

// A small valid file: one key of every value type, an f32 matrix [4 x 2] and a q8_0 row pair.
GgufSpec valid_spec() {
  GgufSpec spec;
  spec.add("general.architecture", kString, str("llama"));
  spec.add("test.u8", kU8, scalar<std::uint8_t>(200));
  spec.add("test.i8", kI8, scalar<std::int8_t>(-100));
  spec.add("test.u16", kU16, scalar<std::uint16_t>(60000));
  spec.add("test.i16", kI16, scalar<std::int16_t>(-30000));
  spec.add("test.u32", kU32, u32(4000000000u));
  spec.add("test.i32", kI32, scalar<std::int32_t>(-2000000000));
  spec.add("test.f32", kF32, scalar(1.5f));
  spec.add("test.bool", kBool, scalar<std::uint8_t>(1));
  spec.add("test.u64", kU64, u64(1ull << 40));
  spec.add("test.i64", kI64, scalar<std::int64_t>(-(1ll << 40)));
  spec.add("test.f64", kF64, scalar(0.25));
  spec.add("test.strings", kArray, array(kString, {str("a"), str(""), str("ccc")}));
  spec.add("test.floats", kArray, array(kF32, {scalar(0.5f), scalar(-2.0f)}));
  spec.add("test.ints", kArray, array(kI32, {scalar<std::int32_t>(-1), scalar<std::int32_t>(7)}));
  spec.add("test.empty", kArray, array(kU8, {}));
  spec.add("test.nested", kArray,
           array(kArray, {array(kU16, {scalar<std::uint16_t>(1), scalar<std::uint16_t>(2)}),
                          array(kU16, {scalar<std::uint16_t>(3)})}));
  spec.tensors.push_back(
      {"blk.0.attn_q.weight", {4, 2}, kGgmlF32, f32_bytes({1, 2, 3, 4, 5, 6, 7, 8}), {}});
  std::string q8(2 * 34, '\x01');
  spec.tensors.push_back({"token_embd.weight", {32, 2}, kGgmlQ8_0, q8, {}});
  return spec;
}

}  // namespace

TEST(GgufReader, ReadsEveryValueTypeAndTensorInPlace) {
  TempDir dir("valid");
  const auto path = dir.write("model.gguf", valid_spec().encode());
  const GgufFile file(path);
  EXPECT_EQ(file.version(), 3u);
  EXPECT_EQ(file.alignment(), 32u);
  const auto& meta = file.metadata();
  EXPECT_EQ(meta.get_string("general.architecture"), "llama");
  EXPECT_EQ(std::get<std::uint8_t>(meta.find("test.u8")->data), 200);
  EXPECT_EQ(meta.get_integer("test.i8"), -100);
  EXPECT_EQ(meta.get_integer("test.u16"), 60000);
  EXPECT_EQ(meta.get_integer("test.i16"), -30000);
  EXPECT_EQ(meta.get_uint32("test.u32"), 4000000000u);
  EXPECT_EQ(meta.get_integer("test.i32"), -2000000000);
  EXPECT_EQ(meta.get_float32("test.f32"), 1.5f);
  EXPECT_TRUE(meta.get_bool("test.bool"));
  EXPECT_EQ(meta.get_integer("test.u64"), 1ll << 40);
  EXPECT_EQ(meta.get_integer("test.i64"), -(1ll << 40));
  EXPECT_EQ(meta.get_float("test.f64"), 0.25);
  EXPECT_EQ(meta.get_float("test.f32"), 1.5);
  EXPECT_EQ(meta.get_string_array("test.strings"), (std::vector<std::string>{"a", "", "ccc"}));
  EXPECT_EQ(meta.get_float32_array("test.floats"), (std::vector<float>{0.5f, -2.0f}));
  EXPECT_EQ(meta.get_integer_array("test.ints"), (std::vector<std::int64_t>{-1, 7}));
  EXPECT_TRUE(meta.get_array("test.empty").elements.empty());
  EXPECT_EQ(meta.get_array("test.empty").element_type, GgufValueType::uint8);
  const auto& nested = meta.get_array("test.nested");
  ASSERT_EQ(nested.elements.size(), 2u);
  EXPECT_EQ(std::get<GgufArray>(nested.elements[0].data).elements.size(), 2u);
  EXPECT_EQ(std::get<std::uint16_t>(std::get<GgufArray>(nested.elements[1].data).elements[0].data),
            3);
  EXPECT_EQ(meta.find("test.nested")->type_description(), "array of array of uint16");
  EXPECT_EQ(meta.entries().size(), 17u);
  EXPECT_EQ(meta.entries()[1].first, "test.u8");  // file order kept

  ASSERT_EQ(file.tensors().size(), 2u);
  const GgufTensor* q = file.find_tensor("blk.0.attn_q.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->type, GgmlType::f32);
  EXPECT_EQ(q->dims, (std::vector<std::uint64_t>{4, 2}));
  EXPECT_EQ(q->elements(), 8u);
  EXPECT_EQ(q->nbytes, 32u);
  EXPECT_EQ(q->offset, 0u);
  EXPECT_EQ(q->file_offset % 32, 0u);
  float values[8];
  std::memcpy(values, q->data, sizeof values);
  EXPECT_EQ(values[0], 1.0f);
  EXPECT_EQ(values[7], 8.0f);
  EXPECT_EQ(q->data, file.files()[0].bytes(q->file_offset, 32).data());  // in place, no copy
  const GgufTensor* embd = file.find_tensor("token_embd.weight");
  ASSERT_NE(embd, nullptr);
  EXPECT_EQ(embd->type, GgmlType::q8_0);
  EXPECT_EQ(embd->nbytes, 68u);
  EXPECT_EQ(embd->offset, 32u);
  EXPECT_EQ(file.find_tensor("missing"), nullptr);
}

TEST(GgufReader, AcceptsVersion2AndACustomAlignment) {
  GgufSpec spec = valid_spec();
  spec.version = 2;
  spec.alignment = 64;
  spec.add("general.alignment", kU32, u32(64));
  TempDir dir("v2");
  const GgufFile file(dir.write("model.gguf", spec.encode()));
  EXPECT_EQ(file.version(), 2u);
  EXPECT_EQ(file.alignment(), 64u);
  EXPECT_EQ(file.find_tensor("token_embd.weight")->offset, 64u);
  EXPECT_EQ(file.tensors()[0].file_offset % 64, 0u);
}

TEST(GgufReader, TypedGettersNameTheKeyAndBothTypes) {
  TempDir dir("getters");
  const auto path = dir.write("model.gguf", valid_spec().encode());
  const GgufFile file(path);
  const auto& meta = file.metadata();
  auto message = error_of([&] { meta.get_string("test.u32"); });
  EXPECT_NE(message.find("'test.u32'"), std::string::npos) << message;
  EXPECT_NE(message.find("should be string but is uint32"), std::string::npos) << message;
  EXPECT_NE(message.find(path.string()), std::string::npos) << message;
  message = error_of([&] { meta.get_string_array("test.floats"); });
  EXPECT_NE(message.find("should be array of string but is array of float32"), std::string::npos)
      << message;
  message = error_of([&] { meta.get_integer("test.f32"); });
  EXPECT_NE(message.find("should be an integer but is float32"), std::string::npos) << message;
  message = error_of([&] { meta.get_uint32("llama.block_count"); });
  EXPECT_NE(message.find("'llama.block_count' (uint32) is missing"), std::string::npos) << message;
}

TEST(GgufReader, EveryTruncationIsANamedError) {
  const std::string bytes = valid_spec().encode();
  TempDir dir("truncate");
  for (std::size_t size = 0; size < bytes.size(); ++size) {
    const auto path = dir.write("model.gguf", bytes.substr(0, size));
    const std::string message = error_of([&] { GgufFile file(path); });
    ASSERT_FALSE(message.empty()) << "truncated at " << size << " was accepted";
    EXPECT_NE(message.find(path.string() + ": byte "), std::string::npos) << message;
    const bool named = message.find("truncated") != std::string::npos ||
                       message.find("runs past the end") != std::string::npos;
    EXPECT_TRUE(named) << "at " << size << ": " << message;
  }
}

TEST(GgufReader, RefusesBadMagicAndVersions) {
  GgufSpec spec = valid_spec();
  spec.magic = 0x4c4c5546;  // "FULL"
  expect_refused(spec.encode(), {"byte 0", "bad magic 'FULL'"});
  spec = valid_spec();
  spec.version = 1;
  expect_refused(spec.encode(), {"byte 4", "version 1 is not supported"});
  spec.version = 4;
  expect_refused(spec.encode(), {"byte 4", "version 4"});
  spec.version = 0x03000000;
  expect_refused(spec.encode(), {"looks big-endian"});
}

TEST(GgufReader, RefusesBadMetadata) {
  GgufSpec spec = valid_spec();
  spec.add("test.u8", kU8, scalar<std::uint8_t>(1));
  const std::size_t duplicate_at = spec.tensor_infos_offset() - (8 + 7 + 4 + 1);
  expect_refused(spec.encode(),
                 {"byte " + std::to_string(duplicate_at), "key 'test.u8' appears twice"});

  spec = valid_spec();
  spec.add("test.odd", 13, u32(0));
  expect_refused(spec.encode(), {"key 'test.odd'", "unknown value type 13"});

  spec = valid_spec();
  spec.add("test.odd", kArray, u32(99) + u64(0));
  expect_refused(spec.encode(), {"key 'test.odd'", "unknown array element type 99"});

  spec = valid_spec();
  spec.add("test.flag", kBool, scalar<std::uint8_t>(2));
  expect_refused(spec.encode(), {"key 'test.flag'", "neither 0 nor 1"});

  // A count the file cannot hold is refused before anything is allocated for it.
  spec = valid_spec();
  spec.add("test.huge", kArray, u32(kU64) + u64(1ull << 60));
  expect_refused(spec.encode(), {"key 'test.huge' element count", "truncated"});
  spec = valid_spec();
  spec.add("test.long", kString, u64(1ull << 62) + "abc");
  expect_refused(spec.encode(), {"key 'test.long'", "runs past the end"});

  std::string deep = u32(kU8) + u64(0);
  for (int level = 0; level < 20; ++level) deep = u32(kArray) + u64(1) + deep;
  spec = valid_spec();
  spec.add("test.deep", kArray, deep);
  expect_refused(spec.encode(), {"key 'test.deep'", "nest deeper than 16"});
}

TEST(GgufReader, RefusesBadAlignment) {
  GgufSpec spec = valid_spec();
  spec.add("general.alignment", kU32, u32(48));
  expect_refused(spec.encode(), {"'general.alignment' = 48 is not a power of two"});
  spec = valid_spec();
  spec.add("general.alignment", kU32, u32(0));
  expect_refused(spec.encode(), {"'general.alignment' = 0"});
  spec = valid_spec();
  spec.add("general.alignment", kU64, u64(64));
  expect_refused(spec.encode(), {"'general.alignment' must be uint32, not uint64"});
}

TEST(GgufReader, RefusesBadTensorInfos) {
  GgufSpec spec = valid_spec();
  spec.tensors[1].ggml_type = 4;  // Q4_2, removed from ggml
  expect_refused(spec.encode(), {"tensor 'token_embd.weight'", "unknown ggml type id 4"});

  spec = valid_spec();
  spec.tensors[0].dims = {1, 1, 1, 1, 8};
  expect_refused(spec.encode(), {"tensor 'blk.0.attn_q.weight'", "5 dimensions"});

  spec = valid_spec();
  spec.tensors[0].dims = {8, 0};
  expect_refused(spec.encode(), {"tensor 'blk.0.attn_q.weight'", "dimension 1 is zero"});

  spec = valid_spec();
  spec.tensors[0].dims = {1ull << 32, 1ull << 32};
  expect_refused(spec.encode(), {"tensor 'blk.0.attn_q.weight'", "element count overflows"});

  spec = valid_spec();
  spec.tensors[1].dims = {16, 4};
  expect_refused(spec.encode(),
                 {"tensor 'token_embd.weight'", "first dimension 16", "q8_0 block size 32"});
  spec = valid_spec();
  spec.tensors[1].dims = {128, 1};
  spec.tensors[1].ggml_type = kGgmlQ4_K;
  expect_refused(spec.encode(), {"tensor 'token_embd.weight'", "q4_K block size 256"});

  spec = valid_spec();
  spec.tensors[1].name = spec.tensors[0].name;
  const std::size_t second_info = spec.tensor_infos_offset() + 8 + 19 + 4 + 16 + 4 + 8;
  expect_refused(spec.encode(), {"byte " + std::to_string(second_info),
                                 "tensor 'blk.0.attn_q.weight' appears twice"});
}

TEST(GgufReader, RefusesBadTensorPlacement) {
  GgufSpec spec = valid_spec();
  spec.tensors[1].offset = 40;
  expect_refused(spec.encode(),
                 {"tensor 'token_embd.weight'", "offset 40", "not a multiple of the alignment 32"});

  spec = valid_spec();
  spec.tensors[1].offset = 0;
  expect_refused(spec.encode(), {"tensor 'token_embd.weight'",
                                 "overlaps tensor "
                                 "'blk.0.attn_q.weight' [0, 32)"});

  spec = valid_spec();
  std::string bytes = spec.encode();
  bytes.resize(bytes.size() - 1);
  expect_refused(bytes, {"tensor 'token_embd.weight'", "runs past the end of the file"});

  // An offset near 2^64 must not wrap around the bounds check.
  spec = valid_spec();
  spec.tensors[1].offset = 0xffffffffffffffe0ull;
  spec.tensors[1].data.clear();
  expect_refused(spec.encode(), {"tensor 'token_embd.weight'", "runs past the end of the file"});
}

namespace {

// Three splits as gguf-split writes them: all metadata in the first, split.* keys in each.
std::vector<GgufSpec> split_specs() {
  std::vector<GgufSpec> parts(3);
  for (std::uint16_t i = 0; i < 3; ++i) {
    if (i == 0) parts[i] = valid_spec();
    parts[i].add("split.no", kU16, scalar<std::uint16_t>(i));
    parts[i].add("split.count", kU16, scalar<std::uint16_t>(3));
    parts[i].add("split.tensors.count", kI32, scalar<std::int32_t>(4));
  }
  parts[1].tensors.push_back({"blk.1.attn_q.weight", {2}, kGgmlF32, f32_bytes({9, 10}), {}});
  parts[2].tensors.push_back({"blk.2.attn_q.weight", {1}, kGgmlF32, f32_bytes({11}), {}});
  return parts;
}

void write_splits(const TempDir& dir, const std::vector<GgufSpec>& parts) {
  for (std::size_t i = 0; i < parts.size(); ++i)
    dir.write("m-0000" + std::to_string(i + 1) + "-of-00003.gguf", parts[i].encode());
}

}  // namespace

TEST(GgufReader, OpensSplitFilesFromTheFirst) {
  TempDir dir("split");
  write_splits(dir, split_specs());
  const GgufFile file(dir.path / "m-00001-of-00003.gguf");
  EXPECT_EQ(file.files().size(), 3u);
  ASSERT_EQ(file.tensors().size(), 4u);
  const GgufTensor* last = file.find_tensor("blk.2.attn_q.weight");
  ASSERT_NE(last, nullptr);
  EXPECT_EQ(last->file_index, 2u);
  float value;
  std::memcpy(&value, last->data, 4);
  EXPECT_EQ(value, 11.0f);
  EXPECT_EQ(file.metadata().get_string("general.architecture"), "llama");
}

TEST(GgufReader, RefusesBrokenSplits) {
  {
    TempDir dir("split-second");
    write_splits(dir, split_specs());
    const auto message = error_of([&] { GgufFile file(dir.path / "m-00002-of-00003.gguf"); });
    EXPECT_NE(message.find("is split 2 of 3"), std::string::npos) << message;
    EXPECT_NE(message.find("pass the first split, NAME-00001-of-00003.gguf"), std::string::npos)
        << message;
  }
  {
    TempDir dir("split-missing");
    write_splits(dir, split_specs());
    fs::remove(dir.path / "m-00003-of-00003.gguf");
    const auto message = error_of([&] { GgufFile file(dir.path / "m-00001-of-00003.gguf"); });
    EXPECT_NE(message.find("split 3 of 3 is missing"), std::string::npos) << message;
  }
  {
    TempDir dir("split-number");
    auto parts = split_specs();
    parts[2].kvs[0].value = scalar<std::uint16_t>(1);
    write_splits(dir, parts);
    const auto message = error_of([&] { GgufFile file(dir.path / "m-00001-of-00003.gguf"); });
    EXPECT_NE(message.find("m-00003-of-00003.gguf: keys 'split.no' / 'split.count' say 1 / 3, "
                           "expected 2 / 3"),
              std::string::npos)
        << message;
  }
  {
    TempDir dir("split-count");
    auto parts = split_specs();
    parts[0].kvs.back().value = scalar<std::int32_t>(5);
    write_splits(dir, parts);
    const auto message = error_of([&] { GgufFile file(dir.path / "m-00001-of-00003.gguf"); });
    EXPECT_NE(message.find("'split.tensors.count' = 5 but the splits hold 4"), std::string::npos)
        << message;
  }
  {
    TempDir dir("split-duplicate");
    auto parts = split_specs();
    parts[2].tensors[0].name = "blk.1.attn_q.weight";
    write_splits(dir, parts);
    const auto message = error_of([&] { GgufFile file(dir.path / "m-00001-of-00003.gguf"); });
    EXPECT_NE(message.find("m-00003-of-00003.gguf: byte"), std::string::npos) << message;
    EXPECT_NE(message.find("tensor 'blk.1.attn_q.weight' is also in"), std::string::npos)
        << message;
  }
  {
    TempDir dir("split-renamed");
    dir.write("model.gguf", split_specs()[0].encode());
    const auto message = error_of([&] { GgufFile file(dir.path / "model.gguf"); });
    EXPECT_NE(message.find("does not follow NAME-00001-of-00003.gguf"), std::string::npos)
        << message;
  }
}

// scripts/gguf_file.py --formats: each format quantized by the numpy writer (q.TYPE) next to the
// numpy dequantization of the same bytes (ref.TYPE, f32). moed's reader and dequantizers must
// give the numpy values exactly (both compute each step in float32, in the same order).
TEST(GgufFormats, DequantizeAsTheNumpyReference) {
  const fs::path path = fs::path(MOED_TEST_MODELS) / "formats.gguf";
  const GgufFile file(path);
  const auto& meta = file.metadata();
  EXPECT_EQ(meta.get_integer("test.u8"), 255);
  EXPECT_EQ(meta.get_integer("test.i8"), -128);
  EXPECT_EQ(meta.get_integer("test.u16"), 65535);
  EXPECT_EQ(meta.get_integer("test.i16"), -32768);
  EXPECT_EQ(meta.get_uint32("test.u32"), 4294967295u);
  EXPECT_EQ(meta.get_integer("test.i32"), -2147483648ll);
  EXPECT_EQ(meta.get_float32("test.f32"), 0.125f);
  EXPECT_TRUE(meta.get_bool("test.bool"));
  EXPECT_EQ(meta.get_integer("test.u64"), 9223372036854775807ll);
  EXPECT_EQ(meta.get_integer("test.i64"), std::numeric_limits<std::int64_t>::min());
  EXPECT_EQ(meta.get_float("test.f64"), -1.5);
  EXPECT_EQ(meta.get_string_array("test.strings"),
            (std::vector<std::string>{"", "\xe2\x96\x81the", "<0x0A>"}));
  EXPECT_EQ(meta.find("test.nested")->type_description(), "array of array of float32");

  int checked = 0;
  for (const auto& tensor : file.tensors()) {
    // q.<type>: quantized weights; grid.<type>: random blocks that reach every grid entry.
    const bool grid = tensor.name.rfind("grid.", 0) == 0;
    if (tensor.name.rfind("q.", 0) != 0 && !grid) continue;
    const std::string type_part = tensor.name.substr(grid ? 5 : 2);
    const GgufTensor* ref = file.find_tensor((grid ? "gridref." : "ref.") + type_part);
    ASSERT_NE(ref, nullptr) << tensor.name;
    ASSERT_EQ(ref->dims, tensor.dims) << tensor.name;
    std::string type_name(moed::kernels::ggml_type_name(tensor.type));
    for (char& c : type_name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    EXPECT_EQ(type_name, type_part);  // the numpy writer names q4_K q4_k
    const std::uint64_t cols = tensor.dims[0];
    const std::uint64_t row_bytes = moed::kernels::ggml_row_bytes(tensor.type, cols);
    std::vector<float> row(cols), expected(cols);
    for (std::uint64_t r = 0; r < tensor.elements() / cols; ++r) {
      moed::kernels::dequantize_row(tensor.type, tensor.data + r * row_bytes, row.data(),
                                    static_cast<std::int64_t>(cols));
      std::memcpy(expected.data(), ref->data + r * cols * 4, cols * 4);
      for (std::uint64_t c = 0; c < cols; ++c)
        ASSERT_EQ(row[c], expected[c]) << tensor.name << " row " << r << " column " << c;
    }
    ++checked;
  }
  EXPECT_EQ(checked, 29);  // 22 formats, 7 of them with grids
}

namespace {

std::vector<float> dequantize_tensor(const GgufTensor& tensor) {
  const std::uint64_t cols = tensor.dims[0];
  const std::uint64_t row_bytes = moed::kernels::ggml_row_bytes(tensor.type, cols);
  std::vector<float> values(tensor.elements());
  for (std::uint64_t r = 0; r < tensor.elements() / cols; ++r)
    moed::kernels::dequantize_row(tensor.type, tensor.data + r * row_bytes,
                                  values.data() + r * cols, static_cast<std::int64_t>(cols));
  return values;
}

}  // namespace

// Files from scripts/hf-to-gguf.py, as moed's loader will meet them: llama.cpp's keys and names,
// merged experts, and every quantized tensor within its format's error of the f32 conversion.
TEST(GgufFormats, ReadsConvertedMixtral) {
  const GgufFile f32(fs::path(MOED_TEST_MODELS) / "tiny-f32.gguf");
  const GgufFile q4km(fs::path(MOED_TEST_MODELS) / "tiny-q4_k_m.gguf");
  const auto& meta = q4km.metadata();
  EXPECT_EQ(meta.get_string("general.architecture"), "llama");
  EXPECT_EQ(meta.get_uint32("llama.expert_count"), 8u);
  EXPECT_EQ(meta.get_uint32("llama.block_count"), 4u);
  EXPECT_EQ(meta.get_string("tokenizer.ggml.model"), "llama");
  EXPECT_EQ(meta.get_string_array("tokenizer.ggml.tokens").size(), 512u);
  EXPECT_EQ(meta.get_float32_array("tokenizer.ggml.scores").size(), 512u);
  EXPECT_EQ(meta.get_integer_array("tokenizer.ggml.token_type")[1], 3);  // <s>: control
  ASSERT_EQ(q4km.tensors().size(), f32.tensors().size());

  const GgufTensor* experts = q4km.find_tensor("blk.0.ffn_gate_exps.weight");
  ASSERT_NE(experts, nullptr);
  EXPECT_EQ(experts->type, GgmlType::q4_k);
  EXPECT_EQ(experts->dims, (std::vector<std::uint64_t>{256, 512, 8}));
  EXPECT_EQ(experts->nbytes, 256 / 256 * 144 * 512 * 8u);
  EXPECT_EQ(q4km.find_tensor("output.weight")->type, GgmlType::q6_k);
  EXPECT_EQ(q4km.find_tensor("blk.0.attn_v.weight")->type, GgmlType::q8_0);
  EXPECT_EQ(q4km.find_tensor("blk.0.attn_output.weight")->type, GgmlType::q5_k);

  // Half a step of each format as a share of the tensor's largest magnitude (see
  // tests/gguf/test_hf_to_gguf.py), with slack for the K-quants' 6-bit scales.
  const std::map<GgmlType, float> bound{{GgmlType::f32, 0.0f},
                                        {GgmlType::q8_0, 0.0042f},
                                        {GgmlType::q6_k, 0.025f},
                                        {GgmlType::q5_k, 0.04f},
                                        {GgmlType::q4_k, 0.08f}};
  for (const auto& tensor : q4km.tensors()) {
    const GgufTensor* reference = f32.find_tensor(tensor.name);
    ASSERT_NE(reference, nullptr) << tensor.name;
    ASSERT_EQ(reference->dims, tensor.dims) << tensor.name;
    const auto expected = dequantize_tensor(*reference);
    const auto actual = dequantize_tensor(tensor);
    float largest = 0, worst = 0;
    for (std::size_t i = 0; i < expected.size(); ++i) {
      largest = std::max(largest, std::abs(expected[i]));
      worst = std::max(worst, std::abs(actual[i] - expected[i]));
    }
    EXPECT_LE(worst, bound.at(tensor.type) * largest)
        << tensor.name << " (" << moed::kernels::ggml_type_name(tensor.type) << ")";
  }
}

TEST(GgufFormats, ReadsConvertedSplitFiles) {
  const GgufFile file(fs::path(MOED_TEST_MODELS) / "tiny-bytelevel-q6_k-00001-of-00003.gguf");
  EXPECT_EQ(file.files().size(), 3u);
  EXPECT_EQ(static_cast<std::int64_t>(file.tensors().size()),
            file.metadata().get_integer("split.tensors.count"));
  EXPECT_EQ(file.metadata().get_string("tokenizer.ggml.model"), "gpt2");
  EXPECT_FALSE(file.metadata().get_string_array("tokenizer.ggml.merges").empty());
  EXPECT_EQ(file.tensors().back().file_index, 2u);
  EXPECT_NE(file.find_tensor("blk.1.ffn_down_exps.weight"), nullptr);
}
