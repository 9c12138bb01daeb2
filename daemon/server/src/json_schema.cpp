#include "moed/server/json_schema.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <tuple>

namespace moed::server {
namespace {

using Json = nlohmann::ordered_json;

// Keywords that assert something of an instance which constrained sampling does not enforce.
const std::set<std::string>& unenforced_keywords() {
  static const std::set<std::string> keywords = {
      "minimum",
      "maximum",
      "exclusiveMinimum",
      "exclusiveMaximum",
      "multipleOf",
      "minProperties",
      "maxProperties",
      "uniqueItems",
      "contains",
      "minContains",
      "maxContains",
      "not",
      "if",
      "then",
      "else",
      "dependentRequired",
      "dependentSchemas",
      "dependencies",
      "patternProperties",
      "propertyNames",
      "unevaluatedProperties",
      "unevaluatedItems",
      "$dynamicRef",
      "$recursiveRef",
  };
  return keywords;
}

// Keywords that apply to an instance, enforced or not; any other one is an annotation.
bool applies(const std::string& keyword) {
  static const std::set<std::string> enforced = {
      "type",     "properties",  "required",        "additionalProperties",
      "items",    "prefixItems", "additionalItems", "minItems",
      "maxItems", "minLength",   "maxLength",       "pattern",
      "enum",     "const",       "anyOf",           "oneOf",
      "allOf",    "$ref",
  };
  return enforced.count(keyword) > 0 || unenforced_keywords().count(keyword) > 0;
}

// A number's keywords, enforced where its type is one (not a list).
bool is_number_keyword(const std::string& keyword) {
  return keyword == "minimum" || keyword == "maximum" || keyword == "exclusiveMinimum" ||
         keyword == "exclusiveMaximum" || keyword == "multipleOf";
}

// Whether [from, to] holds a multiple of `multiple` (0 or 1: any integer).
__extension__ bool has_multiple(__int128 from, __int128 to, std::uint64_t multiple) {
  if (from > to) return false;
  if (multiple <= 1) return true;
  __extension__ const __int128 m = multiple;
  __extension__ __int128 first = from / m * m;  // toward zero
  if (first < from) first += m;
  return first <= to;
}

// How far from 0 an integer held to a multipleOf may go: 2^53, where validators that divide in
// floating point (as python-jsonschema does for a multipleOf written 3.0, and JavaScript's do for
// any) still find a multiple one.
constexpr std::uint64_t kMultipleReach = std::uint64_t{1} << 53;

// A multipleOf that is a whole number (as JSON writes it, or a double that is one), or 0.
std::uint64_t whole_multiple(const Json& value) {
  if (value.is_number_unsigned()) return value.get<std::uint64_t>();
  if (value.is_number_integer())
    return value.get<std::int64_t>() > 0 ? value.get<std::int64_t>() : 0;
  const double d = value.get<double>();
  if (d < 1 || std::trunc(d) != d) return 0;
  // Past the answers' reach (kMultipleReach) only 0 is a multiple, of this or of any larger one.
  return d > kMultipleReach ? kMultipleReach + 1 : static_cast<std::uint64_t>(d);
}

std::string escape_pointer_token(const std::string& token) {
  std::string escaped;
  for (const char c : token) {
    if (c == '~')
      escaped += "~0";
    else if (c == '/')
      escaped += "~1";
    else
      escaped += c;
  }
  return escaped;
}

std::string type_name(const Json& value) {
  if (value.is_object()) return "object";
  if (value.is_array()) return "array";
  if (value.is_string()) return "string";
  if (value.is_boolean()) return "boolean";
  if (value.is_null()) return "null";
  if (value.is_number_integer() || value.is_number_unsigned()) return "integer";
  const double d = value.get<double>();
  return std::isfinite(d) && std::trunc(d) == d ? "integer" : "number";
}

// Whether a double in [from, to] lies within a number node's bounds.
bool overlaps_bounds(double from, double to, double low, bool low_open, double high,
                     bool high_open) {
  double lower = from;
  bool lower_in = true;
  if (low > from || (low == from && low_open)) {
    lower = low;
    lower_in = !low_open;
  }
  double upper = to;
  bool upper_in = true;
  if (high < to || (high == to && high_open)) {
    upper = high;
    upper_in = !high_open;
  }
  // The least double the lower side admits, against the upper side.
  const double first = lower_in ? lower : std::nextafter(lower, HUGE_VAL);
  return first < upper || (first == upper && upper_in);
}

// The decimal after `digits` (a number's digits, maybe with a '.') in its last place:
// "1.29" -> "1.30", "99" -> "100".
std::string next_in_last_place(std::string digits) {
  for (auto at = digits.size(); at-- > 0;) {
    if (digits[at] == '.') continue;
    if (digits[at] != '9') {
      ++digits[at];
      return digits;
    }
    digits[at] = '0';
  }
  return "1" + digits;
}

}  // namespace

class CompiledSchema::Compiler {
 public:
  static constexpr std::size_t kMaxNodes = 10000;
  static constexpr int kMaxDepth = 256;
  Compiler(const Json& document, bool strict, CompiledSchema& out)
      : document_(document), strict_(strict), nodes_(out.nodes_), patterns_(out.patterns_) {}

  std::uint32_t compile(const Json& schema, const std::string& pointer) {
    const std::uint32_t index = reserve(pointer);
    compile_into(index, schema, pointer);
    return index;
  }

  void finish(const std::string& pointer) {
    prune_unfinishable(pointer);
    // Before flattening, which merges alternatives that stand for the same node.
    for (std::size_t i = 0; i < nodes_.size(); ++i)
      if (strict_ && nodes_[i].one_of && !exclusive(nodes_[i]))
        fail(pointers_[i] + "/oneOf",
             "its alternatives may overlap, and moed cannot hold an answer to exactly one; use "
             "anyOf, or tell them apart by a required property with a different const in each "
             "(a discriminator)");
    flatten_alternatives();
    index_keys();
    for (std::size_t i = 0; i < nodes_.size(); ++i)
      if (strict_ && nodes_[i].kind == Node::Kind::any_of &&
          nodes_[i].alternatives.size() > SchemaPrefix::kMaxReadings)
        fail(pointers_[i], "more than " + std::to_string(SchemaPrefix::kMaxReadings) +
                               " alternatives (anyOf, oneOf, enum values that are objects or "
                               "arrays) are not supported");
    const Node& root = nodes_[0];
    auto opens_object = [&](std::uint32_t n) {
      const auto kind = nodes_[n].kind;
      return kind == Node::Kind::object || kind == Node::Kind::map ||
             kind == Node::Kind::any_object;
    };
    const bool object_root =
        root.kind == Node::Kind::any_of
            ? std::all_of(root.alternatives.begin(), root.alternatives.end(), opens_object)
            : opens_object(0);
    if (!object_root)
      throw SchemaError(pointer, "the root must be an object schema ({\"type\": \"object\", ...})");
  }

