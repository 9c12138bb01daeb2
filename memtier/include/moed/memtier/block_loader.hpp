#pragma once

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string_view>
#include <thread>

#include "moed/memtier/host_tier.hpp"
#include "moed/memtier/reader.hpp"
#include "moed/memtier/staging_arena.hpp"

namespace moed::memtier {

struct BlockLoaderOptions {
  // Memory blocks are read into before they are packed. 0: the reading window plus two of the
  // source's largest blocks (one being packed, one started just under the window's edge).
  std::uint64_t staging_bytes = 0;
  // New prefetches start while less than this is being read: enough that the queue stays full
  // across block boundaries, little enough that a demand waits behind at most this much.
  // 0: the reader's queue (depth x chunk; at most eight blocks) plus one largest block.
  // Demands start regardless; prefetches of expert blocks, being guesses, one at a time and
  // none while any expert block (a demand, or a guess raised to one) is being read.
  std::uint64_t reading_bytes = 0;
};

// Blocks read straight into memory of their own, which the materializer may keep as the payload
// (LoadedBlock::kept), rather than into the staging arena and then copied or packed out of it:
// where `keeps` says so, `allocate` gives the memory, kDirectIoAlignment-aligned and at least the
// bytes the block's reads need. Unset: every block goes through the arena.
struct KeptReads {
  std::function<bool(BlockId)> keeps;
  std::function<std::shared_ptr<std::byte>(BlockId, std::uint64_t bytes)> allocate;
};

// Reads blocks from disk on its own I/O thread and turns their bytes into payloads. Demand loads
// jump ahead of prefetches; a queued prefetch can be cancelled; a block already queued or in
// flight is never read twice (a demand for it upgrades its priority and shares its future).
// Blocks stream through the reader back to back, its queue kept full across block boundaries
// (expert prefetches excepted: they are read one at a time, and none beside a demand), into one
// staging arena registered with the reader once. Reading and materializing are a pipeline: a
// packer thread turns each block's bytes into a payload as soon as they arrive while the I/O
// thread keeps reading, so the disk never idles behind the CPU work; blocks are packed in the
// order their reads started.
class BlockLoader {
 public:
  // Queued jobs start best first: demands, then prefetches for the next layer, then those for
  // layers further ahead (whose predictions are less sure and needed later), oldest first within
  // each. A load of a queued block at a better priority raises the job's.
  enum class Priority { demand = 0, prefetch = 1, prefetch_far = 2 };
  // Runs on the packer thread after a block's bytes arrive (e.g. packs weights for oneDNN); the
  // bytes are valid only during the call. `urgent`: a demand load, with compute waiting for it.
  // Calls never overlap.
  using Materialize = std::function<Payload(BlockId, LoadedBlock&, bool urgent)>;
  // Runs on the packer thread when a payload is ready, before waiters see it.
  using OnLoaded = std::function<void(BlockId, const Payload&)>;

  BlockLoader(const Source& source, std::unique_ptr<Reader> reader, Materialize materialize,
              BlockLoaderOptions options = {}, KeptReads kept_reads = {});
  ~BlockLoader();
  BlockLoader(const BlockLoader&) = delete;
  BlockLoader& operator=(const BlockLoader&) = delete;

  // The future holds the payload, or the read error (naming file and offset) as an exception.
  std::shared_future<Payload> load(BlockId block, Priority priority, OnLoaded on_loaded = {});
  // Raises a load under way (queued or reading) to `priority`, adds `on_loaded` to it, and
  // returns its future, in one step, so a caller cannot see it pending and then start a second
  // read of a block that landed between the two. A load raised to a demand while queued takes its
  // place after the demands already asked for (a prefetch queued before them does not overtake
  // them). Without such a load, returns an invalid future and starts nothing.
  std::shared_future<Payload> prioritize(BlockId block, Priority priority = Priority::demand,
                                         OnLoaded on_loaded = {});
  // Drops a prefetch that has not started; its future then holds a "cancelled" error.
  bool cancel(BlockId block);
  bool pending(BlockId block) const;

