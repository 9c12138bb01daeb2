#pragma once

#include <compare>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace moed::memtier {

// The unit memtier moves: one routed expert of one layer, or one layer's dense weights.
struct BlockId {
  static constexpr std::int32_t kDense = -1;
  std::int32_t layer = 0;
  std::int32_t expert = kDense;

  static BlockId dense(std::int32_t layer) { return {layer, kDense}; }
  static BlockId routed(std::int32_t layer, std::int32_t expert) { return {layer, expert}; }
  bool is_dense() const { return expert == kDense; }
  auto operator<=>(const BlockId&) const = default;
  std::string to_string() const;  // "L3:E5" or "L3:dense"
};

struct BlockIdHash {
  std::size_t operator()(const BlockId& id) const {
    return std::hash<std::int64_t>()((static_cast<std::int64_t>(id.layer) << 32) ^
                                     static_cast<std::uint32_t>(id.expert));
  }
};

// A byte range of one model file.
struct FileRange {
  std::uint32_t file;
  std::uint64_t offset;
  std::uint64_t length;
};

// Bytes an O_DIRECT read of these ranges covers: each one widened to kDirectIoAlignment.
std::uint64_t aligned_read_bytes(std::span<const FileRange> ranges);

// Maps each block to the byte ranges of the model files it is read from (e.g. an expert's w1, w3
// and w2 tensors). Knows nothing of formats: the model layer fills it in.
class Source {
 public:
  explicit Source(std::vector<std::filesystem::path> files) : files_(std::move(files)) {}

  void add(BlockId block, std::vector<FileRange> ranges);
  const std::vector<FileRange>& ranges(BlockId block) const;  // throws std::out_of_range
  std::uint64_t bytes(BlockId block) const;
  // The most bytes one block's aligned reads cover: what a read buffer must hold for any block
  // (of those `skip` does not name, where given).
  std::uint64_t largest_read_bytes(const std::function<bool(BlockId)>& skip = {}) const;
  const std::vector<std::filesystem::path>& files() const { return files_; }

 private:
  std::vector<std::filesystem::path> files_;
  std::map<BlockId, std::vector<FileRange>> blocks_;
};

}  // namespace moed::memtier
