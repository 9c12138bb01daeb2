#include "moed/engine/kv_cache.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
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

std::size_t KvCache::buffer_bytes(std::int64_t capacity) const {
  return static_cast<std::size_t>(kv_heads_ * capacity * head_dim_) * kv_element_size(dtype_);
}

std::uint64_t KvCache::bytes_for(std::int64_t positions) const {
  return static_cast<std::uint64_t>(buffers()) * buffer_bytes(positions);
}

void KvCache::reserve_more(std::int64_t extra) {
  const std::int64_t needed = length_ + extra;
  if (needed > capacity_)
    // Whole steps of positions rather than doubling: at most one step of unused capacity.
    resize((needed + kGrowthPositions - 1) / kGrowthPositions * kGrowthPositions);
  make_resident(needed);
}

namespace {

constexpr std::size_t kHugePage = std::size_t{2} << 20;

// A fresh anonymous mapping of `bytes` (a whole number of huge pages) aligned to a huge page:
// mapped one huge page larger, then trimmed at both ends.
std::byte* map_aligned(std::size_t bytes) {
  const std::size_t padded = bytes + kHugePage;
  void* mapped = mmap(nullptr, padded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mapped == MAP_FAILED)
    throw std::runtime_error("KV cache: cannot map " + std::to_string(bytes) +
                             " bytes: " + std::strerror(errno));
  const auto start = reinterpret_cast<std::uintptr_t>(mapped);
  const std::uintptr_t aligned = (start + kHugePage - 1) / kHugePage * kHugePage;
  if (aligned > start) munmap(mapped, aligned - start);
  const std::uintptr_t tail = start + padded - (aligned + bytes);
  if (tail > 0) munmap(reinterpret_cast<void*>(aligned + bytes), tail);
  return reinterpret_cast<std::byte*>(aligned);
}

}  // namespace

void KvCache::Unmap::operator()(std::byte* mapping) const {
  munmap(mapping, bytes);
}

void KvCache::resize(std::int64_t capacity) {
  const std::size_t element = kv_element_size(dtype_);
  const std::size_t head_bytes = static_cast<std::size_t>(capacity * head_dim_) * element;
  const std::size_t old_head_bytes = static_cast<std::size_t>(capacity_ * head_dim_) * element;
  const std::size_t filled = static_cast<std::size_t>(length_ * head_dim_) * element;
  const std::size_t total = static_cast<std::size_t>(buffers()) * buffer_bytes(capacity);
  std::unique_ptr<std::byte, Unmap> fresh;
  if (total > 0) {
    // Whole huge pages, so that the last is not shared with another mapping.
    const std::size_t rounded = (total + kHugePage - 1) / kHugePage * kHugePage;
    fresh = std::unique_ptr<std::byte, Unmap>(map_aligned(rounded), Unmap{rounded});
    // Advice only: without transparent huge pages the buffers are in 4 KiB pages.
    madvise(fresh.get(), rounded, MADV_HUGEPAGE);
    for (std::int64_t b = 0; b < buffers() && filled > 0; ++b)
      for (std::int64_t h = 0; h < kv_heads_; ++h)
        std::memcpy(fresh.get() + b * kv_heads_ * head_bytes + h * head_bytes,
                    buffer(b) + h * old_head_bytes, filled);
  }
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
  const std::size_t element = kv_element_size(dtype_);
  const std::size_t head_bytes = static_cast<std::size_t>(capacity_ * head_dim_) * element;
  const std::size_t from = static_cast<std::size_t>(resident_ * head_dim_) * element;
  const std::size_t to = static_cast<std::size_t>(target * head_dim_) * element;
  static const auto page = static_cast<std::uintptr_t>(sysconf(_SC_PAGESIZE));
  for (std::int64_t b = 0; b < buffers(); ++b)
    for (std::int64_t h = 0; h < kv_heads_; ++h) {
      // The mapping starts on a page and is whole pages long, so rounding out to whole pages
      // touches nothing outside it. A refusal (a kernel before 5.14) only leaves the
      // pages to fault in as they are written.
      const auto first = reinterpret_cast<std::uintptr_t>(buffer(b) + h * head_bytes + from);
      const auto last = reinterpret_cast<std::uintptr_t>(buffer(b) + h * head_bytes + to);
      const std::uintptr_t begin = first / page * page;
      const std::uintptr_t end = (last + page - 1) / page * page;
      madvise(reinterpret_cast<void*>(begin), end - begin, MADV_POPULATE_WRITE);
    }
  resident_ = target;
}

}  // namespace moed::engine
