#include "moed/memtier/reader.hpp"

#include <fcntl.h>
#include <liburing.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <thread>

namespace moed::memtier {
namespace {

std::uint64_t align_down(std::uint64_t v) {
  return v / kDirectIoAlignment * kDirectIoAlignment;
}
std::uint64_t align_up(std::uint64_t v) {
  return align_down(v + kDirectIoAlignment - 1);
}

class UringReader final : public Reader {
 public:
  UringReader(std::vector<std::filesystem::path> files, std::uint32_t queue_depth,
              std::uint64_t chunk_bytes)
      : Reader(std::move(files), queue_depth, chunk_bytes) {
    const int rc = io_uring_queue_init(queue_depth, &ring_, 0);
    if (rc < 0) throw std::system_error(-rc, std::generic_category(), "io_uring_queue_init");
  }
  ~UringReader() override { io_uring_queue_exit(&ring_); }
  ReaderKind kind() const override { return ReaderKind::io_uring; }

 protected:
  std::vector<std::int64_t> read_impl(std::span<const AlignedRead> reads,
                                      std::span<AlignedBuffer* const> buffers) override {
    const std::vector<int> table_index = register_buffers(buffers);
    const bool fixed = !table_index.empty();
    std::vector<std::int64_t> results(reads.size(), 0);
    std::size_t next = 0, in_flight = 0;
    auto prepare = [&](std::size_t index) {
      io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
      if (!sqe) return false;
      const auto& r = reads[index];
      if (fixed) {
        io_uring_prep_read_fixed(sqe, fd(r.file), r.destination, static_cast<unsigned>(r.length),
                                 r.offset, table_index[r.buffer]);
      } else {
        io_uring_prep_read(sqe, fd(r.file), r.destination, static_cast<unsigned>(r.length),
                           r.offset);
      }
      io_uring_sqe_set_data64(sqe, index);
      ++in_flight;
      return true;
    };
    while (next < reads.size() || in_flight > 0) {
      while (next < reads.size() && in_flight < queue_depth() && prepare(next)) ++next;
      const int submitted = io_uring_submit_and_wait(&ring_, 1);
      if (submitted < 0 && submitted != -EINTR && submitted != -EAGAIN) {
        for (auto& r : results)
          if (r == 0) r = submitted;
        return results;
      }
      io_uring_cqe* cqe = nullptr;
      while (in_flight > 0 && io_uring_peek_cqe(&ring_, &cqe) == 0) {
        const auto index = static_cast<std::size_t>(io_uring_cqe_get_data64(cqe));
        const int res = cqe->res;
        io_uring_cqe_seen(&ring_, cqe);
        --in_flight;
        // Transient refusals go back into the queue; everything else is the read's result.
        if ((res == -EAGAIN || res == -EINTR) && prepare(index)) continue;
        results[index] = res;
      }
    }
    return results;
  }

 private:
  // Registers the destinations with the ring (READ_FIXED then skips pinning pages on every
  // read) and returns each one's index in the ring's table; empty when reads must go
  // unregistered. The table only grows: callers reuse a few buffers, so after the first reads
  // nothing is registered again. Registration counts against RLIMIT_MEMLOCK; when refused, the
  // reason is said once.
  std::vector<int> register_buffers(std::span<AlignedBuffer* const> buffers) {
    if (refused_) return {};
    auto lookup = [&] {
      std::vector<int> index;
      for (const auto* b : buffers) {
        auto it = std::find(registered_.begin(), registered_.end(),
                            std::pair<const std::byte*, std::size_t>(b->data(), b->size()));
        if (it == registered_.end()) return std::vector<int>{};
        index.push_back(static_cast<int>(it - registered_.begin()));
      }
      return index;
    };
    if (auto index = lookup(); !index.empty() || buffers.empty()) return index;
    // A buffer is new (or has grown): register this call's set. Callers reuse theirs, so the set
    // settles on the largest batch's buffers after a few reads.
    std::vector<std::pair<const std::byte*, std::size_t>> table;
    for (const auto* b : buffers) table.emplace_back(b->data(), b->size());
    if (!registered_.empty()) io_uring_unregister_buffers(&ring_);
    registered_.clear();
    std::vector<iovec> iov;
    for (const auto& [data, size] : table) iov.push_back({const_cast<std::byte*>(data), size});
    const int rc = io_uring_register_buffers(&ring_, iov.data(), static_cast<unsigned>(iov.size()));
    if (rc < 0) {
      std::fprintf(stderr,
                   "moed: cannot register read buffers with io_uring (%s; raise LimitMEMLOCK / "
                   "ulimit -l): reading without registered buffers\n",
                   std::strerror(-rc));
      refused_ = true;
      return {};
    }
    registered_ = std::move(table);
    return lookup();
  }

  io_uring ring_{};
  std::vector<std::pair<const std::byte*, std::size_t>> registered_;
  bool refused_ = false;
};

class PreadReader final : public Reader {
 public:
  using Reader::Reader;
  ReaderKind kind() const override { return ReaderKind::pread; }

