#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "moed/memtier/mapped_file.hpp"

using moed::memtier::MappedFile;

namespace {
std::filesystem::path temp_file(const std::string& name, const std::string& contents) {
  auto path = std::filesystem::temp_directory_path() / ("moed-test-" + name);
  std::ofstream(path, std::ios::binary) << contents;
  return path;
}
}  // namespace

TEST(MappedFile, ReadsBytesInPlace) {
  const auto path = temp_file("mapped", "hello, world");
  MappedFile file(path);
  EXPECT_EQ(file.size(), 12u);
  const auto bytes = file.bytes(7, 5);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()), "world");
  std::filesystem::remove(path);
}

TEST(MappedFile, OutOfRangeNamesTheFile) {
  const auto path = temp_file("range", "0123456789");
  MappedFile file(path);
  try {
    file.bytes(8, 4);
    FAIL() << "expected out_of_range";
  } catch (const std::out_of_range& e) {
    EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("[8, 12)"), std::string::npos);
  }
  EXPECT_THROW(file.bytes(~0ull, 2), std::out_of_range);  // no overflow past the end
  std::filesystem::remove(path);
}

TEST(MappedFile, MissingFileIsAClearError) {
  try {
    MappedFile file("/nonexistent/moed/model.safetensors");
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot open"), std::string::npos);
  }
}

TEST(MappedFile, EmptyFileMapsToNothing) {
  const auto path = temp_file("empty", "");
  MappedFile file(path);
  EXPECT_EQ(file.size(), 0u);
  EXPECT_THROW(file.bytes(0, 1), std::out_of_range);
  std::filesystem::remove(path);
}
