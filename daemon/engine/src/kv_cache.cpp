#include "moed/engine/kv_cache.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

namespace moed::engine {

const char* to_string(KvDtype dtype) {
  return dtype == KvDtype::bf16 ? "bf16" : "f32";
}

KvDtype parse_kv_dtype(std::string_view text) {
  if (text == "bf16") return KvDtype::bf16;
  if (text == "f32") return KvDtype::f32;
  throw std::invalid_argument("'" + std::string(text) + "' is not one of bf16, f32");
}

std::size_t kv_element_size(KvDtype dtype) {
  return dtype == KvDtype::bf16 ? 2 : 4;
}

KvCache::KvCache(std::int64_t layers, std::int64_t kv_heads, std::int64_t head_dim, KvDtype dtype,
                 std::shared_ptr<KvAccount> account, std::int64_t capacity, KvLayout layout)
    : layers_(layers),
      kv_heads_(kv_heads),
      head_dim_(head_dim),
      dtype_(dtype),
      shared_(layout == KvLayout::shared),
      account_(std::move(account)) {
  if (capacity > 0) resize(capacity);
}

KvCache::~KvCache() {
  if (account_) account_->bytes -= bytes();
}

KvCache::KvCache(KvCache&& other) noexcept
    : layers_(other.layers_),
      kv_heads_(other.kv_heads_),
      head_dim_(other.head_dim_),
      dtype_(other.dtype_),
      shared_(other.shared_),
      account_(std::move(other.account_)),
      length_(std::exchange(other.length_, 0)),
      capacity_(std::exchange(other.capacity_, 0)),
      resident_(std::exchange(other.resident_, 0)),
      storage_(std::move(other.storage_)) {}

std::size_t KvCache::head_bytes(std::int64_t positions) const {
  return static_cast<std::size_t>(positions * head_dim_) * kv_element_size(dtype_);
}

std::size_t KvCache::buffer_bytes(std::int64_t capacity) const {
  return static_cast<std::size_t>(kv_heads_) * head_bytes(capacity);
}

std::uint64_t KvCache::bytes_for(std::int64_t positions) const {
  return static_cast<std::uint64_t>(buffers()) * buffer_bytes(positions);
}

std::int64_t KvCache::capacity_for(std::int64_t positions) {
  // Whole steps of positions rather than doubling: at most one step of unused capacity.
  return (positions + kGrowthPositions - 1) / kGrowthPositions * kGrowthPositions;
}

void KvCache::reserve_more(std::int64_t extra) {
  const std::int64_t needed = length_ + extra;
  if (needed > capacity_) resize(capacity_for(needed));
  make_resident(needed);
}

void KvCache::resize(std::int64_t capacity) {
  const std::size_t total = static_cast<std::size_t>(buffers()) * buffer_bytes(capacity);
  // Huge-page aligned from 2 MiB up, its whole huge pages advised MADV_HUGEPAGE; not written,
  // so untouched pages stay unmapped until make_resident.
  memtier::AlignedBuffer fresh(total);
  const std::size_t filled = head_bytes(length_);
  for (std::int64_t b = 0; b < buffers() && filled > 0; ++b)
    for (std::int64_t h = 0; h < kv_heads_; ++h)
      std::memcpy(fresh.data() + b * kv_heads_ * head_bytes(capacity) + h * head_bytes(capacity),
                  buffer(b) + h * head_bytes(capacity_), filled);
  storage_ = std::move(fresh);
  const std::uint64_t before = bytes();
  capacity_ = capacity;
  resident_ = length_;  // the copied positions
  if (account_) account_->bytes += bytes() - before;
}

void KvCache::make_resident(std::int64_t positions) {
  if (positions <= resident_) return;
  const std::int64_t target =
      std::min(capacity_, (positions + kResidentStepPositions - 1) / kResidentStepPositions *
                              kResidentStepPositions);
  static const auto page = static_cast<std::uintptr_t>(sysconf(_SC_PAGESIZE));
  for (std::int64_t b = 0; b < buffers(); ++b)
    for (std::int64_t h = 0; h < kv_heads_; ++h) {
      // The buffer starts on a page and is whole pages long, so rounding out to whole pages
      // touches nothing outside it. A refusal (a kernel before 5.14) only leaves the pages to
      // fault in as they are written.
      const std::byte* head = buffer(b) + h * head_bytes(capacity_);
      const auto first = reinterpret_cast<std::uintptr_t>(head + head_bytes(resident_));
      const auto last = reinterpret_cast<std::uintptr_t>(head + head_bytes(target));
      const std::uintptr_t begin = first / page * page;
      const std::uintptr_t end = (last + page - 1) / page * page;
      madvise(reinterpret_cast<void*>(begin), end - begin, MADV_POPULATE_WRITE);
    }
  resident_ = target;
}

}  // namespace moed::engine
