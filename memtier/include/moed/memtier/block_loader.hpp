#pragma once

#include <array>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "moed/memtier/host_tier.hpp"
#include "moed/memtier/reader.hpp"

namespace moed::memtier {

// Reads blocks from disk on its own I/O thread and turns their bytes into payloads. Demand loads
// jump ahead of prefetches; a queued prefetch can be cancelled; a block already queued or in
// flight is never read twice (a demand for it upgrades its priority and shares its future).
// When several blocks are queued (the disk is the bottleneck), up to kMaxBatchBlocks of them
// are read as one batch, their reads sharing the queue as one long sequential read does.
// Reading and materializing are a two-stage pipeline: while a packer thread turns one batch's
// bytes into payloads, the I/O thread already reads the next batch into a second staging set,
// so the disk never idles behind the CPU work.
class BlockLoader {
 public:
  enum class Priority { demand = 0, prefetch = 1 };
  // Runs on the packer thread after a block's bytes arrive (e.g. packs weights for oneDNN).
  // `urgent`: a demand load, with compute waiting for it. Calls never overlap.
  using Materialize = std::function<Payload(BlockId, LoadedBlock&, bool urgent)>;
  // Runs on the packer thread when a payload is ready, before waiters see it.
  using OnLoaded = std::function<void(BlockId, const Payload&)>;

  static constexpr std::size_t kMaxBatchBlocks = 8;
  // A demand that arrives during a batch waits for it: 32 MiB is ~6 ms at NVMe rates. Two
  // staging sets of this size bound the loader's own memory (plus one larger block per set).
  static constexpr std::uint64_t kMaxBatchBytes = 32ull << 20;
  static constexpr std::size_t kStagingSets = 2;

  BlockLoader(const Source& source, std::unique_ptr<Reader> reader, Materialize materialize);
  ~BlockLoader();
  BlockLoader(const BlockLoader&) = delete;
  BlockLoader& operator=(const BlockLoader&) = delete;

  // The future holds the payload, or the read error (naming file and offset) as an exception.
  std::shared_future<Payload> load(BlockId block, Priority priority, OnLoaded on_loaded = {});
  // Makes a queued load a demand; does nothing if the block is not queued (never starts a read).
  void prioritize(BlockId block);
  // Drops a prefetch that has not started; its future then holds a "cancelled" error.
  bool cancel(BlockId block);
  bool pending(BlockId block) const;

  struct Counters {
    std::uint64_t reads = 0, bytes_read = 0, errors = 0, cancelled = 0;
    double busy_seconds = 0;  // time the I/O thread spent reading (throughput = bytes / busy)
    double materialize_seconds = 0;
    std::string engine;
  };
  Counters counters() const;

 private:
  struct Job {
    BlockId block;
    Priority priority;
    std::uint64_t sequence;
    bool started = false;
    std::promise<Payload> promise;
    std::shared_future<Payload> future;
    std::vector<OnLoaded> on_loaded;
  };
  // A batch whose reads finished, waiting for the packer.
  struct Staged {
    std::vector<std::shared_ptr<Job>> batch;
    std::vector<std::exception_ptr> errors;  // per block: source lookup or read error
    std::size_t set;
    double read_seconds;
  };
  void read_loop();
  void pack_loop();

  const Source& source_;
  std::unique_ptr<Reader> reader_;
  Materialize materialize_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;    // the I/O thread: work queued or a staging set freed
  std::condition_variable packer_;  // the packer thread: a batch staged or reading is over
  std::map<BlockId, std::shared_ptr<Job>> jobs_;  // queued or in flight
  std::uint64_t next_sequence_ = 0;
  bool stopping_ = false;
  bool reading_done_ = false;
  Counters counters_;
  // Per staging set, one buffer per block of a batch; reused, so they stay registered.
  std::array<std::vector<LoadedBlock>, kStagingSets> scratch_;
  std::array<bool, kStagingSets> set_busy_{};
  std::deque<Staged> staged_;
  std::thread io_thread_, packer_thread_;
};

}  // namespace moed::memtier