 protected:
  std::vector<std::int64_t> read_impl(std::span<const AlignedRead> reads,
                                      std::span<AlignedBuffer* const>) override {
    std::vector<std::int64_t> results(reads.size(), 0);
    std::atomic<std::size_t> next{0};
    auto worker = [&] {
      for (std::size_t i = next++; i < reads.size(); i = next++) {
        const auto& r = reads[i];
        std::uint64_t done = 0;
        while (done < r.length) {
          const ssize_t n = ::pread(fd(r.file), r.destination + done, r.length - done,
                                    static_cast<off_t>(r.offset + done));
          if (n < 0 && errno == EINTR) continue;
          if (n < 0) {
            results[i] = -errno;
            break;
          }
          if (n == 0) break;  // end of file
          done += static_cast<std::uint64_t>(n);
        }
        if (results[i] == 0) results[i] = static_cast<std::int64_t>(done);
      }
    };
    // A few threads keep several reads in flight, as the ring's queue depth does.
    const std::size_t threads = std::min<std::size_t>({reads.size(), queue_depth(), 4});
    std::vector<std::jthread> pool;
    for (std::size_t t = 1; t < threads; ++t) pool.emplace_back(worker);
    worker();
    return results;
  }
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
  const std::span<const FileRange> blocks[] = {ranges};
  const auto errors = read_batch(blocks, std::span(&block, 1));
  if (errors.front()) std::rethrow_exception(errors.front());
}

std::vector<std::exception_ptr> Reader::read_batch(
    std::span<const std::span<const FileRange>> blocks, std::span<LoadedBlock> into) {
  std::vector<std::exception_ptr> errors(blocks.size());
  std::vector<AlignedRead> reads;
  std::vector<std::size_t> block_of;  // reads[i] belongs to blocks[block_of[i]]
  std::vector<AlignedBuffer*> buffers;
  for (std::size_t b = 0; b < blocks.size(); ++b) {
    LoadedBlock& block = into[b];
    block.ranges.clear();
    try {
      std::uint64_t total = 0;
      for (const auto& r : blocks[b]) {
        if (r.file >= fds_.size())
          throw std::out_of_range("Reader: no file index " + std::to_string(r.file));
        if (r.offset > sizes_[r.file] || r.length > sizes_[r.file] - r.offset)
          throw std::runtime_error(
              paths_[r.file].string() + ": range [" + std::to_string(r.offset) + ", " +
              std::to_string(r.offset + r.length) + ") lies past the end of the file (" +
              std::to_string(sizes_[r.file]) + " bytes)");
        total += align_up(r.offset + r.length) - align_down(r.offset);
      }
      if (block.buffer.size() < total) block.buffer = AlignedBuffer(total);
    } catch (...) {
      errors[b] = std::current_exception();
      continue;
    }
    const auto buffer_index = static_cast<std::uint32_t>(buffers.size());
    buffers.push_back(&block.buffer);
    std::uint64_t at = 0;
    for (const auto& r : blocks[b]) {
      const std::uint64_t begin = align_down(r.offset);
      const std::uint64_t end = align_up(r.offset + r.length);
      block.ranges.push_back(block.buffer.data() + at + (r.offset - begin));
      for (std::uint64_t off = begin; off < end; off += chunk_bytes_) {
        const std::uint64_t len = std::min(chunk_bytes_, end - off);
        const std::uint64_t expected =
            std::min(len, sizes_[r.file] - std::min(off, sizes_[r.file]));
        reads.push_back(
            {r.file, off, len, block.buffer.data() + at + (off - begin), expected, buffer_index});
        block_of.push_back(b);
      }
      at += end - begin;
    }
  }
  const auto results = read_impl(reads, buffers);
  for (std::size_t i = 0; i < reads.size(); ++i) {
    const auto& r = reads[i];
    if (errors[block_of[i]]) continue;
    if (results[i] < 0) {
      errors[block_of[i]] = std::make_exception_ptr(std::runtime_error(
          paths_[r.file].string() + ": read of " + std::to_string(r.length) + " bytes at offset " +
          std::to_string(r.offset) + " failed: " + std::strerror(static_cast<int>(-results[i]))));
    } else if (static_cast<std::uint64_t>(results[i]) < r.expected) {
      errors[block_of[i]] = std::make_exception_ptr(std::runtime_error(
          paths_[r.file].string() + ": short read at offset " + std::to_string(r.offset) +
          ": got " + std::to_string(results[i]) + " of " + std::to_string(r.expected) + " bytes"));
    }
  }
  return errors;
}

double measure_sequential_read(Reader& reader, std::uint64_t max_bytes) {
  std::uint64_t total = 0;
  const auto start = std::chrono::steady_clock::now();
  for (std::uint32_t f = 0; total < max_bytes; ++f) {
    try {
      reader.file_size(f);
    } catch (const std::out_of_range&) {
      break;
    }
    // Whole-file reads in slices keep the buffer small while the queue stays full.
    constexpr std::uint64_t kSlice = 64ull << 20;
    LoadedBlock slice;
    for (std::uint64_t off = 0; off < reader.file_size(f) && total < max_bytes; off += kSlice) {
      const std::uint64_t len = std::min(kSlice, reader.file_size(f) - off);
      const FileRange range{f, off, len};
      reader.read(std::span(&range, 1), slice);
      total += len;
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
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