 private:
  std::uint32_t reserve(const std::string& pointer) {
    if (nodes_.size() == kMaxNodes)
      throw SchemaError(pointer,
                        "the schema has more than " + std::to_string(kMaxNodes) + " subschemas");
    nodes_.emplace_back();
    pointers_.push_back(pointer);
    return static_cast<std::uint32_t>(nodes_.size() - 1);
  }

  [[noreturn]] static void fail(const std::string& pointer, const std::string& message) {
    throw SchemaError(pointer, message);
  }

  std::uint32_t count(const Json& schema, const char* keyword, const std::string& pointer) {
    const Json& value = schema[keyword];
    if (!value.is_number() || type_name(value) != "integer" || value.get<double>() < 0)
      fail(pointer + "/" + keyword, "expected a non-negative integer, got " + value.dump());
    return static_cast<std::uint32_t>(
        std::min(value.get<double>(), double{std::numeric_limits<std::uint32_t>::max()}));
  }

  void compile_into(std::uint32_t index, const Json& schema, const std::string& pointer) {
    // References compile where they are met, so a chain of them nests as deep as it is long.
    if (++depth_ > kMaxDepth)
      fail(pointer, "subschemas nest more than " + std::to_string(kMaxDepth) +
                        " deep ($ref chains included)");
    Node node = build(schema, pointer);
    nodes_[index] = std::move(node);
    --depth_;
  }

  Node alias(std::uint32_t target) {
    Node node;
    node.kind = Node::Kind::any_of;
    node.alternatives = {target};
    return node;
  }

  Node build(const Json& schema, const std::string& pointer) {
    if (schema.is_boolean()) {
      // false admits nothing: no alternatives. Where it is optional (a property, an item past
      // minItems, an alternative) it is pruned; where required, the schema has no answer.
      Node node;
      if (!schema.get<bool>()) node.kind = Node::Kind::any_of;
      return node;
    }
    if (!schema.is_object()) fail(pointer, "a schema must be an object or a boolean");
    // A number's keywords are enforced where its type is one (not a list).
    const bool number_bounds =
        schema.contains("type") && (schema["type"] == "integer" || schema["type"] == "number");
    for (const auto& [keyword, value] : schema.items())
      if (strict_ && unenforced_keywords().count(keyword) &&
          !(number_bounds && is_number_keyword(keyword)))
        fail(pointer + "/" + escape_pointer_token(keyword),
             "'" + keyword +
                 "' is not enforced by moed's constrained sampling; drop it, or send \"strict\": "
                 "false to have the answer follow the rest of the schema");
    if (schema.contains("$ref")) return reference(schema, pointer);
    if (schema.contains("allOf")) {
      const Json& all = schema["allOf"];
      if (!all.is_array() || all.empty())
        fail(pointer + "/allOf", "expected a non-empty array of schemas");
      if (all.size() > 1 && strict_)
        fail(pointer + "/allOf", "only one schema in allOf is supported");
      refuse_siblings(schema, "allOf", pointer);
      return alias(compile(all[0], pointer + "/allOf/0"));
    }
    for (const char* keyword : {"anyOf", "oneOf"})
      if (schema.contains(keyword)) return alternatives(schema, keyword, pointer);
    if (schema.contains("const") || schema.contains("enum")) return literals(schema, pointer);
    if (schema.contains("type")) {
      const Json& type = schema["type"];
      if (type.is_string()) return typed(schema, type.get<std::string>(), pointer);
      if (!type.is_array() || type.empty())
        fail(pointer + "/type", "expected a type name or a non-empty array of them");
      Node node;
      node.kind = Node::Kind::any_of;
      for (std::size_t i = 0; i < type.size(); ++i) {
        if (!type[i].is_string())
          fail(pointer + "/type/" + std::to_string(i), "expected a type name");
        const std::uint32_t alternative = reserve(pointer);
        nodes_[alternative] = typed(schema, type[i].get<std::string>(), pointer);
        node.alternatives.push_back(alternative);
      }
      return node;
    }
    if (schema.contains("properties") || schema.contains("additionalProperties") ||
        schema.contains("required"))
      return typed(schema, "object", pointer);
    // Without a type, the keywords that apply to one kind of value say which kind the answer
    // is (any other kind would be valid too).
    if (schema.contains("items") || schema.contains("prefixItems") || schema.contains("minItems") ||
        schema.contains("maxItems"))
      return typed(schema, "array", pointer);
    if (schema.contains("minLength") || schema.contains("maxLength") || schema.contains("pattern"))
      return typed(schema, "string", pointer);
    return Node{};
  }

  // Applying keywords beside `keyword` (other than those in `together`) are not combined with it:
  // an error when strict, left free otherwise.
  void refuse_siblings(const Json& schema, const char* keyword, const std::string& pointer,
                       std::initializer_list<std::string_view> together = {}) {
    if (!strict_) return;
    for (const auto& [other, value] : schema.items())
      if (other != keyword && applies(other) &&
          std::find(together.begin(), together.end(), other) == together.end())
        fail(pointer + "/" + escape_pointer_token(other),
             "'" + other + "' beside '" + keyword + "' is not supported; move it into the " +
                 (std::string(keyword) == "$ref" ? "referenced schema"
                  : std::string(keyword) == "enum" || std::string(keyword) == "const"
                      ? "values"
                      : "alternatives"));
  }

  Node reference(const Json& schema, const std::string& pointer) {
    refuse_siblings(schema, "$ref", pointer);
    const Json& ref = schema["$ref"];
    const std::string at = pointer + "/$ref";
    if (!ref.is_string() || ref.get<std::string>().rfind('#', 0) != 0)
      fail(at,
           "only references within the schema (\"#/$defs/...\") are supported, got " + ref.dump());
    const std::string target = ref.get<std::string>().substr(1);
    if (const auto known = refs_.find(target); known != refs_.end()) return alias(known->second);
    const Json* resolved = nullptr;
    try {
      resolved = &document_.at(Json::json_pointer(target));
    } catch (const std::exception&) {
      fail(at, ref.dump() + " does not resolve within the schema");
    }
    const std::uint32_t index = reserve(target);
    refs_[target] = index;
    compile_into(index, *resolved, target);
    return alias(index);
  }

