#pragma once

#include <cstdint>
#include <deque>
#include <exception>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "moed/memtier/aligned_buffer.hpp"
#include "moed/memtier/block.hpp"

namespace moed::memtier {

// One aligned O_DIRECT read: file offset, length and destination all kDirectIoAlignment-aligned.
struct AlignedRead {
  std::uint64_t id;  // echoed in the read's ReadResult
  std::uint32_t file;
  std::uint64_t offset;
  std::uint64_t length;
  std::byte* destination;
  int registered;  // the engine's index of the registered memory holding destination, or -1
};

struct ReadResult {
  std::uint64_t id;
  std::int64_t result;  // bytes read, or -errno
};

// The bytes of a block after a read: the aligned superset of each range laid end to end, and
// where each requested range starts in it.
struct LoadedBlock {
  AlignedBuffer buffer;  // owns the bytes after read(); empty when they lie in staging memory
  // The memory the bytes lie in where the loader read them into memory the materializer may
  // keep (KeptReads); else null.
  std::shared_ptr<std::byte> kept;
  std::vector<const std::byte*> ranges;  // ranges[i] points at Source::ranges(block)[i]'s bytes
};

enum class ReaderKind { io_uring, pread };
std::string to_string(ReaderKind kind);

// The disk tier's I/O engine, driven by one thread at a time.
//
// Blocks are streamed: start() queues a block's reads (each range aligned to its O_DIRECT
// superset and cut into chunk-sized reads) behind the blocks already started, and the reader
// keeps queue_depth reads in flight across block boundaries, so a run of blocks reaches the
// device as one long stream with no drain between blocks. poll() reports blocks whose reads
// have all completed, with errors and short reads turned into exceptions naming the file and
// offset. Engines implement only submit/reap (and optionally memory registration), which also
// makes a fault-injecting test reader a few lines.
class Reader {
 public:
  Reader(std::vector<std::filesystem::path> files, std::uint32_t queue_depth,
         std::uint64_t chunk_bytes);
  virtual ~Reader();
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  // Reads the ranges into `into` and waits for them; its buffer grows when too small and is
  // otherwise reused. Only while no streamed block is in progress.
  void read(std::span<const FileRange> ranges, LoadedBlock& into);
  LoadedBlock read(std::span<const FileRange> ranges);

  // The bytes start() needs for these ranges; throws, naming the file, for a range that lies
  // past the end of its file or names no file.
  std::uint64_t aligned_bytes(std::span<const FileRange> ranges) const;
  // Queues a block's reads into `destination` (kDirectIoAlignment-aligned, aligned_bytes long,
  // untouched by the caller until the block is reported). `tag` names it in poll()'s report and
  // must not be in progress already. Throws, starting nothing, where aligned_bytes would.
  void start(std::uint64_t tag, std::span<const FileRange> ranges,
             std::span<std::byte> destination);
  struct Finished {
    std::uint64_t tag;
    std::vector<const std::byte*> ranges;  // as in LoadedBlock
    std::exception_ptr error;              // the block's first failed or short read
  };
  // Blocks whose reads have all completed since the last call. With `wait`, first waits for at
  // least one read to complete (not a whole block: the caller may want to start more blocks as
  // the queue empties), unless none is in flight.
  std::vector<Finished> poll(bool wait);
  bool idle() const { return blocks_.empty() && finished_without_reads_.empty(); }

  // Registers long-lived memory that reads will land in, so the engine need not pin its pages
  // on every read (io_uring's fixed buffers). Returns false where the engine has no such thing
  // or the kernel refuses (then said once on stderr); reads into it work either way. The memory
  // must stay valid until unregister_memory or the reader's end.
  bool register_memory(std::span<std::byte> memory);
  void unregister_memory(std::span<std::byte> memory);

  virtual ReaderKind kind() const = 0;
  std::uint64_t file_size(std::uint32_t file) const { return sizes_.at(file); }
  std::uint32_t file_count() const { return static_cast<std::uint32_t>(sizes_.size()); }
  std::uint32_t queue_depth() const { return queue_depth_; }
  std::uint64_t chunk_bytes() const { return chunk_bytes_; }

 protected:
  // Starts the reads; never more than queue_depth() are in flight.
  virtual void submit(std::span<const AlignedRead> reads) = 0;
  // Appends results of finished reads; with `wait`, at least one (some are in flight).
  // Either throws std::system_error when the engine itself fails (not one read): every read in
  // flight, and every later one, then fails with that error.
  virtual void reap(std::vector<ReadResult>& out, bool wait) = 0;
  // The engine's index for this memory, or -1 when it does not register memory.
  virtual int register_engine_memory(std::span<std::byte>) { return -1; }
  virtual void unregister_engine_memory(int) {}
  int fd(std::uint32_t file) const { return fds_.at(file); }

 private:
  struct Chunk {
    AlignedRead read;
    std::uint64_t expected;  // bytes that must arrive: length, less what lies past end of file
    std::uint64_t tag;
  };
  struct InProgress {
    std::vector<const std::byte*> ranges;
    std::size_t outstanding = 0;
    std::exception_ptr error;
  };
  void fill_queue();
  void check_result(const Chunk& chunk, std::int64_t result, InProgress& block) const;

  std::vector<std::filesystem::path> paths_;
  std::vector<int> fds_;
  std::vector<std::uint64_t> sizes_;
  std::uint32_t queue_depth_;
  std::uint64_t chunk_bytes_;
  std::uint64_t next_read_id_ = 0;
  int engine_error_ = 0;                                  // -errno once the engine has failed
  std::deque<Chunk> waiting_;                             // started, not yet submitted, in order
  std::unordered_map<std::uint64_t, Chunk> in_flight_;    // by read id
  std::unordered_map<std::uint64_t, InProgress> blocks_;  // by tag
  std::vector<Finished> finished_without_reads_;
  struct Registered {
    std::span<std::byte> memory;
    int index;
  };
  std::vector<Registered> registered_;
};

struct ReaderOptions {
  ReaderKind kind = ReaderKind::io_uring;
  // A block-sized read (~17 MiB for the bench model's experts) needs dozens of reads in flight
  // to reach the device's sequential rate; 64 x 512 KiB measured best here.
  std::uint32_t queue_depth = 64;
  std::uint64_t chunk_bytes = 512 << 10;
};

// Raw sequential read rate of the files (bytes/s) through the given engine: every file read
// front to back in chunk-sized O_DIRECT reads, queue_depth in flight, streamed through a few
// registered slices the way the disk tier streams blocks. This is the bound the disk tier's
// throughput is compared with.
double measure_sequential_read(Reader& reader, std::uint64_t max_bytes);
// The memory measure_sequential_read holds while it runs: four 16 MiB slices.
inline constexpr std::uint64_t kSequentialReadSlice = 16ull << 20;
inline constexpr std::uint64_t kSequentialReadMemory = 4 * kSequentialReadSlice;

// Makes the requested engine. If io_uring is refused (-EPERM/-ENOSYS on locked-down hosts), falls
// back to the pread pool and says so once on stderr; reader->kind() tells which one runs.
std::unique_ptr<Reader> make_reader(std::vector<std::filesystem::path> files,
                                    const ReaderOptions& options);

}  // namespace moed::memtier
