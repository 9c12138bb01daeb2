#include "moed/memtier/block.hpp"

#include <stdexcept>

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

}  // namespace moed::memtier
