#pragma once

// A GGUF file as a model: its metadata read as a layer plan and its tensors mapped onto the
// plan's Hugging Face names, following llama.cpp's converter and loader for each architecture.

#include <map>
#include <string>

#include "moed/model/gguf.hpp"
#include "moed/model/model_spec.hpp"
#include "moed/model/safetensors.hpp"

namespace moed::model {

// The layer plan of a GGUF file: general.architecture `llama` with experts (Mixtral), `qwen2moe`,
// `qwen3moe`, `olmoe` or `deepseek2`, and its {arch}.* keys as llama.cpp reads them, with
// llama.cpp's defaults and semantics where they differ from Hugging Face's: top-k renormalisation
// fixed per architecture (deepseek2: expert_weights_norm), deepseek2's gating function and
// group keys, RoPE on adjacent pairs for `llama` (whose converter permutes the q/k rows) and
// `deepseek2`. Throws std::runtime_error naming the file and key.
ModelSpec spec_from_gguf(const GgufFile& file);

// The file's tensors under the plan's Hugging Face names (dense_tensors, expert_tensor), each with
// its shape in Hugging Face order: llama.cpp's names (blk.N.attn_q.weight, ...), experts as
// slices of the merged blk.N.ffn_{gate,up,down}_exps tensors or the older per-expert
// blk.N.ffn_gate.E.weight. Throws std::runtime_error naming the file and tensor for a missing,
// misshapen, unexpected or uncomputable (ggml type) tensor.
std::map<std::string, TensorInfo> gguf_plan_tensors(const GgufFile& file, const ModelSpec& spec);

}  // namespace moed::model
