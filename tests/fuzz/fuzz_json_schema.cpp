// JSON Schemas and answers to them. The input is a schema, a 0 byte and an answer; without a 0
// byte, the whole input is an answer to a fixed schema with objects, arrays, anyOf, enums,
// references, lengths, patterns, formats, integer bounds and multiples. The compiler refuses a
// schema with SchemaError or compiles it (strict or not), never worse; SchemaPrefix takes whole
// only JSON that nlohmann parses as an object, and any prefix it takes has a byte that may come
// next (a constrained answer never dead-ends).

#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <optional>
#include <string_view>

#include "fuzz_input.hpp"
#include "moed/server/json_schema.hpp"

namespace {

using moed::server::CompiledSchema;
using moed::server::SchemaPrefix;

constexpr std::string_view kSchema = R"({
  "type": "object",
  "properties": {
    "id": {"type": "integer"},
    "rating": {"type": "integer", "minimum": -12, "exclusiveMaximum": 250},
    "share": {"type": "number", "exclusiveMinimum": -0.5, "maximum": 0.25},
    "name": {"type": "string", "minLength": 1, "maxLength": 4},
    "code": {"type": "string", "pattern": "^[A-Z]{2}(-\\d+)?$", "maxLength": 6},
    "day": {"type": "string", "format": "date"},
    "step": {"type": "integer", "multipleOf": 7, "maximum": 100},
    "kind": {"enum": [1, 12, "x", true, null, {"k": [1]}]},
    "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
    "pair": {"type": "array", "prefixItems": [{"type": "number"}, {"type": "boolean"}],
             "items": false, "minItems": 2},
    "next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]},
    "map": {"type": "object", "additionalProperties": {"type": "integer"}},
    "any": {},
    "pick": {"oneOf": [{"type": "object", "properties": {"t": {"const": "a"}}, "required": ["t"]},
                       {"type": "object", "properties": {"t": {"const": "b"}, "v": {}},
                        "required": ["t", "v"]}]}
  },
  "required": ["id", "kind"],
  "additionalProperties": false
})";

void check_answer(const CompiledSchema& schema, std::string_view answer) {
  SchemaPrefix prefix(schema);
  std::size_t taken = 0;
  while (taken < answer.size() && prefix.feed(static_cast<unsigned char>(answer[taken]))) ++taken;
  if (taken < answer.size()) {
    // Spent by the byte it refused: read the prefix it took again.
    prefix = SchemaPrefix(schema);
    for (std::size_t i = 0; i < taken; ++i) prefix.feed(static_cast<unsigned char>(answer[i]));
  } else if (prefix.complete()) {
    const auto value = nlohmann::json::parse(answer, nullptr, false);
    if (value.is_discarded() || !value.is_object()) std::abort();
  }
  moed::fuzz::require_a_next_byte(prefix);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::size_t split = input.find('\0');
  if (split == std::string_view::npos) {
    static const auto fixed = CompiledSchema::compile(nlohmann::ordered_json::parse(kSchema), true);
    check_answer(fixed, input);
    return 0;
  }
  const auto document = nlohmann::ordered_json::parse(input.substr(0, split), nullptr, false);
  if (document.is_discarded()) return 0;
  for (const bool strict : {true, false}) {
    std::optional<CompiledSchema> schema;
    try {
      schema = CompiledSchema::compile(document, strict);
    } catch (const moed::server::SchemaError&) {
      continue;
    }
    check_answer(*schema, input.substr(split + 1));
  }
  return 0;
}