  Node alternatives(const Json& schema, const char* keyword, const std::string& pointer) {
    refuse_siblings(schema, keyword, pointer);
    const Json& all = schema[keyword];
    const std::string at = pointer + "/" + keyword;
    if (!all.is_array() || all.empty()) fail(at, "expected a non-empty array of schemas");
    Node node;
    node.kind = Node::Kind::any_of;
    for (std::size_t i = 0; i < all.size(); ++i)
      node.alternatives.push_back(compile(all[i], at + "/" + std::to_string(i)));
    node.one_of = std::string_view(keyword) == "oneOf";
    return node;
  }

  Node literals(const Json& schema, const std::string& pointer) {
    refuse_siblings(schema, schema.contains("const") ? "const" : "enum", pointer,
                    {"type", "enum", "const"});
    Node node;
    node.kind = Node::Kind::literals;
    std::vector<const Json*> values;
    if (schema.contains("enum")) {
      const Json& all = schema["enum"];
      if (!all.is_array() || all.empty())
        fail(pointer + "/enum", "expected a non-empty array of values");
      for (const auto& value : all) values.push_back(&value);
    }
    if (schema.contains("const")) {
      if (!values.empty() && std::find_if(values.begin(), values.end(), [&](const Json* v) {
                               return *v == schema["const"];
                             }) == values.end())
        fail(pointer + "/const", "is not among the values of enum");
      values = {&schema["const"]};
    }
    // With a type beside them, only the values of that type.
    std::set<std::string> types;
    if (schema.contains("type")) {
      const Json& type = schema["type"];
      if (type.is_string()) types.insert(type.get<std::string>());
      if (type.is_array())
        for (const auto& name : type)
          if (name.is_string()) types.insert(name.get<std::string>());
    }
    // Scalars are read as their text; objects and arrays as schemas of their members, so that
    // blanks may come between them.
    std::int32_t scalars = 0;
    Node containers;
    containers.kind = Node::Kind::any_of;
    for (const Json* value : values) {
      const std::string type = type_name(*value);
      if (!types.empty() && !types.count(type) && !(type == "integer" && types.count("number")))
        continue;
      if (value->is_structured()) {
        containers.alternatives.push_back(constant(*value, pointer));
      } else {
        node.literals.insert(value->dump(), scalars++);
        node.literal_texts.push_back(value->dump());
      }
    }
    if (scalars == 0 && containers.alternatives.empty())
      fail(pointer, "none of the values of enum or const is of the schema's type");
    if (containers.alternatives.empty()) return node;
    if (scalars > 0) {
      containers.alternatives.push_back(reserve(pointer));
      nodes_[containers.alternatives.back()] = std::move(node);
    }
    return containers;
  }

  // A node that takes exactly `value`.
  std::uint32_t constant(const Json& value, const std::string& pointer) {
    const std::uint32_t index = reserve(pointer);
    Node node;
    if (value.is_object()) {
      node.kind = Node::Kind::object;
      for (const auto& [name, member] : value.items())
        node.properties.push_back({Json(name).dump(), constant(member, pointer), true});
    } else if (value.is_array()) {
      node.kind = Node::Kind::array;
      for (const auto& item : value) node.prefix_items.push_back(constant(item, pointer));
      node.min = node.max = static_cast<std::uint32_t>(value.size());
    } else {
      node.kind = Node::Kind::literals;
      node.literals.insert(value.dump(), 0);
      node.literal_texts.push_back(value.dump());
    }
    nodes_[index] = std::move(node);
    return index;
  }

  Node typed(const Json& schema, const std::string& type, const std::string& pointer) {
    Node node;
    if (type == "object") return object(schema, pointer);
    if (type == "array") return array(schema, pointer);
    if (type == "string") {
      node.kind = Node::Kind::string;
      if (schema.contains("minLength")) node.min = count(schema, "minLength", pointer);
      if (schema.contains("maxLength")) node.max = count(schema, "maxLength", pointer);
      if (node.min > node.max) fail(pointer + "/minLength", "is more than maxLength");
      return string_pattern(schema, std::move(node), pointer);
    }
    if (type == "number" && schema.contains("multipleOf") && multiple_of(schema, pointer) > 0)
      return integer(schema, pointer);  // a multiple of a whole number is one
    if (type == "number")
      return number(schema, pointer);
    else if (type == "integer")
      return integer(schema, pointer);
    else if (type == "boolean")
      node.kind = Node::Kind::boolean;
    else if (type == "null")
      node.kind = Node::Kind::null;
    else
      fail(pointer + "/type", "'" + type +
                                  "' is not a JSON Schema type (object, array, string, number, "
                                  "integer, boolean, null)");
    return node;
  }

  // A string's pattern, or the pattern of its format where moed knows one, with its length
  // bounds. One it cannot hold is an error when strict, and left free otherwise.
  Node string_pattern(const Json& schema, Node node, const std::string& pointer) {
    std::optional<StringPattern::Format> format;
    if (schema.contains("format") && schema["format"].is_string())
      format = StringPattern::format(schema["format"].get<std::string>());
    const bool has_pattern = schema.contains("pattern");
    if (has_pattern && !schema["pattern"].is_string())
      fail(pointer + "/pattern",
           "expected a regular expression (a string), got " + schema["pattern"].dump());
    if (!has_pattern && !format) return node;
    if (has_pattern && format && strict_)
      fail(pointer + "/format",
           "'format' beside 'pattern' is not supported; fold the format into the pattern");
    const std::string keyword = has_pattern ? "pattern" : "format";
    const std::string text = has_pattern ? schema["pattern"].get<std::string>() : format->pattern;
    const std::uint32_t max = has_pattern ? node.max : std::min(node.max, format->max_characters);
    const auto key = std::make_tuple(text, node.min, max);
    if (const auto known = pattern_index_.find(key); known != pattern_index_.end()) {
      node.pattern = known->second;  // kNoPattern where it was left free
      return node;
    }
    try {
      // One budget for all the schema's patterns, as one request compiles them all.
      StringPattern compiled = StringPattern::compile(text, node.min, max, pattern_budget_);
      if (!compiled.satisfiable()) {
        Node none;  // as `false`: pruned where optional, an error where required
        none.kind = Node::Kind::any_of;
        return none;
      }
      node.pattern = static_cast<std::uint32_t>(patterns_.size());
      pattern_index_.emplace(key, node.pattern);
      patterns_.push_back(std::move(compiled));
    } catch (const PatternError& error) {
      pattern_index_.emplace(key, CompiledSchema::kNoPattern);
      if (strict_)
        fail(pointer + "/" + keyword,
             (has_pattern ? (error.offset == PatternError::kWhole
                                 ? std::string()
                                 : "at byte " + std::to_string(error.offset) + " of the pattern: ")
                          : "the pattern of format '" + schema["format"].get<std::string>() +
                                "' with the length bounds: ") +
                 error.what());
    }
    return node;
  }

