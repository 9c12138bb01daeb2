// The safetensors header parser and the shard index: input = model.safetensors.index.json, NUL,
// a safetensors file. The index may name that file ("model.safetensors") or others.

#include <cstdint>
#include <stdexcept>

#include "fuzz_input.hpp"
#include "moed/model/checkpoint.hpp"
#include "moed/model/safetensors.hpp"

namespace {

// The seed corpus's Mixtral (scripts/make-tiny-model.py --vocab 300 --hidden 4 --layers 1
// --experts 1 --top-k 1 --ffn 2 --heads 2 --kv-heads 1): the checkpoint check runs in full.
moed::model::ModelSpec tiny_spec() {
  moed::model::ModelSpec spec;
  spec.model_type = "mixtral";
  spec.vocab_size = 300;
  spec.hidden_size = 4;
  spec.intermediate_size = 2;
  spec.num_layers = 1;
  spec.layers = {moed::model::LayerKinds{}};
  spec.attention.heads = 2;
  spec.attention.kv_heads = 1;
  spec.attention.head_dim = 2;
  spec.num_experts = 1;
  spec.experts_per_token = 1;
  return spec;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const moed::fuzz::ScratchDir dir;
  static const moed::model::ModelSpec spec = tiny_spec();
  const auto parts = moed::fuzz::split_parts(data, size, 2);
  const auto shard = dir.write("model.safetensors", parts[1]);
  try {
    const moed::model::SafetensorsFile file(shard);
    // Every tensor's bytes must lie inside the mapping: touch the first and last.
    volatile std::uint8_t sink = 0;
    for (const auto& [name, tensor] : file.tensors()) {
      if (tensor.nbytes == 0) continue;
      const std::byte* bytes = file.data(tensor);
      sink = sink + static_cast<std::uint8_t>(bytes[0]) +
             static_cast<std::uint8_t>(bytes[tensor.nbytes - 1]);
    }
  } catch (const std::runtime_error&) {
  }
  dir.write("model.safetensors.index.json", parts[0]);
  try {
    const moed::model::Checkpoint checkpoint(dir.path(), spec);
    (void)checkpoint.total_bytes();
  } catch (const std::runtime_error&) {
  }
  return 0;
}
