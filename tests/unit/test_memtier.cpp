#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <stdexcept>
#include <tuple>

#include "moed/memtier/mapped_file.hpp"

using moed::memtier::MappedFile;

namespace {
std::filesystem::path temp_file(const std::string& name, const std::string& contents) {
  // Per process: ctest runs each test case as its own process, several at once.
  auto path = std::filesystem::temp_directory_path() /
              ("moed-test-" + name + "-" + std::to_string(::getpid()));
  std::ofstream(path, std::ios::binary) << contents;
  return path;
}
}  // namespace

TEST(MappedFile, ReadsBytesInPlace) {
  const auto path = temp_file("mapped", "hello, world");
  MappedFile file(path);
  EXPECT_EQ(file.size(), 12u);
  const auto bytes = file.bytes(7, 5);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()), "world");
  std::filesystem::remove(path);
}

TEST(MappedFile, OutOfRangeNamesTheFile) {
  const auto path = temp_file("range", "0123456789");
  MappedFile file(path);
  try {
    file.bytes(8, 4);
    FAIL() << "expected out_of_range";
  } catch (const std::out_of_range& e) {
    EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("[8, 12)"), std::string::npos);
  }
  EXPECT_THROW(file.bytes(~0ull, 2), std::out_of_range);  // no overflow past the end
  std::filesystem::remove(path);
}

TEST(MappedFile, MissingFileIsAClearError) {
  try {
    MappedFile file("/nonexistent/moed/model.safetensors");
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot open"), std::string::npos);
  }
}

TEST(MappedFile, EmptyFileMapsToNothing) {
  const auto path = temp_file("empty", "");
  MappedFile file(path);
  EXPECT_EQ(file.size(), 0u);
  EXPECT_THROW(file.bytes(0, 1), std::out_of_range);
  std::filesystem::remove(path);
}

// ---- disk tier -----------------------------------------------------------------------------

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <future>
#include <set>
#include <thread>

#include "faulty_reader.hpp"
#include "moed/memtier/block_loader.hpp"
#include "moed/memtier/buffer_pool.hpp"
#include "moed/memtier/byte_size.hpp"
#include "moed/memtier/host_tier.hpp"
#include "moed/memtier/policy.hpp"
#include "moed/memtier/reader.hpp"
#include "moed/memtier/staging_arena.hpp"
#include "moed/memtier/tiered_store.hpp"
#include "moed/memtier/trace.hpp"

using namespace moed::memtier;
using moed::testing::FaultyReader;

namespace {

// A file of `size` bytes where byte i is (i * 7 + 3) mod 251, so any misplaced byte shows.
std::filesystem::path patterned_file(const std::string& name, std::size_t size) {
  std::string data(size, '\0');
  for (std::size_t i = 0; i < size; ++i) data[i] = static_cast<char>((i * 7 + 3) % 251);
  return temp_file(name, data);
}

struct TestPayload final : BlockPayload {
  std::uint64_t size;
  explicit TestPayload(std::uint64_t s) : size(s) {}
  std::uint64_t bytes() const override { return size; }
};

Payload payload(std::uint64_t bytes) {
  return std::make_shared<TestPayload>(bytes);
}

}  // namespace

class ReaderEngines : public ::testing::TestWithParam<ReaderKind> {};

TEST_P(ReaderEngines, ReadsUnalignedRangesExactly) {
  const auto path = patterned_file("reader", 3 * 1024 * 1024 + 777);
  ReaderOptions options;
  options.kind = GetParam();
  options.queue_depth = 8;
  options.chunk_bytes = 256 << 10;
  auto reader = make_reader({path}, options);
  const FileRange ranges[] = {{0, 5, 1000}, {0, 4096 * 3 + 1, 1 << 20}, {0, 3 * 1024 * 1024, 777}};
  LoadedBlock block = reader->read(ranges);
  ASSERT_EQ(block.ranges.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(block.buffer.data()) % kDirectIoAlignment, 0u);
    for (std::uint64_t j = 0; j < ranges[i].length; ++j)
      ASSERT_EQ(static_cast<unsigned char>(block.ranges[i][j]),
                static_cast<unsigned char>(((ranges[i].offset + j) * 7 + 3) % 251))
          << "range " << i << " byte " << j;
  }
  // Reusing the block for a second read keeps its buffer.
  const std::byte* first = block.buffer.data();
  const FileRange small{0, 9, 10};
  reader->read(std::span(&small, 1), block);
  EXPECT_EQ(block.buffer.data(), first);
  EXPECT_EQ(static_cast<unsigned char>(block.ranges[0][0]), (9 * 7 + 3) % 251);
  const FileRange past_end{0, 3 * 1024 * 1024, 778};
  EXPECT_THROW(reader->read(std::span(&past_end, 1)), std::runtime_error);
  std::filesystem::remove(path);
}

INSTANTIATE_TEST_SUITE_P(Engines, ReaderEngines,
                         ::testing::Values(ReaderKind::io_uring, ReaderKind::pread),
                         [](const auto& info) { return to_string(info.param); });

TEST(Reader, InjectedErrorsAndShortReadsNameFileAndOffset) {
  const auto path = patterned_file("faulty", 1 << 20);
  FaultyReader reader({path});
  const FileRange range{0, 0, 512 << 10};
  reader.fail_at = 128 << 10;
  try {
    reader.read(std::span(&range, 1));
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("offset 131072"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("Input/output error"), std::string::npos);
  }
  reader.fail_at = -1;
  reader.short_at = 64 << 10;
  try {
    reader.read(std::span(&range, 1));
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("short read at offset 65536"), std::string::npos);
  }
  reader.short_at = -1;
  EXPECT_NO_THROW(reader.read(std::span(&range, 1)));
  // An engine failure (not one read's) fails every read in flight with its error, no hang.
  reader.engine_fails = true;
  try {
    reader.read(std::span(&range, 1));
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("failed: Input/output error"), std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(reader.idle());
  std::filesystem::remove(path);
}

TEST_P(ReaderEngines, StreamsBlocksIntoCallerMemory) {
  const auto path = patterned_file("reader-stream", 2 * 1024 * 1024);
  ReaderOptions options;
  options.kind = GetParam();
  options.queue_depth = 4;
  options.chunk_bytes = 64 << 10;
  auto reader = make_reader({path}, options);
  AlignedBuffer memory(6 * (300 << 10));
  std::span<std::byte> all(memory.data(), memory.size());
  // The pool has nothing to register; the ring registers unless the kernel refuses.
  const bool registered = reader->register_memory(all);
  if (GetParam() == ReaderKind::pread) {
    EXPECT_FALSE(registered);
  }
  RecordProperty("registered", registered ? "yes" : "no");
  std::vector<std::vector<FileRange>> blocks;
  for (std::uint64_t b = 0; b < 6; ++b)
    blocks.push_back({{0, b * 300'000 + 11, 100'000}, {0, 1'900'000 + b * 1000, 333}});
  for (std::uint64_t b = 0; b < blocks.size(); ++b)
    reader->start(b, blocks[b], all.subspan(b * (300 << 10), 300 << 10));
  std::vector<bool> seen(blocks.size(), false);
  while (!reader->idle())
    for (const auto& done : reader->poll(true)) {
      ASSERT_FALSE(done.error);
      ASSERT_LT(done.tag, blocks.size());
      seen[done.tag] = true;
      const auto& ranges = blocks[done.tag];
      for (std::size_t i = 0; i < ranges.size(); ++i)
        for (std::uint64_t j = 0; j < ranges[i].length; j += 97)
          ASSERT_EQ(static_cast<unsigned char>(done.ranges[i][j]),
                    ((ranges[i].offset + j) * 7 + 3) % 251)
              << "block " << done.tag << " range " << i << " byte " << j;
    }
  EXPECT_EQ(seen, std::vector<bool>(blocks.size(), true));
  reader->unregister_memory(all);
  std::filesystem::remove(path);
}

namespace {

// Completes one read per reap, oldest first, and records how many were in flight at each
// submission: the queue-depth behaviour of the streaming reader, without a device's timing.
class SteppingReader final : public Reader {
 public:
  explicit SteppingReader(std::filesystem::path file,
                          std::shared_future<void> gate = make_ready_gate())
      : Reader({std::move(file)}, 4, 64 << 10), gate_(std::move(gate)) {}
  ReaderKind kind() const override { return ReaderKind::pread; }
  std::vector<std::size_t> in_flight_after_submit, in_flight_at_reap;
  std::vector<std::uint64_t> offsets_read;  // file offsets in the order the reads completed

 protected:
  void submit(std::span<const AlignedRead> reads) override {
    for (const auto& r : reads) queue_.push_back(r);
    in_flight_after_submit.push_back(queue_.size());
  }
  void reap(std::vector<ReadResult>& out, bool) override {
    gate_.wait();  // lets a test queue all its work before the first read completes
    in_flight_at_reap.push_back(queue_.size());
    if (queue_.empty()) return;
    const AlignedRead r = queue_.front();
    queue_.erase(queue_.begin());
    offsets_read.push_back(r.offset);
    out.push_back(
        {r.id, ::pread(fd(r.file), r.destination, r.length, static_cast<off_t>(r.offset))});
  }

 private:
  static std::shared_future<void> make_ready_gate() {
    std::promise<void> ready;
    ready.set_value();
    return ready.get_future().share();
  }
  std::shared_future<void> gate_;
  std::vector<AlignedRead> queue_;
};

}  // namespace

TEST(Reader, KeepsTheQueueFullAcrossBlockBoundaries) {
  const auto path = patterned_file("reader-queue", 1 << 20);
  SteppingReader reader(path);
  AlignedBuffer memory(3 * (192 << 10));
  std::span<std::byte> all(memory.data(), memory.size());
  // Three blocks of three 64 KiB reads each; the second and third are started while the first
  // is still in flight, as the loader does.
  std::vector<FileRange> blocks[3];
  for (std::uint64_t b = 0; b < 3; ++b) blocks[b] = {{0, b * (192 << 10), 192 << 10}};
  reader.start(0, blocks[0], all.subspan(0, 192 << 10));
  reader.start(1, blocks[1], all.subspan(192 << 10, 192 << 10));
  reader.start(2, blocks[2], all.subspan(2 * (192 << 10), 192 << 10));
  std::vector<std::uint64_t> order;
  while (!reader.idle())
    for (const auto& done : reader.poll(true)) order.push_back(done.tag);
  EXPECT_EQ(order, (std::vector<std::uint64_t>{0, 1, 2}));
  // Nine reads through a queue of four: full at every submission until the last four drain.
  ASSERT_GE(reader.in_flight_after_submit.size(), 6u);
  for (std::size_t i = 1; i < 6; ++i) EXPECT_EQ(reader.in_flight_after_submit[i], 4u) << i;
  std::filesystem::remove(path);
}

// Large I/O buffers and packed-weight buffers start on a huge-page boundary, so that the kernel
// can back them with huge pages; small ones keep O_DIRECT alignment only.
TEST(AlignedBuffer, LargeBuffersStartOnAHugePage) {
  const AlignedBuffer large(kHugePageBytes * 3 + 4096);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(large.data()) % kHugePageBytes, 0u);
  EXPECT_EQ(large.size(), kHugePageBytes * 3 + 4096);
  const AlignedBuffer small(5000);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(small.data()) % kDirectIoAlignment, 0u);
  EXPECT_EQ(small.size(), 8192u);
  BufferPool pool(0);
  const auto packed = pool.allocate(kHugePageBytes + 100);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(packed.get()) % kHugePageBytes, 0u);
}

TEST(StagingArena, CarvesAlignedRegionsAndMergesThemBack) {
  StagingArena arena(64 << 10);
  auto a = arena.allocate(5000);  // rounded up to two pages
  auto b = arena.allocate(16 << 10);
  auto c = arena.allocate(100);
  ASSERT_EQ(a.size(), 8192u);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(b.data()) % kDirectIoAlignment, 0u);
  EXPECT_EQ(arena.used(), 8192u + (16 << 10) + 4096u);
  EXPECT_FALSE(arena.fits(48 << 10));
  arena.release(b);
  EXPECT_TRUE(arena.allocate(64 << 10).empty());
  arena.release(a);  // merges with b's run: 24 KiB free at the front
  auto d = arena.allocate(24 << 10);
  EXPECT_EQ(d.data(), arena.memory().data());
  arena.release(c);
  arena.release(d);
  EXPECT_EQ(arena.used(), 0u);
  EXPECT_EQ(arena.allocate(64 << 10).size(), static_cast<std::size_t>(64 << 10));
  StagingArena other(4096);
  EXPECT_THROW(other.release(a), std::invalid_argument);
}

