#pragma once

namespace moed::kernels {

// Physical cores from hwloc (one compute thread each by default); at least 1. Loaded once.
int physical_core_count();
// Sets the OpenMP thread count that oneDNN and our own loops use, for the calling thread only:
// OpenMP keeps the count per thread, so each thread that computes must set it itself.
void set_compute_threads(int threads);
// The OpenMP thread count of the calling thread.
int compute_threads();

}  // namespace moed::kernels
