#pragma once

#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

namespace moed::server {

// Whitespace between JSON's tokens (RFC 8259).
inline bool is_json_blank(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

// A prefix of a JSON text (RFC 8259) whose value is an object, read byte by byte. Its state is a
// few words, so trying a token's bytes on a copy costs no allocation. Strings are UTF-8 and their
// \u escapes pair surrogates, as parsers require. Limits keep a model from looping where JSON
// lets it, and numbers within a double: a run of whitespace holds at most one line break and 20
// spaces or tabs (as llama.cpp's JSON grammar), containers nest at most 64 deep, a number has at
// most 20 integer digits and 2 exponent digits.
class JsonPrefix {
 public:
  // A prefix of one JSON value of any kind, as a schema leaves free (JsonPrefix() reads an
  // object). It completes where the value does; a number, at the first byte that cannot go on.
  static JsonPrefix value() {
    JsonPrefix prefix;
    prefix.state_ = State::value;
    return prefix;
  }
  static constexpr int kMaxDepth = 64;
  static constexpr int kMaxIndent = 20;
  static constexpr int kMaxIntegerDigits = 20;
  static constexpr int kMaxExponentDigits = 2;
  // Whether `byte` may follow the bytes taken so far; if so, it is taken. After a false the
  // prefix is spent: try bytes on a copy.
  bool feed(unsigned char byte);
  // The top object has closed; nothing may follow.
  bool complete() const { return state_ == State::done; }
  // Inside a string, where any UTF-8 text without '"', '\\' and control characters keeps it.
  bool in_string() const {
    return state_ == State::string && utf8_left_ == 0 && !low_surrogate_due_;
  }
  // The value is a number, whole, and `byte` cannot continue it: the value ends before `byte`.
  bool ends_before(unsigned char byte) const { return depth_ == 0 && number_ends_before(byte); }
  bool operator==(const JsonPrefix&) const = default;

 private:
  enum class State : std::uint8_t {
    start,         // before the top object: '{'
    value,         // after ':', or ',' in an array
    array_first,   // after '[': a value or ']'
    object_first,  // after '{': a key or '}'
    key,           // after ',' in an object: a key
    colon,         // after a key
    after_value,   // after a value in a container: ',' or its closing
    string,
    escape,         // after '\' in a string
    unicode,        // in the four hex digits of \u
    minus,          // after a number's '-'
    zero,           // a number's leading 0
    integer,        // a number's integer digits after the first nonzero one
    dot,            // after the '.'
    fraction,       // after a fraction digit
    exponent,       // after 'e' or 'E'
    exponent_sign,  // after the exponent's sign
    exponent_digits,
    literal,  // inside true, false or null
    done,
  };
  bool number_ends_before(unsigned char byte) const;
  bool whitespace(unsigned char byte);
  bool begin_value(unsigned char byte);
  bool open(bool object);
  bool close();
  bool end_value();  // a value is complete: where next
  bool string_byte(unsigned char byte);
  bool unicode_digit(unsigned char byte);
  bool in_object() const { return (containers_ >> (depth_ - 1)) & 1u; }

  State state_ = State::start;
  bool string_is_key_ = false;
  std::uint8_t depth_ = 0;
  std::uint8_t hex_left_ = 0;
  bool escape_starts_with_d_ = false;  // the \u escape being read: its first digit is d or D
  bool escape_is_high_surrogate_ = false;
  bool low_surrogate_due_ = false;  // a \u escape of a low surrogate must come next
  std::uint8_t utf8_left_ = 0;      // continuation bytes the character being read still needs
  unsigned char utf8_low_ = 0x80;   // the range of the next one
  unsigned char utf8_high_ = 0xbf;
  std::uint8_t digits_ = 0;       // in the number part being read (integer or exponent)
  std::uint8_t line_breaks_ = 0;  // in the current run of whitespace
  std::uint8_t indent_ = 0;
  const char* literal_rest_ = nullptr;  // the letters of the literal still to come
  std::uint64_t containers_ = 0;        // bit d: the container at depth d + 1 is an object
};

// Names (or any byte strings) as a trie over bytes, the root first: a choice among them is read
// one byte at a time.
class ByteTrie {
 public:
  ByteTrie() : nodes_(1) {}
  // Indices are inserted in ascending order.
  void insert(std::string_view name, std::int32_t index);
  // The node after `byte` from `node`, or 0 where no name goes on with it.
  std::uint32_t child(std::uint32_t node, unsigned char byte) const;
  bool is_leaf(std::uint32_t node) const { return nodes_[node].children.empty(); }
  // The index of the name that ends at `node`, or -1.
  std::int32_t name_at(std::uint32_t node) const { return nodes_[node].name; }
  // Whether a name at or below `node` has an index in [first, end).
  bool leads_to(std::uint32_t node, std::int32_t first, std::int32_t end) const;

 private:
  struct Node {
    std::vector<std::pair<unsigned char, std::uint32_t>> children;
    std::int32_t name = -1;
    std::vector<std::int32_t> below;  // the indices of the names at or below it, ascending
  };
  std::vector<Node> nodes_;
};

}  // namespace moed::server
