#pragma once

namespace moed::kernels {

// Physical cores from hwloc (one compute thread each by default); at least 1.
int physical_core_count();
// Sets the OpenMP thread count that oneDNN and our own loops use.
void set_compute_threads(int threads);
int compute_threads();

}  // namespace moed::kernels
