// Reads a JSON Schema and, with `walk COUNT SEED`, prints COUNT answers SchemaPrefix lets
// through, each by random bytes it takes; with `check`, says for each line of stdin whether it
// takes the line whole (1) or not (0). A schema it refuses: exit status 2 and "POINTER: message".
// tests/schema/test_json_schema.py checks both against an independent validator.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <string_view>

#include "moed/server/json_schema.hpp"

namespace {

using moed::server::CompiledSchema;
using moed::server::SchemaPrefix;

// Bytes a walk tries first (JSON's own, and a few letters and UTF-8 sequences), so that strings
// and numbers end; one step in eight, or where none of these may come, any byte that may.
constexpr std::string_view kFavoured =
    "{}[],:\" \n0123456789-.eE+truefalsnxyz\\/u\xc3\xa9\xe2\x82\xac";

int walk(const CompiledSchema& schema, int count, unsigned seed) {
  std::mt19937 rng(seed);
  int printed = 0;
  int abandoned = 0;
  while (printed < count) {
    SchemaPrefix prefix(schema);
    std::string text;
    while (!prefix.complete() && text.size() < 4000) {
      std::string allowed;
      if (rng() % 8 != 0)
        for (const char c : kFavoured) {
          SchemaPrefix trial = prefix;
          if (trial.feed(static_cast<unsigned char>(c))) allowed += c;
        }
      if (allowed.empty())
        for (int byte = 0; byte < 256; ++byte) {
          SchemaPrefix trial = prefix;
          if (trial.feed(static_cast<unsigned char>(byte))) allowed += static_cast<char>(byte);
        }
      if (allowed.empty()) {
        std::cerr << "dead end after: " << text << "\n";
        return 1;
      }
      const char c =
          allowed[std::uniform_int_distribution<std::size_t>(0, allowed.size() - 1)(rng)];
      prefix.feed(static_cast<unsigned char>(c));
      text += c;
    }
    if (!prefix.complete()) {
      if (++abandoned > 20 * count) {
        std::cerr << "walks do not end: " << abandoned << " abandoned\n";
        return 1;
      }
      continue;
    }
    std::cout << nlohmann::json(text).dump() << "\n";  // a JSON string: one line
    ++printed;
  }
  return 0;
}

int check(const CompiledSchema& schema) {
  std::string line;
  while (std::getline(std::cin, line)) {
    SchemaPrefix prefix(schema);
    bool taken = true;
    for (const char c : line) taken = taken && prefix.feed(static_cast<unsigned char>(c));
    std::cout << (taken && prefix.complete() ? 1 : 0) << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: schema_walk SCHEMA_FILE STRICT(0|1) walk COUNT SEED | check\n";
    return 64;
  }
  std::ifstream file(argv[1]);
  const auto document = nlohmann::ordered_json::parse(file);
  try {
    const auto schema = CompiledSchema::compile(document, std::string_view(argv[2]) == "1");
    const std::string_view mode = argv[3];
    if (mode == "walk" && argc == 6) return walk(schema, std::stoi(argv[4]), std::stoul(argv[5]));
    if (mode == "check") return check(schema);
  } catch (const moed::server::SchemaError& e) {
    std::cout << e.pointer << ": " << e.what() << "\n";
    return 2;
  }
  std::cerr << "usage: schema_walk SCHEMA_FILE STRICT(0|1) walk COUNT SEED | check\n";
  return 64;
}
