#pragma once

#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>

namespace moed::memtier {

// O_DIRECT needs buffer addresses, file offsets and lengths aligned to the logical block size;
// 4 KiB covers every NVMe and SATA device in practice.
constexpr std::size_t kDirectIoAlignment = 4096;

// Host memory aligned for O_DIRECT, freed on destruction.
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(std::size_t bytes)
      : size_((bytes + kDirectIoAlignment - 1) / kDirectIoAlignment * kDirectIoAlignment),
        data_(static_cast<std::byte*>(
            std::aligned_alloc(kDirectIoAlignment, size_ ? size_ : kDirectIoAlignment))) {
    if (!data_) throw std::bad_alloc();
  }
  std::byte* data() { return data_.get(); }
  const std::byte* data() const { return data_.get(); }
  std::size_t size() const { return size_; }

 private:
  struct Free {
    void operator()(std::byte* p) const { std::free(p); }
  };
  std::size_t size_ = 0;
  std::unique_ptr<std::byte, Free> data_;
};

}  // namespace moed::memtier
