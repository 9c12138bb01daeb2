#include "moed/memtier/block_loader.hpp"

#include <chrono>
#include <stdexcept>

namespace moed::memtier {

BlockLoader::BlockLoader(const Source& source, std::unique_ptr<Reader> reader,
                         Materialize materialize)
    : source_(source), reader_(std::move(reader)), materialize_(std::move(materialize)) {
  counters_.engine = to_string(reader_->kind());
  thread_ = std::thread([this] { run(); });
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
  thread_.join();
}

std::shared_future<Payload> BlockLoader::load(BlockId block, Priority priority, OnLoaded on_loaded) {
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

bool BlockLoader::cancel(BlockId block) {
  std::lock_guard lock(mutex_);
  auto it = jobs_.find(block);
  if (it == jobs_.end() || it->second->started || it->second->priority == Priority::demand)
    return false;
  it->second->promise.set_exception(
      std::make_exception_ptr(std::runtime_error("prefetch of " + block.to_string() + " cancelled")));
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

void BlockLoader::run() {
  using Clock = std::chrono::steady_clock;
  std::unique_lock lock(mutex_);
  while (true) {
    std::shared_ptr<Job> next;
    wake_.wait(lock, [&] {
      if (stopping_) return true;
      for (const auto& [block, job] : jobs_)
        if (!job->started) return true;
      return false;
    });
    if (stopping_) return;
    for (const auto& [block, job] : jobs_)
      if (!job->started && (!next || std::pair(job->priority, job->sequence) <
                                         std::pair(next->priority, next->sequence)))
        next = job;
    next->started = true;
    lock.unlock();

    Payload payload;
    std::exception_ptr error;
    double read_seconds = 0, materialize_seconds = 0;
    std::uint64_t bytes = 0;
    try {
      const auto& ranges = source_.ranges(next->block);
      const auto start = Clock::now();
      reader_->read(ranges, scratch_);
      read_seconds = std::chrono::duration<double>(Clock::now() - start).count();
      for (const auto& r : ranges) bytes += r.length;
      const auto packed_start = Clock::now();
      Priority priority;
      {
        std::lock_guard relock(mutex_);  // a demand may have upgraded the job meanwhile
        priority = next->priority;
      }
      payload = materialize_(next->block, scratch_, priority == Priority::demand);
      materialize_seconds = std::chrono::duration<double>(Clock::now() - packed_start).count();
      for (const auto& callback : next->on_loaded) callback(next->block, payload);
    } catch (...) {
      error = std::current_exception();
    }

    lock.lock();
    ++counters_.reads;
    counters_.bytes_read += bytes;
    counters_.busy_seconds += read_seconds;
    counters_.materialize_seconds += materialize_seconds;
    if (error) ++counters_.errors;
    jobs_.erase(next->block);
    if (error) {
      next->promise.set_exception(error);
    } else {
      next->promise.set_value(std::move(payload));
    }
  }
}

}  // namespace moed::memtier