  // A number's multipleOf where it is a whole number; 0 where there is none, or where it is not
  // whole (refused when strict: validators compare such a multiple in floating point, where 0.07
  // is no multiple of 0.01).
  std::uint64_t multiple_of(const Json& schema, const std::string& pointer) {
    if (!schema.contains("multipleOf")) return 0;
    const Json& value = schema["multipleOf"];
    if (!value.is_number() || value.get<double>() <= 0)
      fail(pointer + "/multipleOf", "expected a number greater than 0, got " + value.dump());
    const std::uint64_t whole = whole_multiple(value);
    if (whole == 0 && strict_)
      fail(pointer + "/multipleOf",
           "only a whole multipleOf is supported (validators compare a fractional one in "
           "floating point, where 0.07 is not a multiple of 0.01)");
    return whole;
  }

  // An integer within minimum, maximum, exclusiveMinimum and exclusiveMaximum (JSON numbers,
  // draft 2020-12), held to int64.
  Node integer(const Json& schema, const std::string& pointer) {
    // Exact, as a validator compares an integer with a bound: integer bounds as they are, and
    // a double's floor and ceiling (whole numbers that a double holds exactly).
    __extension__ using Wide = __int128;
    Node node;
    node.kind = Node::Kind::integer;
    Wide lowest = std::numeric_limits<std::int64_t>::min();
    Wide highest = std::numeric_limits<std::int64_t>::max();
    for (const char* keyword : {"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"}) {
      if (!schema.contains(keyword)) continue;
      const Json& value = schema[keyword];
      if (!value.is_number())
        fail(pointer + "/" + keyword, "expected a number, got " + value.dump());
      Wide floor = 0, ceiling = 0;
      if (value.is_number_unsigned()) {
        floor = ceiling = static_cast<Wide>(value.get<std::uint64_t>());
      } else if (value.is_number_integer()) {
        floor = ceiling = static_cast<Wide>(value.get<std::int64_t>());
      } else {
        const double bound = std::clamp(value.get<double>(), -1e30, 1e30);  // past any int64
        floor = static_cast<Wide>(std::floor(bound));
        ceiling = static_cast<Wide>(std::ceil(bound));
      }
      const std::string_view name = keyword;
      if (name == "minimum") lowest = std::max(lowest, ceiling);
      if (name == "exclusiveMinimum") lowest = std::max(lowest, floor + 1);
      if (name == "maximum") highest = std::min(highest, floor);
      if (name == "exclusiveMaximum") highest = std::min(highest, ceiling - 1);
      node.bounded = true;
    }
    if (lowest > highest)
      fail(pointer, "no integer (of 64 bits) lies within the schema's minimum and maximum");
    if (const std::uint64_t multiple = multiple_of(schema, pointer); multiple > 1) {
      node.multiple = multiple;
      node.bounded = true;
      lowest = std::max<Wide>(lowest, -static_cast<Wide>(kMultipleReach));
      highest = std::min<Wide>(highest, kMultipleReach);
      if (!has_multiple(lowest, highest, multiple))
        fail(pointer, "no multiple of " + schema["multipleOf"].dump() +
                          " within 2^53 of 0 (where validators that divide in floating point "
                          "agree) lies within the schema's minimum and maximum");
    }
    node.lowest = static_cast<std::int64_t>(lowest);
    node.highest = static_cast<std::int64_t>(highest);
    return node;
  }

  // A number within minimum, maximum, exclusiveMinimum and exclusiveMaximum, as a validator
  // compares them: the double the answer's text parses to.
  Node number(const Json& schema, const std::string& pointer) {
    Node node;
    node.kind = Node::Kind::number;
    for (const char* keyword : {"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"}) {
      if (!schema.contains(keyword)) continue;
      const Json& value = schema[keyword];
      if (!value.is_number())
        fail(pointer + "/" + keyword, "expected a number, got " + value.dump());
      const double bound = value.get<double>();
      const std::string_view name = keyword;
      const bool open = name.starts_with("exclusive");
      if (name.ends_with("inimum") && (bound > node.low || (bound == node.low && open))) {
        node.low = bound;
        node.low_open = open;
      }
      if (name.ends_with("aximum") && (bound < node.high || (bound == node.high && open))) {
        node.high = bound;
        node.high_open = open;
      }
      node.bounded = true;
    }
    if (!overlaps_bounds(-SchemaPrefix::kNumberReach, SchemaPrefix::kNumberReach, node.low,
                         node.low_open, node.high, node.high_open))
      fail(pointer, "no number of at most " + std::to_string(SchemaPrefix::kBoundedNumberDigits) +
                        " integer digits lies within the schema's minimum and maximum");
    return node;
  }

  Node object(const Json& schema, const std::string& pointer) {
    Node node;
    std::set<std::string> required;
    if (schema.contains("required")) {
      const Json& names = schema["required"];
      if (!names.is_array()) fail(pointer + "/required", "expected an array of property names");
      for (const auto& name : names) {
        if (!name.is_string())
          fail(pointer + "/required", "expected property names, got " + name.dump());
        required.insert(name.get<std::string>());
      }
    }
    const bool has_properties = schema.contains("properties");
    const Json* additional =
        schema.contains("additionalProperties") ? &schema["additionalProperties"] : nullptr;
    const bool closed = additional && additional->is_boolean() && !additional->get<bool>();
    if (!has_properties && required.empty()) {
      if (closed) {
        node.kind = Node::Kind::object;
      } else if (additional && !additional->is_boolean()) {
        node.kind = Node::Kind::map;
        node.item = compile(*additional, pointer + "/additionalProperties");
      } else {
        node.kind = Node::Kind::any_object;
      }
      return node;
    }
    node.kind = Node::Kind::object;
    std::set<std::string> declared;
    if (has_properties) {
      const Json& properties = schema["properties"];
      if (!properties.is_object())
        fail(pointer + "/properties", "expected an object of property schemas");
      for (const auto& [name, property] : properties.items()) {
        const std::uint32_t child =
            compile(property, pointer + "/properties/" + escape_pointer_token(name));
        node.properties.push_back({Json(name).dump(), child, required.count(name) > 0});
        declared.insert(name);
      }
    }
    // A required property without a schema of its own takes any value, unless none may be there.
    for (const auto& name : required) {
      if (declared.count(name)) continue;
      if (closed)
        fail(pointer + "/required",
             "'" + name +
                 "' is required, but additionalProperties is false and properties does "
                 "not declare it");
      const std::uint32_t child = additional && !additional->is_boolean()
                                      ? compile(*additional, pointer + "/additionalProperties")
                                      : compile(Json::object(), pointer + "/required");
      node.properties.push_back({Json(name).dump(), child, true});
    }
    return node;
  }

