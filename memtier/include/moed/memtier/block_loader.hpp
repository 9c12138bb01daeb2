#pragma once

#include <condition_variable>
#include <cstdint>
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
class BlockLoader {
 public:
  enum class Priority { demand = 0, prefetch = 1 };
  // Runs on the I/O thread after a block's bytes arrive (e.g. packs weights for oneDNN).
  // `urgent`: a demand load, with compute waiting for it.
  using Materialize = std::function<Payload(BlockId, LoadedBlock&, bool urgent)>;
  // Runs on the I/O thread when a payload is ready, before waiters see it.
  using OnLoaded = std::function<void(BlockId, const Payload&)>;

  static constexpr std::size_t kMaxBatchBlocks = 8;
  // A demand that arrives during a batch waits for it: 64 MiB is ~12 ms at NVMe rates.
  static constexpr std::uint64_t kMaxBatchBytes = 64ull << 20;

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
  void run();

  const Source& source_;
  std::unique_ptr<Reader> reader_;
  Materialize materialize_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::map<BlockId, std::shared_ptr<Job>> jobs_;  // queued or in flight
  std::uint64_t next_sequence_ = 0;
  bool stopping_ = false;
  Counters counters_;
  std::vector<LoadedBlock> scratch_;  // one per block of a batch; reused, so they stay registered
  std::thread thread_;
};

}  // namespace moed::memtier
