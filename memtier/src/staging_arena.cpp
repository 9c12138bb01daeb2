#include "moed/memtier/staging_arena.hpp"

#include <algorithm>
#include <iterator>
#include <stdexcept>

namespace moed::memtier {
namespace {

std::uint64_t round_up(std::uint64_t bytes) {
  return align_up(std::max<std::uint64_t>(bytes, 1));
}

}  // namespace

StagingArena::StagingArena(std::uint64_t capacity) : buffer_(capacity) {
  free_.emplace(0, buffer_.size());
}

std::span<std::byte> StagingArena::allocate(std::uint64_t bytes) {
  const std::uint64_t length = round_up(bytes);
  const auto run = std::find_if(free_.begin(), free_.end(),
                                [&](const auto& entry) { return entry.second >= length; });
  if (run == free_.end()) return {};
  const auto [offset, run_length] = *run;
  free_.erase(run);
  if (run_length > length) free_.emplace(offset + length, run_length - length);
  used_ += length;
  return {buffer_.data() + offset, length};
}

bool StagingArena::fits(std::uint64_t bytes) const {
  const std::uint64_t length = round_up(bytes);
  return std::any_of(free_.begin(), free_.end(),
                     [&](const auto& entry) { return entry.second >= length; });
}

void StagingArena::release(std::span<std::byte> region) {
  if (region.empty()) return;
  if (region.data() < buffer_.data() ||
      region.data() + region.size() > buffer_.data() + buffer_.size())
    throw std::invalid_argument("StagingArena::release: the region is not from this arena");
  std::uint64_t offset = static_cast<std::uint64_t>(region.data() - buffer_.data());
  std::uint64_t length = region.size();
  used_ -= length;
  auto next = free_.lower_bound(offset);
  if (next != free_.end() && offset + length == next->first) {
    length += next->second;
    next = free_.erase(next);
  }
  if (next != free_.begin()) {
    const auto previous = std::prev(next);
    if (previous->first + previous->second == offset) {
      offset = previous->first;
      length += previous->second;
      free_.erase(previous);
    }
  }
  free_.emplace(offset, length);
}

}  // namespace moed::memtier
