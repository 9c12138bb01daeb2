#include "moed/memtier/reader.hpp"

#include <fcntl.h>
#include <liburing.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <system_error>
#include <thread>

namespace moed::memtier {
namespace {

class UringReader final : public Reader {
 public:
  UringReader(std::vector<std::filesystem::path> files, std::uint32_t queue_depth,
              std::uint64_t chunk_bytes)
      : Reader(std::move(files), queue_depth, chunk_bytes) {
    const int rc = io_uring_queue_init(queue_depth, &ring_, 0);
    if (rc < 0) throw std::system_error(-rc, std::generic_category(), "io_uring_queue_init");
    // An empty table whose slots are filled as memory is registered (kernel 5.19+).
    table_error_ = io_uring_register_buffers_sparse(&ring_, kSlots);
    if (table_error_ == 0) slots_.assign(kSlots, false);
  }
  ~UringReader() override { io_uring_queue_exit(&ring_); }
  ReaderKind kind() const override { return ReaderKind::io_uring; }

 protected:
  void submit(std::span<const AlignedRead> reads) override {
    for (const auto& r : reads) {
      io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
      if (!sqe) {
        io_uring_submit(&ring_);
        sqe = io_uring_get_sqe(&ring_);
      }
      if (!sqe) throw std::system_error(EBUSY, std::generic_category(), "io_uring_get_sqe");
      if (r.registered >= 0) {
        io_uring_prep_read_fixed(sqe, fd(r.file), r.destination, static_cast<unsigned>(r.length),
                                 r.offset, r.registered);
      } else {
        io_uring_prep_read(sqe, fd(r.file), r.destination, static_cast<unsigned>(r.length),
                           r.offset);
      }
      io_uring_sqe_set_data64(sqe, r.id);
    }
    io_uring_submit(&ring_);  // a refusal here is retried by reap's submit_and_wait
  }

  void reap(std::vector<ReadResult>& out, bool wait) override {
    const int rc = io_uring_submit_and_wait(&ring_, wait ? 1 : 0);
    if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY)
      throw std::system_error(-rc, std::generic_category(), "io_uring_submit_and_wait");
    io_uring_cqe* cqe = nullptr;
    while (io_uring_peek_cqe(&ring_, &cqe) == 0) {
      out.push_back({io_uring_cqe_get_data64(cqe), cqe->res});
      io_uring_cqe_seen(&ring_, cqe);
    }
  }

  int register_engine_memory(std::span<std::byte> memory) override {
    if (slots_.empty()) {
      refuse_registration(table_error_);
      return -1;
    }
    const auto free_slot = std::find(slots_.begin(), slots_.end(), false);
    if (free_slot == slots_.end()) return -1;
    const auto slot = static_cast<unsigned>(free_slot - slots_.begin());
    iovec iov{memory.data(), memory.size()};
    const __u64 tag = 0;
    const int rc = io_uring_register_buffers_update_tag(&ring_, slot, &iov, &tag, 1);
    if (rc < 0) {
      refuse_registration(rc);
      return -1;
    }
    *free_slot = true;
    return static_cast<int>(slot);
  }

  void unregister_engine_memory(int index) override {
    iovec empty{nullptr, 0};
    const __u64 tag = 0;
    io_uring_register_buffers_update_tag(&ring_, static_cast<unsigned>(index), &empty, &tag, 1);
    slots_.at(static_cast<std::size_t>(index)) = false;
  }

 private:
  static constexpr unsigned kSlots = 8;

  // Registration counts against RLIMIT_MEMLOCK; when refused, the reason is said once and reads
  // go on without registered memory.
  void refuse_registration(int rc) {
    if (!said_refused_)
      std::fprintf(stderr,
                   "moed: cannot register read buffers with io_uring (%s; raise LimitMEMLOCK / "
                   "ulimit -l): reading without registered buffers\n",
                   std::strerror(-rc));
    said_refused_ = true;
  }

