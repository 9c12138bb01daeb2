#pragma once

#include <cstdint>
#include <map>
#include <span>

#include "moed/memtier/aligned_buffer.hpp"

namespace moed::memtier {

// Memory that blocks are read into before they are packed: one aligned buffer carved into
// regions first fit, returned in any order. Being one long-lived buffer, it is registered with
// the reader once rather than per read.
class StagingArena {
 public:
  explicit StagingArena(std::uint64_t capacity);

  // A kDirectIoAlignment-aligned region of `bytes` (rounded up to the alignment), or an empty
  // span when no free run is that long.
  std::span<std::byte> allocate(std::uint64_t bytes);
  void release(std::span<std::byte> region);
  bool fits(std::uint64_t bytes) const;  // whether allocate(bytes) would succeed now

  std::span<std::byte> memory() { return {buffer_.data(), buffer_.size()}; }
  std::uint64_t capacity() const { return buffer_.size(); }
  std::uint64_t used() const { return used_; }

 private:
  AlignedBuffer buffer_;
  std::map<std::uint64_t, std::uint64_t> free_;  // offset -> length; neighbours always merged
  std::uint64_t used_ = 0;
};

}  // namespace moed::memtier