// ---- policies and the host tier ------------------------------------------------------------

TEST(Policy, LruEvictsTheLeastRecentlyUsedEvictableBlock) {
  LruPolicy lru;
  for (int e = 0; e < 3; ++e) lru.on_insert(BlockId::routed(0, e));
  lru.on_access(BlockId::routed(0, 0));
  auto all = [](BlockId) { return true; };
  EXPECT_EQ(lru.victim(all), BlockId::routed(0, 1));
  EXPECT_EQ(lru.victim([](BlockId b) { return b.expert != 1; }), BlockId::routed(0, 2));
  lru.on_erase(BlockId::routed(0, 1));
  lru.on_erase(BlockId::routed(0, 2));
  lru.on_erase(BlockId::routed(0, 0));
  EXPECT_EQ(lru.victim(all), std::nullopt);
}

TEST(Policy, LfuDecayForgetsOldHeat) {
  LfuDecayPolicy lfu(4.0);  // scores halve every 4 accesses
  const BlockId old_hot = BlockId::routed(0, 0), fresh = BlockId::routed(0, 1);
  lfu.on_insert(old_hot);
  for (int i = 0; i < 5; ++i) lfu.on_access(old_hot);
  lfu.on_insert(fresh);
  auto all = [](BlockId) { return true; };
  EXPECT_EQ(lfu.victim(all), fresh);  // 6 accesses beat 1
  for (int i = 0; i < 40; ++i) lfu.on_access(fresh);
  EXPECT_EQ(lfu.victim(all), old_hot);  // old heat decayed away
  EXPECT_THROW(make_policy("mru"), std::invalid_argument);
}

TEST(Policy, LfuDecayBreaksTiesByRecencyAndResetsAReinsertedBlock) {
  // An infinite half-life never decays, so equal access counts tie exactly.
  LfuDecayPolicy lfu(std::numeric_limits<double>::infinity());
  const BlockId a = BlockId::routed(0, 0), b = BlockId::routed(0, 1), c = BlockId::routed(0, 2);
  const auto all = [](BlockId) { return true; };
  for (const BlockId block : {a, b, c}) lfu.on_insert(block);
  lfu.on_access(a);
  lfu.on_access(b);
  EXPECT_EQ(lfu.victim(all), c);
  EXPECT_EQ(lfu.victim([&](BlockId x) { return x != c; }), a);  // a and b tie at 2: a is older
  lfu.on_insert(a);  // inserted again: back to one access, and the most recent
  EXPECT_EQ(lfu.victim([&](BlockId x) { return x != c; }), a);
  EXPECT_EQ(lfu.victim(all), c);  // c and a tie at 1: c is older
  lfu.on_erase(c);
  lfu.on_erase(a);
  EXPECT_EQ(lfu.victim(all), b);
  lfu.on_erase(b);
  EXPECT_EQ(lfu.victim(all), std::nullopt);
  EXPECT_THROW(LfuDecayPolicy(0.5), std::invalid_argument);  // at least 1
}

TEST(Policy, LfuDecayEvictsAsScoresDecayedOnEveryLookWould) {
  // The plain way: a score is decayed by pow() over the ticks since its last access whenever it
  // is compared. With a half-life of 4 ticks the policy rescales every 256.
  LfuDecayPolicy lfu(4.0);
  struct Scored {
    double score;
    std::uint64_t last;
  };
  std::map<BlockId, Scored> plain;
  std::uint64_t clock = 0;
  const auto decayed = [&](const Scored& s) {
    return s.score * std::pow(std::exp2(-1.0 / 4.0), static_cast<double>(clock - s.last));
  };
  std::mt19937 random(5);
  int evictions = 0;
  for (int step = 0; step < 20000; ++step) {
    const auto expert = static_cast<std::int32_t>(std::min(random() % 16, random() % 16));
    const BlockId block = BlockId::routed(0, expert);
    if (auto it = plain.find(block); it != plain.end()) {
      lfu.on_access(block);
      ++clock;
      it->second = {decayed(it->second) + 1, clock};
      continue;
    }
    if (plain.size() >= 6) {
      const auto evictable = [&](BlockId b) { return (b.expert + step) % 7 != 0; };
      std::optional<BlockId> expected;
      for (const auto& [id, scored] : plain) {
        if (!evictable(id)) continue;
        const auto key = std::pair(decayed(scored), scored.last);
        if (!expected || key < std::pair(decayed(plain.at(*expected)), plain.at(*expected).last))
          expected = id;
      }
      ASSERT_EQ(lfu.victim(evictable), expected) << "step " << step;
      lfu.on_erase(*expected);
      plain.erase(*expected);
      ++evictions;
    }
    lfu.on_insert(block);
    plain[block] = {1, ++clock};
  }
  EXPECT_GT(evictions, 1000);
}

// Drives a policy as the simulator and the host tier do, over a cache of `capacity` blocks.
class PolicyDriver {
 public:
  PolicyDriver(EvictionPolicy& policy, std::size_t capacity)
      : policy_(policy), capacity_(capacity) {}
  bool request(BlockId block) {  // true on a hit
    if (resident_.contains(block)) {
      policy_.on_access(block);
      return true;
    }
    policy_.on_miss(block);
    if (resident_.size() >= capacity_) {
      const auto victim = policy_.victim([](BlockId) { return true; });
      if (!policy_.admits(block, *victim)) return false;
      resident_.erase(*victim);
      policy_.on_erase(*victim);
    }
    resident_.insert(block);
    policy_.on_insert(block);
    return false;
  }
  bool resident(BlockId block) const { return resident_.contains(block); }

 private:
  EvictionPolicy& policy_;
  std::size_t capacity_;
  std::set<BlockId> resident_;
};

TEST(Policy, ArcMovesItsRecencyTargetTowardTheGhostListThatWasHit) {
  ArcPolicy arc;
  PolicyDriver cache(arc, 2);
  const BlockId a = BlockId::routed(0, 0), b = BlockId::routed(0, 1), c = BlockId::routed(0, 2);
  cache.request(a);
  cache.request(a);  // a in T2
  cache.request(b);  // b in T1
  cache.request(c);  // T1 is over its target of 0: b goes, remembered in B1
  EXPECT_FALSE(cache.resident(b));
  EXPECT_TRUE(arc.remembers(b));
  EXPECT_EQ(arc.target_recent(), 0.0);
  cache.request(b);  // a B1 ghost hit: T1 should have been larger
  EXPECT_EQ(arc.target_recent(), 1.0);
  EXPECT_TRUE(cache.resident(b));
  EXPECT_TRUE(cache.resident(c));  // T1 (c) is at its target now: T2's a went instead, to B2
  EXPECT_FALSE(cache.resident(a));
  EXPECT_TRUE(arc.remembers(a));
  cache.request(a);  // a B2 ghost hit: T2 should have been larger
  EXPECT_EQ(arc.target_recent(), 0.0);
  EXPECT_TRUE(cache.resident(a));
  EXPECT_FALSE(cache.resident(c));
}

TEST(Policy, TinyLfuTurnsAwayARarelyRequestedBlockButNotAFrequentOne) {
  TinyLfuPolicy tinylfu({32, 32, 32});  // one memory, a long one
  PolicyDriver cache(tinylfu, 1);
  const BlockId hot = BlockId::routed(0, 0), once = BlockId::routed(1, 0),
                rising = BlockId::routed(2, 0);
  for (int i = 0; i < 4; ++i) cache.request(hot);
  EXPECT_FALSE(cache.request(once));  // 1 request against 4: served, not kept
  EXPECT_TRUE(cache.resident(hot));
  EXPECT_FALSE(cache.resident(once));
  for (int i = 0; i < 3; ++i) cache.request(rising);
  EXPECT_TRUE(cache.resident(hot));  // 3 requests do not beat 4
  cache.request(rising);             // 4 later ones do: older requests count for less
  EXPECT_TRUE(cache.resident(rising));
  EXPECT_FALSE(cache.resident(hot));
}

TEST(Policy, TinyLfuEvictsTheLeastRequestedAndItsCountsDecay) {
  TinyLfuPolicy tinylfu({2, 2, 2});  // counts halve every 2 requests per block seen
  const BlockId a = BlockId::routed(0, 0), b = BlockId::routed(0, 1), c = BlockId::routed(0, 2),
                d = BlockId::routed(0, 3);
  for (const BlockId block : {a, b, c, d}) {
    tinylfu.on_miss(block);
    tinylfu.on_insert(block);
  }
  tinylfu.on_access(c);
  tinylfu.on_access(a);
  auto all = [](BlockId) { return true; };
  EXPECT_EQ(tinylfu.victim(all), b);  // b and d were requested once; b's request is older
  EXPECT_EQ(tinylfu.victim([&](BlockId x) { return x != b; }), d);
  // With 4 blocks seen, 8 requests are a half-life: every count halves, the requested block's
  // as well, then gains what its requests add.
  const double a_before = tinylfu.frequency(a), c_before = tinylfu.frequency(c);
  for (int i = 0; i < 8; ++i) tinylfu.on_access(d);
  EXPECT_NEAR(tinylfu.frequency(a), a_before / 2, 1e-12);
  EXPECT_NEAR(tinylfu.frequency(c), c_before / 2, 1e-12);
  EXPECT_GT(tinylfu.frequency(d), 5.0);  // 8 requests over a half-life: about 5.8
  EXPECT_EQ(tinylfu.frequency(BlockId::routed(5, 5)), 0.0);
  EXPECT_EQ(tinylfu.victim(all), b);
  EXPECT_THROW(TinyLfuPolicy({1, 0, 4}), std::invalid_argument);
  EXPECT_THROW(TinyLfuPolicy({0.5, 4, 32}), std::invalid_argument);  // at least 1
  EXPECT_THROW(TinyLfuPolicy({4, 1, 32}), std::invalid_argument);    // short to long
  EXPECT_THROW(TinyLfuPolicy({1, 4, std::numeric_limits<double>::infinity()}),
               std::invalid_argument);
}

TEST(Policy, TinyLfuCountsKeepTheirOrderThroughRescaling) {
  // A half-life of 1 request per block seen grows a request's weight fast; past 2^64 the counts
  // are rescaled, which must change no comparison.
  TinyLfuPolicy tinylfu({1, 1, 1});
  const BlockId hot = BlockId::routed(0, 0), cold = BlockId::routed(0, 1);
  tinylfu.on_miss(cold);
  tinylfu.on_insert(cold);
  for (int i = 0; i < 200; ++i) tinylfu.on_miss(hot);
  EXPECT_TRUE(tinylfu.admits(hot, cold));
  EXPECT_FALSE(tinylfu.admits(cold, hot));
  // With 2 blocks seen each request is worth 2^(1/2) times the one before it.
  EXPECT_NEAR(tinylfu.frequency(hot), 1 / (1 - std::exp2(-0.5)), 1e-9);
  EXPECT_GT(tinylfu.frequency(cold), 0.0);  // about 2^-100 of a request, not yet lost
}

// Requests from a fixed random order (not std:: distributions, whose output differs between
// standard libraries).
std::vector<BlockId> skewed_requests(std::uint32_t seed, int count, int blocks) {
  std::mt19937 random(seed);
  std::vector<BlockId> requests;
  for (int i = 0; i < count; ++i) {
    // The lower of two draws: block k comes about (2 (blocks - k) - 1) / blocks^2 of the time.
    const auto a = random() % static_cast<std::uint32_t>(blocks);
    const auto b = random() % static_cast<std::uint32_t>(blocks);
    requests.push_back(BlockId::routed(0, static_cast<std::int32_t>(std::min(a, b))));
  }
  return requests;
}

TEST(Policy, TinyLfuFollowsTheMemoryWhoseShadowHitsMost) {
  // Popularity that stays put: the longest memory estimates it best.
  TinyLfuPolicy steady;
  PolicyDriver steady_cache(steady, 8);
  EXPECT_EQ(steady.deciding_half_life(), 4.0);  // the middle memory until a shadow hits more
  for (const BlockId block : skewed_requests(1, 20000, 32)) steady_cache.request(block);
  EXPECT_EQ(steady.deciding_half_life(), 32.0);
  // Then working sets of 8 other blocks that each last 80 requests: the short memory takes over
  // within a few of them, as the steady phase's shadow hits fade.
  for (int phase = 0; phase < 5; ++phase)
    for (int i = 0; i < 80; ++i) steady_cache.request(BlockId::routed(1, (phase % 10) * 8 + i % 8));
  EXPECT_EQ(steady.deciding_half_life(), 1.0);

  // A working set that moves on every 40 requests, back to blocks a long memory still rates.
  TinyLfuPolicy shifting;
  PolicyDriver shifting_cache(shifting, 4);
  int hits = 0;
  for (int phase = 0; phase < 200; ++phase)
    for (int i = 0; i < 40; ++i)
      hits += shifting_cache.request(BlockId::routed(0, (phase % 10) * 4 + i % 4));
  EXPECT_EQ(shifting.deciding_half_life(), 1.0);
  TinyLfuPolicy long_only({32, 32, 32});
  PolicyDriver long_cache(long_only, 4);
  int long_hits = 0;
  for (int phase = 0; phase < 200; ++phase)
    for (int i = 0; i < 40; ++i)
      long_hits += long_cache.request(BlockId::routed(0, (phase % 10) * 4 + i % 4));
  EXPECT_GT(hits, long_hits);
}