  Node array(const Json& schema, const std::string& pointer) {
    Node node;
    node.kind = Node::Kind::array;
    // Draft 2020-12's prefixItems and items; draft 7's items array and additionalItems.
    const Json* prefix = schema.contains("prefixItems") ? &schema["prefixItems"] : nullptr;
    std::string prefix_pointer = pointer + "/prefixItems";
    const Json* rest = schema.contains("items") ? &schema["items"] : nullptr;
    std::string rest_pointer = pointer + "/items";
    if (rest && rest->is_array() && !prefix) {
      prefix = rest;
      prefix_pointer = rest_pointer;
      rest = schema.contains("additionalItems") ? &schema["additionalItems"] : nullptr;
      rest_pointer = pointer + "/additionalItems";
    }
    if (prefix) {
      if (!prefix->is_array()) fail(prefix_pointer, "expected an array of schemas");
      for (std::size_t i = 0; i < prefix->size(); ++i)
        node.prefix_items.push_back(
            compile((*prefix)[i], prefix_pointer + "/" + std::to_string(i)));
    }
    if (schema.contains("minItems")) node.min = count(schema, "minItems", pointer);
    if (schema.contains("maxItems")) node.max = count(schema, "maxItems", pointer);
    if (rest && rest->is_boolean() && !rest->get<bool>()) {
      node.max =
          std::min<std::uint32_t>(node.max, static_cast<std::uint32_t>(node.prefix_items.size()));
      node.item = compile(Json::object(), rest_pointer);
    } else {
      node.item = compile(rest ? *rest : Json::object(), rest_pointer);
    }
    if (node.min > node.max)
      fail(pointer + "/minItems", "asks for more items than the schema allows");
    return node;
  }

  std::uint32_t item_node(const Node& node, std::uint32_t i) const {
    return i < node.prefix_items.size() ? node.prefix_items[i] : node.item;
  }

  // Which nodes some finite answer satisfies (a fixpoint: recursion must bottom out); the others
  // are taken out of every optional place, so that no reading can enter one and dead-end.
  void prune_unfinishable(const std::string& pointer) {
    std::vector<bool> finishable(nodes_.size());
    for (bool changed = true; changed;) {
      changed = false;
      for (std::size_t i = 0; i < nodes_.size(); ++i) {
        if (finishable[i]) continue;
        const Node& node = nodes_[i];
        bool can = true;
        switch (node.kind) {
          case Node::Kind::object:
            can = std::all_of(node.properties.begin(), node.properties.end(),
                              [&](const Property& p) { return !p.required || finishable[p.node]; });
            break;
          case Node::Kind::array: {
            // Every item past the prefix is `item`'s: one look at it will do.
            const auto last = std::min<std::uint64_t>(node.min, node.prefix_items.size() + 1);
            for (std::uint32_t k = 0; k < last && can; ++k) can = finishable[item_node(node, k)];
            break;
          }
          case Node::Kind::any_of:
            can = std::any_of(node.alternatives.begin(), node.alternatives.end(),
                              [&](std::uint32_t a) { return finishable[a]; });
            break;
          default:
            break;
        }
        if (can) finishable[i] = changed = true;
      }
    }
    (void)pointer;
    if (!finishable[0]) {
      // Name the deepest subschema on the way that no answer can satisfy.
      std::uint32_t at = 0;
      std::vector<bool> seen(nodes_.size());
      for (bool deeper = true; deeper && !seen[at];) {
        seen[at] = true;
        deeper = false;
        const Node& node = nodes_[at];
        std::vector<std::uint32_t> needed;
        if (node.kind == Node::Kind::object)
          for (const auto& p : node.properties)
            if (p.required) needed.push_back(p.node);
        if (node.kind == Node::Kind::array)
          for (std::uint32_t k = 0;
               k < std::min<std::uint64_t>(node.min, node.prefix_items.size() + 1); ++k)
            needed.push_back(item_node(node, k));
        if (node.kind == Node::Kind::any_of && node.alternatives.size() == 1)
          needed = node.alternatives;
        for (const std::uint32_t n : needed)
          if (!finishable[n] && !seen[n]) {
            at = n;
            deeper = true;
            break;
          }
      }
      fail(pointers_[at], "no finite JSON value satisfies this schema" +
                              std::string(at == 0 ? "" : ", which the schema requires"));
    }
    for (std::size_t i = 0; i < nodes_.size(); ++i) {
      Node& node = nodes_[i];
      if (!finishable[i]) continue;
      switch (node.kind) {
        case Node::Kind::object:
          std::erase_if(node.properties, [&](const Property& p) { return !finishable[p.node]; });
          break;
        case Node::Kind::map:
          if (!finishable[node.item]) node.kind = Node::Kind::object;
          break;
        case Node::Kind::array:
          for (std::uint32_t k = node.min; k < node.max; ++k) {
            if (k >= node.prefix_items.size() && finishable[node.item]) break;
            if (!finishable[item_node(node, k)]) {
              node.max = k;
              break;
            }
          }
          break;
        case Node::Kind::any_of:
          std::erase_if(node.alternatives, [&](std::uint32_t a) { return !finishable[a]; });
          break;
        default:
          break;
      }
    }
  }

  // Each object's keys as one trie, so that a reading at a key follows all the properties that
  // may come there at once.
  void index_keys() {
    for (auto& node : nodes_) {
      if (node.kind != Node::Kind::object) continue;
      node.keys = ByteTrie();
      node.key_window_end.assign(node.properties.size(), 0);
      auto end = static_cast<std::uint32_t>(node.properties.size());
      for (auto p = end; p-- > 0;) {
        if (node.properties[p].required) end = p + 1;
        node.key_window_end[p] = end;
      }
      for (std::size_t p = 0; p < node.properties.size(); ++p)
        node.keys.insert(node.properties[p].key, static_cast<std::int32_t>(p));
    }
  }

  // The node an alias (an anyOf of one) stands for.
  const Node& resolved(std::uint32_t n) const {
    while (nodes_[n].kind == Node::Kind::any_of && nodes_[n].alternatives.size() == 1)
      n = nodes_[n].alternatives[0];
    return nodes_[n];
  }

