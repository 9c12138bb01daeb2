// The sampler's cost per token with and without a JSON constraint (one object, or an instance
// of a JSON Schema), over vocabularies of the
// size real models have (Mixtral 32000, DeepSeek-V3 129280, Qwen3 151936). A decode step of a
// large MoE takes tens of milliseconds; these say what a constrained answer adds to it.
//
//   bench_sampler
#include <benchmark/benchmark.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "moed/engine/sampler.hpp"
#include "moed/server/json_constraint.hpp"

namespace {

using moed::engine::Sampler;
using moed::engine::SamplingParams;
using moed::server::CompiledSchema;
using moed::server::ConstraintVocabulary;
using moed::server::json_object_constraint;
using moed::server::json_schema_constraint;

// Tokens shaped as a BPE vocabulary's: 1 to 8 bytes, a third starting with a space, mostly
// letters, some digits and punctuation (JSON's among them), and an end-of-generation token.
std::shared_ptr<const ConstraintVocabulary> synthetic_vocabulary(std::int64_t size) {
  std::mt19937 rng(3);
  const std::string letters = "etaoinshrdlucmfwypvbgkjqxz";
  const std::string others = "0123456789.,:;\"'{}[]()-_!?/\\";
  std::vector<std::string> bytes(static_cast<std::size_t>(size));
  for (auto& token : bytes) {
    const std::size_t length = 1 + rng() % 8;
    if (rng() % 3 == 0) token += ' ';
    while (token.size() < length)
      token += rng() % 8 == 0 ? others[rng() % others.size()] : letters[rng() % letters.size()];
  }
  // The one-byte tokens the benchmark writes its prefix with.
  for (const char c : std::string("{\"a: name,x,unitcwhe2024-0"))
    bytes[static_cast<std::size_t>(c)] = c;
  std::vector<bool> ends(bytes.size());
  ends.back() = true;
  return std::make_shared<const ConstraintVocabulary>(std::move(bytes), std::move(ends));
}

std::vector<float> random_logits(std::int64_t size) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> logits(static_cast<std::size_t>(size));
  for (auto& l : logits) l = normal(rng);
  return logits;
}

// Args: vocabulary size, temperature x 10, constrained (0/1), and where a constrained answer is:
// 0 before its object (almost every token refused at its first byte), 1 inside a string (almost
// every token taken whole, the most work).
void BM_Sample(benchmark::State& state) {
  const std::int64_t size = state.range(0);
  const float temperature = static_cast<float>(state.range(1)) / 10.0f;
  const bool constrained = state.range(2) != 0;
  const bool in_string = state.range(3) != 0;
  const auto vocabulary = synthetic_vocabulary(size);
  const auto logits = random_logits(size);
  for (auto _ : state) {
    state.PauseTiming();
    SamplingParams params{temperature, 0, 1.0f, 7};
    if (constrained) {
      auto constraint = json_object_constraint(vocabulary);
      if (in_string)
        for (const char c : std::string("{\"a\": \"")) constraint->advance(c);
      params.constraint = std::move(constraint);
    }
    Sampler sampler(params);
    state.ResumeTiming();
    benchmark::DoNotOptimize(sampler.sample(logits.data(), size));
  }
}

// A state the answer has been in before: the mask comes from the constraint's cache.
void BM_MaskAgain(benchmark::State& state) {
  const std::int64_t size = state.range(0);
  const auto vocabulary = synthetic_vocabulary(size);
  auto constraint = *json_object_constraint(vocabulary);
  for (const char c : std::string("{\"a\": \"")) constraint.advance(c);
  std::vector<float> logits = random_logits(size);
  for (auto _ : state) {
    constraint.mask(logits);
    benchmark::DoNotOptimize(logits.data());
  }
}

// A schema as tools and structured outputs have them: a string, an enum, a date-time, 20 optional
// integers and a union of two objects. Arg 1 says where the answer is: 0 before its object, 1 in
// the first key (the keys of all the properties that may come are read at once), 2 inside the
// string's value, 3 inside the date-time (a pattern's automaton reads it).
void BM_SampleSchema(benchmark::State& state) {
  const std::int64_t size = state.range(0);
  nlohmann::ordered_json schema = nlohmann::ordered_json::parse(R"({"type": "object",
      "properties": {"name": {"type": "string"}, "unit": {"enum": ["c", "f", "k"]},
                     "when": {"type": "string", "format": "date-time"}},
      "required": ["name", "unit"], "additionalProperties": false})");
  for (int i = 0; i < 20; ++i)
    schema["properties"][std::string(1, 'n').append(std::to_string(i))] = {{"type", "integer"}};
  schema["properties"]["union"] = nlohmann::ordered_json::parse(
      R"({"anyOf": [{"type": "object", "properties": {"t": {"const": "a"}}, "required": ["t"]},
                    {"type": "object", "properties": {"v": {"type": "number"}}}]})");
  const auto compiled =
      std::make_shared<const CompiledSchema>(CompiledSchema::compile(schema, true));
  const auto vocabulary = synthetic_vocabulary(size);
  const auto logits = random_logits(size);
  const std::string prefix = state.range(1) == 0   ? ""
                             : state.range(1) == 1 ? "{\""
                             : state.range(1) == 2
                                 ? "{\"name\": \""
                                 : "{\"name\": \"x\", \"unit\": \"c\", \"when\": \"2024-0";
  for (auto _ : state) {
    state.PauseTiming();
    SamplingParams params{1.0f, 0, 1.0f, 7};
    auto constraint = json_schema_constraint(vocabulary, compiled);
    for (const char c : prefix) constraint->advance(c);
    params.constraint = std::move(constraint);
    Sampler sampler(params);
    state.ResumeTiming();
    benchmark::DoNotOptimize(sampler.sample(logits.data(), size));
  }
}

}  // namespace

BENCHMARK(BM_Sample)
    ->ArgNames({"vocab", "temp10", "constrained", "in_string"})
    ->Apply([](benchmark::internal::Benchmark* b) {
      for (const std::int64_t vocab : {32000, 151936})
        for (const std::int64_t temperature : {0, 10})
          for (const auto& [constrained, in_string] : {std::pair{0, 0}, {1, 0}, {1, 1}})
            b->Args({vocab, temperature, constrained, in_string});
    })
    ->Unit(benchmark::kMicrosecond);

BENCHMARK(BM_SampleSchema)
    ->ArgNames({"vocab", "at"})
    ->ArgsProduct({{32000, 151936}, {0, 1, 2, 3}})
    ->Unit(benchmark::kMicrosecond);

BENCHMARK(BM_MaskAgain)->ArgName("vocab")->Arg(32000)->Arg(151936)->Unit(benchmark::kMicrosecond);

BENCHMARK_MAIN();
