#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "team.hpp"

namespace moed::kernels::detail {

// Ranges of work units (row tiles, N blocks) shared by a parallel region's threads. Each range has
// an owner, which takes units from its front; a thread whose own ranges are empty takes units
// from the backs of the others'. The owners stream contiguous runs, as a static split does, and
// the threads still finish together: on a shared 2-core VM one thread often streams 5-10% slower
// than the other, and a static split left the faster one idle for that long at every region.
// Which thread computes a unit never changes its result.
class StolenRanges {
 public:
  explicit StolenRanges(std::size_t count) : ranges_(count) {}

  std::size_t size() const { return ranges_.size(); }

  // Sets range i to [begin, end); before the region that takes from it.
  void assign(std::size_t i, std::uint32_t begin, std::uint32_t end) {
    ranges_[i].bounds.store(pack(begin, end), std::memory_order_relaxed);
  }

  // Splits units [0, units) into one contiguous run per range, in order (a static split).
  void split(std::uint32_t units) {
    const std::uint64_t count = ranges_.size();
    for (std::uint64_t i = 0; i < count; ++i)
      assign(i, static_cast<std::uint32_t>(units * i / count),
             static_cast<std::uint32_t>(units * (i + 1) / count));
  }

  // Up to `chunk` units from the front (or back) of range i into [begin, end); false once the
  // range is empty.
  bool take_front(std::size_t i, std::uint32_t chunk, std::uint32_t& begin, std::uint32_t& end) {
    return take(i, chunk, true, begin, end);
  }
  bool take_back(std::size_t i, std::uint32_t chunk, std::uint32_t& begin, std::uint32_t& end) {
    return take(i, chunk, false, begin, end);
  }

  // Runs body(range, begin, end) over every unit: first the ranges thread `self` of `threads`
  // owns (those whose index is self modulo threads), front to back in chunks of `own_chunk`,
  // then the others' from their backs in chunks of `stolen_chunk`. Every unit runs exactly once
  // once each thread of the team has returned.
  template <typename Body>
  void drain(int self, int threads, std::uint32_t own_chunk, std::uint32_t stolen_chunk,
             const Body& body) {
    std::uint32_t begin = 0;
    std::uint32_t end = 0;
    const auto count = ranges_.size();
    for (auto i = static_cast<std::size_t>(self); i < count; i += static_cast<std::size_t>(threads))
      while (take_front(i, own_chunk, begin, end)) body(i, begin, end);
    for (std::size_t step = 1; step <= count; ++step) {
      const std::size_t i = (static_cast<std::size_t>(self) + step) % count;
      while (take_back(i, stolen_chunk, begin, end)) body(i, begin, end);
    }
  }

 private:
  static std::uint64_t pack(std::uint32_t begin, std::uint32_t end) {
    return (static_cast<std::uint64_t>(begin) << 32) | end;
  }

  bool take(std::size_t i, std::uint32_t chunk, bool front, std::uint32_t& begin,
            std::uint32_t& end) {
    auto& bounds = ranges_[i].bounds;
    std::uint64_t seen = bounds.load(std::memory_order_relaxed);
    for (;;) {
      const auto first = static_cast<std::uint32_t>(seen >> 32);
      const auto last = static_cast<std::uint32_t>(seen);
      if (first >= last) return false;
      const std::uint32_t n = last - first < chunk ? last - first : chunk;
      const std::uint64_t rest = front ? pack(first + n, last) : pack(first, last - n);
      if (bounds.compare_exchange_weak(seen, rest, std::memory_order_relaxed)) {
        begin = front ? first : last - n;
        end = front ? first + n : last;
        return true;
      }
    }
  }

  // One cache line each, so an owner's takes do not contend with another range's.
  struct alignas(64) Range {
    std::atomic<std::uint64_t> bounds{0};
  };
  std::vector<Range> ranges_;
};

// Runs body(first, last) over units [0, units) of work over m activation rows in one region
// (run_team), one StolenRanges range per thread: each drains its own run `own_chunk` units a
// take, then the others' from their backs `stolen_chunk` at a time.
template <typename Body>
void over_stolen_ranges(std::uint32_t units, std::int64_t m, std::uint32_t own_chunk,
                        std::uint32_t stolen_chunk, const Body& body) {
  StolenRanges ranges(static_cast<std::size_t>(compute_threads()));
  ranges.split(units);
  run_team(m, [&](const Team::Member& member) {
    ranges.drain(member.self(), member.threads(), own_chunk, stolen_chunk,
                 [&](std::size_t, std::uint32_t first, std::uint32_t last) { body(first, last); });
  });
}

}  // namespace moed::kernels::detail