TEST(Policy, TinyLfuStillChoosesAfterItsHitWeightIsRescaled) {
  // 40000 hits in a row take the shadows' hit weight past 2^64 (it doubles every 32 requests with
  // one block seen); moving working sets must still hand over to the short memory.
  TinyLfuPolicy tinylfu;
  PolicyDriver cache(tinylfu, 4);
  for (int i = 0; i < 40000; ++i) cache.request(BlockId::routed(0, 0));
  for (int phase = 0; phase < 50; ++phase)
    for (int i = 0; i < 40; ++i) cache.request(BlockId::routed(1, (phase % 10) * 4 + i % 4));
  EXPECT_EQ(tinylfu.deciding_half_life(), 1.0);
}

TEST(Policy, TinyLfuEvictsTheLeastRecentOfBlocksNeverRequested) {
  // Prefetched blocks, or blocks resident when the policy is swapped in, have no counts yet.
  TinyLfuPolicy tinylfu;
  const BlockId a = BlockId::routed(0, 0), b = BlockId::routed(0, 1);
  tinylfu.on_insert(a);
  tinylfu.on_insert(b);
  EXPECT_EQ(tinylfu.victim([](BlockId) { return true; }), a);
  tinylfu.on_access(a);  // a hit counts and makes a the most recent
  EXPECT_EQ(tinylfu.victim([](BlockId) { return true; }), b);
  EXPECT_EQ(tinylfu.victim([&](BlockId x) { return x != b; }), a);
}

// The policy's decisions against a model written the plain way: every count of every memory
// decays at every request (no growing request weight, no rescaling), shadows are sets searched
// for their least counted block, and the resident blocks a list in recency order. Shadows take
// the cache's size in blocks when it needs room, and grow with it when a larger budget lets it
// hold more.
class NaiveTinyLfu {
 public:
  explicit NaiveTinyLfu(TinyLfuPolicy::HalfLives half_lives) : half_lives_(half_lives) {}
  void count(BlockId block) {
    counts_[block];
    const auto seen = static_cast<long double>(counts_.size());
    ++now_;
    for (std::size_t m = 0; m < kMemories; ++m) {
      const long double decay = std::exp2l(-1.0L / (half_lives_[m] * seen));
      for (auto& [id, count] : counts_) count[m] *= decay;
      counts_[block][m] += 1;
      auto& shadow = shadows_[m];
      if (shadow.contains(block)) {
        hits_[m] += 1;
      } else if (capacity_ == 0 || shadow.size() < capacity_) {
        shadow.insert(block);
      } else if (const BlockId least = least_counted(m); counts_[block][m] > count_of(m, least)) {
        shadow.erase(least);
        shadow.insert(block);
      }
      last_request_[block] = now_;
      while (capacity_ > 0 && shadow.size() > capacity_) shadow.erase(least_counted(m));
    }
    const long double hit_decay = std::exp2l(-1.0L / (half_lives_[kMemories - 1] * seen));
    for (auto& hits : hits_) hits *= hit_decay;
    for (std::size_t m = 0; m < kMemories; ++m)
      if (hits_[m] > hits_[leader_]) leader_ = m;
  }
  void make_most_recent(BlockId block) {
    std::erase(resident_, block);
    resident_.insert(resident_.begin(), block);
  }
  void insert(BlockId block) {
    make_most_recent(block);
    if (capacity_ > 0) capacity_ = std::max(capacity_, resident_.size());
  }
  void erase(BlockId block) { std::erase(resident_, block); }
  std::optional<BlockId> victim(const std::function<bool(BlockId)>& evictable) {
    capacity_ = resident_.size();
    std::optional<BlockId> fewest;
    for (auto it = resident_.rbegin(); it != resident_.rend(); ++it)
      if (evictable(*it) && (!fewest || count_of(leader_, *it) < count_of(leader_, *fewest)))
        fewest = *it;
    return fewest;
  }
  bool admits(BlockId incoming, BlockId victim) const {
    return count_of(leader_, incoming) > count_of(leader_, victim);
  }
  double deciding_half_life() const { return half_lives_[leader_]; }

 private:
  static constexpr std::size_t kMemories = TinyLfuPolicy::kMemories;
  long double count_of(std::size_t m, BlockId block) const {
    auto it = counts_.find(block);
    return it == counts_.end() ? 0 : it->second[m];
  }
  BlockId least_counted(std::size_t m) const {
    return *std::ranges::min_element(shadows_[m], {}, [&](BlockId block) {
      return std::tuple(count_of(m, block), last_request_.at(block), block);
    });
  }
  TinyLfuPolicy::HalfLives half_lives_;
  std::map<BlockId, std::array<long double, kMemories>> counts_;
  std::map<BlockId, std::uint64_t> last_request_;
  std::array<std::set<BlockId>, kMemories> shadows_;
  std::array<long double, kMemories> hits_{};
  std::size_t leader_ = 1, capacity_ = 0;
  std::uint64_t now_ = 0;
  std::vector<BlockId> resident_;  // most recent first
};

TEST(Policy, TinyLfuDecidesAsAModelThatDecaysEveryCountAtEveryRequest) {
  for (const std::uint32_t seed : {1u, 2u, 3u}) {
    SCOPED_TRACE(seed);
    std::mt19937 random(seed);
    const std::uint32_t blocks = 8 + seed * 4;
    TinyLfuPolicy policy;
    NaiveTinyLfu naive(TinyLfuPolicy::kDefaultHalfLives);
    std::set<BlockId> resident, pinned;
    std::size_t capacity = 1 + random() % blocks;
    auto evictable = [&](BlockId block) { return !pinned.contains(block); };
    int leader_changes = 0;
    double leader = policy.deciding_half_life();
    for (int step = 0; step < 12000; ++step) {
      if (random() % 2000 == 0) {  // the budget changes, as HostTier::set_budget
        capacity = random() % (blocks + 1);
        while (resident.size() > capacity) {
          const auto victim = policy.victim(evictable);
          ASSERT_EQ(victim, naive.victim(evictable)) << "step " << step;
          if (!victim) break;
          resident.erase(*victim);
          policy.on_erase(*victim);
          naive.erase(*victim);
        }
      }
      if (random() % 500 == 0) {
        pinned.clear();
        for (const BlockId block : resident)
          if (random() % 4 == 0) pinned.insert(block);
      }
      // Phases of steady skewed popularity, then of working sets that move.
      const auto expert = (step / 3000) % 2 == 0
                              ? std::min(random() % blocks, random() % blocks)
                              : (step / 200) % 4 * (blocks / 4) + random() % (blocks / 4);
      const BlockId block = BlockId::routed(0, static_cast<std::int32_t>(expert));
      if (resident.contains(block)) {
        policy.on_access(block);
        naive.count(block);
        naive.make_most_recent(block);
      } else {
        policy.on_miss(block);
        naive.count(block);
        bool keep = capacity > 0;
        if (keep && resident.size() >= capacity) {
          const auto victim = policy.victim(evictable);
          ASSERT_EQ(victim, naive.victim(evictable)) << "step " << step;
          keep = victim && policy.admits(block, *victim);
          ASSERT_EQ(keep, victim && naive.admits(block, *victim)) << "step " << step;
          if (keep) {
            resident.erase(*victim);
            policy.on_erase(*victim);
            naive.erase(*victim);
          }
        }
        if (keep) {
          resident.insert(block);
          policy.on_insert(block);
          naive.insert(block);
        }
      }
      ASSERT_EQ(policy.deciding_half_life(), naive.deciding_half_life()) << "step " << step;
      leader_changes += policy.deciding_half_life() != leader;
      leader = policy.deciding_half_life();
    }
    EXPECT_GT(leader_changes, 1);  // the phases made it choose again
  }
}

TEST(Policy, FrequencyAwarePoliciesKeepHotBlocksThroughAScan) {
  // Two hot blocks requested twice, then 12 blocks requested once each, then the hot ones again.
  std::vector<RoutingEvent> trace;
  for (int round = 0; round < 2; ++round)
    for (int e : {0, 1}) trace.push_back({0, 0, {e}, {}});
  for (int e = 10; e < 22; ++e) trace.push_back({0, 0, {e}, {}});
  for (int e : {0, 1}) trace.push_back({0, 0, {e}, {}});
  const std::uint64_t budgets[] = {4};
  const std::string policies[] = {"lru", "arc", "tinylfu"};
  const auto results = simulate(trace, budgets, policies);
  EXPECT_EQ(results[0].hits, 2u);  // LRU: only the second round, the scan flushes both
  EXPECT_EQ(results[1].hits, 4u);
  EXPECT_EQ(results[2].hits, 4u);
}

namespace {

// Fills a TinyLFU tier of one 100-byte block with `hot`, requested four times: the filter then
// turns away a block requested once.
void admit_hot_block(HostTier& tier, BlockId hot) {
  EXPECT_EQ(tier.lookup(hot), nullptr);
  EXPECT_TRUE(tier.admit(hot, payload(100), HostTier::Admission::filtered));
  for (int i = 0; i < 3; ++i) EXPECT_NE(tier.lookup(hot), nullptr);
}

}  // namespace

TEST(HostTier, AnAdmissionFilterRejectionIsABypassThatKeepsTheVictim) {
  HostTier tier(100, make_policy("tinylfu"));
  const BlockId hot = BlockId::routed(0, 0), cold = BlockId::routed(0, 1);
  admit_hot_block(tier, hot);
  EXPECT_EQ(tier.lookup(cold), nullptr);
  const Payload loaded = payload(100);
  EXPECT_FALSE(tier.admit(cold, loaded, HostTier::Admission::filtered));
  auto c = tier.counters();
  EXPECT_EQ(c.bypasses, 1u);
  EXPECT_EQ(c.refusals, 1u);
  EXPECT_EQ(c.evictions, 0u);
  EXPECT_EQ(c.used_bytes, 100u);
  EXPECT_NE(tier.peek(hot), nullptr);
  EXPECT_EQ(loaded.use_count(), 1);  // the tier kept no reference to the rejected bytes
  // A prefetch is about to be used: the filter is not asked.
  EXPECT_TRUE(tier.admit(cold, payload(100)));
  EXPECT_EQ(tier.peek(hot), nullptr);
  EXPECT_LE(tier.counters().used_bytes, 100u);
}

namespace {

// A cyclic, skewed trace: two experts per token and layer, expert 0 far more often.
std::vector<RoutingEvent> skewed_trace(int tokens, int layers, int experts) {
  std::vector<RoutingEvent> trace;
  std::uint64_t state = 7;
  auto next = [&] {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<int>(state >> 33);
  };
  for (int token = 0; token < tokens; ++token)
    for (int layer = 0; layer < layers; ++layer) {
      const int first = next() % 3 == 0 ? next() % experts : 0;
      const int second = (first + 1 + next() % (experts - 1)) % experts;
      trace.push_back({token, layer, {first, second}, {}});
    }
  return trace;
}

// 260 tokens over 4 layers of 4 experts, every token routed to expert 0 and one of 1..3: 2080
// requests make two choices of automatic pins (every 1024 lookups), and each layer's expert 0,
// twice as requested as the average, is pinned.
std::vector<RoutingEvent> pinnable_trace() {
  auto trace = skewed_trace(260, 4, 4);
  for (auto& event : trace) event.experts = {0, 1 + (event.experts[0] + event.experts[1]) % 3};
  return trace;
}

}  // namespace

// Every request of the trace through the host tier, a miss admitted as a demand load would be.
void replay(HostTier& tier, const std::vector<RoutingEvent>& trace) {
  for (const auto& event : trace)
    for (const int expert : event.experts) {
      const BlockId block = BlockId::routed(event.layer, expert);
      if (!tier.lookup(block)) tier.admit(block, payload(100), HostTier::Admission::filtered);
    }
}

