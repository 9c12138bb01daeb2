#pragma once

#include <cstddef>

namespace moed::kernels {

// Measures the machine's memory read bandwidth in bytes/s: the best of `repeats` passes of a
// streaming sum over a `bytes`-sized buffer (far larger than the caches), on the current compute
// threads. This is the bound a memory-bound decode step lives under.
double measure_read_bandwidth(std::size_t bytes, int repeats);

}  // namespace moed::kernels
