#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace moed::kernels {

// Measures the machine's memory read bandwidth in bytes/s: a streaming sum over a buffer far
// larger than the caches, on the current compute threads, with the widest vector loads the CPU
// has. This is the bound a memory-bound decode step lives under. The buffer is allocated and
// touched once, so repeated probes cost only the reads.
class ReadBandwidthProbe {
 public:
  explicit ReadBandwidthProbe(std::size_t bytes);
  // Best of `repeats` passes, in bytes/s. Throws std::logic_error if a pass did not read the
  // whole buffer (its sum is checked).
  double measure(int repeats);

 private:
  std::unique_ptr<float[], void (*)(float*)> buffer_;  // f32 [count_], 64-byte aligned
  std::int64_t count_;
};

}  // namespace moed::kernels
