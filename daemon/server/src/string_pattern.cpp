#include "moed/server/string_pattern.hpp"

#include <algorithm>
#include <array>
#include <deque>
#include <map>

namespace moed::server {
namespace {

constexpr char32_t kMaxCodePoint = 0x10ffff;
constexpr std::uint32_t kMaxRepeat = 1000;
constexpr int kMaxGroupDepth = 256;
constexpr std::uint64_t kStateWork = 64;  // building a state of the first automaton
constexpr const char* kTooComplex =
    "the pattern is too complex to compile to an automaton (its sets of positions grow too large)";

// Code points as sorted, disjoint, non-adjacent ranges.
using CharSet = std::vector<std::pair<char32_t, char32_t>>;

CharSet normalized(CharSet set) {
  std::sort(set.begin(), set.end());
  CharSet merged;
  for (const auto& range : set) {
    if (!merged.empty() && range.first <= merged.back().second + 1)
      merged.back().second = std::max(merged.back().second, range.second);
    else
      merged.push_back(range);
  }
  return merged;
}

CharSet complement(const CharSet& set) {
  CharSet out;
  char32_t next = 0;
  for (const auto& [lo, hi] : set) {
    if (lo > next) out.emplace_back(next, lo - 1);
    next = hi + 1;
  }
  if (next <= kMaxCodePoint) out.emplace_back(next, kMaxCodePoint);
  return out;
}

CharSet unite(CharSet a, const CharSet& b) {
  a.insert(a.end(), b.begin(), b.end());
  return normalized(std::move(a));
}

// Those of `set` within [lo, hi].
CharSet within(const CharSet& set, char32_t lo, char32_t hi) {
  CharSet out;
  for (const auto& range : set)
    if (range.second >= lo && range.first <= hi)
      out.emplace_back(std::max(range.first, lo), std::min(range.second, hi));
  return out;
}

bool contains(const CharSet& set, char32_t c) {
  return std::any_of(set.begin(), set.end(),
                     [&](const auto& range) { return range.first <= c && c <= range.second; });
}

const CharSet kDigits = {{'0', '9'}};
const CharSet kWord = {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}};
// ECMA-262's WhiteSpace and LineTerminator.
const CharSet kSpace = {{0x09, 0x0d},     {0x20, 0x20},     {0xa0, 0xa0},     {0x1680, 0x1680},
                        {0x2000, 0x200a}, {0x2028, 0x2029}, {0x202f, 0x202f}, {0x205f, 0x205f},
                        {0x3000, 0x3000}, {0xfeff, 0xfeff}};
const CharSet kAny = {{0, kMaxCodePoint}};
const CharSet kLineTerminators = {{0x0a, 0x0a}, {0x0d, 0x0d}, {0x2028, 0x2029}};

bool is_hex(char32_t c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
std::uint32_t hex_value(char32_t c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return c - 'A' + 10;
}

struct Ast {
  enum class Kind : std::uint8_t { chars, sequence, choice, repeat, begin, end } kind;
  CharSet chars;
  std::vector<std::size_t> children;
  std::uint32_t min = 0;
  std::uint32_t max = 0;  // StringPattern::kUnbounded: no limit
};

// ECMA-262 pattern syntax (the subset StringPattern documents) to an Ast.
class Parser {
 public:
  explicit Parser(std::string_view pattern) {
    if (pattern.size() > StringPattern::kMaxPatternBytes)
      throw PatternError(PatternError::kWhole, "the pattern is longer than " +
                                                   std::to_string(StringPattern::kMaxPatternBytes) +
                                                   " bytes");
    for (std::size_t at = 0; at < pattern.size();) {
      const auto lead = static_cast<unsigned char>(pattern[at]);
      const std::size_t length = lead < 0x80 ? 1 : lead < 0xe0 ? 2 : lead < 0xf0 ? 3 : 4;
      if (lead >= 0x80 && (lead < 0xc2 || lead > 0xf4 || at + length > pattern.size()))
        throw PatternError(at, "the pattern is not UTF-8");
      char32_t c = length == 1 ? lead : lead & (0x7f >> length);
      for (std::size_t k = 1; k < length; ++k) {
        const auto byte = static_cast<unsigned char>(pattern[at + k]);
        // RFC 3629's table: no overlong forms, surrogates or code points past U+10FFFF.
        const unsigned char low = k > 1 ? 0x80 : lead == 0xe0 ? 0xa0 : lead == 0xf0 ? 0x90 : 0x80;
        const unsigned char high = k > 1 ? 0xbf : lead == 0xed ? 0x9f : lead == 0xf4 ? 0x8f : 0xbf;
        if (byte < low || byte > high) throw PatternError(at, "the pattern is not UTF-8");
        c = (c << 6) | (byte & 0x3f);
      }
      code_points_.push_back(c);
      offsets_.push_back(at);
      at += length;
    }
    offsets_.push_back(pattern.size());
  }

  std::size_t parse() {
    const std::size_t root = disjunction();
    if (!done()) fail("an unmatched ')'");
    return root;
  }

  std::vector<Ast> nodes;

 private:
  [[noreturn]] void fail(const std::string& message) const { fail_at(at_, message); }
  [[noreturn]] void fail_at(std::size_t index, const std::string& message) const {
    throw PatternError(offsets_[std::min(index, code_points_.size())], message);
  }
  bool done() const { return at_ >= code_points_.size(); }
  char32_t peek(std::size_t ahead = 0) const {
    return at_ + ahead < code_points_.size() ? code_points_[at_ + ahead] : 0xffffffff;
  }
  char32_t take() {
    if (done()) fail("the pattern ends too soon");
    return code_points_[at_++];
  }

  std::size_t add(Ast node) {
    nodes.push_back(std::move(node));
    return nodes.size() - 1;
  }
  std::size_t add_chars(CharSet chars) {
    return add(Ast{Ast::Kind::chars, std::move(chars), {}, 0, 0});
  }

  std::size_t disjunction() {
    std::vector<std::size_t> alternatives{alternative()};
    while (peek() == '|') {
      ++at_;
      alternatives.push_back(alternative());
    }
    if (alternatives.size() == 1) return alternatives[0];
    return add(Ast{Ast::Kind::choice, {}, std::move(alternatives), 0, 0});
  }

  std::size_t alternative() {
    std::vector<std::size_t> terms;
    while (!done() && peek() != '|' && peek() != ')') terms.push_back(term());
    return add(Ast{Ast::Kind::sequence, {}, std::move(terms), 0, 0});
  }

  // A quantifier {n}, {n,} or {n,m} at the cursor: its bounds, and where it ends.
  bool braces_at(std::size_t from, std::uint32_t& min, std::uint32_t& max, std::size_t& end) const {
    std::size_t at = from;
    if (at >= code_points_.size() || code_points_[at] != '{') return false;
    ++at;
    auto number = [&](std::uint32_t& value) {
      const std::size_t first = at;
      std::uint64_t n = 0;
      while (at < code_points_.size() && code_points_[at] >= '0' && code_points_[at] <= '9') {
        n = std::min<std::uint64_t>(n * 10 + (code_points_[at] - '0'), 1u << 30);
        ++at;
      }
      value = static_cast<std::uint32_t>(n);
      return at > first;
    };
    if (!number(min)) return false;
    max = min;
    if (at < code_points_.size() && code_points_[at] == ',') {
      ++at;
      if (!number(max)) max = StringPattern::kUnbounded;
    }
    if (at >= code_points_.size() || code_points_[at] != '}') return false;
    end = at + 1;
    return true;
  }

  bool quantifier_next() const {
    std::uint32_t min = 0, max = 0;
    std::size_t end = 0;
    return peek() == '*' || peek() == '+' || peek() == '?' || braces_at(at_, min, max, end);
  }

  std::size_t term() {
    std::size_t node = 0;
    bool assertion = false;
    if (peek() == '^' || peek() == '$') {
      node = add(Ast{take() == '^' ? Ast::Kind::begin : Ast::Kind::end, {}, {}, 0, 0});
      assertion = true;
    } else {
      node = atom();
    }
    if (!quantifier_next()) return node;
    if (assertion) fail("nothing to repeat: an anchor cannot take a quantifier");
    std::uint32_t min = 0, max = StringPattern::kUnbounded;
    const char32_t q = peek();
    if (q == '*') {
      ++at_;
    } else if (q == '+') {
      ++at_;
      min = 1;
    } else if (q == '?') {
      ++at_;
      max = 1;
    } else {
      std::size_t end = 0;
      braces_at(at_, min, max, end);
      if (min > max) fail("the quantifier's minimum is more than its maximum");
      if (min > kMaxRepeat || (max != StringPattern::kUnbounded && max > kMaxRepeat))
        fail("a quantifier's count is more than " + std::to_string(kMaxRepeat));
      at_ = end;
    }
    if (peek() == '?') ++at_;  // lazy: the strings it matches are the same
    if (quantifier_next()) fail("nothing to repeat: a quantifier follows a quantifier");
    return add(Ast{Ast::Kind::repeat, {}, {node}, min, max});
  }

  std::size_t atom() {
    const char32_t c = take();
    switch (c) {
      case '(':
        return group();
      case '[':
        return add_chars(character_class());
      case '.':
        return add_chars(complement(kLineTerminators));
      case '\\': {
        bool single = false;
        return add_chars(escape(false, single));
      }
      case '*':
      case '+':
      case '?':
        fail_at(at_ - 1, "nothing to repeat");
      case '{': {
        std::uint32_t min = 0, max = 0;
        std::size_t end = 0;
        if (braces_at(at_ - 1, min, max, end)) fail_at(at_ - 1, "nothing to repeat");
        return add_chars({{c, c}});
      }
      default:
        return add_chars({{c, c}});
    }
  }

  std::size_t group() {
    const std::size_t open = at_ - 1;
    if (++depth_ > kMaxGroupDepth)
      fail_at(open, "groups nest more than " + std::to_string(kMaxGroupDepth) + " deep");
    if (peek() == '?') {
      const char32_t kind = peek(1);
      if (kind == ':') {
        at_ += 2;
      } else if (kind == '<' && peek(2) != '=' && peek(2) != '!') {
        at_ += 2;
        const std::size_t name = at_;
        while (!done() && peek() != '>') {
          const char32_t n = take();
          const bool letter =
              n == '_' || n == '$' || (n >= 'a' && n <= 'z') || (n >= 'A' && n <= 'Z') || n >= 0x80;
          if (!letter && !(at_ - 1 > name && n >= '0' && n <= '9'))
            fail_at(at_ - 1, "a group's name has a character a name cannot have there");
        }
        if (done()) fail_at(open, "a group's name is not closed with '>'");
        if (at_ == name) fail_at(open, "a group's name is empty");
        ++at_;
      } else if (kind == '=' || kind == '!' || kind == '<') {
        fail_at(open, "lookahead and lookbehind ((?=, (?!, (?<=, (?<!) are not supported");
      } else {
        fail_at(open, "'(?' must be followed by ':' or '<name>' (ECMA-262 has no inline flags)");
      }
    }
    const std::size_t inner = disjunction();
    if (peek() != ')') fail_at(open, "a group is not closed with ')'");
    ++at_;
    --depth_;
    return inner;
  }

  CharSet character_class() {
    const std::size_t open = at_ - 1;
    const bool negated = peek() == '^';
    if (negated) ++at_;
    CharSet set;
    for (;;) {
      if (done()) fail_at(open, "a character class is not closed with ']'");
      if (peek() == ']') {
        ++at_;
        break;
      }
      const std::size_t first_at = at_;
      bool single = false;
      CharSet first = class_atom(single);
      if (peek() == '-' && peek(1) != ']' && at_ + 1 < code_points_.size()) {
        ++at_;
        bool last_single = false;
        const CharSet last = class_atom(last_single);
        if (!single || !last_single) {
          // As ECMA-262's annex B reads [\w-.]: both sides and the '-' itself.
          set.insert(set.end(), first.begin(), first.end());
          set.insert(set.end(), last.begin(), last.end());
          set.emplace_back('-', '-');
          continue;
        }
        if (first[0].first > last[0].first) fail_at(first_at, "a range in a class is out of order");
        set.emplace_back(first[0].first, last[0].first);
      } else {
        set.insert(set.end(), first.begin(), first.end());
      }
    }
    set = normalized(std::move(set));
    return negated ? complement(set) : set;
  }

  CharSet class_atom(bool& single) {
    const char32_t c = take();
    if (c == '\\') return escape(true, single);
    single = true;
    return {{c, c}};
  }

  std::uint32_t hex_digits(std::size_t count) {
    std::uint32_t value = 0;
    for (std::size_t k = 0; k < count; ++k) {
      if (!is_hex(peek())) fail("expected a hexadecimal digit");
      value = value * 16 + hex_value(take());
    }
    return value;
  }

  // After a '\': the characters the escape stands for; `single` where it is one character (so
  // it may end a range).
  CharSet escape(bool in_class, bool& single) {
    const std::size_t backslash = at_ - 1;
    if (done()) fail_at(backslash, "the pattern ends with '\\'");
    const char32_t e = take();
    single = false;
    switch (e) {
      case 'd':
        return kDigits;
      case 'D':
        return complement(kDigits);
      case 'w':
        return kWord;
      case 'W':
        return complement(kWord);
      case 's':
        return kSpace;
      case 'S':
        return complement(kSpace);
      default:
        break;
    }
    single = true;
    auto one = [](char32_t c) { return CharSet{{c, c}}; };
    switch (e) {
      case 'b':
        if (in_class) return one(0x08);
        fail_at(backslash, "word boundaries (\\b) are not supported");
      case 'B':
        fail_at(backslash, "word boundaries (\\B) are not supported");
      case 't':
        return one(0x09);
      case 'n':
        return one(0x0a);
      case 'v':
        return one(0x0b);
      case 'f':
        return one(0x0c);
      case 'r':
        return one(0x0d);
      case '0':
        if (peek() >= '0' && peek() <= '9')
          fail_at(backslash, "octal escapes are not supported; write \\xHH");
        return one(0);
      case 'c': {
        const char32_t letter = peek();
        if (!((letter >= 'a' && letter <= 'z') || (letter >= 'A' && letter <= 'Z')))
          fail_at(backslash, "\\c must be followed by a letter");
        ++at_;
        return one(letter % 32);
      }
      case 'x':
        return one(hex_digits(2));
      case 'u': {
        if (peek() == '{') {
          ++at_;
          std::uint32_t value = 0;
          std::size_t count = 0;
          while (is_hex(peek())) {
            value = std::min<std::uint32_t>(value * 16 + hex_value(take()), 0x110000);
            ++count;
          }
          if (count == 0 || peek() != '}' || value > kMaxCodePoint)
            fail_at(backslash, "\\u{...} must hold a code point in hexadecimal, at most 10FFFF");
          ++at_;
          return one(value);
        }
        std::uint32_t value = hex_digits(4);
        // A surrogate pair written as two escapes is one character.
        if (value >= 0xd800 && value <= 0xdbff && peek() == '\\' && peek(1) == 'u' &&
            is_hex(peek(2)) && is_hex(peek(3)) && is_hex(peek(4)) && is_hex(peek(5))) {
          const std::uint32_t low = (hex_value(peek(2)) << 12) | (hex_value(peek(3)) << 8) |
                                    (hex_value(peek(4)) << 4) | hex_value(peek(5));
          if (low >= 0xdc00 && low <= 0xdfff) {
            at_ += 6;
            value = 0x10000 + ((value - 0xd800) << 10) + (low - 0xdc00);
          }
        }
        return one(value);
      }
      case 'p':
      case 'P':
        fail_at(backslash, "Unicode property escapes (\\p{...}) are not supported");
      case 'k':
        fail_at(backslash, "backreferences (\\k<name>) are not supported");
      default:
        break;
    }
    if (e >= '1' && e <= '9') fail_at(backslash, "backreferences (\\1 ...) are not supported");
    if (e < 0x80 && ((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z')))
      fail_at(backslash, std::string("\\") + static_cast<char>(e) +
                             " is not an ECMA-262 escape (\\d \\w \\s \\t \\n \\xHH \\uHHHH ...)");
    return one(e);
  }

  std::vector<char32_t> code_points_;
  std::vector<std::size_t> offsets_;  // of each code point in the pattern, and its end
  std::size_t at_ = 0;
  int depth_ = 0;  // of groups open at the cursor
};

}  // namespace

class StringPattern::Builder {
 public:
  // `budget`: the work it may do; `shared`: whether that is what a schema's earlier patterns
  // left, less than one pattern may do.
  Builder(const std::vector<Ast>& ast, std::uint64_t budget, bool shared, StringPattern& out)
      : ast_(ast), budget_(budget), shared_(shared), out_(out) {}

  std::uint64_t spent() const { return spent_; }

  void build(std::size_t root) {
    // Matched anywhere: any characters before the match and after it.
    const std::uint32_t before = new_state();
    spell(before, kAny, before);
    const std::uint32_t entry = new_state();
    states_[before].empty.push_back(entry);
    const std::uint32_t end = emit(root, entry);
    const std::uint32_t accept = new_state();
    states_[end].empty.push_back(accept);
    spell(accept, kAny, accept);
    determinize(before, accept);
    measure();
  }

 private:
  struct Edge {
    unsigned char lo, hi;
    bool completes;  // the byte ends a character
    std::uint32_t target;
  };
  struct NfaState {
    std::vector<std::uint32_t> empty;   // taken without input
    std::vector<std::uint32_t> begins;  // taken at the string's start only
    std::vector<std::uint32_t> ends;    // taken at its end only
    std::vector<Edge> bytes;
  };

  std::uint32_t new_state() {
    if (states_.size() == kMaxNfaStates)
      throw PatternError(PatternError::kWhole,
                         "the pattern needs more than " + std::to_string(kMaxNfaStates) +
                             " automaton states (counted repetitions multiply its size)");
    spend(kStateWork, "the pattern is too complex to compile to an automaton");
    states_.emplace_back();
    return static_cast<std::uint32_t>(states_.size() - 1);
  }

  void byte_edge(std::uint32_t from, unsigned char lo, unsigned char hi, bool completes,
                 std::uint32_t to) {
    states_[from].bytes.push_back(Edge{lo, hi, completes, to});
  }

  // A chain of byte ranges from `from` to `to`, the last byte ending a character.
  void chain(std::uint32_t from, const std::vector<std::pair<unsigned char, unsigned char>>& bytes,
             std::uint32_t to) {
    std::uint32_t at = from;
    for (std::size_t k = 0; k + 1 < bytes.size(); ++k) {
      const std::uint32_t next = new_state();
      byte_edge(at, bytes[k].first, bytes[k].second, false, next);
      at = next;
    }
    byte_edge(at, bytes.back().first, bytes.back().second, true, to);
  }

  // UTF-8 of [lo, hi] (at least U+0080, no surrogates) as sequences of byte ranges, each range
  // of code points with one length and contiguous bytes in each place (as RE2 compiles them).
  void utf8_chains(std::uint32_t from, char32_t lo, char32_t hi, std::uint32_t to) {
    for (const char32_t limit : {char32_t{0x7ff}, char32_t{0xffff}}) {
      if (lo <= limit && limit < hi) {
        utf8_chains(from, lo, limit, to);
        utf8_chains(from, limit + 1, hi, to);
        return;
      }
    }
    const std::size_t length = lo <= 0x7ff ? 2 : lo <= 0xffff ? 3 : 4;
    for (std::size_t i = 1; i < length; ++i) {
      const char32_t mask = (char32_t{1} << (6 * i)) - 1;
      if ((lo & ~mask) == (hi & ~mask)) continue;
      if ((lo & mask) != 0) {
        utf8_chains(from, lo, lo | mask, to);
        utf8_chains(from, (lo | mask) + 1, hi, to);
        return;
      }
      if ((hi & mask) != mask) {
        utf8_chains(from, lo, (hi & ~mask) - 1, to);
        utf8_chains(from, hi & ~mask, hi, to);
        return;
      }
    }
    auto encode = [&](char32_t c) {
      std::vector<unsigned char> bytes(length);
      for (std::size_t k = length; k-- > 1;) {
        bytes[k] = static_cast<unsigned char>(0x80 | (c & 0x3f));
        c >>= 6;
      }
      bytes[0] = static_cast<unsigned char>((length == 2 ? 0xc0 : length == 3 ? 0xe0 : 0xf0) | c);
      return bytes;
    };
    const auto first = encode(lo), last = encode(hi);
    std::vector<std::pair<unsigned char, unsigned char>> ranges;
    for (std::size_t k = 0; k < length; ++k) ranges.emplace_back(first[k], last[k]);
    chain(from, ranges, to);
  }

  // Byte paths from `from` to `to` that spell one character of `set` in a JSON string.
  void spell(std::uint32_t from, const CharSet& chars, std::uint32_t to) {
    const CharSet set = unite(within(chars, 0, 0xd7ff), within(chars, 0xe000, kMaxCodePoint));
    for (const auto& [lo, hi] : within(set, 0x20, 0x7f)) {
      // '"' and '\' are written escaped.
      for (const auto& [a, b] : within({{lo, hi}}, 0x20, 0x21)) byte_edge(from, a, b, true, to);
      for (const auto& [a, b] : within({{lo, hi}}, 0x23, 0x5b)) byte_edge(from, a, b, true, to);
      for (const auto& [a, b] : within({{lo, hi}}, 0x5d, 0x7f)) byte_edge(from, a, b, true, to);
    }
    static constexpr std::array<std::pair<char32_t, unsigned char>, 8> kShortEscapes = {{
        {'"', '"'},
        {'\\', '\\'},
        {'/', '/'},
        {0x08, 'b'},
        {0x09, 't'},
        {0x0a, 'n'},
        {0x0c, 'f'},
        {0x0d, 'r'},
    }};
    const CharSet controls = within(set, 0, 0x1f);
    const bool escaped =
        !controls.empty() || contains(set, '"') || contains(set, '\\') || contains(set, '/');
    if (escaped) {
      const std::uint32_t backslash = new_state();
      byte_edge(from, '\\', '\\', false, backslash);
      for (const auto& [c, letter] : kShortEscapes)
        if (contains(set, c)) byte_edge(backslash, letter, letter, true, to);
      if (!controls.empty()) {
        // \u00XX: the high digit 0 or 1, the low one any hex digit of a control in the set.
        const std::uint32_t u = new_state(), zero = new_state(), zeros = new_state();
        byte_edge(backslash, 'u', 'u', false, u);
        byte_edge(u, '0', '0', false, zero);
        byte_edge(zero, '0', '0', false, zeros);
        for (char32_t high = 0; high < 2; ++high) {
          std::uint32_t low_digit = 0;
          for (char32_t low = 0; low < 16; ++low) {
            if (!contains(controls, high * 16 + low)) continue;
            if (low_digit == 0) {
              low_digit = new_state();
              byte_edge(zeros, static_cast<unsigned char>('0' + high),
                        static_cast<unsigned char>('0' + high), false, low_digit);
            }
            if (low < 10) {
              const auto digit = static_cast<unsigned char>('0' + low);
              byte_edge(low_digit, digit, digit, true, to);
            } else {
              const auto lower = static_cast<unsigned char>('a' + low - 10);
              const auto upper = static_cast<unsigned char>('A' + low - 10);
              byte_edge(low_digit, lower, lower, true, to);
              byte_edge(low_digit, upper, upper, true, to);
            }
          }
        }
      }
    }
    for (const auto& [lo, hi] : within(set, 0x80, kMaxCodePoint)) utf8_chains(from, lo, hi, to);
  }

  // Thompson's construction: states for `node` from `from`; returns where they end.
  std::uint32_t emit(std::size_t index, std::uint32_t from) {
    const Ast& node = ast_[index];
    switch (node.kind) {
      case Ast::Kind::chars: {
        const std::uint32_t to = new_state();
        spell(from, node.chars, to);
        return to;
      }
      case Ast::Kind::sequence: {
        std::uint32_t at = from;
        for (const std::size_t child : node.children) at = emit(child, at);
        return at;
      }
      case Ast::Kind::choice: {
        const std::uint32_t to = new_state();
        for (const std::size_t child : node.children) {
          const std::uint32_t start = new_state();
          states_[from].empty.push_back(start);
          states_[emit(child, start)].empty.push_back(to);
        }
        return to;
      }
      case Ast::Kind::repeat: {
        std::uint32_t at = from;
        for (std::uint32_t k = 0; k < node.min; ++k) {
          const std::uint32_t start = new_state();
          states_[at].empty.push_back(start);
          at = emit(node.children[0], start);
        }
        if (node.max == kUnbounded) {
          const std::uint32_t loop = new_state();
          states_[at].empty.push_back(loop);
          const std::uint32_t body = new_state();
          states_[loop].empty.push_back(body);
          states_[emit(node.children[0], body)].empty.push_back(loop);
          return loop;
        }
        const std::uint32_t to = new_state();
        for (std::uint32_t k = node.min; k < node.max; ++k) {
          states_[at].empty.push_back(to);
          const std::uint32_t start = new_state();
          states_[at].empty.push_back(start);
          at = emit(node.children[0], start);
        }
        states_[at].empty.push_back(to);
        return to;
      }
      case Ast::Kind::begin:
      case Ast::Kind::end: {
        const std::uint32_t to = new_state();
        (node.kind == Ast::Kind::begin ? states_[from].begins : states_[from].ends).push_back(to);
        return to;
      }
    }
    return from;
  }

  // The states `set` reaches without input (and by ^ at the start), sorted; what it looks at is
  // counted in closure_work_.
  std::vector<std::uint32_t> closure(std::vector<std::uint32_t> set, bool at_start) {
    // Marks by generation, so that a closure costs what it reaches, not the automaton's size.
    if (seen_.size() != states_.size()) seen_.assign(states_.size(), 0);
    ++generation_;
    std::vector<std::uint32_t> pending;
    for (const std::uint32_t s : set)
      if (seen_[s] != generation_) {
        seen_[s] = generation_;
        pending.push_back(s);
      }
    set.clear();
    while (!pending.empty()) {
      const std::uint32_t s = pending.back();
      pending.pop_back();
      set.push_back(s);
      auto reach = [&](const std::vector<std::uint32_t>& targets) {
        closure_work_ += targets.size();
        for (const std::uint32_t t : targets)
          if (seen_[t] != generation_) {
            seen_[t] = generation_;
            pending.push_back(t);
          }
      };
      reach(states_[s].empty);
      if (at_start) reach(states_[s].begins);
    }
    std::sort(set.begin(), set.end());
    closure_work_ += set.size();
    return set;
  }

  void determinize(std::uint32_t before, std::uint32_t accept) {
    // The states from which the end of the string reaches `accept` without input.
    std::vector<bool> accepts_at_end(states_.size());
    {
      std::vector<std::vector<std::uint32_t>> into(states_.size());
      for (std::uint32_t s = 0; s < states_.size(); ++s) {
        for (const std::uint32_t t : states_[s].empty) into[t].push_back(s);
        for (const std::uint32_t t : states_[s].ends) into[t].push_back(s);
      }
      std::vector<std::uint32_t> pending{accept};
      accepts_at_end[accept] = true;
      while (!pending.empty()) {
        const std::uint32_t t = pending.back();
        pending.pop_back();
        for (const std::uint32_t s : into[t])
          if (!accepts_at_end[s]) {
            accepts_at_end[s] = true;
            pending.push_back(s);
          }
      }
    }
    // Bytes no edge tells apart are one class.
    std::array<bool, 257> cut{};
    for (const auto& state : states_)
      for (const auto& edge : state.bytes) {
        cut[edge.lo] = true;
        cut[edge.hi + 1] = true;
      }
    out_.byte_class_.assign(256, 0);
    std::vector<unsigned char> representative;
    for (int b = 0; b < 256; ++b) {
      if (b == 0 || cut[b]) representative.push_back(static_cast<unsigned char>(b));
      out_.byte_class_[b] = static_cast<std::uint8_t>(representative.size() - 1);
    }
    out_.classes_ = representative.size();

    std::map<std::vector<std::uint32_t>, std::uint32_t> known;
    std::vector<std::vector<std::uint32_t>> sets;
    auto intern = [&](std::vector<std::uint32_t> set, bool mid_character) {
      // A set with a state of the loop after a match takes any text from here: that loop alone
      // stands for it (the others would only grow the automaton).
      if (set.back() >= accept) std::erase_if(set, [&](std::uint32_t s) { return s < accept; });
      if (const auto found = known.find(set); found != known.end()) return found->second;
      if (sets.size() == kMaxDfaStates)
        throw PatternError(
            PatternError::kWhole,
            "the pattern needs more than " + std::to_string(kMaxDfaStates) + " automaton states");
      const auto id = static_cast<std::uint32_t>(sets.size());
      State state;
      state.mid_character = mid_character;
      state.accepting =
          std::any_of(set.begin(), set.end(), [&](std::uint32_t s) { return accepts_at_end[s]; });
      out_.states_.push_back(state);
      known.emplace(set, id);
      sets.push_back(std::move(set));
      return id;
    };
    intern(closure({before}, true), false);
    // ECMA-262 matches `$^` at the empty string, where the end and the start meet. Where only
    // that makes the start accepting, the start is a state of its own: the same set later, past
    // the start, is not accepting.
    if (!out_.states_[0].accepting) {
      std::vector<std::uint32_t> pending{before};
      std::vector<bool> seen(states_.size());
      seen[before] = true;
      while (!pending.empty() && !out_.states_[0].accepting) {
        const std::uint32_t s = pending.back();
        pending.pop_back();
        if (s == accept) {
          out_.states_[0].accepting = true;
          known.erase(sets[0]);
        }
        for (const auto* targets : {&states_[s].empty, &states_[s].begins, &states_[s].ends})
          for (const std::uint32_t t : *targets)
            if (!seen[t]) {
              seen[t] = true;
              pending.push_back(t);
            }
      }
    }
    const std::size_t classes = out_.classes_;
    std::vector<std::vector<std::uint32_t>> targets(classes);
    std::vector<bool> completes(classes);
    for (std::size_t id = 0; id < sets.size(); ++id) {
      // Each member's edges, handed to the classes they span.
      std::uint64_t work = classes;
      for (const std::uint32_t s : sets[id]) {
        work += 1;
        for (const auto& edge : states_[s].bytes)
          work += out_.byte_class_[edge.hi] - out_.byte_class_[edge.lo] + 1u;
      }
      spend(work, kTooComplex);
      for (auto& list : targets) list.clear();
      for (const std::uint32_t s : sets[id])
        for (const auto& edge : states_[s].bytes)
          for (std::size_t c = out_.byte_class_[edge.lo]; c <= out_.byte_class_[edge.hi]; ++c) {
            targets[c].push_back(edge.target);
            completes[c] = edge.completes;  // the same for every edge: the spelling is one
          }
      for (std::size_t c = 0; c < classes; ++c) {
        std::uint32_t entry = kNoTransition;
        if (!targets[c].empty()) {
          std::vector<std::uint32_t> set;
          if (std::any_of(targets[c].begin(), targets[c].end(),
                          [&](std::uint32_t t) { return t >= accept; })) {
            // The loop after a match is reached: it alone stands for the set (see intern), and
            // its states have no edges without input.
            for (const std::uint32_t t : targets[c])
              if (t >= accept) set.push_back(t);
            std::sort(set.begin(), set.end());
            set.erase(std::unique(set.begin(), set.end()), set.end());
          } else {
            closure_work_ = 0;
            set = closure(targets[c], false);
            spend(closure_work_, kTooComplex);
          }
          spend(set.size(), kTooComplex);  // looked up among the sets known
          entry = intern(std::move(set), !completes[c]) | (completes[c] ? kCompletes : 0);
        }
        out_.transitions_.push_back(entry);
      }
    }
  }

  // How many characters from each state reach an accepting one: the fewest, the most, and
  // (where both bounds count) which numbers of them up to the maximum.
  void measure() {
    const std::size_t n = out_.states_.size(), classes = out_.classes_;
    struct Back {
      std::uint32_t from;
      std::uint32_t weight;
    };
    std::vector<std::vector<Back>> into(n);
    for (std::uint32_t s = 0; s < n; ++s)
      for (std::size_t c = 0; c < classes; ++c) {
        const std::uint32_t entry = out_.transitions_[s * classes + c];
        if (entry == kNoTransition) continue;
        into[entry & ~kCompletes].push_back(Back{s, (entry & kCompletes) ? 1u : 0u});
      }
    auto& states = out_.states_;
    std::deque<std::uint32_t> queue;
    for (std::uint32_t s = 0; s < n; ++s)
      if (states[s].accepting) {
        states[s].shortest = 0;
        queue.push_back(s);
      }
    while (!queue.empty()) {
      const std::uint32_t t = queue.front();
      queue.pop_front();
      for (const auto& [s, weight] : into[t]) {
        const std::uint32_t distance = states[t].shortest + weight;
        if (distance >= states[s].shortest) continue;
        states[s].shortest = distance;
        if (weight == 0)
          queue.push_front(s);
        else
          queue.push_back(s);
      }
    }
    // No way on to an accepting state: no transition there.
    for (auto& entry : out_.transitions_)
      if (entry != kNoTransition && states[entry & ~kCompletes].shortest == kUnbounded)
        entry = kNoTransition;
    // The most: a state that reaches a cycle has no most (every cycle ends a character); the
    // others are settled once all their successors are.
    std::vector<std::size_t> successors(n);
    for (std::uint32_t s = 0; s < n; ++s)
      for (std::size_t c = 0; c < classes; ++c)
        if (out_.transitions_[s * classes + c] != kNoTransition) ++successors[s];
    std::vector<std::uint32_t> settled;
    std::vector<bool> is_settled(n);
    for (std::uint32_t s = 0; s < n; ++s)
      if (successors[s] == 0) settled.push_back(s);
    for (std::size_t k = 0; k < settled.size(); ++k) {
      const std::uint32_t s = settled[k];
      is_settled[s] = true;
      std::uint64_t most = 0;
      for (std::size_t c = 0; c < classes; ++c) {
        const std::uint32_t entry = out_.transitions_[s * classes + c];
        if (entry == kNoTransition) continue;
        most = std::max<std::uint64_t>(
            most, states[entry & ~kCompletes].longest + ((entry & kCompletes) ? 1u : 0u));
      }
      states[s].longest = static_cast<std::uint32_t>(std::min<std::uint64_t>(most, kUnbounded - 1));
      if (states[s].shortest == kUnbounded) continue;  // the transitions into it are gone
      for (const auto& back : into[s])
        if (states[back.from].shortest != kUnbounded && --successors[back.from] == 0)
          settled.push_back(back.from);
    }
    for (std::uint32_t s = 0; s < n; ++s)
      if (!is_settled[s]) states[s].longest = kUnbounded;

    const std::uint32_t min = out_.min_characters_, max = out_.max_characters_;
    if (min == 0 || max == kUnbounded) return;
    // Where the string is short of the minimum: for r from 1 to it, the fewest characters at
    // least r that reach an accepting state (capped past the maximum). Weight-0 edges (within a
    // character) form no cycle; states are taken so that their targets by them come first.
    spend(std::uint64_t{min} * (out_.transitions_.size() + n),
          "minLength (" + std::to_string(min) +
              ") is too large to hold together with maxLength and the pattern");
    std::vector<std::uint32_t> order;  // targets of weight-0 edges before their sources
    {
      std::vector<std::uint8_t> mark(n);  // 0 new, 1 on the path, 2 done
      for (std::uint32_t root = 0; root < n; ++root) {
        if (mark[root]) continue;
        std::vector<std::pair<std::uint32_t, std::size_t>> path{{root, 0}};
        mark[root] = 1;
        while (!path.empty()) {
          auto& [s, c] = path.back();
          if (c == classes) {
            mark[s] = 2;
            order.push_back(s);
            path.pop_back();
            continue;
          }
          const std::uint32_t entry = out_.transitions_[s * classes + c++];
          if (entry == kNoTransition || (entry & kCompletes)) continue;
          if (mark[entry] == 0) {
            mark[entry] = 1;
            path.emplace_back(entry, 0);
          }
        }
      }
    }
    // kUnbounded where no count up to the maximum does (the maximum is below it).
    out_.at_least_.assign(std::size_t{n} * min, kUnbounded);
    auto at_least = [&](std::uint32_t s, std::uint32_t r) -> std::uint64_t {
      const std::uint32_t fewest =
          r == 0 ? states[s].shortest : out_.at_least_[std::size_t{s} * min + r - 1];
      return fewest > max ? std::uint64_t{kUnbounded} + 1 : fewest;
    };
    for (std::uint32_t r = 1; r <= min; ++r)
      for (const std::uint32_t s : order) {
        std::uint64_t best = std::uint64_t{kUnbounded} + 1;
        for (std::size_t c = 0; c < classes; ++c) {
          const std::uint32_t entry = out_.transitions_[s * classes + c];
          if (entry == kNoTransition) continue;
          const std::uint32_t w = (entry & kCompletes) ? 1 : 0;
          best = std::min(best, w + at_least(entry & ~kCompletes, r - w));
        }
        out_.at_least_[std::size_t{s} * min + r - 1] =
            best > max ? kUnbounded : static_cast<std::uint32_t>(best);
      }
  }

  // Counts work about to be done (each step a state or edge looked at), refusing it past the
  // budget; work refused is not counted.
  void spend(std::uint64_t work, const std::string& refusal) {
    if (spent_ + work > budget_)
      throw PatternError(PatternError::kWhole,
                         shared_ && spent_ + work <= kMaxWork
                             ? "the schema's patterns together take too long to compile (this "
                               "one and those before it)"
                             : refusal);
    spent_ += work;
  }

  const std::vector<Ast>& ast_;
  std::uint64_t budget_;
  bool shared_;
  std::uint64_t spent_ = 0;
  StringPattern& out_;
  std::vector<NfaState> states_;
  std::vector<std::uint32_t> seen_;  // for closure()
  std::uint32_t generation_ = 0;
  std::uint64_t closure_work_ = 0;
};

StringPattern StringPattern::compile(std::string_view pattern, std::uint32_t min_characters,
                                     std::uint32_t max_characters) {
  std::uint64_t budget = kMaxWork;
  return compile(pattern, min_characters, max_characters, budget);
}

StringPattern StringPattern::compile(std::string_view pattern, std::uint32_t min_characters,
                                     std::uint32_t max_characters, std::uint64_t& budget) {
  Parser parser(pattern);
  const std::size_t root = parser.parse();
  StringPattern compiled;
  compiled.min_characters_ = min_characters;
  compiled.max_characters_ = max_characters;
  Builder builder(parser.nodes, std::min(budget, kMaxWork), budget < kMaxWork, compiled);
  try {
    builder.build(root);
  } catch (const PatternError&) {
    budget -= builder.spent();
    throw;
  }
  budget -= builder.spent();
  return compiled;
}

std::optional<StringPattern::Format> StringPattern::format(std::string_view name) {
  // RFC 3339's full-date, without 29 February; years from 0001 (as Python's date takes them).
  static const std::string kDate =
      "(?:000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})-(?:(?:0[13578]|1[02])-"
      "(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]"
      "))";
  // RFC 3339's full-time without leap seconds, to microseconds.
  static const std::string kTime =
      "(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,6})?(?:Z|[+-](?:[01][0-9]|2[0-3]):"
      "[0-5][0-9])";
  // RFC 1123's labels, the last one (the top-level name) not all digits; the third character is
  // not '-', so that none looks like IDNA's "xn--" (validators that read hostnames through IDNA
  // refuse "--" there).
  static const std::string kLabelRest =
      "(?:[A-Za-z0-9]|[A-Za-z0-9-][A-Za-z0-9](?:[A-Za-z0-9-]{0,59}[A-Za-z0-9])?)?";
  static const std::string kLabel = "[A-Za-z0-9]" + kLabelRest;
  static const std::string kTopLabel = "[A-Za-z]" + kLabelRest;
  // RFC 4291's text forms without an embedded IPv4 address, in lowercase.
  static const std::string kHex = "[0-9a-f]{1,4}";
  static const std::string kIpv6 =
      "^(?:(?:" + kHex + ":){7}" + kHex + "|(?:" + kHex + ":){1,7}:|(?:" + kHex +
      ":){1,6}:" + kHex + "|(?:" + kHex + ":){1,5}(?::" + kHex + "){1,2}|(?:" + kHex +
      ":){1,4}(?::" + kHex + "){1,3}|(?:" + kHex + ":){1,3}(?::" + kHex + "){1,4}|(?:" + kHex +
      ":){1,2}(?::" + kHex + "){1,5}|" + kHex + ":(?::" + kHex + "){1,6}|:(?:(?::" + kHex +
      "){1,7}|:))$";
  static const std::string kOctet = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";
  static const std::map<std::string, std::pair<std::string, std::uint32_t>, std::less<>> kFormats =
      {
          {"date", {"^" + kDate + "$", kUnbounded}},
          {"time", {"^" + kTime + "$", kUnbounded}},
          {"date-time", {"^" + kDate + "T" + kTime + "$", kUnbounded}},
          // RFC 3339's duration (appendix A), as JSON Schema has it.
          {"duration",
           {"^P(?:(?:[0-9]+D|[0-9]+M(?:[0-9]+D)?|[0-9]+Y(?:[0-9]+M(?:[0-9]+D)?)?)"
            "(?:T(?:[0-9]+H(?:[0-9]+M(?:[0-9]+S)?)?|[0-9]+M(?:[0-9]+S)?|[0-9]+S))?"
            "|T(?:[0-9]+H(?:[0-9]+M(?:[0-9]+S)?)?|[0-9]+M(?:[0-9]+S)?|[0-9]+S)|[0-9]+W)$",
            kUnbounded}},
          // RFC 5321's Mailbox with a dot-atom local part of at most 64 octets (two atoms of
          // at most 32).
          {"email",
           {"^[A-Za-z0-9_%+-]{1,32}(?:\\.[A-Za-z0-9_%+-]{1,31})?@(?:" + kLabel +
                "\\.)+[A-Za-z]{2,63}$",
            254}},
          {"hostname", {"^(?:" + kLabel + "\\.)*" + kTopLabel + "$", 253}},
          {"ipv4", {"^(?:" + kOctet + "\\.){3}" + kOctet + "$", kUnbounded}},
          {"ipv6", {kIpv6, kUnbounded}},
          {"uuid", {"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", kUnbounded}},
      };
  const auto found = kFormats.find(name);
  if (found == kFormats.end()) return std::nullopt;
  return Format{found->second.first.c_str(), found->second.second};
}

bool StringPattern::viable(std::uint32_t state, std::uint32_t characters) const {
  const State& s = states_[state];
  if (s.shortest == kUnbounded || characters > max_characters_) return false;
  const std::uint32_t most =
      max_characters_ == kUnbounded ? kUnbounded : max_characters_ - characters;
  const std::uint32_t least = min_characters_ > characters ? min_characters_ - characters : 0;
  if (least == 0) return s.shortest <= most;
  if (most == kUnbounded) return s.longest >= least;
  return at_least_[std::size_t{state} * min_characters_ + least - 1] <= most;
}

std::uint32_t StringPattern::next(std::uint32_t state, std::uint32_t characters, unsigned char byte,
                                  bool& completes) const {
  const std::uint32_t entry = transitions_[state * classes_ + byte_class_[byte]];
  if (entry == kNoTransition) return kDead;
  completes = (entry & kCompletes) != 0;
  const std::uint32_t target = entry & ~kCompletes;
  return viable(target, characters + (completes ? 1 : 0)) ? target : kDead;
}

bool StringPattern::may_end(std::uint32_t state, std::uint32_t characters) const {
  const State& s = states_[state];
  return !s.mid_character && s.accepting && characters >= min_characters_ &&
         characters <= max_characters_;
}

}  // namespace moed::server
