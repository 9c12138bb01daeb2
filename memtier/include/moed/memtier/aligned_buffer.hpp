#pragma once

#include <sys/mman.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>

namespace moed::memtier {

// O_DIRECT needs buffer addresses, file offsets and lengths aligned to the logical block size;
// 4 KiB covers every NVMe and SATA device in practice.
constexpr std::size_t kDirectIoAlignment = 4096;

constexpr std::uint64_t align_down(std::uint64_t bytes) {
  return bytes / kDirectIoAlignment * kDirectIoAlignment;
}
constexpr std::uint64_t align_up(std::uint64_t bytes) {
  return align_down(bytes + kDirectIoAlignment - 1);
}

// Host memory of at least this size starts on a huge-page boundary and asks for transparent
// huge pages. A read into huge pages reaches the device as a few large segments rather than one
// per 4 KiB page: the same queue-depth-64 O_DIRECT stream measured 7-8 GB/s into huge pages
// against 4.7-5 GB/s into 4 KiB pages on the development VM. Packed weights on huge pages feed a
// one-thread bf16 decode matmul over 48 cold experts at 33-35 GB/s against 27-28 GB/s.
constexpr std::size_t kHugePageBytes = std::size_t{2} << 20;

// `bytes` rounded up to kDirectIoAlignment, aligned to it (to kHugePageBytes from that size up);
// free with std::free. Only the whole huge pages inside the buffer ask for them, so that a huge
// page never reaches past its end and RSS stays the bytes asked for.
inline std::byte* allocate_aligned(std::size_t bytes) {
  const std::size_t size = std::max<std::size_t>(align_up(bytes), kDirectIoAlignment);
  const std::size_t alignment = size >= kHugePageBytes ? kHugePageBytes : kDirectIoAlignment;
  void* memory = nullptr;
  if (posix_memalign(&memory, alignment, size) != 0) throw std::bad_alloc();
  // Before the first touch, so that the faults allocate huge pages. Where the kernel has no
  // transparent huge pages this fails and the memory keeps 4 KiB pages.
  if (alignment == kHugePageBytes)
    madvise(memory, size / kHugePageBytes * kHugePageBytes, MADV_HUGEPAGE);
  return static_cast<std::byte*>(memory);
}

// Host memory aligned for O_DIRECT, freed on destruction.
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(std::size_t bytes)
      : size_(align_up(bytes)), data_(allocate_aligned(size_)) {}
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