  // What JSON type an answer of the node may have: a letter per type (n for both numbers), or
  // '*' for any.
  static std::string types_of(const Node& node) {
    switch (node.kind) {
      case Node::Kind::object:
      case Node::Kind::map:
      case Node::Kind::any_object:
        return "o";
      case Node::Kind::array:
        return "a";
      case Node::Kind::string:
        return "s";
      case Node::Kind::number:
      case Node::Kind::integer:
        return "n";
      case Node::Kind::boolean:
        return "b";
      case Node::Kind::null:
        return "z";
      case Node::Kind::literals: {
        std::string types;
        for (const auto& text : node.literal_texts)
          types += text[0] == '"'                       ? 's'
                   : text[0] == 'n'                     ? 'z'
                   : (text[0] == 't' || text[0] == 'f') ? 'b'
                                                        : 'n';
        return types;
      }
      default:
        return "*";
    }
  }

  // Whether no answer is an instance of two of a oneOf's alternatives: none stands for a node
  // another does, and any two nodes they stand for differ in type, or are objects a required
  // property with a different const in each tells apart (values compared as JSON compares
  // them: 1 and 1.0 are one).
  bool exclusive(const Node& one_of) const {
    std::vector<std::vector<std::uint32_t>> stands_for;
    for (const std::uint32_t alternative : one_of.alternatives)
      stands_for.push_back(leaves({alternative}));
    for (std::size_t i = 0; i < stands_for.size(); ++i)
      for (std::size_t j = i + 1; j < stands_for.size(); ++j)
        for (const std::uint32_t x : stands_for[i])
          for (const std::uint32_t y : stands_for[j])
            if (x == y || !apart(nodes_[x], nodes_[y])) return false;
    return true;
  }

  static bool share_a_value(const Node& a, const Node& b) {
    return std::any_of(a.literal_texts.begin(), a.literal_texts.end(), [&](const auto& x) {
      return std::any_of(b.literal_texts.begin(), b.literal_texts.end(),
                         [&](const auto& y) { return Json::parse(x) == Json::parse(y); });
    });
  }

  bool apart(const Node& a, const Node& b) const {
    if (a.kind == Node::Kind::literals && b.kind == Node::Kind::literals)
      return !share_a_value(a, b);
    const std::string ta = types_of(a), tb = types_of(b);
    if (ta.find('*') == std::string::npos && tb.find('*') == std::string::npos &&
        ta.find_first_of(tb) == std::string::npos)
      return true;
    if (a.kind != Node::Kind::object || b.kind != Node::Kind::object) return false;
    return std::any_of(a.properties.begin(), a.properties.end(), [&](const Property& pa) {
      return pa.required &&
             std::any_of(b.properties.begin(), b.properties.end(), [&](const Property& pb) {
               const Node& va = resolved(pa.node);
               const Node& vb = resolved(pb.node);
               return pb.required && pb.key == pa.key && va.kind == Node::Kind::literals &&
                      vb.kind == Node::Kind::literals && !share_a_value(va, vb);
             });
    });
  }

  // The nodes that are not anyOf which `roots` stand for, each once, in order (an anyOf may
  // refer to itself).
  std::vector<std::uint32_t> leaves(const std::vector<std::uint32_t>& roots) const {
    std::vector<std::uint32_t> found;
    std::vector<bool> seen(nodes_.size());
    std::vector<std::uint32_t> pending(roots.rbegin(), roots.rend());
    while (!pending.empty()) {
      const std::uint32_t n = pending.back();
      pending.pop_back();
      if (seen[n]) continue;
      seen[n] = true;
      if (nodes_[n].kind != Node::Kind::any_of) {
        found.push_back(n);
        continue;
      }
      pending.insert(pending.end(), nodes_[n].alternatives.rbegin(), nodes_[n].alternatives.rend());
    }
    return found;
  }

  // An anyOf's alternatives become the nodes that are not anyOf themselves, so that reading one
  // never loops.
  void flatten_alternatives() {
    for (auto& node : nodes_)
      if (node.kind == Node::Kind::any_of) node.alternatives = leaves(node.alternatives);
  }

