#pragma once

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <filesystem>
#include <vector>

#include "moed/memtier/reader.hpp"

namespace moed::testing {

// Reads with plain pread but fails chosen reads: an I/O error at one aligned offset, a short
// read at another. The whole fault-injection device is this read_impl.
class FaultyReader final : public memtier::Reader {
 public:
  explicit FaultyReader(std::vector<std::filesystem::path> files)
      : Reader(std::move(files), 4, 64 << 10) {}
  std::atomic<std::int64_t> fail_at{-1};
  std::atomic<std::int64_t> short_at{-1};
  memtier::ReaderKind kind() const override { return memtier::ReaderKind::pread; }

 protected:
  std::vector<std::int64_t> read_impl(std::span<const memtier::AlignedRead> reads,
                                      std::span<memtier::AlignedBuffer* const>) override {
    std::vector<std::int64_t> out;
    for (const auto& r : reads) {
      if (static_cast<std::int64_t>(r.offset) == fail_at) {
        out.push_back(-EIO);
        continue;
      }
      const ssize_t n = ::pread(fd(r.file), r.destination, r.length, static_cast<off_t>(r.offset));
      out.push_back(static_cast<std::int64_t>(r.offset) == short_at && n > 100 ? n - 100 : n);
    }
    return out;
  }
};

}  // namespace moed::testing
