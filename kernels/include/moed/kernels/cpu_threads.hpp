#pragma once

#include <chrono>
#include <cstdint>
#include <functional>

namespace moed::kernels {

// Physical cores from hwloc (one compute thread each by default); at least 1. Loaded once.
int physical_core_count();
// Sets the OpenMP thread count that oneDNN and our own loops use, for the calling thread only:
// OpenMP keeps the count per thread, so each thread that computes must set it itself.
void set_compute_threads(int threads);
// The OpenMP thread count of the calling thread.
int compute_threads();
// Runs `wait` (which blocks, e.g. on a weight block being read) on the calling thread while the
// other compute_threads() - 1 threads of the compute team spin, for at most `spin_limit`, then
// sleep until it returns. A worker that slept through such a wait woke 0.5-1 ms late for the
// next parallel region on the 2-core VM; spinning, it is there at once. `rows`: the activation
// rows of the step that waits, which choose its team as they choose its regions' (the compute
// Team up to 16 rows, libgomp's beyond: kernels/cpu/team.hpp). Where the team has one thread,
// just calls `wait`. Rethrows what `wait` throws.
void wait_with_team_awake(const std::function<void()>& wait, std::chrono::microseconds spin_limit,
                          std::int64_t rows);

}  // namespace moed::kernels