  // Where a load's time went, summed over the loads of one kind that delivered a payload:
  // queued (asked for, not yet reading: prefetches wait their turn, demands the arena),
  // reading (first read started to last byte landed), staged (landed, waiting for the packer,
  // which packs in the order reads started) and packing (materialize).
  struct LoadStages {
    std::uint64_t loads = 0;
    double queued_seconds = 0, reading_seconds = 0, staged_seconds = 0, packing_seconds = 0;
  };
  // A load asked for as a demand; a prefetch raised to a demand (prioritize(), or a demand
  // load() of it) before its packing started; a prefetch packed as one. A raised prefetch is not
  // a prefetch TieredStore scores "late": the engine raises the next expert's read one expert
  // ahead (TieredStore::expect), and a read that lands before the layer asks scores a hit.
  enum class LoadKind { demand = 0, raised_prefetch = 1, prefetch = 2 };
  static constexpr std::size_t kLoadKinds = 3;

  struct Counters {
    std::uint64_t reads = 0, bytes_read = 0, errors = 0, cancelled = 0;
    double busy_seconds = 0;  // time with reads in flight (throughput = bytes / busy)
    double materialize_seconds = 0;
    std::array<LoadStages, kLoadKinds> stages{};  // by LoadKind (LoadStagesByKind)
    std::string engine;
    std::uint64_t staging_bytes = 0;
    bool staging_registered = false;  // reads land in io_uring fixed buffers
  };
  Counters counters() const;

 private:
  struct Job {
    BlockId block;
    Priority priority;
    std::uint64_t sequence;
    bool asked_as_demand = false;
    std::chrono::steady_clock::time_point asked_at, started_at, landed_at;
    bool started = false;
    std::promise<Payload> promise;
    std::shared_future<Payload> future;
    std::vector<OnLoaded> on_loaded;
  };
  // A block whose reads are in flight; its bytes land in `region` of the arena, in `own` when
  // the block is larger than the whole arena, or in `kept` (KeptReads).
  struct Reading {
    std::shared_ptr<Job> job;
    std::span<std::byte> region;
    AlignedBuffer own;
    std::shared_ptr<std::byte> kept;
    std::uint64_t bytes;
  };
  // A block whose reads are over, waiting for the packer.
  struct Staged {
    std::shared_ptr<Job> job;
    LoadedBlock loaded;
    std::span<std::byte> region;  // to give back to the arena once packed
    std::exception_ptr error;     // source lookup or read error
  };
  void read_loop();
  // The best queued job, its ranges and bytes, if the reading window and the arena let it start
  // now (or its error, if its ranges cannot be known).
  struct NextRead {
    std::shared_ptr<Job> job;
    std::span<const FileRange> ranges;
    std::uint64_t bytes;
    std::exception_ptr error;
  };
  std::optional<NextRead> next_read() const;
  bool keeps(BlockId block) const;
  // Starts reads for queued jobs, best first, while next_read() allows.
  void start_reads(std::unique_lock<std::mutex>& lock);
  void pack_loop();

  const Source& source_;
  std::unique_ptr<Reader> reader_;  // used by the I/O thread only, once it runs
  Materialize materialize_;
  KeptReads kept_reads_;
  std::uint64_t reading_limit_;
  StagingArena arena_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;    // the I/O thread: work queued or staging memory freed
  std::condition_variable packer_;  // the packer thread: a block staged or reading is over
  std::map<BlockId, std::shared_ptr<Job>> jobs_;  // queued or in flight
  std::map<std::uint64_t, Reading> reading_;      // by job sequence, the reader's tag
  std::uint64_t reading_bytes_ = 0;
  std::chrono::steady_clock::time_point busy_since_;
  std::uint64_t next_sequence_ = 0;
  bool stopping_ = false;
  bool reading_done_ = false;
  Counters counters_;
  // Blocks are packed in the order their reads started (best first when they started), whatever
  // order the reads complete in: compute needs them in that order.
  std::deque<std::uint64_t> start_order_;
  std::map<std::uint64_t, Staged> staged_;  // by job sequence
  std::thread io_thread_, packer_thread_;
};

// "demand", "raised_prefetch" or "prefetch".
std::string_view to_string(BlockLoader::LoadKind kind);

using LoadStagesByKind = std::array<BlockLoader::LoadStages, BlockLoader::kLoadKinds>;
// What `later` counted since `earlier`, kind by kind.
LoadStagesByKind stages_since(const LoadStagesByKind& earlier, const LoadStagesByKind& later);
// {"demand": {"loads", "queued_seconds", "reading_seconds", "staged_seconds",
// "packing_seconds"}, "prefetch": ..., "raised_prefetch": ...}: as /admin/cache and moed bench
// report them.
nlohmann::json to_json(const LoadStagesByKind& stages);

}  // namespace moed::memtier
