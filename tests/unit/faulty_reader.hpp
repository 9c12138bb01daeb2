#pragma once

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <filesystem>
#include <system_error>
#include <vector>

#include "moed/memtier/reader.hpp"

namespace moed::testing {

// Reads with plain pread, at submission, but fails chosen reads: an I/O error at one aligned
// offset, a short read at another. The whole fault-injection device is this submit/reap pair.
class FaultyReader final : public memtier::Reader {
 public:
  explicit FaultyReader(std::vector<std::filesystem::path> files)
      : Reader(std::move(files), 4, 64 << 10) {}
  std::atomic<std::int64_t> fail_at{-1};
  std::atomic<std::int64_t> short_at{-1};
  std::atomic<bool> engine_fails{false};  // reap throws, as a broken ring would
  memtier::ReaderKind kind() const override { return memtier::ReaderKind::pread; }

 protected:
  void submit(std::span<const memtier::AlignedRead> reads) override {
    for (const auto& r : reads) {
      if (static_cast<std::int64_t>(r.offset) == fail_at) {
        done_.push_back({r.id, -EIO});
        continue;
      }
      const ssize_t n = ::pread(fd(r.file), r.destination, r.length, static_cast<off_t>(r.offset));
      done_.push_back(
          {r.id, static_cast<std::int64_t>(r.offset) == short_at && n > 100 ? n - 100 : n});
    }
  }
  void reap(std::vector<memtier::ReadResult>& out, bool) override {
    if (engine_fails) throw std::system_error(EIO, std::generic_category(), "test engine");
    out.insert(out.end(), done_.begin(), done_.end());
    done_.clear();
  }

 private:
  std::vector<memtier::ReadResult> done_;
};

}  // namespace moed::testing
