// The GGUF reader: input = one GGUF file. Every tensor it accepts must lie inside the mapping
// and dequantize (when moed handles its type) without reading past its bytes; every typed
// getter must answer or throw, never crash. A file that opens is then read as a model (layer
// plan from its metadata, tensors mapped onto the plan, tokenizer): errors, never crashes.

#include <cstdint>
#include <stdexcept>
#include <vector>

#include "fuzz_input.hpp"
#include "moed/kernels/quant.hpp"
#include "moed/model/gguf.hpp"
#include "moed/model/gguf_model.hpp"
#include "moed/model/tokenizer.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const moed::fuzz::ScratchDir dir;
  const auto path = dir.write("model.gguf", moed::fuzz::split_parts(data, size, 1)[0]);
  try {
    const moed::model::GgufFile file(path);
    for (const auto& [key, value] : file.metadata().entries()) {
      try {
        (void)value.type_description();
        (void)file.metadata().get_integer(key);
      } catch (const std::runtime_error&) {
      }
      try {
        (void)file.metadata().get_string_array(key);
      } catch (const std::runtime_error&) {
      }
    }
    std::vector<float> row;
    for (const auto& tensor : file.tensors()) {
      if (!moed::kernels::ggml_type_supported(tensor.type)) continue;
      // One row is enough to cover the decoder; the bytes of the whole tensor are touched.
      const std::uint64_t row_elements = tensor.dims.empty() ? 1 : tensor.dims[0];
      if (row_elements > (1u << 20)) continue;
      row.resize(row_elements);
      moed::kernels::dequantize_row(tensor.type, tensor.data, row.data(),
                                    static_cast<std::int64_t>(row_elements));
      volatile std::uint8_t sink = static_cast<std::uint8_t>(tensor.data[tensor.nbytes - 1]);
      (void)sink;
    }
    try {
      const auto spec = moed::model::spec_from_gguf(file);
      const auto tensors = moed::model::gguf_plan_tensors(file, spec);
      for (const auto& [name, info] : tensors) {
        volatile std::uint8_t sink = static_cast<std::uint8_t>(
            file.files().at(info.file).bytes(info.file_offset, info.nbytes).back());
        (void)sink;
      }
    } catch (const std::runtime_error&) {
    } catch (const std::invalid_argument&) {
    }
    try {
      const auto tokenizer = moed::model::Tokenizer::from_gguf(file.metadata(), "model.gguf");
      (void)tokenizer.decode(tokenizer.encode("Hello, world 123"));
    } catch (const std::runtime_error&) {
    } catch (const std::invalid_argument&) {
    }
  } catch (const std::runtime_error&) {
  }
  return 0;
}
