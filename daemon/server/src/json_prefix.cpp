#include "moed/server/json_prefix.hpp"

#include <algorithm>

namespace moed::server {
namespace {

bool is_digit(unsigned char c) {
  return c >= '0' && c <= '9';
}
bool is_hex(unsigned char c) {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
// A byte a number may go on with (whether it may here is the state's to say).
bool continues_number(unsigned char c) {
  return is_digit(c) || c == '.' || c == 'e' || c == 'E';
}

}  // namespace

bool JsonPrefix::whitespace(unsigned char c) {
  if (c == '\n') {
    if (line_breaks_ == 1) return false;
    ++line_breaks_;
    return true;
  }
  if (indent_ == kMaxIndent) return false;
  ++indent_;
  return true;
}

bool JsonPrefix::open(bool object) {
  if (depth_ == kMaxDepth) return false;
  const std::uint64_t bit = std::uint64_t{1} << depth_;
  containers_ = object ? containers_ | bit : containers_ & ~bit;
  ++depth_;
  state_ = object ? State::object_first : State::array_first;
  return true;
}

bool JsonPrefix::close() {
  --depth_;
  containers_ &= ~(std::uint64_t{1} << depth_);  // states that are alike compare equal
  return end_value();
}

bool JsonPrefix::end_value() {
  state_ = depth_ == 0 ? State::done : State::after_value;
  literal_rest_ = nullptr;
  digits_ = 0;
  return true;
}

bool JsonPrefix::string_byte(unsigned char c) {
  if (utf8_left_ > 0) {
    if (c < utf8_low_ || c > utf8_high_) return false;
    --utf8_left_;
    utf8_low_ = 0x80;
    utf8_high_ = 0xbf;
    return true;
  }
  if (low_surrogate_due_ && c != '\\') return false;
  if (c == '"') {
    if (!string_is_key_) return end_value();
    state_ = State::colon;
    return true;
  }
  if (c == '\\') {
    state_ = State::escape;
    return true;
  }
  if (c < 0x80) return c >= 0x20;
  // The first byte of a character: how many follow, and the range of the next (no overlong
  // forms, no surrogates, nothing past U+10FFFF), as RFC 3629's table.
  if (c >= 0xc2 && c <= 0xdf) {
    utf8_left_ = 1;
  } else if (c >= 0xe0 && c <= 0xef) {
    utf8_left_ = 2;
    if (c == 0xe0) utf8_low_ = 0xa0;
    if (c == 0xed) utf8_high_ = 0x9f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    utf8_left_ = 3;
    if (c == 0xf0) utf8_low_ = 0x90;
    if (c == 0xf4) utf8_high_ = 0x8f;
  } else {
    return false;
  }
  return true;
}

bool JsonPrefix::unicode_digit(unsigned char c) {
  if (!is_hex(c)) return false;
  const bool d = c == 'd' || c == 'D';
  const bool c_to_f = (c >= 'c' && c <= 'f') || (c >= 'C' && c <= 'F');
  const bool eight_to_b =
      (c >= '8' && c <= '9') || (c >= 'a' && c <= 'b') || (c >= 'A' && c <= 'B');
  switch (hex_left_) {
    case 4:
      if (low_surrogate_due_ && !d) return false;
      escape_starts_with_d_ = d;
      break;
    case 3:
      if (low_surrogate_due_ && !c_to_f) return false;
      if (!low_surrogate_due_ && escape_starts_with_d_ && c_to_f) return false;  // a lone low one
      escape_is_high_surrogate_ = !low_surrogate_due_ && escape_starts_with_d_ && eight_to_b;
      break;
    default:
      break;
  }
  if (--hex_left_ > 0) return true;
  low_surrogate_due_ = escape_is_high_surrogate_;
  escape_starts_with_d_ = false;
  escape_is_high_surrogate_ = false;
  state_ = State::string;
  return true;
}

bool JsonPrefix::begin_value(unsigned char c) {
  switch (c) {
    case '{':
      return open(true);
    case '[':
      return open(false);
    case '"':
      string_is_key_ = false;
      state_ = State::string;
      return true;
    case '-':
      state_ = State::minus;
      return true;
    case '0':
      state_ = State::zero;
      digits_ = 1;
      return true;
    case 't':
      literal_rest_ = "rue";
      state_ = State::literal;
      return true;
    case 'f':
      literal_rest_ = "alse";
      state_ = State::literal;
      return true;
    case 'n':
      literal_rest_ = "ull";
      state_ = State::literal;
      return true;
    default:
      if (!is_digit(c)) return false;
      state_ = State::integer;
      digits_ = 1;
      return true;
  }
}

bool JsonPrefix::number_ends_before(unsigned char c) const {
  const bool number_may_end = state_ == State::zero || state_ == State::integer ||
                              state_ == State::fraction || state_ == State::exponent_digits;
  return number_may_end && !continues_number(c);
}

bool JsonPrefix::feed(unsigned char c) {
  if (number_ends_before(c)) end_value();
  const bool between_tokens = state_ == State::start || state_ == State::value ||
                              state_ == State::array_first || state_ == State::object_first ||
                              state_ == State::key || state_ == State::colon ||
                              state_ == State::after_value;
  if (between_tokens && is_json_blank(c)) return whitespace(c);
  line_breaks_ = 0;
  indent_ = 0;
  switch (state_) {
    case State::start:
      return c == '{' && open(true);
    case State::value:
      return begin_value(c);
    case State::array_first:
      if (c == ']') return close();
      return begin_value(c);
    case State::object_first:
    case State::key:
      if (c == '}' && state_ == State::object_first) return close();
      if (c != '"') return false;
      string_is_key_ = true;
      state_ = State::string;
      return true;
    case State::colon:
      if (c != ':') return false;
      state_ = State::value;
      return true;
    case State::after_value:
      if (c == ',') {
        state_ = in_object() ? State::key : State::value;
        return true;
      }
      if (c != (in_object() ? '}' : ']')) return false;
      return close();
    case State::string:
      return string_byte(c);
    case State::escape:
      if (c == 'u') {
        hex_left_ = 4;
        state_ = State::unicode;
        return true;
      }
      if (low_surrogate_due_) return false;
      state_ = State::string;
      return c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' ||
             c == 't';
    case State::unicode:
      return unicode_digit(c);
    case State::minus:
      if (!is_digit(c)) return false;
      state_ = c == '0' ? State::zero : State::integer;
      digits_ = 1;
      return true;
    case State::zero:
    case State::integer:
      if (c == '.') {
        state_ = State::dot;
        digits_ = 0;
        return true;
      }
      if (c == 'e' || c == 'E') {
        state_ = State::exponent;
        digits_ = 0;
        return true;
      }
      return state_ == State::integer && is_digit(c) && ++digits_ <= kMaxIntegerDigits;
    case State::dot:
    case State::fraction:
      if (is_digit(c)) {
        state_ = State::fraction;
        return true;
      }
      if (state_ == State::fraction && (c == 'e' || c == 'E')) {
        state_ = State::exponent;
        return true;
      }
      return false;
    case State::exponent:
      if (c == '+' || c == '-') {
        state_ = State::exponent_sign;
        return true;
      }
      [[fallthrough]];
    case State::exponent_sign:
    case State::exponent_digits:
      if (!is_digit(c) || ++digits_ > kMaxExponentDigits) return false;
      state_ = State::exponent_digits;
      return true;
    case State::literal:
      if (static_cast<unsigned char>(*literal_rest_) != c) return false;
      if (*++literal_rest_ == '\0') return end_value();
      return true;
    case State::done:
      return false;
  }
  return false;
}

void ByteTrie::insert(std::string_view name, std::int32_t index) {
  std::uint32_t node = 0;
  nodes_[node].below.push_back(index);
  for (const char c : name) {
    const auto byte = static_cast<unsigned char>(c);
    if (const std::uint32_t next = child(node, byte); next != 0) {
      node = next;
    } else {
      const auto added = static_cast<std::uint32_t>(nodes_.size());
      nodes_[node].children.emplace_back(byte, added);
      nodes_.emplace_back();
      node = added;
    }
    nodes_[node].below.push_back(index);
  }
  nodes_[node].name = index;
}

bool ByteTrie::leads_to(std::uint32_t node, std::int32_t first, std::int32_t end) const {
  const auto& below = nodes_[node].below;
  const auto at = std::lower_bound(below.begin(), below.end(), first);
  return at != below.end() && *at < end;
}

std::uint32_t ByteTrie::child(std::uint32_t node, unsigned char byte) const {
  const auto& children = nodes_[node].children;
  const auto edge = std::find_if(children.begin(), children.end(),
                                 [&](const auto& e) { return e.first == byte; });
  return edge == children.end() ? 0 : edge->second;
}

}  // namespace moed::server
