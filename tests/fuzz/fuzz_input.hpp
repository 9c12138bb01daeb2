#pragma once

// Helpers the fuzz targets share: splitting one input into parts, handing parsers that read
// files a real file, and checking that a constraint's prefix can go on.

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

namespace moed::fuzz {

// Splits the input at NUL bytes into at most `count` parts (the last keeps any further NULs);
// missing parts are empty. Text formats hold no NUL, so mutations keep the parts apart.
inline std::vector<std::string_view> split_parts(const std::uint8_t* data, std::size_t size,
                                                 std::size_t count) {
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> parts;
  while (parts.size() + 1 < count) {
    const auto nul = rest.find('\0');
    if (nul == std::string_view::npos) break;
    parts.push_back(rest.substr(0, nul));
    rest.remove_prefix(nul + 1);
  }
  parts.push_back(rest);
  parts.resize(count);
  return parts;
}

// A directory of this process's own (in /dev/shm when there is one: the targets write a file
// per input), removed at exit.
class ScratchDir {
 public:
  ScratchDir() {
    const std::filesystem::path base = std::filesystem::is_directory("/dev/shm")
                                           ? "/dev/shm"
                                           : std::filesystem::temp_directory_path();
    path_ = base / ("moed-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  const std::filesystem::path& path() const { return path_; }

  // Writes `content` to NAME in the directory, replacing what was there; returns its path.
  std::filesystem::path write(const std::string& name, std::string_view content) const {
    const auto file = path_ / name;
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    return file;
  }

 private:
  std::filesystem::path path_;
};

// A prefix of a constrained answer (JsonPrefix, PatternPrefix, SchemaPrefix) that is not
// complete has a byte that may come next: a constrained answer never dead-ends.
template <class Prefix>
void require_a_next_byte(const Prefix& prefix) {
  if (prefix.complete()) return;
  for (int byte = 0; byte < 256; ++byte) {
    Prefix trial = prefix;
    if (trial.feed(static_cast<unsigned char>(byte))) return;
  }
  std::abort();
}

}  // namespace moed::fuzz
