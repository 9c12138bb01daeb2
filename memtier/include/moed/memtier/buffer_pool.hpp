#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>

namespace moed::memtier {

// Recycles the host buffers that packed blocks live in. Blocks of a model come in a few sizes
// and are evicted and loaded all the time; a fresh multi-MiB allocation pays a page fault per
// 4 KiB (on a VM, about as long as reading the block from NVMe), a recycled one pays nothing.
// At most `max_spare_bytes` of released buffers are kept for reuse, the most recently released
// (the oldest spares go back to the OS first), so the pool adds a fixed, stated amount to RSS and
// holds the sizes in use now: a quantized model's layers differ in size (q4_K_M: some ffn_down in
// q6_K), and a pool that kept its first spares and freed later releases kept whichever sizes
// came back first; under prefetch at a 25% budget a tenth of the loads then faulted in fresh
// pages. Thread-safe; buffers may outlive the pool.
class BufferPool {
 public:
  explicit BufferPool(std::uint64_t max_spare_bytes);

  // At least `bytes`, aligned as allocate_aligned gives it (huge pages from 2 MiB up); goes back
  // to the pool when the last owner drops it.
  std::shared_ptr<std::byte> allocate(std::size_t bytes);

  struct Counters {
    std::uint64_t allocations = 0, reuses = 0, spare_bytes = 0, max_spare_bytes = 0;
  };
  Counters counters() const;

 private:
  struct State {
    std::mutex mutex;
    struct Spare {
      std::size_t size;
      std::byte* buffer;
    };
    std::deque<Spare> spare;  // oldest release first
    Counters counters;
    ~State();
  };
  std::shared_ptr<State> state_;
};

}  // namespace moed::memtier
