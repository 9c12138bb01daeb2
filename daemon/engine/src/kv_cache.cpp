#include "moed/engine/kv_cache.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

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
    : kv_heads_(kv_heads),
      head_dim_(head_dim),
      dtype_(dtype),
      account_(std::move(account)),
      keys_(static_cast<std::size_t>(layers)),
      values_(layout == KvLayout::shared ? 0 : static_cast<std::size_t>(layers)) {
  if (capacity > 0) resize(capacity);
}

KvCache::~KvCache() {
  if (account_) account_->bytes -= bytes();
}

KvCache::KvCache(KvCache&& other) noexcept
    : kv_heads_(other.kv_heads_),
      head_dim_(other.head_dim_),
      dtype_(other.dtype_),
      account_(std::move(other.account_)),
      length_(other.length_),
      capacity_(other.capacity_),
      resident_(other.resident_),
      keys_(std::move(other.keys_)),
      values_(std::move(other.values_)) {
  other.length_ = 0;
  other.capacity_ = 0;
  other.resident_ = 0;
}

std::uint64_t KvCache::bytes_for(std::int64_t positions) const {
  return (keys_.size() + values_.size()) *
         static_cast<std::uint64_t>(kv_heads_ * positions * head_dim_) * kv_element_size(dtype_);
}

void KvCache::reserve_more(std::int64_t extra) {
  const std::int64_t needed = length_ + extra;
  if (needed > capacity_)
    // Whole steps of positions rather than doubling: at most one step of unused capacity.
    resize((needed + kGrowthPositions - 1) / kGrowthPositions * kGrowthPositions);
  make_resident(needed);
}

void KvCache::make_resident(std::int64_t positions) {
  if (positions <= resident_) return;
  const std::int64_t target =
      std::min(capacity_, (positions + kResidentAheadPositions - 1) / kResidentAheadPositions *
                              kResidentAheadPositions);
  const std::size_t element = kv_element_size(dtype_);
  const std::size_t head_bytes = static_cast<std::size_t>(capacity_ * head_dim_) * element;
  const std::size_t from = static_cast<std::size_t>(resident_ * head_dim_) * element;
  const std::size_t to = static_cast<std::size_t>(target * head_dim_) * element;
  static const auto page = static_cast<std::uintptr_t>(sysconf(_SC_PAGESIZE));
  const auto populate = [&](std::byte* buffer) {
    for (std::int64_t h = 0; h < kv_heads_; ++h) {
      // The pages that hold these bytes lie inside the allocation's mapping, so rounding out to
      // whole pages touches nothing outside it. A refusal (a kernel before 5.14) only leaves
      // the pages to fault in as they are written.
      const auto first = reinterpret_cast<std::uintptr_t>(buffer + h * head_bytes + from);
      const auto last = reinterpret_cast<std::uintptr_t>(buffer + h * head_bytes + to);
      const std::uintptr_t begin = first / page * page;
      const std::uintptr_t end = (last + page - 1) / page * page;
      madvise(reinterpret_cast<void*>(begin), end - begin, MADV_POPULATE_WRITE);
    }
  };
  for (auto& k : keys_) populate(k.get());
  for (auto& v : values_) populate(v.get());
  resident_ = target;
}

void KvCache::resize(std::int64_t capacity) {
  const std::size_t element = kv_element_size(dtype_);
  const std::size_t head_bytes = static_cast<std::size_t>(capacity * head_dim_) * element;
  const std::size_t old_head_bytes = static_cast<std::size_t>(capacity_ * head_dim_) * element;
  const std::size_t filled = static_cast<std::size_t>(length_ * head_dim_) * element;
  auto regrow = [&](std::unique_ptr<std::byte[]>& old) {
    // Default-initialised: no pass over the memory, so untouched pages stay unmapped.
    auto fresh = std::unique_ptr<std::byte[]>(new std::byte[head_bytes * kv_heads_]);
    for (std::int64_t h = 0; h < kv_heads_ && filled > 0; ++h)
      std::memcpy(fresh.get() + h * head_bytes, old.get() + h * old_head_bytes, filled);
    old = std::move(fresh);
  };
  for (auto& k : keys_) regrow(k);
  for (auto& v : values_) regrow(v);
  const std::uint64_t before = bytes();
  capacity_ = capacity;
  resident_ = length_;  // the copied positions
  if (account_) account_->bytes += bytes() - before;
}

}  // namespace moed::engine
