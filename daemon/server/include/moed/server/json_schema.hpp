#pragma once

#include <cstdint>
#include <limits>
#include <nlohmann/json_fwd.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "moed/server/json_prefix.hpp"
#include "moed/server/string_pattern.hpp"

namespace moed::server {

// A schema constrained sampling cannot hold an answer to; `pointer` is where in the schema
// (a JSON Pointer, RFC 6901).
class SchemaError : public std::runtime_error {
 public:
  SchemaError(std::string pointer, const std::string& message)
      : std::runtime_error(message), pointer(std::move(pointer)) {}
  std::string pointer;
};

// A JSON Schema (draft 2020-12, as OpenAI's structured outputs take it) compiled to what an
// answer may be, for SchemaPrefix. The answer is one valid instance, written a way of its own:
// an object's properties come in the schema's order and no others (as llama.cpp's and
// XGrammar's grammars write them), an integer without fraction or exponent, a number or string
// of an enum as the schema writes it (its members, for an object or array).
class CompiledSchema {
 public:
  // Enforced: type (one or a list), properties, required, additionalProperties, items,
  // prefixItems, minItems, maxItems, minLength, maxLength, pattern (as StringPattern takes it),
  // format where StringPattern knows a pattern for it (other formats are annotations, as the
  // spec has them by default), a number's minimum, maximum, exclusiveMinimum and
  // exclusiveMaximum (an integer's to 64 bits; a number's as the double its text parses to,
  // written without exponent), a whole multipleOf (a number's answer then an integer), enum,
  // const, anyOf, oneOf, allOf of one schema, $ref within the document (recursion included),
  // and boolean schemas. Without a type, the keywords of one kind of value make the answer that
  // kind.
  //
  // When `strict`, what moed cannot hold an answer to is an error: keywords that assert what is
  // not enforced (uniqueItems, a multipleOf that is not whole, ...), a pattern StringPattern
  // refuses, a pattern beside a format it knows, bounds where the type is a list, keywords beside
  // $ref, anyOf, oneOf, allOf or enum (other than type), a oneOf whose alternatives may overlap
  // (they must differ in type, or be objects a required property with a different const in each
  // tells apart), and more than SchemaPrefix::kMaxReadings alternatives in one place. Not strict,
  // those are left free and oneOf is read as anyOf.
  //
  // Either way an error: a root that is not an object schema (OpenAI requires one), a schema no
  // finite answer satisfies, more than 10,000 subschemas or nesting past 256 ($ref chains
  // included).
  static CompiledSchema compile(const nlohmann::ordered_json& schema, bool strict);
  // {"type": "object"}: any object.
  static CompiledSchema any_object();

