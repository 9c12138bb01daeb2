#pragma once

namespace moed::kernels {

// Physical cores from hwloc (one compute thread each by default); at least 1. Loaded once.
int physical_core_count();
// Sets the OpenMP thread count that oneDNN and our own loops use, for the calling thread only:
// OpenMP keeps the count per thread, so each thread that computes must set it itself.
void set_compute_threads(int threads);
// The OpenMP thread count of the calling thread.
int compute_threads();
// Ends the calling thread's idle OpenMP worker threads; its next parallel region starts new ones.
// libgomp shortens every worker's spin to 1000 turns once it manages more threads than there are
// cores, so a second thread's idle team (the loader's packer, after it packed on every core)
// would make the compute team's workers sleep between regions and the compute thread wake each
// through the kernel. libgomp only; elsewhere it does nothing.
void release_thread_team();

}  // namespace moed::kernels
