#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace moed::memtier {

// Parses "24GiB", "512MiB", "64KiB", "1.5GB", "4096" (bytes); IEC units are powers of 1024, SI
// units powers of 1000. Throws std::invalid_argument quoting the text when it is not a size.
std::uint64_t parse_byte_size(std::string_view text);
// 1536 MiB -> "1.50GiB": the largest IEC unit that keeps the number >= 1.
std::string format_byte_size(std::uint64_t bytes);

}  // namespace moed::memtier