TEST(HostTier, HitsEqualTheSimulatorsForEveryPolicy) {
  const auto trace = skewed_trace(60, 6, 8);
  const std::uint64_t budgets[] = {0, 3, 6, 12, 24, 40};
  for (const auto& name : policy_names()) {
    const std::string policies[] = {name};
    for (const auto& result : simulate(trace, budgets, policies)) {
      auto policy = make_policy(name);
      const EvictionPolicy& used = *policy;
      HostTier tier(result.budget_blocks * 100, std::move(policy));
      replay(tier, trace);
      const auto c = tier.counters();
      EXPECT_EQ(c.hits, result.hits) << name << " at " << result.budget_blocks << " blocks";
      EXPECT_EQ(c.hits + c.misses, result.requests);
      // The tier reports which of tinylfu's memories decides.
      EXPECT_EQ(c.policy_half_life, used.deciding_half_life());
      EXPECT_EQ(c.policy_half_life > 0, name == "tinylfu");
    }
  }
}

TEST(HostTier, AutomaticPinsEqualTheSimulatorsForEveryPolicy) {
  const auto trace = skewed_trace(400, 6, 8);  // 4800 requests: four choices of pins
  const std::uint64_t budgets[] = {3, 6, 12, 24};
  for (const auto& name : policy_names()) {
    const std::string policies[] = {name};
    const auto plain = simulate(trace, budgets, policies);
    const auto pinned = simulate(trace, budgets, policies, 0.25);
    std::uint64_t differ = 0;
    for (std::size_t i = 0; i < pinned.size(); ++i) {
      const auto& result = pinned[i];
      HostTier tier(result.budget_blocks * 100, make_policy(name));
      tier.set_auto_pin(0.25);
      replay(tier, trace);
      const auto c = tier.counters();
      EXPECT_EQ(c.hits, result.hits) << name << " at " << result.budget_blocks << " blocks";
      EXPECT_LE(c.auto_pinned * 100, c.budget_bytes / 4);
      differ += result.hits != plain[i].hits;
    }
    if (name == "lru") {
      EXPECT_GT(differ, 0u);  // the pins changed what LRU keeps
    }
  }
}

TEST(HostTier, AutomaticPinsKeepTheMostRequestedWithinTheirShareAndAdminPinsStay) {
  HostTier tier(400, make_policy("lru"));  // four blocks of 100
  tier.set_auto_pin(0.25, 8);              // at most one block, chosen every 8 lookups
  const BlockId hot = BlockId::routed(0, 0), admin = BlockId::routed(1, 1);
  tier.pin(admin);
  auto request = [&](BlockId block) {
    if (!tier.lookup(block)) tier.admit(block, payload(100));
  };
  for (int i = 0; i < 4; ++i) {
    request(hot);
    request(BlockId::routed(0, 1 + i));
  }
  request(admin);  // the pinner chose at the eighth lookup
  auto c = tier.counters();
  EXPECT_EQ(c.auto_pinned, 1u);
  EXPECT_EQ(c.pinned, 2u);
  EXPECT_DOUBLE_EQ(c.auto_pin_share, 0.25);
  ASSERT_EQ(c.pins.size(), 2u);
  EXPECT_EQ(c.pins[0].block, admin);
  EXPECT_FALSE(c.pins[0].automatic);
  EXPECT_EQ(c.pins[1].block, hot);
  EXPECT_TRUE(c.pins[1].automatic);
  EXPECT_TRUE(c.pins[1].resident);
  // A scan under LRU would evict the hot block first; pinned, it stays.
  for (int e = 0; e < 4; ++e) request(BlockId::routed(2, e));
  EXPECT_NE(tier.peek(hot), nullptr);
  EXPECT_NE(tier.peek(admin), nullptr);
  // An admin's unpin drops an automatic pin too; turning automatic pins off drops them all.
  tier.unpin(hot);
  EXPECT_EQ(tier.counters().auto_pinned, 0u);
  tier.set_auto_pin(0);
  EXPECT_EQ(tier.counters().pinned, 1u);
  EXPECT_THROW(tier.set_auto_pin(1.5), std::invalid_argument);
}

TEST(HostTier, AnAdminPinnedBlockIsKeptWhenLoadedWhateverTheFilterThinks) {
  HostTier tier(100, make_policy("tinylfu"));
  const BlockId hot = BlockId::routed(0, 0), pinned = BlockId::routed(0, 1);
  admit_hot_block(tier, hot);
  tier.pin(pinned);  // not resident yet: kept from its next load on
  EXPECT_EQ(tier.lookup(pinned), nullptr);
  EXPECT_TRUE(tier.admit(pinned, payload(100), HostTier::Admission::filtered));
  EXPECT_NE(tier.peek(pinned), nullptr);
  EXPECT_EQ(tier.peek(hot), nullptr);
  EXPECT_EQ(tier.counters().refusals, 0u);
}

TEST(HostTier, HonoursTheBudgetPinsAndBlocksInUse) {
  HostTier tier(300, make_policy("lru"));
  const BlockId a = BlockId::routed(0, 0), b = BlockId::routed(0, 1), c = BlockId::routed(0, 2);
  EXPECT_TRUE(tier.admit(a, payload(100)));
  EXPECT_TRUE(tier.admit(b, payload(100)));
  tier.pin(a);
  EXPECT_TRUE(tier.admit(c, payload(100)));
  EXPECT_TRUE(tier.admit(BlockId::routed(0, 3), payload(100)));  // evicts b: a is pinned
  EXPECT_EQ(tier.peek(b), nullptr);
  EXPECT_NE(tier.peek(a), nullptr);
  EXPECT_LE(tier.counters().used_bytes, 300u);

  const Payload held = tier.lookup(c);  // in use: may not be evicted
  EXPECT_TRUE(tier.admit(BlockId::routed(0, 4), payload(100)));
  EXPECT_NE(tier.peek(c), nullptr);
  EXPECT_FALSE(tier.admit(BlockId::routed(0, 5), payload(400)));  // larger than the budget
  EXPECT_EQ(tier.counters().bypasses, 1u);
  EXPECT_EQ(tier.counters().refusals, 0u);  // no filter was asked

  tier.set_budget(100);  // shrinks to what pins and users allow
  const auto counters = tier.counters();
  EXPECT_LE(counters.used_bytes, 200u);
  EXPECT_NE(tier.peek(a), nullptr);
  EXPECT_NE(tier.peek(c), nullptr);
  EXPECT_EQ(counters.hits, 1u);
  tier.set_policy(make_policy("lfu"));
  EXPECT_EQ(tier.counters().policy, "lfu");
}

TEST(BufferPool, RecyclesUpToItsSpareLimit) {
  BufferPool pool(8192);
  std::byte* first;
  {
    auto a = pool.allocate(5000);  // rounds to 8192
    first = a.get();
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(first) % 4096, 0u);
  }
  EXPECT_EQ(pool.counters().spare_bytes, 8192u);
  auto b = pool.allocate(8000);
  EXPECT_EQ(b.get(), first);
  EXPECT_EQ(pool.counters().reuses, 1u);
  auto c = pool.allocate(8000);
  b.reset();
  c.reset();  // only one fits the spare limit; the older spare is freed
  EXPECT_EQ(pool.counters().spare_bytes, 8192u);
}

TEST(BufferPool, KeepsTheSizesReleasedLast) {
  BufferPool pool(3 * 4096);
  auto small1 = pool.allocate(4096), small2 = pool.allocate(4096);
  auto large = pool.allocate(2 * 4096);
  small1.reset();
  small2.reset();
  std::byte* large_buffer = large.get();
  large.reset();  // the spares were full of small ones: the oldest goes, the large one stays
  EXPECT_EQ(pool.counters().spare_bytes, 3u * 4096);
  const auto again = pool.allocate(2 * 4096);
  EXPECT_EQ(again.get(), large_buffer);
  EXPECT_EQ(pool.counters().reuses, 1u);
  auto too_large = pool.allocate(4 * 4096);
  too_large.reset();  // larger than the whole spare limit: freed at once
  EXPECT_EQ(pool.counters().spare_bytes, 4096u);
}

TEST(ByteSize, ParsesAndFormats) {
  EXPECT_EQ(parse_byte_size("4096"), 4096u);
  EXPECT_EQ(parse_byte_size("512MiB"), 512ull << 20);
  EXPECT_EQ(parse_byte_size("24GiB"), 24ull << 30);
  EXPECT_EQ(parse_byte_size("1.5GB"), 1500000000u);
  EXPECT_THROW(parse_byte_size("lots"), std::invalid_argument);
  EXPECT_THROW(parse_byte_size("-1GiB"), std::invalid_argument);
  EXPECT_THROW(parse_byte_size("12 parsecs"), std::invalid_argument);
  // Past int64 but inside uint64: llround used to turn these into 2^63 (found reading the parser
  // behind fuzz_yaml_config's sizes).
  EXPECT_EQ(parse_byte_size("10000000TB"), 10000000000000000000ull);
  EXPECT_EQ(parse_byte_size("16000000TB"), 16000000000000000000ull);
  EXPECT_EQ(format_byte_size(1536ull << 20), "1.50GiB");
}

// ---- loader, store, ring -------------------------------------------------------------------

namespace {

// Blocks of 64 KiB each at consecutive offsets of one patterned file.
struct LoaderFixture {
  std::filesystem::path path = patterned_file("loader", 2 << 20);
  Source source{{path}};
  std::atomic<int> live{0};
  std::mutex order_mutex;
  std::vector<BlockId> order;
  std::promise<void> gate;
  std::shared_future<void> gate_open = gate.get_future().share();
  std::atomic<int> at_gate{0};  // blocks whose packing waits for the gate
  std::mutex packing;  // held by a test: a block reaching packing meanwhile waits, unlanded
  FaultyReader* reader = nullptr;
  std::unique_ptr<BlockLoader> loader;

  struct Counted final : BlockPayload {
    std::atomic<int>& live;
    explicit Counted(std::atomic<int>& l) : live(l) { ++live; }
    ~Counted() override { --live; }
    std::uint64_t bytes() const override { return 64 << 10; }
  };

  explicit LoaderFixture(bool gated = false, BlockLoaderOptions options = {}) {
    for (int l = 0; l < 4; ++l)
      for (int e = -1; e < 4; ++e)
        source.add({l, e},
                   {{0, static_cast<std::uint64_t>((l * 5 + e + 1) * (64 << 10)), 64 << 10}});
    if (!gated) gate.set_value();
    auto faulty = std::make_unique<FaultyReader>(std::vector<std::filesystem::path>{path});
    reader = faulty.get();
    loader = std::make_unique<BlockLoader>(
        source, std::move(faulty),
        [this](BlockId id, LoadedBlock& loaded, bool) -> Payload {
          ++at_gate;
          gate_open.wait();
          { std::lock_guard hold(packing); }
          const std::uint64_t offset = source.ranges(id)[0].offset;
          if (static_cast<unsigned char>(loaded.ranges[0][0]) != (offset * 7 + 3) % 251)
            throw std::runtime_error("wrong bytes");
          std::lock_guard lock(order_mutex);
          order.push_back(id);
          return std::make_shared<Counted>(live);
        },
        options);
  }
  // With a gated fixture whose arena holds two blocks: a first job read and its packing held at
  // the gate, a second read into the rest of the arena, so that what is queued next waits.
  std::pair<std::shared_future<Payload>, std::shared_future<Payload>> fill_pipeline() {
    auto first = loader->load({0, 0}, BlockLoader::Priority::prefetch);
    while (at_gate < 1) std::this_thread::yield();
    auto second = loader->load({1, 0}, BlockLoader::Priority::prefetch);
    while (reader->completed < 2) std::this_thread::yield();
    return {first, second};
  }
  ~LoaderFixture() {
    loader.reset();
    std::filesystem::remove(path);
  }
};

}  // namespace

TEST(BlockLoader, DemandJumpsAheadOfQueuedPrefetches) {
  // The packer blocks on the first job until the gate opens; with the second job read into the
  // rest of the staging arena (two blocks), everything queued next waits for staging memory.
  LoaderFixture f(true, {.staging_bytes = 128 << 10, .reading_bytes = 64 << 10});
  auto [first, second] = f.fill_pipeline();
  auto p1 = f.loader->load({0, 1}, BlockLoader::Priority::prefetch);
  auto p2 = f.loader->load({0, 2}, BlockLoader::Priority::prefetch);
  auto d = f.loader->load({0, 3}, BlockLoader::Priority::demand);
  EXPECT_TRUE(f.loader->cancel({0, 2}));
  EXPECT_FALSE(f.loader->cancel({0, 3}));  // demands are never cancelled
  f.gate.set_value();
  d.get();
  p1.get();
  first.get();
  second.get();
  EXPECT_THROW(p2.get(), std::runtime_error);
  std::lock_guard lock(f.order_mutex);
  EXPECT_EQ(f.order, (std::vector<BlockId>{{0, 0}, {1, 0}, {0, 3}, {0, 1}}));
  EXPECT_EQ(f.loader->counters().cancelled, 1u);
}

