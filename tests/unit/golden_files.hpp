#pragma once

// Reading the golden files scripts/make-golden.sh writes, and comparing logits with them.

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "moed/engine/engine.hpp"

namespace {

const std::filesystem::path kModels = MOED_TEST_MODELS;
const std::filesystem::path kGolden = MOED_GOLDEN_DIR;

struct Array {
  std::vector<std::int64_t> shape;
  std::vector<float> data;
};

// Reads the float32 C-order .npy files reference.py writes (format 1.0).
Array read_npy(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(in)), {});
  if (all.size() < 10 || all.compare(0, 6, "\x93NUMPY") != 0) throw std::runtime_error("not npy");
  const std::size_t header_len =
      static_cast<unsigned char>(all[8]) | (static_cast<unsigned char>(all[9]) << 8);
  const std::string header = all.substr(10, header_len);
  if (header.find("'<f4'") == std::string::npos) throw std::runtime_error("not float32");
  Array a;
  std::stringstream dims(
      header.substr(header.find('(') + 1, header.find(')') - header.find('(') - 1));
  std::string item;
  while (std::getline(dims, item, ','))
    if (item.find_first_not_of(' ') != std::string::npos) a.shape.push_back(std::stoll(item));
  a.data.resize((all.size() - 10 - header_len) / 4);
  std::memcpy(a.data.data(), all.data() + 10 + header_len, a.data.size() * 4);
  return a;
}

std::vector<std::int32_t> read_tokens(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::vector<std::int32_t> ids;
  std::string item;
  while (std::getline(in, item, ',')) ids.push_back(std::stoi(item));
  return ids;
}

struct Comparison {
  double relative_error;  // max |diff| / max |reference|
  int argmax_mismatches;
};

Comparison compare(const std::vector<float>& got, const std::vector<float>& want,
                   std::int64_t vocab) {
  double max_diff = 0, max_ref = 0;
  int mismatches = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    max_diff = std::max(max_diff, double(std::abs(got[i] - want[i])));
    max_ref = std::max(max_ref, double(std::abs(want[i])));
  }
  for (std::size_t row = 0; row < want.size() / vocab; ++row) {
    auto g = got.begin() + row * vocab, w = want.begin() + row * vocab;
    if (std::max_element(g, g + vocab) - g != std::max_element(w, w + vocab) - w) ++mismatches;
  }
  return {max_diff / max_ref, mismatches};
}

std::vector<float> prefill_logits(moed::engine::Engine& engine,
                                  const std::vector<std::int32_t>& tokens) {
  auto cache = engine.new_cache();
  std::vector<float> logits;
  engine.forward(tokens, cache, logits, true);
  return logits;
}

// Logits of a 4-token prefill (every row), then of each decode step over the rest of the tokens.
std::vector<float> prefill_then_decode(moed::engine::Engine& engine,
                                       const std::vector<std::int32_t>& tokens) {
  auto cache = engine.new_cache();
  std::vector<float> logits, all;
  engine.forward(std::span(tokens).first(4), cache, logits, true);
  all = logits;
  for (std::size_t i = 4; i < tokens.size(); ++i) {
    engine.forward(std::span(tokens).subspan(i, 1), cache, logits, false);
    all.insert(all.end(), logits.begin(), logits.end());
  }
  return all;
}

// One decode step for three sequences at once, and each sequence's step alone: the rows of the
// batch (first) and the solo rows (second), which must be equal.
[[maybe_unused]] std::pair<std::vector<std::vector<float>>, std::vector<std::vector<float>>>
batched_and_solo_rows(moed::engine::Engine& engine) {
  const std::vector<std::vector<std::int32_t>> prompts = {{1, 17, 42}, {5, 6, 7, 8, 9}, {300}};
  std::vector<moed::engine::KvCache> caches;
  std::vector<std::int32_t> next;
  std::vector<std::vector<float>> solo;
  std::vector<float> logits;
  for (const auto& prompt : prompts) {
    caches.push_back(engine.new_cache());
    engine.forward(prompt, caches.back(), logits, false);
    next.push_back(
        static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin()));
    auto alone = engine.new_cache();
    engine.forward(prompt, alone, logits, false);
    engine.forward(std::span(&next.back(), 1), alone, logits, false);
    solo.push_back(logits);
  }
  std::vector<moed::engine::KvCache*> pointers;
  for (auto& c : caches) pointers.push_back(&c);
  engine.decode(next, pointers, logits);
  const auto vocab = static_cast<std::size_t>(engine.spec().vocab_size);
  std::vector<std::vector<float>> batched;
  for (std::size_t i = 0; i < prompts.size(); ++i)
    batched.emplace_back(logits.begin() + i * vocab, logits.begin() + (i + 1) * vocab);
  return {batched, solo};
}

// `count` greedy tokens after the prompt, decoded step by step (generate() would stop at EOS).
std::vector<std::int32_t> greedy_tokens(moed::engine::Engine& engine,
                                        const std::vector<std::int32_t>& prompt,
                                        std::size_t count) {
  auto cache = engine.new_cache();
  std::vector<float> logits;
  std::vector<std::int32_t> got;
  engine.forward(prompt, cache, logits, false);
  while (got.size() < count) {
    got.push_back(
        static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin()));
    engine.forward(std::span(&got.back(), 1), cache, logits, false);
  }
  return got;
}

}  // namespace
