#include "team.hpp"

#include <chrono>
#include <system_error>
#include <utility>

namespace moed::kernels::detail {

namespace {

// Three times the daemon's libgomp spin (GOMP_SPINCOUNT=10000, about 100 us on the 2-core VM):
// long next to the gaps between a token's regions, which include the sampler and, batched, a
// few sessions' bookkeeping; short next to a client's think time.
constexpr auto kSpinLimit = std::chrono::microseconds(300);

// Set on a thread while it runs a Team region's body: a region asked for there runs inline.
thread_local bool in_region = false;

// start_ holds a region's number in its high bits and its thread count in the low byte, so that
// a worker outside a region reads nothing the next region writes.
constexpr std::uint32_t kThreadBits = 8;
constexpr std::uint32_t kThreadMask = (1u << kThreadBits) - 1;

std::uint32_t next_start(std::uint32_t start, int threads) {
  return ((start >> kThreadBits) + 1) << kThreadBits | static_cast<std::uint32_t>(threads);
}

}  // namespace

std::uint32_t Team::await_change(Line& line, std::uint32_t seen, bool spin) {
  return spin_then_wait(line.value, seen, spin ? kSpinLimit : std::chrono::microseconds(0),
                        &line.sleepers);
}

Team& Team::instance() {
  static Team& team = *new Team;
  return team;
}

bool Team::try_run(int threads, Body body, const void* context) {
  if (threads <= 1 || in_region) {
    body(context, Member(this, 0, 1));
    return true;
  }
  if (static_cast<std::uint32_t>(threads) > kThreadMask) return false;
  if (busy_.exchange(true, std::memory_order_acquire)) return false;
  try {
    while (static_cast<int>(workers_.size()) < threads - 1) {
      const int self = static_cast<int>(workers_.size()) + 1;
      workers_.emplace_back([this, self, seen = start_.value.load()] { work(self, seen); });
    }
  } catch (const std::system_error&) {
    busy_.store(false, std::memory_order_release);
    return false;  // no thread to be had: the caller's OpenMP region copes with fewer
  }
  body_ = body;
  context_ = context;
  finished_.value.store(0, std::memory_order_relaxed);
  start_.value.store(next_start(start_.value.load(std::memory_order_relaxed), threads));
  start_.wake_sleepers();

  std::exception_ptr failure;
  in_region = true;
  try {
    body(context, Member(this, 0, threads));
  } catch (...) {
    failure = std::current_exception();
  }
  in_region = false;
  for (std::uint32_t done = 0; static_cast<int>(done) < threads - 1;)
    done = await_change(finished_, done);
  if (!failure) failure = std::exchange(failure_, nullptr);
  failure_ = nullptr;
  busy_.store(false, std::memory_order_release);
  if (failure) std::rethrow_exception(failure);
  return true;
}

void Team::work(int self, std::uint32_t seen) {
  in_region = true;  // for good: this thread runs nothing but region bodies
  for (bool member = true;;) {
    // A worker outside the last region (one of fewer threads) sleeps at once: spinning after
    // each region it is not in, it would hold a core for good while regions come often.
    seen = await_change(start_, seen, member);
    const auto threads = static_cast<int>(seen & kThreadMask);
    member = self < threads;
    if (!member) continue;  // not counted in finished_
    try {
      body_(context_, Member(this, self, threads));
    } catch (...) {
      std::lock_guard lock(failure_mutex_);
      if (!failure_) failure_ = std::current_exception();
    }
    finished_.value.fetch_add(1);
    finished_.wake_sleepers();
  }
}

void Team::arrive(int threads) {
  const std::uint32_t passed = passed_.value.load(std::memory_order_acquire);
  if (static_cast<int>(arrived_.fetch_add(1, std::memory_order_acq_rel)) + 1 == threads) {
    arrived_.store(0, std::memory_order_relaxed);
    passed_.value.fetch_add(1);  // seq_cst, as every change wake_sleepers follows
    passed_.wake_sleepers();
    return;
  }
  await_change(passed_, passed);
}

void Team::Member::barrier() const {
  if (threads_ <= 1) return;
  if (team_) {
    team_->arrive(threads_);
    return;
  }
#pragma omp barrier
}

}  // namespace moed::kernels::detail
