#include "moed/memtier/block_loader.hpp"

#include <algorithm>
#include <chrono>
#include <stdexcept>

namespace moed::memtier {

BlockLoader::BlockLoader(const Source& source, std::unique_ptr<Reader> reader,
                         Materialize materialize)
    : source_(source), reader_(std::move(reader)), materialize_(std::move(materialize)) {
  counters_.engine = to_string(reader_->kind());
  io_thread_ = std::thread([this] { read_loop(); });
  packer_thread_ = std::thread([this] { pack_loop(); });
}

BlockLoader::~BlockLoader() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    for (auto& [block, job] : jobs_)
      if (!job->started)
        job->promise.set_exception(std::make_exception_ptr(
            std::runtime_error("load of " + block.to_string() + " cancelled: shutting down")));
  }
  wake_.notify_all();
  io_thread_.join();  // batches already read are still packed and handed over
  {
    std::lock_guard lock(mutex_);
    reading_done_ = true;
  }
  packer_.notify_all();
  packer_thread_.join();
}

std::shared_future<Payload> BlockLoader::load(BlockId block, Priority priority,
                                              OnLoaded on_loaded) {
  std::lock_guard lock(mutex_);
  if (stopping_) throw std::runtime_error("BlockLoader: shutting down");
  auto it = jobs_.find(block);
  if (it != jobs_.end()) {
    auto& job = *it->second;
    if (priority < job.priority) job.priority = priority;
    if (on_loaded) job.on_loaded.push_back(std::move(on_loaded));
    return job.future;
  }
  auto job = std::make_shared<Job>();
  job->block = block;
  job->priority = priority;
  job->sequence = next_sequence_++;
  job->future = job->promise.get_future().share();
  if (on_loaded) job->on_loaded.push_back(std::move(on_loaded));
  jobs_.emplace(block, job);
  wake_.notify_one();
  return job->future;
}

void BlockLoader::prioritize(BlockId block) {
  std::lock_guard lock(mutex_);
  auto it = jobs_.find(block);
  if (it != jobs_.end()) it->second->priority = Priority::demand;
}

bool BlockLoader::cancel(BlockId block) {
  std::lock_guard lock(mutex_);
  auto it = jobs_.find(block);
  if (it == jobs_.end() || it->second->started || it->second->priority == Priority::demand)
    return false;
  it->second->promise.set_exception(std::make_exception_ptr(
      std::runtime_error("prefetch of " + block.to_string() + " cancelled")));
  jobs_.erase(it);
  ++counters_.cancelled;
  return true;
}

bool BlockLoader::pending(BlockId block) const {
  std::lock_guard lock(mutex_);
  return jobs_.contains(block);
}

BlockLoader::Counters BlockLoader::counters() const {
  std::lock_guard lock(mutex_);
  return counters_;
}

void BlockLoader::read_loop() {
  using Clock = std::chrono::steady_clock;
  std::unique_lock lock(mutex_);
  while (true) {
    std::size_t set = kStagingSets;
    wake_.wait(lock, [&] {
      if (stopping_) return true;
      set = static_cast<std::size_t>(std::find(set_busy_.begin(), set_busy_.end(), false) -
                                     set_busy_.begin());
      if (set == kStagingSets) return false;
      for (const auto& [block, job] : jobs_)
        if (!job->started) return true;
      return false;
    });
    if (stopping_) return;
    std::vector<std::shared_ptr<Job>> queued;
    for (const auto& [block, job] : jobs_)
      if (!job->started) queued.push_back(job);
    std::sort(queued.begin(), queued.end(), [](const auto& a, const auto& b) {
      return std::pair(a->priority, a->sequence) < std::pair(b->priority, b->sequence);
    });
    Staged staged{{}, {}, set, 0.0};
    std::vector<std::span<const FileRange>> ranges;
    std::uint64_t batch_bytes = 0;
    for (const auto& job : queued) {
      if (staged.batch.size() == kMaxBatchBlocks) break;
      std::span<const FileRange> r;
      std::exception_ptr error;
      std::uint64_t bytes = 0;
      try {
        r = source_.ranges(job->block);
        bytes = source_.bytes(job->block);
      } catch (...) {
        error = std::current_exception();
      }
      if (!staged.batch.empty() && batch_bytes + bytes > kMaxBatchBytes) break;
      job->started = true;
      staged.batch.push_back(job);
      ranges.push_back(r);
      staged.errors.push_back(error);
      batch_bytes += bytes;
    }
    set_busy_[set] = true;
    lock.unlock();

    auto& scratch = scratch_[set];
    if (scratch.size() < staged.batch.size()) scratch.resize(staged.batch.size());
    const auto start = Clock::now();
    const auto read_errors =
        reader_->read_batch(ranges, std::span(scratch.data(), staged.batch.size()));
    staged.read_seconds = std::chrono::duration<double>(Clock::now() - start).count();
    for (std::size_t i = 0; i < staged.batch.size(); ++i)
      if (!staged.errors[i]) staged.errors[i] = read_errors[i];

    lock.lock();
    staged_.push_back(std::move(staged));
    packer_.notify_one();
  }
}

void BlockLoader::pack_loop() {
  using Clock = std::chrono::steady_clock;
  std::unique_lock lock(mutex_);
  while (true) {
    packer_.wait(lock, [&] { return !staged_.empty() || reading_done_; });
    if (staged_.empty()) return;
    Staged staged = std::move(staged_.front());
    staged_.pop_front();
    lock.unlock();

    auto& scratch = scratch_[staged.set];
    auto& errors = staged.errors;
    const auto& batch = staged.batch;
    double materialize_seconds = 0;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      Job& job = *batch[i];
      Payload payload;
      if (!errors[i]) {
        try {
          Priority priority;
          {
            std::lock_guard relock(mutex_);  // a demand may have upgraded the job meanwhile
            priority = job.priority;
          }
          const auto packed_start = Clock::now();
          payload = materialize_(job.block, scratch[i], priority == Priority::demand);
          materialize_seconds += std::chrono::duration<double>(Clock::now() - packed_start).count();
        } catch (...) {
          errors[i] = std::current_exception();
        }
      }
      // load() may add callbacks to this job until it leaves jobs_, so they are taken under the
      // lock and run outside it, until none are left; then, still under the lock, the job is
      // finished and removed, so no callback can be added and missed.
      while (true) {
        std::vector<OnLoaded> callbacks;
        {
          std::lock_guard relock(mutex_);
          if (!errors[i]) callbacks.swap(job.on_loaded);
          if (callbacks.empty()) {
            ++counters_.reads;
            if (errors[i]) {
              ++counters_.errors;
              job.promise.set_exception(errors[i]);
            } else {
              counters_.bytes_read += source_.bytes(job.block);
              job.promise.set_value(std::move(payload));
            }
            jobs_.erase(job.block);
            break;
          }
        }
        try {
          for (const auto& callback : callbacks) callback(job.block, payload);
        } catch (...) {
          errors[i] = std::current_exception();
        }
      }
    }

    lock.lock();
    counters_.busy_seconds += staged.read_seconds;
    counters_.materialize_seconds += materialize_seconds;
    set_busy_[staged.set] = false;
    wake_.notify_one();
  }
}

}  // namespace moed::memtier
