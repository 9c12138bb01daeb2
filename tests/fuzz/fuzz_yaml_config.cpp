// The daemon's YAML config (Config::from_file, which validates too): the input is the file.

#include <cstdint>
#include <stdexcept>

#include "fuzz_input.hpp"
#include "moed/server/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const moed::fuzz::ScratchDir dir;
  const auto file = dir.write("moed.yaml", {reinterpret_cast<const char*>(data), size});
  try {
    (void)moed::server::Config::from_file(file);
  } catch (const std::runtime_error&) {
  }
  return 0;
}