  io_uring ring_{};
  std::vector<bool> slots_;  // registered-buffer table: which slots hold memory
  int table_error_ = 0;      // why there is no table
  bool said_refused_ = false;
};

// The fallback engine: a few threads each run one blocking pread at a time, as the ring's queue
// depth keeps several reads in flight.
class PreadReader final : public Reader {
 public:
  PreadReader(std::vector<std::filesystem::path> files, std::uint32_t queue_depth,
              std::uint64_t chunk_bytes)
      : Reader(std::move(files), queue_depth, chunk_bytes) {
    const std::uint32_t threads = std::min<std::uint32_t>(queue_depth, 4);
    for (std::uint32_t t = 0; t < threads; ++t) workers_.emplace_back([this] { work(); });
  }
  ~PreadReader() override {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    work_ready_.notify_all();
    for (auto& worker : workers_) worker.join();
  }
  ReaderKind kind() const override { return ReaderKind::pread; }

 protected:
  void submit(std::span<const AlignedRead> reads) override {
    {
      std::lock_guard lock(mutex_);
      todo_.insert(todo_.end(), reads.begin(), reads.end());
    }
    work_ready_.notify_all();
  }

  void reap(std::vector<ReadResult>& out, bool wait) override {
    std::unique_lock lock(mutex_);
    if (wait) result_ready_.wait(lock, [&] { return !done_.empty(); });
    out.insert(out.end(), done_.begin(), done_.end());
    done_.clear();
  }

 private:
  void work() {
    std::unique_lock lock(mutex_);
    while (true) {
      work_ready_.wait(lock, [&] { return stopping_ || !todo_.empty(); });
      if (stopping_) return;
      const AlignedRead r = todo_.front();
      todo_.pop_front();
      lock.unlock();
      std::int64_t result = 0;
      std::uint64_t done = 0;
      while (done < r.length) {
        const ssize_t n = ::pread(fd(r.file), r.destination + done, r.length - done,
                                  static_cast<off_t>(r.offset + done));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
          result = -errno;
          break;
        }
        if (n == 0) break;  // end of file
        done += static_cast<std::uint64_t>(n);
      }
      lock.lock();
      done_.push_back({r.id, result < 0 ? result : static_cast<std::int64_t>(done)});
      result_ready_.notify_one();
    }
  }

