#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>

namespace moed::memtier {

// A model file mapped read-only, so weights are read in place without a conversion step.
// Every access is bounds-checked against the file size and names the file when it fails.
class MappedFile {
 public:
  explicit MappedFile(const std::filesystem::path& path);  // throws std::runtime_error
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;

  const std::filesystem::path& path() const { return path_; }
  std::uint64_t size() const { return size_; }
  // The bytes [offset, offset + length); throws std::out_of_range naming the file if outside it.
  std::span<const std::byte> bytes(std::uint64_t offset, std::uint64_t length) const;
  // Tells the kernel the range is no longer needed in this mapping (after it has been copied).
  void release(std::uint64_t offset, std::uint64_t length) const;

 private:
  std::filesystem::path path_;
  const std::byte* data_ = nullptr;  // u8 [size_], PROT_READ
  std::uint64_t size_ = 0;
};

}  // namespace moed::memtier
