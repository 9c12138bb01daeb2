#include "moed/memtier/block_loader.hpp"

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>

namespace moed::memtier {
namespace {

using Clock = std::chrono::steady_clock;

// Reads keep the queue full across a block boundary only if, when a block finishes, what is
// still started fills the queue: the queue's bytes plus one block.
std::uint64_t reading_window(const Source& source, const Reader& reader,
                             const BlockLoaderOptions& options,
                             const std::function<bool(BlockId)>& skip = {}) {
  if (options.reading_bytes) return options.reading_bytes;
  const std::uint64_t largest = source.largest_read_bytes(skip);
  return std::min<std::uint64_t>(reader.queue_depth() * reader.chunk_bytes(), 8 * largest) +
         largest;
}

bool keeps_block(const KeptReads& kept, BlockId block) {
  return kept.keeps && kept.allocate && kept.keeps(block);
}

// The reading window, plus the block being packed and the one whose start took reading past
// the window, counting only the blocks read into the arena: kept reads land in memory of their
// own (a Q4_K_M bench expert is its largest block: 50 MB of arena, registered and so pinned,
// that no read would use).
std::uint64_t staging_size(const Source& source, const Reader& reader,
                           const BlockLoaderOptions& options, const KeptReads& kept) {
  if (options.staging_bytes) return options.staging_bytes;
  const auto keeps = [&](BlockId block) { return keeps_block(kept, block); };
  return std::max<std::uint64_t>(
      reading_window(source, reader, options, keeps) + 2 * source.largest_read_bytes(keeps),
      kDirectIoAlignment);
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

std::string_view to_string(BlockLoader::LoadKind kind) {
  switch (kind) {
    case BlockLoader::LoadKind::demand:
      return "demand";
    case BlockLoader::LoadKind::raised_prefetch:
      return "raised_prefetch";
    case BlockLoader::LoadKind::prefetch:
      return "prefetch";
  }
  return "?";
}

LoadStagesByKind stages_since(const LoadStagesByKind& earlier, const LoadStagesByKind& later) {
  LoadStagesByKind since;
  for (std::size_t k = 0; k < since.size(); ++k) {
    since[k].loads = later[k].loads - earlier[k].loads;
    since[k].queued_seconds = later[k].queued_seconds - earlier[k].queued_seconds;
    since[k].reading_seconds = later[k].reading_seconds - earlier[k].reading_seconds;
    since[k].staged_seconds = later[k].staged_seconds - earlier[k].staged_seconds;
    since[k].packing_seconds = later[k].packing_seconds - earlier[k].packing_seconds;
  }
  return since;
}

nlohmann::json to_json(const LoadStagesByKind& stages) {
  nlohmann::json out = nlohmann::json::object();
  for (std::size_t k = 0; k < stages.size(); ++k)
    out[std::string(to_string(static_cast<BlockLoader::LoadKind>(k)))] = {
        {"loads", stages[k].loads},
        {"queued_seconds", stages[k].queued_seconds},
        {"reading_seconds", stages[k].reading_seconds},
        {"staged_seconds", stages[k].staged_seconds},
        {"packing_seconds", stages[k].packing_seconds}};
  return out;
}

BlockLoader::BlockLoader(const Source& source, std::unique_ptr<Reader> reader,
                         Materialize materialize, BlockLoaderOptions options, KeptReads kept_reads)
    : source_(source),
      reader_(std::move(reader)),
      materialize_(std::move(materialize)),
      kept_reads_(std::move(kept_reads)),
      reading_limit_(reading_window(source, *reader_, options)),
      arena_(staging_size(source, *reader_, options, kept_reads_)) {
  counters_.engine = to_string(reader_->kind());
  counters_.staging_bytes = arena_.capacity();
  counters_.staging_registered = reader_->register_memory(arena_.memory());
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
  io_thread_.join();  // reads in flight finish first; blocks already read are still packed
  {
    std::lock_guard lock(mutex_);
    reading_done_ = true;
  }
  packer_.notify_all();
  packer_thread_.join();
  if (counters_.staging_registered) reader_->unregister_memory(arena_.memory());
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
  job->asked_as_demand = priority == Priority::demand;
  job->asked_at = Clock::now();
  job->future = job->promise.get_future().share();
  if (on_loaded) job->on_loaded.push_back(std::move(on_loaded));
  jobs_.emplace(block, job);
  wake_.notify_one();
  return job->future;
}

std::shared_future<Payload> BlockLoader::prioritize(BlockId block, Priority priority,
                                                    OnLoaded on_loaded) {
  std::lock_guard lock(mutex_);
  auto it = jobs_.find(block);
  if (it == jobs_.end()) return {};
  Job& job = *it->second;
  if (on_loaded) job.on_loaded.push_back(std::move(on_loaded));
  if (priority < job.priority) {
    // Queued, it takes its place behind the demands asked for before it (the sequence becomes
    // the reader's tag only when the read starts).
    if (priority == Priority::demand && !job.started) job.sequence = next_sequence_++;
    job.priority = priority;
    wake_.notify_one();  // a demand may start where a prefetch had to wait
  }
  return job.future;
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
  Counters now = counters_;
  // The busy interval under way counts up to now, so two snapshots bound exactly the busy time
  // between them (it is otherwise added only when the reads drain).
  if (!reading_.empty()) now.busy_seconds += seconds_since(busy_since_);
  return now;
}

bool BlockLoader::keeps(BlockId block) const {
  return keeps_block(kept_reads_, block);
}

std::optional<BlockLoader::NextRead> BlockLoader::next_read() const {
  if (stopping_) return std::nullopt;
  // Demands always may start. Prefetches wait while the reading window is full, and expert
  // prefetches, being guesses (about 40% right on random routing), start only while no other
  // expert block is being read: a demand read, which compute waits on, shares the disk with
  // every read in flight. So guesses go one at a time, and none joins a demand (or a guess
  // raised to one) under way. Ring sections will all be used, so they keep the reader's queue
  // full, and are not held behind expert reads. Guesses one at a time took bf16 decode at a 25%
  // budget from 9-13 to 15-17 tokens/s; keeping them off a demand's read cut its mean read from
  // 1.8 to 1.2 ms for Q4_K_M (4.0-4.6 to 2.9 ms for bf16) and gained 0-8% (6-15%) decode.
  const bool window_full = !reading_.empty() && reading_bytes_ >= reading_limit_;
  const bool expert_reading = std::any_of(reading_.begin(), reading_.end(), [](const auto& entry) {
    return !entry.second.job->block.is_dense();
  });
  std::shared_ptr<Job> best;
  for (const auto& [block, job] : jobs_) {
    if (job->started) continue;
    if (job->priority != Priority::demand && (window_full || (expert_reading && !block.is_dense())))
      continue;
    if (!best ||
        std::pair(job->priority, job->sequence) < std::pair(best->priority, best->sequence))
      best = job;
  }
  if (!best) return std::nullopt;
  NextRead next{best, {}, 0, nullptr};
  try {
    next.ranges = source_.ranges(best->block);
    next.bytes = reader_->aligned_bytes(next.ranges);
  } catch (...) {
    next.error = std::current_exception();  // staged at once with its error
    return next;
  }
  if (keeps(best->block)) return next;
  // A block larger than the whole arena gets a buffer of its own, one at a time.
  if (next.bytes > arena_.capacity())
    return reading_.empty() && staged_.empty() ? std::optional(next) : std::nullopt;
  return arena_.fits(next.bytes) ? std::optional(next) : std::nullopt;
}

void BlockLoader::start_reads(std::unique_lock<std::mutex>& lock) {
  while (auto next = next_read()) {
    const auto& job = next->job;
    job->started = true;
    job->started_at = Clock::now();
    start_order_.push_back(job->sequence);
    if (next->error) {
      staged_.emplace(job->sequence, Staged{job, {}, {}, next->error});
      packer_.notify_one();
      continue;
    }
    Reading reading{job, {}, {}, {}, next->bytes};
    std::span<std::byte> destination;
    try {
      if (keeps(job->block)) {
        reading.kept = kept_reads_.allocate(job->block, reading.bytes);
        if (!reading.kept)
          throw std::runtime_error("no memory given to read " + job->block.to_string() + " into");
        destination = std::span(reading.kept.get(), reading.bytes);
      } else if (reading.bytes > arena_.capacity()) {
        reading.own = AlignedBuffer(reading.bytes);
        destination = std::span(reading.own.data(), reading.own.size());
      } else {
        reading.region = arena_.allocate(reading.bytes);
        destination = reading.region;
      }
    } catch (...) {  // out of memory: this load fails, and the I/O thread goes on
      staged_.emplace(job->sequence, Staged{job, {}, {}, std::current_exception()});
      packer_.notify_one();
      continue;
    }
    if (reading_.empty()) busy_since_ = Clock::now();
    reading_bytes_ += reading.bytes;
    const std::uint64_t tag = job->sequence;
    reading_.emplace(tag, std::move(reading));
    lock.unlock();
    std::exception_ptr error;
    try {
      reader_->start(tag, next->ranges, destination);
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    if (error) {
      auto failed = reading_.extract(tag);
      reading_bytes_ -= failed.mapped().bytes;
      arena_.release(failed.mapped().region);
      staged_.emplace(tag, Staged{job, {}, {}, error});
      packer_.notify_one();
    }
  }
}

void BlockLoader::read_loop() {
  std::unique_lock lock(mutex_);
  while (true) {
    start_reads(lock);
    if (!reader_->idle()) {
      lock.unlock();
      auto finished = reader_->poll(true);
      lock.lock();
      for (auto& done : finished) {
        auto node = reading_.extract(done.tag);
        Reading& reading = node.mapped();
        reading_bytes_ -= reading.bytes;
        reading.job->landed_at = Clock::now();
        Staged staged{std::move(reading.job), {}, reading.region, std::move(done.error)};
        staged.loaded.buffer = std::move(reading.own);
        staged.loaded.kept = std::move(reading.kept);
        staged.loaded.ranges = std::move(done.ranges);
        staged_.emplace(done.tag, std::move(staged));
      }
      if (!finished.empty()) {
        if (reading_.empty()) counters_.busy_seconds += seconds_since(busy_since_);
        packer_.notify_one();
      }
      continue;
    }
    if (stopping_) return;
    wake_.wait(lock, [&] { return stopping_ || next_read().has_value(); });
  }
}

void BlockLoader::pack_loop() {
  std::unique_lock lock(mutex_);
  while (true) {
    packer_.wait(lock, [&] {
      return (!start_order_.empty() && staged_.contains(start_order_.front())) ||
             (reading_done_ && staged_.empty());
    });
    if (staged_.empty()) return;
    Staged staged = std::move(staged_.extract(start_order_.front()).mapped());
    start_order_.pop_front();
    const bool urgent = staged.job->priority == Priority::demand;
    const LoadKind kind = staged.job->asked_as_demand ? LoadKind::demand
                          : urgent                    ? LoadKind::raised_prefetch
                                                      : LoadKind::prefetch;
    lock.unlock();

    Job& job = *staged.job;
    std::exception_ptr error = staged.error;
    Payload payload;
    double materialize_seconds = 0;
    const auto packed_start = Clock::now();
    if (!error) {
      try {
        payload = materialize_(job.block, staged.loaded, urgent);
        materialize_seconds = seconds_since(packed_start);
      } catch (...) {
        error = std::current_exception();
      }
    }
    staged.loaded = {};
    {
      std::lock_guard relock(mutex_);
      arena_.release(staged.region);
      counters_.materialize_seconds += materialize_seconds;
    }
    wake_.notify_one();

    // load() may add callbacks to this job until it leaves jobs_, so they are taken under the
    // lock and run outside it, until none are left; then, still under the lock, the job is
    // finished and removed, so no callback can be added and missed.
    while (true) {
      std::vector<OnLoaded> callbacks;
      {
        std::lock_guard relock(mutex_);
        if (!error) callbacks.swap(job.on_loaded);
        if (callbacks.empty()) {
          ++counters_.reads;
          if (error) {
            ++counters_.errors;
            job.promise.set_exception(error);
          } else {
            counters_.bytes_read += source_.bytes(job.block);
            using Seconds = std::chrono::duration<double>;
            auto& stages = counters_.stages[static_cast<std::size_t>(kind)];
            ++stages.loads;
            stages.queued_seconds += Seconds(job.started_at - job.asked_at).count();
            stages.reading_seconds += Seconds(job.landed_at - job.started_at).count();
            stages.staged_seconds += Seconds(packed_start - job.landed_at).count();
            stages.packing_seconds += materialize_seconds;
            job.promise.set_value(std::move(payload));
          }
          jobs_.erase(job.block);
          break;
        }
      }
      try {
        for (const auto& callback : callbacks) callback(job.block, payload);
      } catch (...) {
        error = std::current_exception();
      }
    }
    lock.lock();
  }
}

}  // namespace moed::memtier