  std::mutex mutex_;
  std::condition_variable work_ready_, result_ready_;
  std::deque<AlignedRead> todo_;
  std::vector<ReadResult> done_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace

std::string to_string(ReaderKind kind) {
  return kind == ReaderKind::io_uring ? "io_uring" : "pread";
}

Reader::Reader(std::vector<std::filesystem::path> files, std::uint32_t queue_depth,
               std::uint64_t chunk_bytes)
    : paths_(std::move(files)), queue_depth_(queue_depth), chunk_bytes_(align_up(chunk_bytes)) {
  if (queue_depth_ == 0 || chunk_bytes_ == 0)
    throw std::invalid_argument("Reader: queue depth and chunk size must be positive");
  for (const auto& path : paths_) {
    int fd = ::open(path.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
    // Some filesystems (tmpfs) refuse O_DIRECT; reading through the page cache is still correct.
    if (fd < 0 && errno == EINVAL) fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      const int err = errno;
      for (int open_fd : fds_) ::close(open_fd);
      throw std::runtime_error(path.string() + ": cannot open: " + std::strerror(err));
    }
    struct stat st {};
    ::fstat(fd, &st);
    fds_.push_back(fd);
    sizes_.push_back(static_cast<std::uint64_t>(st.st_size));
  }
}

Reader::~Reader() {
  for (int fd : fds_) ::close(fd);
}

LoadedBlock Reader::read(std::span<const FileRange> ranges) {
  LoadedBlock block;
  read(ranges, block);
  return block;
}

void Reader::read(std::span<const FileRange> ranges, LoadedBlock& block) {
  if (!idle()) throw std::logic_error("Reader::read: streamed blocks are in progress");
  block.ranges.clear();
  const std::uint64_t total = aligned_bytes(ranges);
  if (block.buffer.size() < total) block.buffer = AlignedBuffer(total);
  start(0, ranges, std::span(block.buffer.data(), block.buffer.size()));
  while (true) {
    auto finished = poll(true);
    if (finished.empty()) continue;
    block.ranges = std::move(finished.front().ranges);
    if (finished.front().error) std::rethrow_exception(finished.front().error);
    return;
  }
}

std::uint64_t Reader::aligned_bytes(std::span<const FileRange> ranges) const {
  for (const auto& r : ranges) {
    if (r.file >= fds_.size())
      throw std::out_of_range("Reader: no file index " + std::to_string(r.file));
    if (r.offset > sizes_[r.file] || r.length > sizes_[r.file] - r.offset)
      throw std::runtime_error(paths_[r.file].string() + ": range [" + std::to_string(r.offset) +
                               ", " + std::to_string(r.offset + r.length) +
                               ") lies past the end of the file (" +
                               std::to_string(sizes_[r.file]) + " bytes)");
  }
  return aligned_read_bytes(ranges);
}

void Reader::start(std::uint64_t tag, std::span<const FileRange> ranges,
                   std::span<std::byte> destination) {
  const std::uint64_t total = aligned_bytes(ranges);
  if (destination.size() < total ||
      reinterpret_cast<std::uintptr_t>(destination.data()) % kDirectIoAlignment != 0)
    throw std::invalid_argument("Reader::start: the destination must be " +
                                std::to_string(kDirectIoAlignment) + "-byte aligned and hold " +
                                std::to_string(total) + " bytes");
  if (blocks_.contains(tag)) throw std::logic_error("Reader::start: tag already in progress");
  int registered = -1;
  for (const auto& r : registered_)
    if (destination.data() >= r.memory.data() &&
        destination.data() + total <= r.memory.data() + r.memory.size())
      registered = r.index;

  InProgress block;
  std::uint64_t at = 0;
  for (const auto& r : ranges) {
    const std::uint64_t begin = align_down(r.offset);
    const std::uint64_t end = align_up(r.offset + r.length);
    block.ranges.push_back(destination.data() + at + (r.offset - begin));
    for (std::uint64_t off = begin; off < end; off += chunk_bytes_) {
      const std::uint64_t length = std::min(chunk_bytes_, end - off);
      const std::uint64_t expected =
          std::min(length, sizes_[r.file] - std::min(off, sizes_[r.file]));
      waiting_.push_back({{next_read_id_++, r.file, off, length,
                           destination.data() + at + (off - begin), registered},
                          expected,
                          tag});
      ++block.outstanding;
    }
    at += end - begin;
  }
  if (block.outstanding == 0) {
    finished_without_reads_.push_back({tag, std::move(block.ranges), nullptr});
    return;
  }
  blocks_.emplace(tag, std::move(block));
  fill_queue();
}

void Reader::fill_queue() {
  std::vector<AlignedRead> reads;
  while (!waiting_.empty() && in_flight_.size() < queue_depth_) {
    const Chunk chunk = waiting_.front();
    waiting_.pop_front();
    in_flight_.emplace(chunk.read.id, chunk);
    reads.push_back(chunk.read);
  }
  if (reads.empty() || engine_error_) return;  // after an engine failure poll fails them all
  try {
    submit(reads);
  } catch (const std::system_error& e) {
    engine_error_ = -e.code().value();
  }
}

std::vector<Reader::Finished> Reader::poll(bool wait) {
  std::vector<Finished> finished = std::move(finished_without_reads_);
  finished_without_reads_.clear();
  const bool block_until_one = wait && finished.empty();
  std::vector<ReadResult> results;
  // An engine may wake without a result (a signal); waiting means until one arrives.
  while (!in_flight_.empty() && results.empty()) {
    if (!engine_error_) {
      try {
        reap(results, block_until_one);
      } catch (const std::system_error& e) {
        engine_error_ = -e.code().value();
      }
    }
    // The engine itself failed: every read in flight is reported with its error.
    if (engine_error_)
      for (const auto& [id, chunk] : in_flight_) results.push_back({id, engine_error_});
    if (!block_until_one) break;
  }
  for (const auto& [id, result] : results) {
    auto node = in_flight_.extract(id);
    if (node.empty()) continue;
    const Chunk& chunk = node.mapped();
    // Transient refusals go back to the front of the queue.
    if (result == -EAGAIN || result == -EINTR) {
      waiting_.push_front(chunk);
      continue;
    }
    auto block = blocks_.find(chunk.tag);
    check_result(chunk, result, block->second);
    if (--block->second.outstanding == 0) {
      finished.push_back({chunk.tag, std::move(block->second.ranges), block->second.error});
      blocks_.erase(block);
    }
  }
  fill_queue();
  return finished;
}

void Reader::check_result(const Chunk& chunk, std::int64_t result, InProgress& block) const {
  if (block.error) return;
  const auto& r = chunk.read;
  if (result < 0) {
    block.error = std::make_exception_ptr(std::runtime_error(
        paths_[r.file].string() + ": read of " + std::to_string(r.length) + " bytes at offset " +
        std::to_string(r.offset) + " failed: " + std::strerror(static_cast<int>(-result))));
  } else if (static_cast<std::uint64_t>(result) < chunk.expected) {
    block.error = std::make_exception_ptr(std::runtime_error(
        paths_[r.file].string() + ": short read at offset " + std::to_string(r.offset) + ": got " +
        std::to_string(result) + " of " + std::to_string(chunk.expected) + " bytes"));
  }
}

bool Reader::register_memory(std::span<std::byte> memory) {
  const int index = register_engine_memory(memory);
  if (index < 0) return false;
  registered_.push_back({memory, index});
  return true;
}

void Reader::unregister_memory(std::span<std::byte> memory) {
  const auto it = std::find_if(registered_.begin(), registered_.end(), [&](const Registered& r) {
    return r.memory.data() == memory.data() && r.memory.size() == memory.size();
  });
  if (it == registered_.end()) return;
  unregister_engine_memory(it->index);
  registered_.erase(it);
}

double measure_sequential_read(Reader& reader, std::uint64_t max_bytes) {
  std::vector<FileRange> slices;
  constexpr std::uint64_t kSlice = kSequentialReadSlice;
  std::uint64_t total = 0;
  for (std::uint32_t f = 0; f < reader.file_count() && total < max_bytes; ++f)
    for (std::uint64_t off = 0; off < reader.file_size(f) && total < max_bytes; off += kSlice) {
      const std::uint64_t length = std::min(kSlice, reader.file_size(f) - off);
      slices.push_back({f, off, length});
      total += length;
    }
  // Four slices in rotation: one is refilled as soon as its reads are done, so the queue never
  // drains between slices, as the disk tier never drains between blocks.
  constexpr std::size_t kSlots = kSequentialReadMemory / kSlice;
  AlignedBuffer memory(kSequentialReadMemory);
  const std::uint64_t slot_bytes = memory.size() / kSlots;
  const std::span<std::byte> all(memory.data(), memory.size());
  const bool registered = reader.register_memory(all);
  auto slot = [&](std::uint64_t i) { return all.subspan(i * slot_bytes, slot_bytes); };

  std::exception_ptr error;
  std::size_t next = 0;
  const auto begin = std::chrono::steady_clock::now();
  for (std::uint64_t i = 0; i < kSlots && next < slices.size(); ++i, ++next)
    reader.start(i, std::span(&slices[next], 1), slot(i));
  while (!reader.idle()) {
    for (auto& done : reader.poll(true)) {
      if (done.error && !error) error = done.error;
      if (!error && next < slices.size())
        reader.start(done.tag, std::span(&slices[next++], 1), slot(done.tag));
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
  if (registered) reader.unregister_memory(all);
  if (error) std::rethrow_exception(error);
  return seconds > 0 ? static_cast<double>(total) / seconds : 0.0;
}

std::unique_ptr<Reader> make_reader(std::vector<std::filesystem::path> files,
                                    const ReaderOptions& options) {
  if (options.kind == ReaderKind::io_uring) {
    try {
      return std::make_unique<UringReader>(files, options.queue_depth, options.chunk_bytes);
    } catch (const std::system_error& e) {
      if (e.code().value() != EPERM && e.code().value() != ENOSYS) throw;
      std::fprintf(stderr, "moed: io_uring unavailable (%s); reading with a pread thread pool\n",
                   e.what());
    }
  }
  return std::make_unique<PreadReader>(std::move(files), options.queue_depth, options.chunk_bytes);
}

}  // namespace moed::memtier
