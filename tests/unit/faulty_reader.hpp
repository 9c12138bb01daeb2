#pragma once

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <deque>
#include <filesystem>
#include <system_error>
#include <thread>
#include <vector>

#include "moed/memtier/reader.hpp"

namespace moed::testing {

// Reads with plain pread, at submission, but fails chosen reads: an I/O error at one aligned
// offset, a short read at another; and can hold completions back, as a slow disk would. The whole
// fault-injection device is this submit/reap pair.
class FaultyReader final : public memtier::Reader {
 public:
  explicit FaultyReader(std::vector<std::filesystem::path> files)
      : Reader(std::move(files), 4, 64 << 10) {}
  std::atomic<std::int64_t> fail_at{-1};
  std::atomic<std::int64_t> short_at{-1};
  std::atomic<bool> engine_fails{false};  // reap throws, as a broken ring would
  std::atomic<int> hold_ms{0};    // reads complete this long after submission, as a slow disk
  std::atomic<int> completed{0};  // reads reported complete so far
  memtier::ReaderKind kind() const override { return memtier::ReaderKind::pread; }

 protected:
  void submit(std::span<const memtier::AlignedRead> reads) override {
    const auto due = std::chrono::steady_clock::now() + std::chrono::milliseconds(hold_ms.load());
    for (const auto& r : reads) {
      if (static_cast<std::int64_t>(r.offset) == fail_at) {
        done_.push_back({{r.id, -EIO}, due});
        continue;
      }
      const ssize_t n = ::pread(fd(r.file), r.destination, r.length, static_cast<off_t>(r.offset));
      done_.push_back(
          {{r.id, static_cast<std::int64_t>(r.offset) == short_at && n > 100 ? n - 100 : n}, due});
    }
  }
  void reap(std::vector<memtier::ReadResult>& out, bool wait) override {
    if (engine_fails) throw std::system_error(EIO, std::generic_category(), "test engine");
    if (wait && !done_.empty()) std::this_thread::sleep_until(done_.front().due);
    const auto now = std::chrono::steady_clock::now();
    while (!done_.empty() && done_.front().due <= now) {
      out.push_back(done_.front().result);
      done_.pop_front();
      ++completed;
    }
  }

 private:
  struct Done {
    memtier::ReadResult result;
    std::chrono::steady_clock::time_point due;
  };
  std::deque<Done> done_;  // in submission order, so also in order of `due`
};

}  // namespace moed::testing
