// config.json -> ModelSpec: the input is the file.

#include <cstdint>
#include <stdexcept>

#include "fuzz_input.hpp"
#include "moed/model/model_spec.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const moed::fuzz::ScratchDir dir;
  dir.write("config.json", {reinterpret_cast<const char*>(data), size});
  try {
    (void)moed::model::ModelSpec::from_config(dir.path());
  } catch (const std::runtime_error&) {
  }
  return 0;
}
