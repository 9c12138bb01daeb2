#include "moed/memtier/buffer_pool.hpp"

#include <cstdlib>

#include "moed/memtier/aligned_buffer.hpp"

namespace moed::memtier {

BufferPool::BufferPool(std::uint64_t max_spare_bytes) : state_(std::make_shared<State>()) {
  state_->counters.max_spare_bytes = max_spare_bytes;
}

BufferPool::State::~State() {
  for (auto& [size, buffer] : spare) std::free(buffer);
}

std::shared_ptr<std::byte> BufferPool::allocate(std::size_t bytes) {
  const std::size_t size = align_up(bytes);
  std::byte* buffer = nullptr;
  {
    std::lock_guard lock(state_->mutex);
    ++state_->counters.allocations;
    auto it = state_->spare.find(size);
    if (it != state_->spare.end()) {
      buffer = it->second;
      state_->spare.erase(it);
      state_->counters.spare_bytes -= size;
      ++state_->counters.reuses;
    }
  }
  if (!buffer) buffer = allocate_aligned(size);
  return std::shared_ptr<std::byte>(buffer, [state = state_, size](std::byte* released) {
    std::lock_guard lock(state->mutex);
    if (state->counters.spare_bytes + size <= state->counters.max_spare_bytes) {
      state->spare.emplace(size, released);
      state->counters.spare_bytes += size;
    } else {
      std::free(released);
    }
  });
}

BufferPool::Counters BufferPool::counters() const {
  std::lock_guard lock(state_->mutex);
  return state_->counters;
}

}  // namespace moed::memtier