  const Json& document_;
  bool strict_;
  std::vector<Node>& nodes_;
  std::vector<StringPattern>& patterns_;
  // Each pattern with its bounds: its automaton, or kNoPattern where it was left free.
  std::map<std::tuple<std::string, std::uint32_t, std::uint32_t>, std::uint32_t> pattern_index_;
  std::uint64_t pattern_budget_ = 4 * StringPattern::kMaxWork;
  std::map<std::string, std::uint32_t> refs_;  // JSON Pointer: its node
  std::vector<std::string> pointers_;          // each node's JSON Pointer
  int depth_ = 0;                              // of compile_into calls
};

CompiledSchema CompiledSchema::compile(const nlohmann::ordered_json& schema, bool strict) {
  CompiledSchema compiled;
  Compiler compiler(schema, strict, compiled);
  compiler.compile(schema, "");
  compiler.finish("");
  return compiled;
}

CompiledSchema CompiledSchema::any_object() {
  CompiledSchema compiled;
  compiled.nodes_.emplace_back().kind = Node::Kind::any_object;
  return compiled;
}

SchemaPrefix::SchemaPrefix(const CompiledSchema& schema) : schema_(&schema) {
  readings_.emplace_back().stack.push_back(Frame{0});
}

bool SchemaPrefix::complete() const {
  return std::any_of(readings_.begin(), readings_.end(),
                     [](const Reading& r) { return r.stack.empty(); });
}

bool SchemaPrefix::in_string() const {
  using Kind = CompiledSchema::Node::Kind;
  return std::all_of(readings_.begin(), readings_.end(), [&](const Reading& r) {
    if (r.stack.empty()) return false;
    const Frame& top = r.stack.back();
    const auto& node = schema_->nodes_[top.node];
    const bool free_text =
        top.phase == Phase::free_key ||
        (top.phase == Phase::leaf &&
         (node.kind != Kind::string || (node.max == std::numeric_limits<std::uint32_t>::max() &&
                                        node.pattern == CompiledSchema::kNoPattern)));
    return free_text && r.scalar.in_string();
  });
}

bool SchemaPrefix::feed(unsigned char byte) {
  std::vector<Reading>& next = spare_;
  next.clear();
  for (auto& reading : readings_) step(std::move(reading), byte, next);
  // Readings that the bytes have brought to the same state are one.
  for (std::size_t i = 0; i < next.size(); ++i)
    for (std::size_t j = next.size() - 1; j > i; --j)
      if (next[j] == next[i]) next.erase(next.begin() + static_cast<std::ptrdiff_t>(j));
  if (next.size() > kMaxReadings) next.resize(kMaxReadings);
  readings_.swap(next);
  return !readings_.empty();
}

bool SchemaPrefix::blank(Reading& reading, unsigned char byte) {
  if (byte == '\n') {
    if (reading.line_breaks == 1) return false;
    ++reading.line_breaks;
    return true;
  }
  if (reading.indent == JsonPrefix::kMaxIndent) return false;
  ++reading.indent;
  return true;
}

bool SchemaPrefix::start_value(Reading& reading, unsigned char byte,
                               std::vector<Reading>& next) const {
  using Kind = CompiledSchema::Node::Kind;
  Frame& frame = reading.stack.back();
  const auto& node = schema_->nodes_[frame.node];
  switch (node.kind) {
    case Kind::any_of:
      for (const std::uint32_t alternative : node.alternatives) {
        Reading branch = reading;
        branch.stack.back() = Frame{alternative};
        if (start_value(branch, byte, next)) next.push_back(std::move(branch));
      }
      return false;
    case Kind::object:
    case Kind::map:
      frame.phase = Phase::first_key;
      return byte == '{';
    case Kind::array:
      frame.phase = Phase::first_item;
      return byte == '[';
    case Kind::literals: {
      const std::uint32_t child = node.literals.child(0, byte);
      if (child == 0) return false;
      frame.phase = Phase::literal;
      frame.position = child;
      if (node.literals.is_leaf(child)) reading.stack.pop_back();
      return true;
    }
    default:
      break;
  }
  const bool starts = [&] {
    switch (node.kind) {
      case Kind::any_object:
        return byte == '{';
      case Kind::string:
        return byte == '"';
      case Kind::number:
      case Kind::integer:
        return byte == '-' || (byte >= '0' && byte <= '9');
      case Kind::boolean:
        return byte == 't' || byte == 'f';
      case Kind::null:
        return byte == 'n';
      default:
        return true;
    }
  }();
  if (!starts) return false;
  reading.characters = 0;
  if (node.kind == Kind::string && node.pattern != CompiledSchema::kNoPattern) {
    reading.scalar = JsonPrefix();  // unused: the pattern's automaton reads the string
    reading.text_state = schema_->patterns_[node.pattern].start();
    frame.phase = Phase::leaf;
    return true;
  }
  reading.scalar = node.kind == Kind::any_object ? JsonPrefix() : JsonPrefix::value();
  reading.magnitude = 0;
  reading.negative = false;
  reading.number.clear();
  frame.phase = Phase::leaf;
  return leaf_byte(reading, byte);
}

bool SchemaPrefix::integer_may_reach_bounds(const CompiledSchema::Node& node,
                                            const Reading& reading) {
  __extension__ using Wide = __int128;  // 20 digits and int64 bounds, without overflow
  const Wide lowest = node.lowest, highest = node.highest;
  // "-": any negative (an int64's 19 digits are within reach), or -0.
  if (reading.characters == 0)
    return has_multiple(lowest, std::min<Wide>(highest, 0), node.multiple);
  if (reading.magnitude == 0) return lowest <= 0 && 0 <= highest;
  if (reading.magnitude == kHuge) return false;
  // The values the digits so far may grow into: k more digits give [M 10^k, (M + 1) 10^k - 1].
  Wide low = reading.magnitude, high = reading.magnitude;
  for (std::size_t more = 0; reading.characters + more <= JsonPrefix::kMaxIntegerDigits; ++more) {
    const Wide from = reading.negative ? -high : low, to = reading.negative ? -low : high;
    if (has_multiple(std::max(from, lowest), std::min(to, highest), node.multiple)) return true;
    if (low > std::numeric_limits<std::int64_t>::max()) break;
    low *= 10;
    high = high * 10 + 9;
  }
  return false;
}

bool SchemaPrefix::number_may_reach_bounds(const CompiledSchema::Node& node,
                                           const std::string& text) {
  const bool negative = !text.empty() && text[0] == '-';
  const std::string digits = negative ? text.substr(1) : text;
  // Decimals with these digits first lie in [a, b) exactly; the doubles they parse to fill
  // [double(a), double(b)], rounding being monotonic and decimals dense.
  auto reaches = [&](const std::string& a, const std::string& b) {
    const double from = std::strtod(a.c_str(), nullptr), to = std::strtod(b.c_str(), nullptr);
    return negative
               ? overlaps_bounds(-to, -from, node.low, node.low_open, node.high, node.high_open)
               : overlaps_bounds(from, to, node.low, node.low_open, node.high, node.high_open);
  };
  if (digits.empty()) return reaches("0", "1" + std::string(kBoundedNumberDigits, '0'));
  if (digits.back() == '.') {
    const std::string whole = digits.substr(0, digits.size() - 1);
    return reaches(whole, next_in_last_place(whole));
  }
  if (digits.find('.') != std::string::npos || digits == "0")
    return reaches(digits, next_in_last_place(digits));
  for (std::size_t more = 0; digits.size() + more <= kBoundedNumberDigits; ++more) {
    const std::string zeros(more, '0');
    if (reaches(digits + zeros, next_in_last_place(digits) + zeros)) return true;
  }
  return false;
}

bool SchemaPrefix::number_within_bounds(const CompiledSchema::Node& node, const std::string& text) {
  const double value = std::strtod(text.c_str(), nullptr);
  return overlaps_bounds(value, value, node.low, node.low_open, node.high, node.high_open);
}

bool SchemaPrefix::integer_within_bounds(const CompiledSchema::Node& node, const Reading& reading) {
  if (reading.magnitude == kHuge) return false;
  __extension__ using Wide = __int128;
  const Wide value = reading.negative ? -static_cast<Wide>(reading.magnitude)
                                      : static_cast<Wide>(reading.magnitude);
  return node.lowest <= value && value <= node.highest &&
         (node.multiple == 0 || value % static_cast<Wide>(node.multiple) == 0);
}

bool SchemaPrefix::leaf_byte(Reading& reading, unsigned char byte) const {
  using Kind = CompiledSchema::Node::Kind;
  const auto& node = schema_->nodes_[reading.stack.back().node];
  if (node.kind == Kind::integer && (byte == '.' || byte == 'e' || byte == 'E')) return false;
  if (node.kind == Kind::number && node.bounded) {
    if (byte == 'e' || byte == 'E') return false;  // its digits are read as a decimal
    reading.number += static_cast<char>(byte);
    if (!number_may_reach_bounds(node, reading.number)) return false;
  }
  if (node.kind == Kind::integer && node.bounded) {
    if (byte == '-') {
      reading.negative = true;
    } else if (byte >= '0' && byte <= '9') {
      const auto digit = static_cast<std::uint64_t>(byte - '0');
      reading.magnitude =
          reading.magnitude > (kHuge - digit) / 10 ? kHuge : reading.magnitude * 10 + digit;
      ++reading.characters;
    }
    if (!integer_may_reach_bounds(node, reading)) return false;
  }
  if (node.kind == Kind::string && reading.scalar.in_string()) {
    if (byte == '"') {
      if (reading.characters < node.min) return false;
    } else if (reading.characters++ == node.max) {
      return false;
    }
  }
  if (!reading.scalar.feed(byte)) return false;
  if (reading.scalar.complete()) reading.stack.pop_back();
  return true;
}

bool SchemaPrefix::pattern_byte(Reading& reading, const CompiledSchema::Node& node,
                                unsigned char byte) const {
  const StringPattern& pattern = schema_->patterns_[node.pattern];
  if (byte == '"' && pattern.at_character_boundary(reading.text_state)) {
    if (!pattern.may_end(reading.text_state, reading.characters)) return false;
    reading.stack.pop_back();
    // A state of this pattern's automaton means nothing past the string: readings that took
    // different patterns to the same text are one from here.
    reading.text_state = 0;
    return true;
  }
  bool completes = false;
  const std::uint32_t next = pattern.next(reading.text_state, reading.characters, byte, completes);
  if (next == StringPattern::kDead) return false;
  reading.text_state = next;
  reading.characters += completes ? 1 : 0;
  return true;
}

void SchemaPrefix::step(Reading reading, unsigned char byte, std::vector<Reading>& next) const {
  using Kind = CompiledSchema::Node::Kind;
  const bool is_blank = is_json_blank(byte);
  // Bytes that end a value (a number, a literal that others go on from) belong to what follows:
  // the loop hands them on.
  while (!reading.stack.empty()) {
    Frame& frame = reading.stack.back();
    const auto& node = schema_->nodes_[frame.node];
    const bool free_keys = node.kind == Kind::map;
    auto required_from = [&](std::uint32_t from) {
      return std::any_of(node.properties.begin() + from, node.properties.end(),
                         [](const CompiledSchema::Property& p) { return p.required; });
    };
    auto take_blank = [&] {
      if (blank(reading, byte)) next.push_back(std::move(reading));
    };
    bool taken = false;
    switch (frame.phase) {
      case Phase::start:
        if (is_blank) return take_blank();
        reading.line_breaks = reading.indent = 0;
        taken = start_value(reading, byte, next);
        break;
      case Phase::leaf:
        if (node.kind == Kind::string && node.pattern != CompiledSchema::kNoPattern) {
          taken = pattern_byte(reading, node, byte);
          break;
        }
        if (reading.scalar.ends_before(byte)) {
          if (node.kind == Kind::integer && node.bounded && !integer_within_bounds(node, reading))
            return;
          if (node.kind == Kind::number && node.bounded &&
              !number_within_bounds(node, reading.number))
            return;
          reading.stack.pop_back();
          continue;
        }
        taken = leaf_byte(reading, byte);
        break;
      case Phase::literal: {
        if (const std::uint32_t child = node.literals.child(frame.position, byte); child != 0) {
          frame.position = child;
          if (node.literals.is_leaf(child)) reading.stack.pop_back();
          taken = true;
          break;
        }
        if (node.literals.name_at(frame.position) < 0) return;
        reading.stack.pop_back();
        continue;
      }
      case Phase::first_key:
      case Phase::next_key:
        if (is_blank) return take_blank();
        reading.line_breaks = reading.indent = 0;
        if (byte == '}' && frame.phase == Phase::first_key && (free_keys || !required_from(0))) {
          reading.stack.pop_back();
          taken = true;
          break;
        }
        if (byte != '"') return;
        if (free_keys) {
          reading.scalar = JsonPrefix::value();
          reading.scalar.feed(byte);
          frame.phase = Phase::free_key;
          taken = true;
          break;
        }
        if (frame.index == node.properties.size()) return;
        frame.phase = Phase::key;
        frame.position = 0;
        [[fallthrough]];
      case Phase::key: {
        // Any property from `index` up to the next required one may come here; the key read so
        // far must lead to one of them. A key ends with its closing quote, so where a name is,
        // the key is whole.
        const std::uint32_t child = node.keys.child(frame.position, byte);
        if (child == 0 ||
            !node.keys.leads_to(child, static_cast<std::int32_t>(frame.index),
                                static_cast<std::int32_t>(node.key_window_end[frame.index])))
          return;
        frame.position = child;
        if (const std::int32_t property = node.keys.name_at(child); property >= 0) {
          frame.index = static_cast<std::uint32_t>(property);
          frame.phase = Phase::colon;
        }
        taken = true;
        break;
      }
      case Phase::free_key:
        taken = reading.scalar.feed(byte);
        if (reading.scalar.complete()) frame.phase = Phase::colon;
        break;
      case Phase::colon: {
        if (is_blank) return take_blank();
        reading.line_breaks = reading.indent = 0;
        if (byte != ':') return;
        const std::uint32_t value = free_keys ? node.item : node.properties[frame.index].node;
        frame.phase = Phase::after_member;
        if (!free_keys) ++frame.index;
        reading.stack.push_back(Frame{value});
        taken = true;
        break;
      }
      case Phase::after_member:
        if (is_blank) return take_blank();
        reading.line_breaks = reading.indent = 0;
        if (byte == ',' && (free_keys || frame.index < node.properties.size())) {
          frame.phase = Phase::next_key;
          taken = true;
        } else if (byte == '}' && (free_keys || !required_from(frame.index))) {
          reading.stack.pop_back();
          taken = true;
        }
        break;
      case Phase::first_item: {
        if (is_blank) return take_blank();
        reading.line_breaks = reading.indent = 0;
        if (byte == ']' && node.min == 0) {
          reading.stack.pop_back();
          taken = true;
          break;
        }
        if (node.max == 0) return;
        frame.phase = Phase::after_item;
        frame.index = 1;
        const std::uint32_t item =
            node.prefix_items.empty() ? node.item : node.prefix_items.front();
        reading.stack.push_back(Frame{item});
        continue;
      }
      case Phase::after_item:
        if (is_blank) return take_blank();
        reading.line_breaks = reading.indent = 0;
        if (byte == ',' && frame.index < node.max) {
          const std::uint32_t item =
              frame.index < node.prefix_items.size() ? node.prefix_items[frame.index] : node.item;
          ++frame.index;
          reading.stack.push_back(Frame{item});
          taken = true;
        } else if (byte == ']' && frame.index >= node.min) {
          reading.stack.pop_back();
          taken = true;
        }
        break;
    }
    if (taken) next.push_back(std::move(reading));
    return;
  }
}

}  // namespace moed::server
