#include "moed/kernels/cpu_threads.hpp"

#include <hwloc.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <thread>

#include "team.hpp"

namespace moed::kernels {

namespace {

int count_physical_cores() {
  hwloc_topology_t topology;
  if (hwloc_topology_init(&topology) != 0) return std::max(1u, std::thread::hardware_concurrency());
  int cores = 0;
  if (hwloc_topology_load(topology) == 0)
    cores = hwloc_get_nbobjs_by_type(topology, HWLOC_OBJ_CORE);
  hwloc_topology_destroy(topology);
  if (cores <= 0) cores = static_cast<int>(std::thread::hardware_concurrency());
  return std::max(1, cores);
}

}  // namespace

int physical_core_count() {
  // A full topology load takes milliseconds; the loader asks for every urgent block.
  static const int cores = count_physical_cores();
  return cores;
}

void set_compute_threads(int threads) {
  omp_set_num_threads(std::max(1, threads));
}

int compute_threads() {
  return omp_get_max_threads();
}

void wait_with_team_awake(const std::function<void()>& wait, std::chrono::microseconds spin_limit,
                          std::int64_t rows) {
  const int threads = compute_threads();
  if (threads < 2) {
    wait();
    return;
  }
  std::atomic<bool> done{false};
  std::exception_ptr error;
  detail::run_team(rows, [&](const detail::Team::Member& member) {
    if (member.self() == 0) {
      try {
        wait();
      } catch (...) {
        error = std::current_exception();
      }
      done.store(true, std::memory_order_release);
      done.notify_all();
    } else {
      detail::spin_then_wait(done, false, spin_limit);
    }
  });
  if (error) std::rethrow_exception(error);
}

}  // namespace moed::kernels
