#include "moed/memtier/buffer_pool.hpp"

#include <algorithm>
#include <cstdlib>

#include "moed/memtier/aligned_buffer.hpp"

namespace moed::memtier {

BufferPool::BufferPool(std::uint64_t max_spare_bytes) : state_(std::make_shared<State>()) {
  state_->counters.max_spare_bytes = max_spare_bytes;
}

BufferPool::State::~State() {
  for (const auto& s : spare) std::free(s.buffer);
}

std::shared_ptr<std::byte> BufferPool::allocate(std::size_t bytes) {
  const std::size_t size = align_up(bytes);
  std::byte* buffer = nullptr;
  {
    std::lock_guard lock(state_->mutex);
    ++state_->counters.allocations;
    auto& spare = state_->spare;
    const auto it = std::find_if(spare.rbegin(), spare.rend(),
                                 [&](const State::Spare& s) { return s.size == size; });
    if (it != spare.rend()) {
      buffer = it->buffer;
      spare.erase(std::next(it).base());
      state_->counters.spare_bytes -= size;
      ++state_->counters.reuses;
    }
  }
  if (!buffer) buffer = allocate_aligned(size);
  return std::shared_ptr<std::byte>(buffer, [state = state_, size](std::byte* released) {
    // Frees the oldest spares under the lock (free is quick), without a list of its own to fill.
    std::lock_guard lock(state->mutex);
    auto& c = state->counters;
    if (size > c.max_spare_bytes) {
      std::free(released);
      return;
    }
    state->spare.push_back({size, released});
    c.spare_bytes += size;
    while (c.spare_bytes > c.max_spare_bytes) {
      std::free(state->spare.front().buffer);
      c.spare_bytes -= state->spare.front().size;
      state->spare.pop_front();
    }
  });
}

BufferPool::Counters BufferPool::counters() const {
  std::lock_guard lock(state_->mutex);
  return state_->counters;
}

}  // namespace moed::memtier
