#pragma once

#include <cstdint>
#include <exception>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "moed/memtier/aligned_buffer.hpp"
#include "moed/memtier/block.hpp"

namespace moed::memtier {

// One aligned O_DIRECT read: file offset, length and destination all kDirectIoAlignment-aligned.
struct AlignedRead {
  std::uint32_t file;
  std::uint64_t offset;
  std::uint64_t length;
  std::byte* destination;
  std::uint64_t expected;  // bytes that must arrive: length, less what lies past the end of file
  std::uint32_t buffer;    // index of the destination's buffer in read_impl's `buffers`
};

// The bytes of a block after a read: one contiguous buffer holding the aligned superset of each
// range, and where each requested range starts in it.
struct LoadedBlock {
  AlignedBuffer buffer;
  std::vector<const std::byte*> ranges;  // ranges[i] points at Source::ranges(block)[i]'s bytes
};

enum class ReaderKind { io_uring, pread };
std::string to_string(ReaderKind kind);

// The disk tier's I/O engine. read() is the public, non-virtual entry: it aligns every range to
// the O_DIRECT superset, splits it into chunks, runs them through read_impl and turns errors and
// short reads into an exception naming the file and offset. Engines override read_impl only,
// which also makes a fault-injecting test reader a few lines.
class Reader {
 public:
  Reader(std::vector<std::filesystem::path> files, std::uint32_t queue_depth,
         std::uint64_t chunk_bytes);
  virtual ~Reader();
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  // Reads the ranges into `into`. Its buffer grows when too small and is otherwise reused, so a
  // caller that keeps one LoadedBlock across reads keeps it registered with the ring (and its
  // pages faulted in): the kernel then DMAs straight into it with no copy.
  void read(std::span<const FileRange> ranges, LoadedBlock& into);
  LoadedBlock read(std::span<const FileRange> ranges);
  // Reads several blocks with all their reads sharing the queue, as one long sequential read
  // would; into[i] receives blocks[i]. Returns, per block, null or the error that block hit.
  std::vector<std::exception_ptr> read_batch(std::span<const std::span<const FileRange>> blocks,
                                             std::span<LoadedBlock> into);
  virtual ReaderKind kind() const = 0;
  std::uint64_t file_size(std::uint32_t file) const { return sizes_.at(file); }
  std::uint32_t queue_depth() const { return queue_depth_; }

 protected:
  // Runs all reads, many in flight; result[i] is bytes read or -errno for reads[i]. Each
  // read's destination lies inside buffers[read.buffer].
  virtual std::vector<std::int64_t> read_impl(std::span<const AlignedRead> reads,
                                              std::span<AlignedBuffer* const> buffers) = 0;
  int fd(std::uint32_t file) const { return fds_.at(file); }

 private:
  std::vector<std::filesystem::path> paths_;
  std::vector<int> fds_;
  std::vector<std::uint64_t> sizes_;
  std::uint32_t queue_depth_;
  std::uint64_t chunk_bytes_;
};

struct ReaderOptions {
  ReaderKind kind = ReaderKind::io_uring;
  // A block-sized read (~17 MiB for the bench model's experts) needs dozens of reads in flight
  // to reach the device's sequential rate; 64 x 512 KiB measured best here.
  std::uint32_t queue_depth = 64;
  std::uint64_t chunk_bytes = 512 << 10;
};

// Raw sequential read rate of the files (bytes/s) through the given engine: every file read
// front to back in chunk-sized O_DIRECT reads, queue_depth in flight. This is the bound the
// disk tier's throughput is compared with.
double measure_sequential_read(Reader& reader, std::uint64_t max_bytes);

// Makes the requested engine. If io_uring is refused (-EPERM/-ENOSYS on locked-down hosts), falls
// back to the pread pool and says so once on stderr; reader->kind() tells which one runs.
std::unique_ptr<Reader> make_reader(std::vector<std::filesystem::path> files,
                                    const ReaderOptions& options);

}  // namespace moed::memtier
