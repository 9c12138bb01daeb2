#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "moed/memtier/policy.hpp"

namespace moed::cli {

struct ModelArgs {
  std::string model_dir;
  int threads = 0;
  std::string
      host_budget;  // "" (all resident), a size ("512MiB") or a share of expert bytes ("25%")
  std::string policy{memtier::kDefaultPolicy};
  std::string reader = "io_uring";
  std::uint32_t queue_depth = 64;
  bool no_prefetch = false;
  int prefetch_horizon = 2;
  std::string kv_dtype = "bf16";
  std::string trace;  // JSON Lines routing trace to write
};

struct LogitsArgs : ModelArgs {
  std::string tokens;
  std::string out;
};

struct GenerateArgs : ModelArgs {
  std::string prompt;
  std::int64_t max_new = 32;
  std::uint64_t seed = 0;
  float temperature = 0.0f;
  std::int32_t top_k = 0;
  float top_p = 1.0f;
  bool print_ids = false;
};

struct TokenizeArgs {
  std::string model_dir;
  std::optional<std::string> text;
  std::optional<std::string> jsonl;  // a file of JSON strings, one per line
  bool no_special = false;
};

struct BenchArgs : ModelArgs {
  std::int64_t prompt_tokens = 512;
  std::int64_t decode_tokens = 64;
  // Far beyond any last-level cache, yet small enough to stay warm: under a host budget a decode
  // round takes seconds, and on the development VM (which runs DAMON's pageout scheme) a 1 GiB
  // buffer left idle that long read back at 2.5-10 GB/s instead of 29, putting decode above 100%
  // of its "bound".
  std::int64_t bandwidth_mib = 256;
  bool json = false;
  bool drop_caches = false;
};

struct PerplexityArgs : ModelArgs {
  std::string file;
  std::int64_t context = 0;  // 0: 512, or max_position_embeddings when smaller
  bool json = false;
};

struct InfoArgs {
  std::string model_dir;
  std::string host_budget;  // as ModelArgs: where the bytes would live under it
  bool json = false;
};

int run_logits(const LogitsArgs& args);
int run_info(const InfoArgs& args);
int run_generate(const GenerateArgs& args);
int run_tokenize(const TokenizeArgs& args);
int run_bench(const BenchArgs& args);
int run_perplexity(const PerplexityArgs& args);

}  // namespace moed::cli
