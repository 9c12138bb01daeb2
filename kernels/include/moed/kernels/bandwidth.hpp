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
  // f32 [count_], on transparent huge pages where the kernel has them (2 MiB aligned, the
  // allocation rounded up to whole huge pages).
  std::unique_ptr<float[], void (*)(float*)> buffer_;
  std::int64_t count_;
};

}  // namespace moed::kernels