TEST(BlockLoader, APrefetchMadeADemandQueuesBehindTheDemandsBeforeIt) {
  LoaderFixture f(true, {.staging_bytes = 128 << 10, .reading_bytes = 64 << 10});
  auto [first, second] = f.fill_pipeline();
  auto guess = f.loader->load({0, 1}, BlockLoader::Priority::prefetch);
  auto demand = f.loader->load({0, 2}, BlockLoader::Priority::demand);
  f.loader->prioritize({0, 1});  // asked for after the demand: read after it
  EXPECT_FALSE(f.loader->cancel({0, 1}));
  f.gate.set_value();
  first.get();
  second.get();
  guess.get();
  demand.get();
  std::lock_guard lock(f.order_mutex);
  EXPECT_EQ(f.order, (std::vector<BlockId>{{0, 0}, {1, 0}, {0, 2}, {0, 1}}));
}

TEST(BlockLoader, CountsWhereEachKindOfLoadSpentItsTime) {
  // The first prefetch's packing is held at the gate, the second waits staged behind it, and
  // the demand and the prefetch made a demand wait queued for the arena meanwhile.
  LoaderFixture f(true, {.staging_bytes = 128 << 10, .reading_bytes = 64 << 10});
  auto [first, second] = f.fill_pipeline();
  auto demand = f.loader->load({0, 3}, BlockLoader::Priority::demand);
  auto late = f.loader->load({0, 1}, BlockLoader::Priority::prefetch);
  f.loader->prioritize({0, 1});
  f.reader->hold_ms = 50;  // the two reads still to start take at least this long
  constexpr double kHeld = 0.05;
  // Four times the bound asserted: the second prefetch's landing is stamped a little after the
  // reader reports it, which the fixture waited for, and a loaded machine may delay that.
  std::this_thread::sleep_for(std::chrono::duration<double>(4 * kHeld));
  f.gate.set_value();
  for (auto* load : {&first, &second, &demand, &late}) load->get();

  using Kind = BlockLoader::LoadKind;
  const auto c = f.loader->counters();
  const auto& prefetch = c.stages[static_cast<std::size_t>(Kind::prefetch)];
  const auto& demanded = c.stages[static_cast<std::size_t>(Kind::demand)];
  const auto& raised = c.stages[static_cast<std::size_t>(Kind::raised_prefetch)];
  EXPECT_EQ(prefetch.loads, 2u);
  EXPECT_EQ(demanded.loads, 1u);
  EXPECT_EQ(raised.loads, 1u);
  EXPECT_GE(prefetch.packing_seconds, kHeld);  // the first, held while packing
  EXPECT_GE(prefetch.staged_seconds, kHeld);   // the second, landed behind it
  EXPECT_GE(demanded.queued_seconds, kHeld);   // no arena left to read into
  EXPECT_GE(raised.queued_seconds, kHeld);
  EXPECT_GE(demanded.reading_seconds, 0.9 * kHeld);  // the slow disk (sleep_until may round)
  EXPECT_GE(raised.reading_seconds, 0.9 * kHeld);
  for (const auto& stages : c.stages)
    for (const double seconds : {stages.queued_seconds, stages.reading_seconds,
                                 stages.staged_seconds, stages.packing_seconds})
      EXPECT_GE(seconds, 0.0);
  EXPECT_NEAR(c.materialize_seconds,
              prefetch.packing_seconds + demanded.packing_seconds + raised.packing_seconds, 1e-9);
  EXPECT_EQ(to_string(Kind::raised_prefetch), "raised_prefetch");
  const auto report = to_json(stages_since({}, c.stages));
  EXPECT_EQ(report["raised_prefetch"]["loads"], 1u);
  EXPECT_EQ(report["prefetch"]["packing_seconds"].get<double>(), prefetch.packing_seconds);
  EXPECT_EQ(to_json(stages_since(c.stages, c.stages))["demand"]["queued_seconds"], 0.0);
}

TEST(BlockLoader, NextLayerPrefetchesStartBeforeFartherOnes) {
  // As above: the first two jobs fill the pipeline, so everything queued next waits.
  LoaderFixture f(true, {.staging_bytes = 128 << 10, .reading_bytes = 64 << 10});
  auto [first, second] = f.fill_pipeline();
  auto far = f.loader->load({2, 1}, BlockLoader::Priority::prefetch_far);
  auto raised = f.loader->load({3, 1}, BlockLoader::Priority::prefetch_far);
  auto near = f.loader->load({1, 1}, BlockLoader::Priority::prefetch);
  f.loader->load({3, 1}, BlockLoader::Priority::prefetch);  // now wanted for the next layer
  auto demand = f.loader->load({0, 3}, BlockLoader::Priority::demand);
  f.gate.set_value();
  for (auto* load : {&first, &second, &far, &raised, &near, &demand}) load->get();
  std::lock_guard lock(f.order_mutex);
  EXPECT_EQ(f.order, (std::vector<BlockId>{{0, 0}, {1, 0}, {0, 3}, {3, 1}, {1, 1}, {2, 1}}));
}

TEST(BlockLoader, ReadErrorsFailTheRequestAndLaterLoadsWork) {
  const auto path = patterned_file("loader-faulty", 1 << 20);
  Source source({path});
  source.add({0, 0}, {{0, 4096, 8192}});
  source.add({0, 1}, {{0, 65536, 8192}});
  auto reader = std::make_unique<FaultyReader>(std::vector<std::filesystem::path>{path});
  FaultyReader* faulty = reader.get();
  faulty->fail_at = 4096;  // block {0,0} is one aligned read at offset 4096
  BlockLoader loader(source, std::move(reader),
                     [](BlockId, LoadedBlock&, bool) -> Payload { return payload(8192); });
  EXPECT_THROW(loader.load({0, 0}, BlockLoader::Priority::demand).get(), std::runtime_error);
  EXPECT_NO_THROW(loader.load({0, 1}, BlockLoader::Priority::demand).get());
  faulty->fail_at = -1;
  EXPECT_NO_THROW(loader.load({0, 0}, BlockLoader::Priority::demand).get());
  EXPECT_EQ(loader.counters().errors, 1u);
  std::filesystem::remove(path);
}