 private:
  friend class SchemaPrefix;
  struct Property {
    std::string key;  // as written in the answer, quotes and escapes included
    std::uint32_t node;
    bool required;
  };
  static constexpr std::uint32_t kNoPattern = std::numeric_limits<std::uint32_t>::max();
  struct Node {
    enum class Kind : std::uint8_t {
      any,         // any JSON value
      any_object,  // any JSON object
      object,      // the properties, in order
      map,         // any keys, each with `item`'s value
      array,
      string,
      number,
      integer,
      boolean,
      null,
      literals,  // one of `literals`, compact JSON
      any_of,    // one of `alternatives`, none of them any_of
    } kind = Kind::any;
    std::vector<Property> properties;
    std::vector<std::uint32_t> prefix_items;  // array: items 0, 1, ... before `item`'s
    std::uint32_t item = 0;                   // array: items after the prefix; map: values
    std::uint32_t min = 0;                    // array: items; string: characters
    std::uint32_t max = std::numeric_limits<std::uint32_t>::max();
    std::uint32_t pattern = kNoPattern;  // string: its automaton in patterns_, which holds min/max
    bool bounded = false;                // integer: within [lowest, highest]; number: low to high
    std::uint64_t multiple = 0;          // integer: a multiple of it (0: any)
    std::int64_t lowest = std::numeric_limits<std::int64_t>::min();
    std::int64_t highest = std::numeric_limits<std::int64_t>::max();
    double low = -std::numeric_limits<double>::infinity();
    double high = std::numeric_limits<double>::infinity();
    bool low_open = false;  // exclusiveMinimum
    bool high_open = false;
    ByteTrie literals;
    std::vector<std::string> literal_texts;
    std::vector<std::uint32_t> alternatives;
    bool one_of = false;  // any_of from oneOf
    // object: the properties' keys (names: their indices), and for each property the end of
    // those that may come in its place (up to and including the next required one).
    ByteTrie keys;
    std::vector<std::uint32_t> key_window_end;
  };
  class Compiler;
  std::vector<Node> nodes_;  // the root first
  std::vector<StringPattern> patterns_;
};

// A prefix of an answer that is an instance of a compiled schema (which must outlive it), read
// byte by byte as JsonPrefix is, with the same limits on blanks. Where the schema offers
// alternatives (anyOf, optional properties) it follows each reading the bytes leave open, at
// most kMaxReadings at once; any further ones are not followed, which only narrows the answer.
class SchemaPrefix {
 public:
  static constexpr std::size_t kMaxReadings = 64;
  // A bounded number has at most this many integer digits, so that its value, and a validator's
  // reading of it (an exact integer, or a double), are the same double.
  static constexpr std::size_t kBoundedNumberDigits = 15;
  static constexpr double kNumberReach = 1e15;
  explicit SchemaPrefix(const CompiledSchema& schema);
  // A copy takes the readings, not the spare room; assigning one to a prefix that has read before
  // reuses that prefix's memory, as a constraint trying many tokens on one copy does.
  SchemaPrefix(const SchemaPrefix& other) : schema_(other.schema_), readings_(other.readings_) {}
  SchemaPrefix& operator=(const SchemaPrefix& other) {
    schema_ = other.schema_;
    readings_ = other.readings_;
    return *this;
  }
  SchemaPrefix(SchemaPrefix&&) = default;
  SchemaPrefix& operator=(SchemaPrefix&&) = default;
  bool feed(unsigned char byte);
  bool complete() const;
  // As JsonPrefix::in_string, in every reading.
  bool in_string() const;
  bool operator==(const SchemaPrefix& other) const {
    return schema_ == other.schema_ && readings_ == other.readings_;
  }

 private:
  enum class Phase : std::uint8_t {
    start,         // before the value: blanks, then its first byte
    leaf,          // in a value JsonPrefix reads (`scalar`)
    literal,       // in one of literals, at trie node `position`
    first_key,     // after '{'
    next_key,      // after ','
    key,           // in a key: `position` its trie node, `index` the first property it may be
    free_key,      // in a map's key (`scalar`)
    colon,         // after the key
    after_member,  // after a member's value; `index`: the next property
    first_item,    // after '['
    after_item,    // after an item; `index`: items so far
  };
  struct Frame {
    std::uint32_t node;
    Phase phase = Phase::start;
    std::uint32_t index = 0;
    std::uint32_t position = 0;
    bool operator==(const Frame&) const = default;
  };
  struct Reading {
    std::vector<Frame> stack;  // the values being read, innermost last; empty: complete
    JsonPrefix scalar;
    std::uint32_t characters = 0;  // of the string being read; digits of a bounded integer
    std::uint32_t text_state = 0;  // a patterned string's state in its automaton
    std::uint64_t magnitude = 0;   // a bounded integer's digits so far (kHuge: past 64 bits)
    bool negative = false;
    std::string number;            // a bounded number's text so far
    std::uint8_t line_breaks = 0;  // in the current run of blanks
    std::uint8_t indent = 0;
    bool operator==(const Reading&) const = default;
  };
  void step(Reading reading, unsigned char byte, std::vector<Reading>& next) const;
  static constexpr std::uint64_t kHuge = std::numeric_limits<std::uint64_t>::max();
  static bool blank(Reading& reading, unsigned char byte);
  // Whether a bounded integer's digits so far may still grow into a value within its bounds,
  // and whether the value they make is within them.
  static bool integer_may_reach_bounds(const CompiledSchema::Node& node, const Reading& reading);
  static bool integer_within_bounds(const CompiledSchema::Node& node, const Reading& reading);
  // The same of a bounded number's text, as the double it parses to.
  static bool number_may_reach_bounds(const CompiledSchema::Node& node, const std::string& text);
  static bool number_within_bounds(const CompiledSchema::Node& node, const std::string& text);
  bool start_value(Reading& reading, unsigned char byte, std::vector<Reading>& next) const;
  bool leaf_byte(Reading& reading, unsigned char byte) const;
  bool pattern_byte(Reading& reading, const CompiledSchema::Node& node, unsigned char byte) const;

  const CompiledSchema* schema_;
  std::vector<Reading> readings_;
  std::vector<Reading> spare_;  // feed()'s next readings, kept for its memory
};

}  // namespace moed::server
