// The routing-trace reader (JSON Lines), then the cache simulation over what it accepted.

#include <array>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

#include "moed/memtier/trace.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::istringstream in(std::string(reinterpret_cast<const char*>(data), size));
  try {
    const auto events = moed::memtier::parse_trace(in, "trace.jsonl");
    static const std::array<std::uint64_t, 3> budgets = {0, 1, 3};
    static const std::array<std::string, 5> policies = {"lru", "lfu", "arc", "tinylfu", "belady"};
    (void)moed::memtier::simulate(events, budgets, policies);
  } catch (const std::runtime_error&) {
  }
  return 0;
}
