#pragma once

#include <immintrin.h>
#include <omp.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "moed/kernels/cpu_threads.hpp"

namespace moed::kernels::detail {

// Spins until `value` differs from `seen` and returns what it holds then; past `spin_limit` (the
// clock is read every 256 spins only) sleeps on it instead, counted in `sleepers` if given, so
// that a thread that changes it can skip the wake while nobody sleeps. Whoever changes it must
// notify_all where `sleepers` is null or counts someone.
template <typename T>
T spin_then_wait(const std::atomic<T>& value, T seen, std::chrono::microseconds spin_limit,
                 std::atomic<int>* sleepers = nullptr) {
  const auto give_up = std::chrono::steady_clock::now() + spin_limit;
  for (unsigned spins = 1;; ++spins) {
    const T now = value.load(std::memory_order_acquire);
    if (now != seen) return now;
    _mm_pause();
    if (spin_limit.count() == 0 ||
        (spins % 256 == 0 && std::chrono::steady_clock::now() > give_up)) {
      // Counted before the second look at the value: the thread that changes it then either
      // sees the count and wakes us, or changed it before that look.
      if (sleepers) sleepers->fetch_add(1);
      value.wait(seen);
      if (sleepers) sleepers->fetch_sub(1);
      return value.load(std::memory_order_acquire);
    }
  }
}

// A fork/join team for the regions a decode step runs back to back (about 33 a token on the
// bench model, with 64 barriers). On the 2-core VM an empty libgomp region cost 2.4-3.0 us and a
// barrier 1.6-1.7 us even with OMP_WAIT_POLICY=active, against 0.11 us for one cache line to go
// to the other core and back: this team's workers spin on one line per region and per barrier.
// A worker that finds no region for kSpinLimit sleeps (a futex) until the next one, so an idle
// daemon does not hold a core; a worker asleep wakes late on a VM (0.5-1 ms), which is why the
// limit is long next to the gaps inside a token. A worker outside a region (one of fewer
// threads than the team has) sleeps at once. Barriers and the join sleep alike after the
// limit, so that more threads than cores (one descheduled) cost sleeps rather than spins.
class Team {
 public:
  // One thread of a region: `self` of `threads`; barrier() waits for all of them.
  class Member {
   public:
    int self() const { return self_; }
    int threads() const { return threads_; }
    // This member's part [first, last) of `units` split into threads() contiguous runs, in order
    // (a static split).
    std::pair<std::int64_t, std::int64_t> share(std::int64_t units) const {
      return {units * self_ / threads_, units * (self_ + 1) / threads_};
    }
    // Every thread of the region must call it the same number of times.
    void barrier() const;

   private:
    friend class Team;
    Member(Team* team, int self, int threads) : team_(team), self_(self), threads_(threads) {}
    Team* team_;  // null: an OpenMP region's thread
    int self_;
    int threads_;
  };

  using Body = void (*)(const void* context, const Member& member);

  // Runs body(context, member) on `threads` threads, the caller being member 0, and returns
  // when all have, rethrowing member 0's exception or else the first a worker threw (a body
  // must not throw past a barrier: the others would wait there for good). Inside a region it
  // runs the body on the calling thread alone. False, having run nothing, while another
  // thread's region holds the team, for more than 255 threads, or where a worker could not be
  // started.
  bool try_run(int threads, Body body, const void* context);

  // The calling thread as a member of the OpenMP region it is in.
  static Member openmp_member() { return {nullptr, omp_get_thread_num(), omp_get_num_threads()}; }

  // Never destroyed: a worker stopped at exit could miss a region still running on another
  // thread and leave it waiting at a barrier; the workers sleep on a futex until the process
  // ends.
  static Team& instance();

 private:
  Team() = default;
  struct Line;
  // Spins until `line` differs from `seen`, then returns its value; sleeps on it past the limit
  // (at once without `spin`).
  static std::uint32_t await_change(Line& line, std::uint32_t seen, bool spin = true);
  // Member `self`'s loop, from the regions after `seen` (start_'s value when it was made).
  void work(int self, std::uint32_t seen);
  void arrive(int threads);

  // A value threads spin on; one that spun too long sleeps on it, counted in `sleepers`, and
  // whoever changes the value then wakes it (wake_sleepers).
  struct alignas(64) Line {
    std::atomic<std::uint32_t> value{0};
    std::atomic<int> sleepers{0};
    void wake_sleepers() {
      if (sleepers.load() > 0) value.notify_all();
    }
  };
  Line start_;     // bumped once per region: the workers' signal
  Line finished_;  // workers done with the current region
  Line passed_;    // barriers passed: the waiters' signal
  alignas(64) std::atomic<std::uint32_t> arrived_{0};  // threads at the current barrier
  std::atomic<bool> busy_{false};
  Body body_ = nullptr;
  const void* context_ = nullptr;
  std::mutex failure_mutex_;
  std::exception_ptr failure_;        // a worker's, for the caller to rethrow
  std::vector<std::thread> workers_;  // worker i is member i + 1
};

// Activation rows up to which work runs on the Team. A prefill's products go to oneDNN, whose
// regions are libgomp's: Team regions between them left each team's idle worker spinning on
// the core the other's needed, and bf16 prefill (512 rows) lost 3-11%. Decode, and decode
// batched over a few sessions, stays on the Team.
inline constexpr std::int64_t kTeamRowsAtMost = 16;

// Runs body(member) on compute_threads() threads for work over `rows` activation rows: on the
// Team where rows <= kTeamRowsAtMost and it is free, else in an OpenMP region (member.barrier()
// is then an OpenMP barrier). Either way the first exception a member throws (member 0's
// first) is rethrown after the region; a body must not throw past a barrier.
template <typename F>
void run_team(std::int64_t rows, const F& body) {
  const int threads = compute_threads();
  const auto trampoline = [](const void* context, const Team::Member& member) {
    (*static_cast<const F*>(context))(member);
  };
  if (rows <= kTeamRowsAtMost && Team::instance().try_run(threads, trampoline, &body)) return;
  std::mutex failure_mutex;
  std::exception_ptr failure;
#pragma omp parallel num_threads(threads)
  {
    const Team::Member member = Team::openmp_member();
    try {
      body(member);
    } catch (...) {
      const std::lock_guard lock(failure_mutex);
      if (!failure || member.self() == 0) failure = std::current_exception();
    }
  }
  if (failure) std::rethrow_exception(failure);
}

}  // namespace moed::kernels::detail