TEST(BlockLoader, StreamsThroughASmallArenaAndGivesOversizedBlocksTheirOwnBuffer) {
  const auto path = patterned_file("loader-arena", 4 << 20);
  Source source({path});
  // Sixteen 48 KiB blocks at unaligned offsets and one of 600 KiB, larger than the arena.
  for (int e = 0; e < 16; ++e)
    source.add({0, e}, {{0, static_cast<std::uint64_t>(e) * 50'000 + 7, 48 << 10}});
  source.add({1, 0}, {{0, 2'000'001, 600 << 10}});
  std::atomic<int> packed{0};
  BlockLoader loader(
      source, make_reader({path}, {}),
      [&](BlockId id, LoadedBlock& loaded, bool) -> Payload {
        const auto& range = source.ranges(id)[0];
        for (std::uint64_t j = 0; j < range.length; j += 101)
          if (static_cast<unsigned char>(loaded.ranges[0][j]) != ((range.offset + j) * 7 + 3) % 251)
            throw std::runtime_error("wrong bytes in " + id.to_string());
        ++packed;
        return payload(range.length);
      },
      {.staging_bytes = 160 << 10, .reading_bytes = 64 << 10});
  EXPECT_EQ(loader.counters().staging_bytes, 160u << 10);
  std::vector<std::shared_future<Payload>> loads;
  for (int e = 0; e < 16; ++e)
    loads.push_back(loader.load({0, e}, BlockLoader::Priority::prefetch));
  loads.push_back(loader.load({1, 0}, BlockLoader::Priority::prefetch));
  for (auto& load : loads) EXPECT_NO_THROW(load.get());
  EXPECT_EQ(packed.load(), 17);
  EXPECT_EQ(loader.counters().errors, 0u);
  std::filesystem::remove(path);
}

TEST(BlockLoader, ReadsKeptBlocksIntoTheirOwnMemoryAndFailsOnlyTheLoadItCannotPlace) {
  const auto path = patterned_file("loader-kept", 2 << 20);
  Source source({path});
  // Layer 0's blocks are kept: two ranges each at unaligned offsets, read past the small arena.
  for (int e = 0; e < 6; ++e)
    source.add({0, e}, {{0, static_cast<std::uint64_t>(e) * 200'000 + 5, 70'000},
                        {0, static_cast<std::uint64_t>(e) * 200'000 + 90'001, 60'000}});
  source.add({1, 0}, {{0, 1'500'003, 40'000}});
  std::mutex mutex;
  std::map<BlockId, std::shared_ptr<std::byte>> given;  // the memory each kept block was given
  std::atomic<int> checked{0};
  KeptReads kept{[](BlockId id) { return id.layer == 0; },
                 [&](BlockId id, std::uint64_t bytes) -> std::shared_ptr<std::byte> {
                   if (id.expert == 3) throw std::bad_alloc();
                   auto memory = std::shared_ptr<std::byte>(allocate_aligned(bytes),
                                                            [](std::byte* p) { std::free(p); });
                   std::lock_guard lock(mutex);
                   given[id] = memory;
                   return memory;
                 }};
  BlockLoader loader(
      source, make_reader({path}, {}),
      [&](BlockId id, LoadedBlock& loaded, bool) -> Payload {
        {
          std::lock_guard lock(mutex);
          const auto it = given.find(id);
          if ((it != given.end()) != (loaded.kept != nullptr) ||
              (loaded.kept && loaded.kept != it->second))
            throw std::runtime_error(id.to_string() + " was not read into its own memory");
        }
        const auto& ranges = source.ranges(id);
        for (std::size_t r = 0; r < ranges.size(); ++r) {
          if (loaded.kept && (loaded.ranges[r] < loaded.kept.get() ||
                              loaded.ranges[r] + ranges[r].length >
                                  loaded.kept.get() + aligned_read_bytes(ranges)))
            throw std::runtime_error(id.to_string() + " lies outside its memory");
          for (std::uint64_t j = 0; j < ranges[r].length; j += 97)
            if (static_cast<unsigned char>(loaded.ranges[r][j]) !=
                ((ranges[r].offset + j) * 7 + 3) % 251)
              throw std::runtime_error("wrong bytes in " + id.to_string());
        }
        ++checked;
        return payload(1);
      },
      {.staging_bytes = 96 << 10, .reading_bytes = 64 << 10}, kept);
  std::vector<std::shared_future<Payload>> loads;
  for (int e = 0; e < 6; ++e) loads.push_back(loader.load({0, e}, BlockLoader::Priority::demand));
  loads.push_back(loader.load({1, 0}, BlockLoader::Priority::demand));
  for (int e = 0; e < 6; ++e)
    if (e == 3)
      EXPECT_THROW(loads[static_cast<std::size_t>(e)].get(), std::bad_alloc);
    else
      EXPECT_NO_THROW(loads[static_cast<std::size_t>(e)].get()) << e;
  EXPECT_NO_THROW(loads.back().get());
  EXPECT_EQ(checked.load(), 6);
  // By default the arena is sized for the blocks read into it: here layer 1's one 40 KB block.
  const auto nothing = [](BlockId, LoadedBlock&, bool) -> Payload { return payload(1); };
  const BlockLoader plain(source, make_reader({path}, {}), nothing);
  const BlockLoader keeping(source, make_reader({path}, {}), nothing, {}, kept);
  EXPECT_LT(keeping.counters().staging_bytes, plain.counters().staging_bytes);
  std::filesystem::remove(path);
}

// A loader whose reader completes nothing until release(), so a test can queue all its loads
// first; block i is the 192 KiB range at i * 192 KiB of `file` (three 64 KiB reads).
struct SteppedLoader {
  SteppedLoader(const std::filesystem::path& file, const std::vector<BlockId>& blocks,
                std::uint64_t block_bytes = 192 << 10)
      : source({file}) {
    for (std::size_t i = 0; i < blocks.size(); ++i)
      source.add(blocks[i], {{0, i * block_bytes, block_bytes}});
    auto stepping = std::make_unique<SteppingReader>(file, queued.get_future().share());
    reader = stepping.get();
    loader = std::make_unique<BlockLoader>(
        source, std::move(stepping),
        [](BlockId, LoadedBlock&, bool) -> Payload { return payload(1); },
        BlockLoaderOptions{.staging_bytes = 4 << 20});
  }
  void release() { queued.set_value(); }

  Source source;
  std::promise<void> queued;
  SteppingReader* reader = nullptr;
  std::unique_ptr<BlockLoader> loader;
};

TEST(BlockLoader, KeepsTheReadersQueueFullAcrossBlocks) {
  // Twelve blocks of three 64 KiB reads through a queue of four, the reading window sized by
  // default: every read completes with the queue full until the last ones drain. Ring sections
  // (dense blocks) read ahead as prefetches, and expert blocks read as demands, stream this way.
  for (const auto priority : {BlockLoader::Priority::prefetch, BlockLoader::Priority::demand}) {
    const bool dense = priority == BlockLoader::Priority::prefetch;
    std::vector<BlockId> blocks;
    for (int i = 0; i < 12; ++i) blocks.push_back(dense ? BlockId::dense(i) : BlockId{0, i});
    const auto path = patterned_file("loader-queue", 4 << 20);
    SteppedLoader f(path, blocks);
    std::vector<std::shared_future<Payload>> loads;
    for (const BlockId block : blocks) loads.push_back(f.loader->load(block, priority));
    f.release();
    for (auto& load : loads) load.get();
    const auto& in_flight = f.reader->in_flight_at_reap;
    ASSERT_EQ(in_flight.size(), 36u);
    // The first reap may begin before the loads after the first one are queued; from the first
    // completion on, the loader has seen them all.
    for (std::size_t k = 1; k < in_flight.size(); ++k)
      EXPECT_EQ(in_flight[k], std::min<std::size_t>(4, 36 - k))
          << (dense ? "dense" : "demand") << " at read " << k;
    std::filesystem::remove(path);
  }
}

// The reader saw `blocks` blocks of three reads each, one block at a time: 3, 2, 1 reads in
// flight at its reaps, block after block.
void expect_one_block_at_a_time(const SteppingReader& reader, std::size_t blocks) {
  const auto& in_flight = reader.in_flight_at_reap;
  ASSERT_EQ(in_flight.size(), 3 * blocks);
  for (std::size_t k = 0; k < in_flight.size(); ++k)
    EXPECT_EQ(in_flight[k], 3 - k % 3) << "at read " << k;
}

// The offsets of the first `reads` 64 KiB reads of a SteppedLoader's file, in file order.
std::vector<std::uint64_t> reads_in_file_order(std::size_t reads) {
  std::vector<std::uint64_t> offsets;
  for (std::size_t k = 0; k < reads; ++k) offsets.push_back(k * (64 << 10));
  return offsets;
}

TEST(BlockLoader, ReadsExpertPrefetchesOneAtATime) {
  // A demand shares the disk with at most the one guess it finds under way: six expert
  // prefetches of three 64 KiB reads each go one block at a time, never more than its three
  // reads in flight.
  const auto path = patterned_file("loader-one-prefetch", 2 << 20);
  std::vector<BlockId> blocks;
  for (int e = 0; e < 6; ++e) blocks.push_back({0, e});
  SteppedLoader f(path, blocks);
  std::vector<std::shared_future<Payload>> loads;
  for (const BlockId block : blocks)
    loads.push_back(f.loader->load(block, BlockLoader::Priority::prefetch));
  f.release();
  for (auto& load : loads) load.get();
  expect_one_block_at_a_time(*f.reader, 6);
  std::filesystem::remove(path);
}

TEST(BlockLoader, StartsNoExpertGuessWhileADemandIsRead) {
  // A guess read beside a demand takes disk time from the read compute waits on: the guess
  // queued after a demand (three 64 KiB reads each) starts once the demand's reads are over.
  const auto path = patterned_file("loader-demand-alone", 1 << 20);
  SteppedLoader f(path, {{0, 0}, {0, 1}});
  const auto demand = f.loader->load({0, 0}, BlockLoader::Priority::demand);
  const auto guess = f.loader->load({0, 1}, BlockLoader::Priority::prefetch);
  f.release();
  demand.get();
  guess.get();
  expect_one_block_at_a_time(*f.reader, 2);
  EXPECT_EQ(f.reader->offsets_read, reads_in_file_order(6));  // the demand's, then the guess's
  std::filesystem::remove(path);
}

TEST(BlockLoader, StartsNoExpertGuessWhileAGuessRaisedToADemandIsRead) {
  // The guess A, raised to a demand (its layer asked for it), keeps the next guess B waiting.
  const auto path = patterned_file("loader-raised-alone", 1 << 20);
  SteppedLoader f(path, {{0, 0}, {0, 1}});
  const auto a = f.loader->load({0, 0}, BlockLoader::Priority::prefetch);
  f.loader->prioritize({0, 0});
  const auto b = f.loader->load({0, 1}, BlockLoader::Priority::prefetch);
  f.release();
  a.get();
  b.get();
  expect_one_block_at_a_time(*f.reader, 2);
  std::filesystem::remove(path);
}

TEST(BlockLoader, RingSectionsStartBesideADemand) {
  // Ring sections will all be used: the section D starts while the demand E is still being
  // read, filling the reader's queue of four.
  const auto path = patterned_file("loader-ring-beside-demand", 1 << 20);
  SteppedLoader f(path, {{0, 0}, BlockId::dense(1)});
  const auto e = f.loader->load({0, 0}, BlockLoader::Priority::demand);
  const auto d = f.loader->load(BlockId::dense(1), BlockLoader::Priority::prefetch);
  f.release();
  e.get();
  d.get();
  const auto& in_flight = f.reader->in_flight_at_reap;
  ASSERT_EQ(in_flight.size(), 6u);
  EXPECT_EQ(in_flight[1], 4u);  // D's reads joined E's after E's first read at the latest
  EXPECT_EQ(f.reader->offsets_read, reads_in_file_order(6));  // E's, then D's
  std::filesystem::remove(path);
}

TEST(BlockLoader, RingSectionsDoNotWaitBehindExpertGuesses) {
  // Expert prefetch A (three 64 KiB reads) is read; expert prefetch B waits for it; the ring
  // section D, queued after B, starts beside A rather than behind B. The reader completes
  // nothing until all three are queued, and the loader looks again after A's first read.
  const auto path = patterned_file("loader-ring-first", 1 << 20);
  SteppedLoader f(path, {{0, 0}, {0, 1}, BlockId::dense(1)});
  const auto a = f.loader->load({0, 0}, BlockLoader::Priority::prefetch);
  const auto b = f.loader->load({0, 1}, BlockLoader::Priority::prefetch);
  const auto d = f.loader->load(BlockId::dense(1), BlockLoader::Priority::prefetch);
  f.release();
  a.get();
  b.get();
  d.get();
  constexpr std::uint64_t kRead = 64 << 10;
  const std::vector<std::uint64_t> a_then_d_then_b = {
      0, kRead, 2 * kRead, 6 * kRead, 7 * kRead, 8 * kRead, 3 * kRead, 4 * kRead, 5 * kRead};
  EXPECT_EQ(f.reader->offsets_read, a_then_d_then_b);
  std::filesystem::remove(path);
}

TEST(TieredStore, ScoresPredictionsAsHitLateOrWasted) {
  LoaderFixture f;
  HostTier host(1 << 20, make_policy("lru"));
  TieredStore store(host, *f.loader, f.source, 4);
  const std::int32_t predicted[] = {0, 1, 2};
  store.predict(1, predicted);
  // Wait until the predictions are resident, so the used ones count as hits and the third's
  // bytes are counted.
  while (!host.peek({1, 0}) || !host.peek({1, 1}) || !host.peek({1, 2}))
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  store.acquire({1, 0});
  store.acquire({1, 1});
  store.acquire({1, 3});  // not predicted: a plain miss
  store.settle(1);
  const auto c = store.layer_counters()[1];
  EXPECT_EQ(c.prefetch_issued, 3u);
  EXPECT_EQ(c.prefetch_hits, 2u);
  EXPECT_EQ(c.prefetch_wasted, 1u);
  EXPECT_EQ(c.hits, 2u);
  EXPECT_EQ(c.misses, 1u);
  EXPECT_EQ(c.bytes_read, 4u * (64 << 10));
}

TEST(TieredStore, AnExpectedBlockIsReadOnceAndOfferedToTheTierOnlyWhenAcquired) {
  LoaderFixture f;
  HostTier host(2 * (64 << 10), make_policy("lru"));  // room for two blocks
  TieredStore store(host, *f.loader, f.source, 4);
  store.acquire({1, 0});
  store.expect({1, 0});  // resident: nothing to read
  store.expect({1, 2});
  store.expect({1, 2});  // asked twice, read once
  while (f.loader->pending({1, 2})) std::this_thread::yield();
  EXPECT_EQ(host.peek({1, 2}), nullptr);  // read, and held outside the tier until acquired
  EXPECT_NE(store.acquire({1, 2}), nullptr);
  EXPECT_NE(host.peek({1, 2}), nullptr);
  store.expect({1, 3});  // never acquired: settle lets it go
  while (f.loader->pending({1, 3})) std::this_thread::yield();
  store.settle(1);
  store.acquire({1, 3});  // a read of its own
  EXPECT_EQ(f.loader->counters().reads, 4u);
  const auto c = store.layer_counters()[1];
  EXPECT_EQ(c.hits, 0u);
  EXPECT_EQ(c.misses, 3u);
  EXPECT_EQ(c.bytes_read, 4u * (64 << 10));
  // The tier saw the same requests in the same order as without expect(): LRU kept the last two.
  EXPECT_EQ(host.peek({1, 0}), nullptr);
  EXPECT_NE(host.peek({1, 2}), nullptr);
  EXPECT_NE(host.peek({1, 3}), nullptr);
}

TEST(TieredStore, AnExpectedReadThatFailedIsReadAgain) {
  LoaderFixture f;
  HostTier host(2 * (64 << 10), make_policy("lru"));
  TieredStore store(host, *f.loader, f.source, 4);
  f.reader->fail_at = 8 * (64 << 10);  // expert 2 of layer 1
  store.expect({1, 2});
  while (f.loader->pending({1, 2})) std::this_thread::yield();
  EXPECT_EQ(f.loader->counters().errors, 1u);
  f.reader->fail_at = -1;  // the pass stopped on an earlier error, before acquiring it
  store.expect({1, 2});    // reads it again rather than keep the error
  while (f.loader->pending({1, 2})) std::this_thread::yield();
  EXPECT_EQ(f.loader->counters().reads, 2u);
  EXPECT_NE(store.acquire({1, 2}), nullptr);
  EXPECT_EQ(f.loader->counters().reads, 2u);

  f.reader->fail_at = 9 * (64 << 10);  // expert 3
  store.expect({1, 3});
  while (f.loader->pending({1, 3})) std::this_thread::yield();
  f.reader->fail_at = -1;
  EXPECT_NE(store.acquire({1, 3}), nullptr);  // not the failed read's error: a read of its own
  EXPECT_EQ(f.loader->counters().reads, 4u);
  EXPECT_EQ(f.loader->counters().errors, 2u);
  EXPECT_THROW(store.expect({4, 0}), std::out_of_range);
}

TEST(TieredStore, HeldExpertsOfTheCurrentLayerSurviveTheNextLayersPrefetches) {
  LoaderFixture f;
  HostTier host(2 * (64 << 10), make_policy("lru"));  // room for two blocks
  TieredStore store(host, *f.loader, f.source, 4);
  const std::int32_t current[] = {0, 1};
  for (const auto e : current) store.acquire({1, e});
  const std::int32_t current_and_absent[] = {0, 1, 3};
  const auto held = store.hold_resident(1, current_and_absent);
  ASSERT_EQ(held.size(), 3u);  // entry i is expert i's: null where it is not resident
  EXPECT_NE(held[0], nullptr);
  EXPECT_NE(held[1], nullptr);
  EXPECT_EQ(held[2], nullptr);
  const std::int32_t next[] = {2, 3};
  store.predict(2, next);
  for (const auto e : next)
    while (f.loader->pending({2, e})) std::this_thread::yield();  // read and offered to the tier
  EXPECT_NE(host.peek({1, 0}), nullptr);
  EXPECT_NE(host.peek({1, 1}), nullptr);
  EXPECT_EQ(host.counters().evictions, 0u);
  EXPECT_EQ(host.counters().bypasses, 2u);  // the prefetches found no evictable room
}

TEST(TieredStore, StalePrefetchesAreCancelledUnreadAndScoredPerHorizon) {
  LoaderFixture f(true, {.staging_bytes = 128 << 10, .reading_bytes = 64 << 10});
  HostTier host(1 << 20, make_policy("lru"));
  TieredStore store(host, *f.loader, f.source, 4);
  // Two dense blocks fill the pipeline, so the prefetches below stay queued until the gate opens.
  auto dense0 = f.loader->load(BlockId::dense(0), BlockLoader::Priority::demand);
  while (f.at_gate < 1) std::this_thread::yield();
  auto dense1 = f.loader->load(BlockId::dense(1), BlockLoader::Priority::demand);
  while (f.reader->completed < 2) std::this_thread::yield();

  const std::int32_t far3[] = {0, 1}, far2[] = {2}, near3[] = {1, 2};
  store.prefetch(3, far3, 2);   // while layer 1 computes
  store.prefetch(2, far2, 2);   // a prediction for layer 2, which is then computed
  store.prefetch(3, near3, 1);  // layer 2 computes: expert 0 of layer 3 is no longer expected
  store.settle(2);
  EXPECT_THROW(store.prefetch(3, near3, 3), std::invalid_argument);
  EXPECT_THROW(store.prefetch(4, near3, 1), std::invalid_argument);
  const std::int32_t negative[] = {1, -1};
  EXPECT_THROW(store.prefetch(3, negative, 1), std::invalid_argument);
  f.gate.set_value();
  dense0.get();
  dense1.get();
  while (!host.peek({3, 1}) || !host.peek({3, 2})) std::this_thread::yield();
  store.acquire({3, 1});
  store.acquire({3, 3});
  store.settle(3);

  {
    std::lock_guard lock(f.order_mutex);
    // Expert 1, raised to the next layer's priority, keeps its earlier place in the queue.
    EXPECT_EQ(f.order,
              (std::vector<BlockId>{BlockId::dense(0), BlockId::dense(1), {3, 1}, {3, 2}, {3, 3}}));
  }
  EXPECT_EQ(host.peek({3, 0}), nullptr);
  EXPECT_EQ(host.peek({2, 2}), nullptr);
  EXPECT_EQ(host.counters().evictions, 0u);
  EXPECT_EQ(f.loader->counters().cancelled, 2u);

  const auto layers = store.layer_counters();
  const HorizonCounters& near = layers[3].horizons[0];
  const HorizonCounters& far = layers[3].horizons[1];
  EXPECT_EQ(far.predicted, 2u);
  EXPECT_EQ(far.used, 1u);
  EXPECT_EQ(far.issued, 2u);
  EXPECT_EQ(far.hits, 1u);  // expert 1 was read for the horizon-2 prediction
  EXPECT_EQ(far.cancelled, 1u);
  EXPECT_EQ(far.wasted, 0u);
  EXPECT_EQ(near.predicted, 2u);
  EXPECT_EQ(near.used, 1u);
  EXPECT_EQ(near.issued, 1u);
  EXPECT_EQ(near.hits, 0u);
  EXPECT_EQ(near.wasted, 1u);  // expert 2 was read and not needed
  EXPECT_EQ(layers[2].horizons[1].issued, 1u);
  EXPECT_EQ(layers[2].horizons[1].cancelled, 1u);
  EXPECT_EQ(layers[3].prefetch_issued, 3u);
  EXPECT_EQ(layers[3].prefetch_hits, 1u);
  EXPECT_EQ(layers[3].prefetch_wasted, 2u);  // one read and not needed, one cancelled
  EXPECT_EQ(layers[3].hits, 1u);
  EXPECT_EQ(layers[3].misses, 1u);
}

TEST(TieredStore, APrefetchIsKeptUntilItsLayerAndOneTurnedAwayIsWasted) {
  LoaderFixture f;
  HostTier host(64 << 10, make_policy("lru"));  // room for one block
  TieredStore store(host, *f.loader, f.source, 4);
  const std::int32_t predicted[] = {0};
  store.prefetch(2, predicted, 2);
  while (!host.peek({2, 0})) std::this_thread::yield();
  // The packer holds a read's payload until it takes the next block; once this one is done only
  // the tier and the store hold expert 0.
  f.loader->load(BlockId::dense(0), BlockLoader::Priority::demand).get();
  store.prefetch(3, predicted, 2);  // finds no room: expert 0 of layer 2 waits for its layer
  while (f.loader->pending({3, 0})) std::this_thread::yield();
  store.acquire({1, 3});  // nor does layer 1's demand evict it
  EXPECT_NE(host.peek({2, 0}), nullptr);
  EXPECT_EQ(host.peek({1, 3}), nullptr);
  store.acquire({2, 0});
  store.settle(2);
  store.acquire({3, 0});
  store.settle(3);
  const auto layers = store.layer_counters();
  EXPECT_EQ(layers[2].horizons[1].hits, 1u);
  EXPECT_EQ(layers[3].horizons[1].used, 1u);
  EXPECT_EQ(layers[3].horizons[1].wasted, 1u);  // read, and turned away by the tier
  EXPECT_EQ(host.counters().bypasses, 2u);
  EXPECT_NE(host.peek({3, 0}), nullptr);  // layer 2 let go of its expert, which made room
}

TEST(TieredStore, APredictionMadeAgainJoinsTheReadAnEarlierPassStarted) {
  LoaderFixture f(true);
  HostTier host(1 << 20, make_policy("lru"));
  TieredStore store(host, *f.loader, f.source, 4);
  const std::int32_t predicted[] = {0};
  store.prefetch(2, predicted, 1);
  while (f.at_gate < 1) std::this_thread::yield();  // read: it can no longer be cancelled
  store.settle(2);                                  // layer 2 was computed without it
  store.prefetch(2, predicted, 1);                  // the next pass predicts it again
  f.gate.set_value();
  // The tier holds the block once the read's callbacks ran; the loader counts it just after.
  while (f.loader->pending({2, 0})) std::this_thread::yield();
  store.acquire({2, 0});
  store.settle(2);
  EXPECT_EQ(f.loader->counters().reads, 1u);
  const auto layers = store.layer_counters();
  EXPECT_EQ(layers[2].bytes_read, 64u << 10);  // one read, counted once
  const HorizonCounters& near = layers[2].horizons[0];
  EXPECT_EQ(near.issued, 2u);
  EXPECT_EQ(near.wasted, 1u);
  EXPECT_EQ(near.hits, 1u);
}

TEST(TieredStore, ReadsAnAbandonedPassLeftAreJoinedAndCountedOnce) {
  LoaderFixture f(true);
  HostTier host(1 << 20, make_policy("lru"));
  TieredStore store(host, *f.loader, f.source, 4);
  store.expect({2, 0});
  store.expect({2, 1});
  while (f.at_gate < 1) std::this_thread::yield();  // both demands under way, one held
  store.abandon();                                  // the pass failed before layer 2
  const std::int32_t predicted[] = {0};
  store.prefetch(2, predicted, 1);  // the next pass predicts expert 0: it joins that read
  // It asks for expert 1 unpredicted, joining the other read; the gate opens once it waits.
  store.set_waiter([&](const std::shared_future<Payload>& load) {
    f.gate.set_value();
    load.wait();
  });
  store.acquire({2, 1});
  while (f.loader->pending({2, 0})) std::this_thread::yield();
  EXPECT_NE(host.peek({2, 0}), nullptr);  // admitted for the prediction
  store.acquire({2, 0});
  store.settle(2);
  EXPECT_EQ(f.loader->counters().reads, 2u);
  const auto layers = store.layer_counters();
  EXPECT_EQ(layers[2].bytes_read, 2u * (64 << 10));  // each read counted once
  EXPECT_EQ(layers[2].horizons[0].hits, 1u);
  EXPECT_EQ(layers[2].hits, 1u);
  EXPECT_EQ(layers[2].misses, 1u);
}

TEST(TieredStore, AnAbandonedPassLeavesNoPredictionsForTheNext) {
  LoaderFixture f;
  HostTier host(1 << 20, make_policy("lru"));
  TieredStore store(host, *f.loader, f.source, 4);
  const std::int32_t near[] = {0, 1}, far[] = {2};
  store.prefetch(1, near, 1);  // while layer 0 computes; then one of its reads fails
  store.prefetch(2, far, 2);
  while (f.loader->pending({1, 0}) || f.loader->pending({1, 1}) || f.loader->pending({2, 2}))
    std::this_thread::yield();
  store.abandon();
  auto layers = store.layer_counters();
  EXPECT_EQ(layers[1].horizons[0].wasted, 2u);
  EXPECT_EQ(layers[2].horizons[1].wasted, 1u);

  store.prefetch(1, near, 1);  // the next pass, at layer 0 again
  store.prefetch(2, far, 2);
  store.acquire({1, 0});
  store.settle(1);
  layers = store.layer_counters();
  EXPECT_EQ(layers[1].horizons[0].predicted, 4u);  // predicted anew, not taken for the old ones
  EXPECT_EQ(layers[1].horizons[0].used, 1u);
  EXPECT_EQ(layers[2].horizons[1].predicted, 2u);
  EXPECT_EQ(layers[1].hits, 1u);
  EXPECT_EQ(f.loader->counters().reads, 3u);  // resident from the first pass: not read again
}

TEST(TieredStore, HitsAndPredictionsEqualTheSimulatorsWithPrefetchTwoLayersAhead) {
  // The engine's calls, as the live store sees them: each layer holds its resident experts,
  // feeds its routing to the predictor, prefetches the next two layers' predicted experts, then
  // acquires its own. Once every prefetch has landed before the layer's acquires (unbounded
  // reads in the simulator), the live store and the simulator agree hit for hit.
  // With automatic pins too, on a trace whose pins are chosen twice.
  for (const double auto_pin : {0.0, 0.5}) {
    const auto trace = auto_pin > 0 ? pinnable_trace() : skewed_trace(30, 4, 4);
    const std::uint64_t budgets[] = {0, 3, 6};
    PrefetchOptions options;  // two horizons, transition predictor, unbounded reads
    for (const auto& name : policy_names()) {
      const std::string policies[] = {name};
      for (const auto& expected : simulate_prefetch(trace, budgets, policies, options, auto_pin)) {
        LoaderFixture f;
        HostTier host(expected.budget_blocks * (64 << 10), make_policy(name));
        if (auto_pin > 0) host.set_auto_pin(auto_pin);
        TieredStore store(host, *f.loader, f.source, 4);
        RoutingPredictor predictor(RoutingPredictor::Kind::transition, 4, 4, kPrefetchHorizons);
        for (const auto& event : trace) {
          auto held = store.hold_resident(event.layer, event.experts);
          predictor.observe(event.layer, event.experts, 2);
          {
            // The replay predicts both horizons before any read lands; a block landing between
            // the two calls could evict one the second horizon then finds missing.
            std::lock_guard hold(f.packing);
            for (int h = 1; h <= kPrefetchHorizons && event.layer + h < 4; ++h)
              store.prefetch(event.layer + h, predictor.predict(event.layer, h), h);
          }
          for (int l = event.layer + 1; l < 4; ++l)
            for (int e = 0; e < 4; ++e)
              while (f.loader->pending({l, e})) std::this_thread::yield();
          // The packer lets go of a block's payload when it takes the next one.
          f.loader->load(BlockId::dense(0), BlockLoader::Priority::demand).get();
          for (std::size_t i = 0; i < event.experts.size(); ++i) {
            // As the engine asks: this expert and the next, before acquiring this one.
            store.expect({event.layer, event.experts[i]});
            if (i + 1 < event.experts.size()) store.expect({event.layer, event.experts[i + 1]});
            Payload used = store.acquire({event.layer, event.experts[i]});
            std::erase(held, used);
          }
          store.settle(event.layer);
        }
        const std::string at = name + " at " + std::to_string(expected.budget_blocks) +
                               " blocks, auto-pin " + std::to_string(auto_pin);
        if (auto_pin > 0 && expected.budget_blocks > 0) {
          EXPECT_GT(host.counters().auto_pinned, 0u) << at;  // braces: gtest's macro is an if
        }
        EXPECT_EQ(host.counters().hits, expected.hits) << at;
        std::array<HorizonCounters, kPrefetchHorizons> live{};
        for (const auto& layer : store.layer_counters())
          for (int h = 0; h < kPrefetchHorizons; ++h) {
            live[h].predicted += layer.horizons[h].predicted;
            live[h].used += layer.horizons[h].used;
            live[h].issued += layer.horizons[h].issued;
            live[h].hits += layer.horizons[h].hits;
            live[h].late += layer.horizons[h].late;
            live[h].wasted += layer.horizons[h].wasted;
            live[h].cancelled += layer.horizons[h].cancelled;
          }
        for (int h = 0; h < kPrefetchHorizons; ++h) {
          const auto& sim = expected.horizons[h];
          EXPECT_GT(sim.predicted, 0u);
          EXPECT_EQ(live[h].predicted, sim.predicted) << at << " horizon " << h + 1;
          EXPECT_EQ(live[h].used, sim.used) << at << " horizon " << h + 1;
          EXPECT_EQ(live[h].issued, sim.issued) << at << " horizon " << h + 1;
          EXPECT_EQ(live[h].hits, sim.hits) << at << " horizon " << h + 1;
          EXPECT_EQ(live[h].wasted, sim.wasted) << at << " horizon " << h + 1;
          EXPECT_EQ(live[h].late + live[h].cancelled, 0u) << at << " horizon " << h + 1;
        }
      }
    }
  }
}

TEST(Simulator, ThePrefetchReplayKeepsAutomaticPins) {
  // The pinner pins each layer's expert 0; the pins change what the replay keeps.
  const auto trace = pinnable_trace();
  const std::uint64_t budgets[] = {3, 6};
  int changed = 0;
  for (const auto& name : policy_names()) {
    const std::string policies[] = {name};
    const auto pinned = simulate_prefetch(trace, budgets, policies, {}, 0.5);
    const auto unpinned = simulate_prefetch(trace, budgets, policies, {});
    for (std::size_t i = 0; i < pinned.size(); ++i) changed += pinned[i].hits != unpinned[i].hits;
  }
  EXPECT_GT(changed, 0);
}

TEST(SectionRing, StreamsInRoundRobinWithBoundedMemory) {
  LoaderFixture f;
  std::vector<BlockId> schedule;
  for (int l = 0; l < 4; ++l) schedule.push_back(BlockId::dense(l));
  SectionRing ring(*f.loader, schedule, 2);
  for (int token = 0; token < 3; ++token)
    for (std::size_t l = 0; l < 4; ++l) {
      Payload p = ring.acquire(l);
      ASSERT_NE(p, nullptr);
      EXPECT_LE(f.live.load(), 2 + 1);  // two sections, plus the one this scope holds
      p.reset();
      ring.release(l);
    }
  std::lock_guard lock(f.order_mutex);
  // Loads follow the schedule in order, each section reused round-robin.
  for (std::size_t i = 0; i < f.order.size(); ++i)
    EXPECT_EQ(f.order[i], schedule[i % 4]) << i << " " << [&] {
      std::string s;
      for (auto b : f.order) s += b.to_string() + " ";
      return s;
    }();
  EXPECT_GE(ring.counters().loads, 12u);
}

// ---- traces and the simulator --------------------------------------------------------------

TEST(Trace, WritesAndReadsJsonLines) {
  const auto path = std::filesystem::temp_directory_path() /
                    ("moed-test-trace-" + std::to_string(::getpid()) + ".jsonl");
  {
    TraceWriter writer(path);
    writer.write({17, 3, {5, 1}, {0.61f, 0.39f}});
    writer.write({18, 0, {2, 0}, {}});
    EXPECT_EQ(writer.lines(), 2u);
  }
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(
      line,
      R"({"experts":[5,1],"layer":3,"token":17,"weights":[0.6100000143051147,0.38999998569488525]})");
  const auto events = read_trace(path);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].token, 17);
  EXPECT_EQ(events[0].experts, (std::vector<std::int32_t>{5, 1}));
  EXPECT_TRUE(events[1].weights.empty());
  std::filesystem::remove(path);
}

TEST(Trace, ForeignTracesWithExtraFieldsParseAndBadLinesNameTheLine) {
  std::istringstream ok(R"({"layer": 40, "experts": [120, 7, 3], "router": "x", "token": 1}

{"experts": [1], "layer": 0})");
  const auto events = parse_trace(ok, "t.jsonl");
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].layer, 40);
  std::istringstream bad(R"({"layer": 0, "experts": [1]}
{"layer": -1, "experts": [1]})");
  try {
    parse_trace(bad, "t.jsonl");
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("t.jsonl:2"), std::string::npos);
  }
}

// Ids past int32 used to wrap (4294967296 became expert 0, 2147483648 layer -2147483648), so a
// foreign trace silently aliased blocks.
TEST(Trace, IdsBeyondInt32AreRejectedNotWrapped) {
  for (const char* line :
       {R"({"layer": 4294967296, "experts": [1]})", R"({"layer": 2147483648, "experts": [1]})",
        R"({"layer": 0, "experts": [1, 4294967296]})"}) {
    std::istringstream in(line);
    try {
      parse_trace(in, "t.jsonl");
      ADD_FAILURE() << "accepted " << line;
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("t.jsonl:1"), std::string::npos) << e.what();
    }
  }
  // The value is described, not written out: a deeply nested one would overflow the stack.
  const std::size_t depth = 1000000;
  std::istringstream deep(R"({"layer": 0, "experts": [)" + std::string(depth, '[') +
                          std::string(depth, ']') + "]}");
  EXPECT_THROW(parse_trace(deep, "t.jsonl"), std::runtime_error);
  std::istringstream largest(R"({"layer": 2147483647, "experts": [2147483647]})");
  EXPECT_EQ(parse_trace(largest, "t.jsonl").at(0).experts.at(0), 2147483647);
}

TEST(Simulator, ReplaysInOrderAndBeladyIsNeverBeaten) {
  // Requests: A B C A B D A B C D, one expert per line.
  std::vector<RoutingEvent> trace;
  for (int e : {0, 1, 2, 0, 1, 3, 0, 1, 2, 3}) trace.push_back({0, 0, {e}, {}});
  const std::uint64_t budgets[] = {0, 2, 3, 4};
  std::vector<std::string> policies = policy_names();
  policies.push_back("belady");
  const auto results = simulate(trace, budgets, policies);
  auto hits = [&](const std::string& p, std::uint64_t b) -> std::uint64_t {
    for (const auto& r : results)
      if (r.policy == p && r.budget_blocks == b) return r.hits;
    return ~std::uint64_t{0};
  };
  EXPECT_EQ(hits("lru", 0), 0u);
  EXPECT_EQ(hits("lru", 3), 4u);     // A B hit twice; C, D evicted in turn
  EXPECT_EQ(hits("belady", 3), 5u);  // D, requested last, is not kept at its first arrival
  EXPECT_EQ(hits("belady", 2), 4u);  // neither C nor D displaces A B
  EXPECT_EQ(hits("belady", 4), 6u);  // everything fits: only 4 cold misses
  for (auto b : budgets)
    for (const auto& name : policy_names()) EXPECT_GE(hits("belady", b), hits(name, b)) << name;
  for (const auto& r : results) EXPECT_EQ(r.requests, 10u);
  EXPECT_THROW(simulate(trace, budgets, std::vector<std::string>{"fifo"}), std::invalid_argument);
}

TEST(Simulator, WithoutPrefetchTheHitsAreThePlainSimulators) {
  const auto trace = skewed_trace(60, 6, 8);
  const std::uint64_t budgets[] = {0, 3, 6, 12, 24, 40};
  const auto& policies = policy_names();
  const auto plain = simulate(trace, budgets, policies);
  const auto none = simulate_prefetch(trace, budgets, policies, {.horizons = 0});
  ASSERT_EQ(plain.size(), none.size());
  for (std::size_t i = 0; i < plain.size(); ++i) {
    EXPECT_EQ(none[i].hits, plain[i].hits) << plain[i].policy << " at " << plain[i].budget_blocks;
    EXPECT_EQ(none[i].requests, plain[i].requests);
    EXPECT_EQ(none[i].prefetch_reads, 0u);
    EXPECT_EQ(none[i].demand_reads, plain[i].requests - plain[i].hits);
  }
  const std::string belady[] = {"belady"};
  EXPECT_THROW(simulate_prefetch(trace, budgets, belady, {}), std::invalid_argument);
  EXPECT_THROW(simulate_prefetch(trace, budgets, policies, {.horizons = 3}), std::invalid_argument);
}

TEST(Simulator, EveryIssuedPrefetchEndsOnceAndALimitedDiskCancelsStaleOnes) {
  const auto trace = skewed_trace(80, 6, 8);
  const std::uint64_t budgets[] = {4, 12, 24};
  const std::string policies[] = {"lru", "tinylfu"};
  for (const std::uint64_t reads : {0, 1, 2}) {
    std::uint64_t cancelled = 0;
    for (const auto& r :
         simulate_prefetch(trace, budgets, policies, {.width = 3, .reads_per_layer = reads})) {
      for (const auto& h : r.horizons) {
        EXPECT_EQ(h.issued, h.hits + h.late + h.wasted + h.cancelled)
            << r.policy << " at " << r.budget_blocks << ", " << reads << " reads per layer";
        EXPECT_LE(h.used, h.predicted);
        cancelled += h.cancelled;
      }
      EXPECT_EQ(r.prefetch_reads + r.horizons[0].cancelled + r.horizons[1].cancelled +
                    r.horizons[0].late + r.horizons[1].late,
                r.horizons[0].issued + r.horizons[1].issued);
      if (reads == 0) {
        EXPECT_EQ(r.horizons[0].late + r.horizons[1].late, 0u);
      } else {
        EXPECT_LE(r.prefetch_reads, reads * trace.size());
      }
    }
    // Unbounded, every prefetch is read in the layer that issued it; one read per layer cannot
    // keep up with three predictions for each of two layers, so stale ones are dropped.
    if (reads == 0) {
      EXPECT_EQ(cancelled, 0u);
    } else if (reads == 1) {
      EXPECT_GT(cancelled, 0u);
    }
  }
}

TEST(RoutingPredictor, LearnsLayerToLayerTransitions) {
  // One expert per token and layer: token t goes to expert (t + l) % 4 at layer l, so expert a
  // at layer l is always followed by a + 1 at l + 1 and a + 2 at l + 2.
  RoutingPredictor predictor(RoutingPredictor::Kind::transition, 4, 4, 2);
  for (int t = 0; t < 8; ++t)
    for (int l = 0; l < 4; ++l) {
      const std::int32_t expert[] = {(t + l) % 4};
      predictor.observe(l, expert, 1);
    }
  for (int a = 0; a < 4; ++a) {
    const std::int32_t expert[] = {a};
    predictor.observe(1, expert, 1);
    EXPECT_EQ(predictor.predict(1, 1), (std::vector<std::int32_t>{(a + 1) % 4}));
    EXPECT_EQ(predictor.predict(1, 2), (std::vector<std::int32_t>{(a + 2) % 4}));
    EXPECT_TRUE(predictor.predict(2, 2).empty());  // past the last layer
    // Wider: the learned successor, then the rest by their frequency at layer 2 (all equal),
    // the lower id first.
    const auto wide = predictor.predict(1, 1, 2);
    ASSERT_EQ(wide.size(), 2u);
    EXPECT_EQ(wide[0], (a + 1) % 4);
  }
  // A batch predicts the union of its rows' predictions.
  const std::int32_t rows[] = {0, 2};
  predictor.observe(0, rows, 1);
  EXPECT_EQ(predictor.predict(0, 1), (std::vector<std::int32_t>{1, 3}));
  const std::int32_t bad[] = {4};
  EXPECT_THROW(predictor.observe(0, bad, 1), std::invalid_argument);
  EXPECT_THROW(predictor.observe(4, rows, 1), std::invalid_argument);
  EXPECT_THROW(predictor.observe(0, rows, 3), std::invalid_argument);
  EXPECT_THROW(predictor.predict(0, 3), std::invalid_argument);
}

TEST(RoutingPredictor, PreviousPredictsTheLastTokensExpertsAhead) {
  RoutingPredictor predictor(RoutingPredictor::Kind::previous, 3, 8, 2);
  const std::int32_t token0[3][2] = {{0, 1}, {2, 3}, {4, 5}};
  for (int l = 0; l < 3; ++l) predictor.observe(l, token0[l], 2);
  const std::int32_t layer0[] = {7, 6};
  predictor.observe(0, layer0, 2);
  EXPECT_EQ(predictor.predict(0, 1), (std::vector<std::int32_t>{2, 3}));
  EXPECT_EQ(predictor.predict(0, 2), (std::vector<std::int32_t>{4, 5}));
  EXPECT_EQ(predictor.predict(0, 2, 1), (std::vector<std::int32_t>{4}));
  EXPECT_EQ(predictor_kind("previous"), RoutingPredictor::Kind::previous);
  EXPECT_THROW(predictor_kind("router"), std::invalid_argument);
}
