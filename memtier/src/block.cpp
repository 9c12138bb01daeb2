#include "moed/memtier/block.hpp"

#include <algorithm>
#include <stdexcept>

#include "moed/memtier/aligned_buffer.hpp"

namespace moed::memtier {

std::string BlockId::to_string() const {
  std::string text = "L";
  text += std::to_string(layer);
  if (is_dense()) {
    text += ":dense";
  } else {
    text += ":E";
    text += std::to_string(expert);
  }
  return text;
}

void Source::add(BlockId block, std::vector<FileRange> ranges) {
  for (const auto& r : ranges)
    if (r.file >= files_.size())
      throw std::out_of_range("Source: block " + block.to_string() + " names file index " +
                              std::to_string(r.file) + " of " + std::to_string(files_.size()));
  blocks_[block] = std::move(ranges);
}

const std::vector<FileRange>& Source::ranges(BlockId block) const {
  auto it = blocks_.find(block);
  if (it == blocks_.end()) throw std::out_of_range("Source: no block " + block.to_string());
  return it->second;
}

std::uint64_t Source::bytes(BlockId block) const {
  std::uint64_t total = 0;
  for (const auto& r : ranges(block)) total += r.length;
  return total;
}

std::uint64_t Source::largest_read_bytes(const std::function<bool(BlockId)>& skip) const {
  std::uint64_t largest = 0;
  for (const auto& [block, ranges] : blocks_)
    if (!skip || !skip(block)) largest = std::max(largest, aligned_read_bytes(ranges));
  return largest;
}

std::uint64_t aligned_read_bytes(std::span<const FileRange> ranges) {
  std::uint64_t total = 0;
  for (const auto& r : ranges) total += align_up(r.offset + r.length) - align_down(r.offset);
  return total;
}

}  // namespace moed::memtier
