#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <vector>

namespace moed::engine {

// Writes a little-endian float32 C-order .npy file (format version 1.0) of the given shape.
void write_npy(const std::filesystem::path& path, std::span<const float> data,
               const std::vector<std::int64_t>& shape);

}  // namespace moed::engine
