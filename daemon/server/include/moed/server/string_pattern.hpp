#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace moed::server {

// A pattern moed cannot hold a string to; `offset` is the byte in the pattern at fault, or kWhole
// where the fault is the whole pattern's (its size, its automaton's).
class PatternError : public std::runtime_error {
 public:
  static constexpr std::size_t kWhole = std::numeric_limits<std::size_t>::max();
  PatternError(std::size_t offset, const std::string& message)
      : std::runtime_error(message), offset(offset) {}
  std::size_t offset;
};

// The strings a JSON Schema `pattern` (an ECMA-262 regular expression, matched anywhere in the
// string unless anchored) admits, with the string's minLength and maxLength (in characters, as
// JSON Schema counts them), as a DFA over the bytes of the string's JSON spelling between its
// quotes. The spelling is one way of writing each character: UTF-8 as it is, '"' and '\' as \"
// and \\, '/' as / or \/, control characters as \b \t \n \f \r or \u00XX (either case of hex).
//
// The syntax taken: literals, '.', classes ([...], [^...], ranges, \d \D \w \W \s \S inside or
// out), escapes (\t \n \v \f \r \0 \cX \xHH \uHHHH \u{H...}, and any punctuation as itself),
// groups ((...), (?:...), (?<name>...)), alternation, the quantifiers * + ? {n} {n,} {n,m} (lazy
// or not: the strings matched are the same), and ^ and $ (the whole string's start and end, as
// JSON Schema has no flags). Escapes are read as with the u flag (\u{...}, surrogate pairs as one
// character), and annex B's lenient forms are taken as browsers take them (a lone ] or {, a class
// escape at either end of a range: [\w-.] holds '-'). Refused, naming the offset: lookaround,
// backreferences, \b and \B, \p{...}, and a pattern past the limits below (counted repetitions
// multiply its size).
class StringPattern {
 public:
  static constexpr std::uint32_t kUnbounded = std::numeric_limits<std::uint32_t>::max();
  static constexpr std::uint32_t kDead = std::numeric_limits<std::uint32_t>::max();
  static constexpr std::size_t kMaxPatternBytes = 4096;
  static constexpr std::size_t kMaxNfaStates = 20000;
  static constexpr std::size_t kMaxDfaStates = 20000;
  // Steps of compiling one pattern (10-20 ns each here: one pattern takes at most about 0.15 s).
  static constexpr std::uint64_t kMaxWork = std::uint64_t{1} << 23;

  static StringPattern compile(std::string_view pattern, std::uint32_t min_characters = 0,
                               std::uint32_t max_characters = kUnbounded);
  // The same, spending steps of `budget` (kMaxWork at most is spent on one); where it runs out,
  // a PatternError. For many patterns that are compiled together, as one request's.
  static StringPattern compile(std::string_view pattern, std::uint32_t min_characters,
                               std::uint32_t max_characters, std::uint64_t& budget);
  // The anchored pattern moed holds a string of a JSON Schema `format` to, for those OpenAI's
  // structured outputs name (date-time, time, date, duration, email, hostname, ipv4, ipv6,
  // uuid); none for another format. Each admits fewer strings than the format allows (no leap
  // seconds, no 29 February, lowercase hex, no IPv4 inside IPv6, an email's local part of at
  // most two atoms, a hostname's third character not '-'), every one of them valid. `max_characters` is the
  // format's own limit, if any.
  struct Format {
    const char* pattern;
    std::uint32_t max_characters;
  };
  static std::optional<Format> format(std::string_view name);

  std::uint32_t start() const { return 0; }
  // The state after `byte` of the spelling, from `state` with `characters` read before it, or
  // kDead where no string the pattern and the length bounds admit goes on with it.
  // `completes`: the byte ends a character.
  std::uint32_t next(std::uint32_t state, std::uint32_t characters, unsigned char byte,
                     bool& completes) const;
  // Whether a '"' here would be the string's closing quote (not inside a character's spelling).
  bool at_character_boundary(std::uint32_t state) const { return !states_[state].mid_character; }
  // Whether the string may end (its closing quote come) at `state` with `characters` read.
  bool may_end(std::uint32_t state, std::uint32_t characters) const;
  // Whether some string the pattern and the bounds admit exists at all.
  bool satisfiable() const { return viable(start(), 0); }
  std::size_t states() const { return states_.size(); }

 private:
  struct State {
    bool accepting = false;      // the pattern admits the string read so far
    bool mid_character = false;  // inside a character's spelling: a '"' here is not the end
    std::uint32_t shortest = kUnbounded;  // the fewest characters to an accepting state
    std::uint32_t longest = 0;            // the most (kUnbounded: any number)
  };
  bool viable(std::uint32_t state, std::uint32_t characters) const;
  class Builder;

  std::vector<State> states_;
  std::vector<std::uint8_t> byte_class_;  // 256 entries
  std::size_t classes_ = 0;
  // states_.size() x classes_: the next state (kNoTransition: none), its top bit set where the
  // byte ends a character.
  static constexpr std::uint32_t kNoTransition = 0x7fffffff;
  static constexpr std::uint32_t kCompletes = 0x80000000;
  std::vector<std::uint32_t> transitions_;
  std::uint32_t min_characters_ = 0;
  std::uint32_t max_characters_ = kUnbounded;
  // Where both bounds hold: for each state and r from 1 to the minimum, the fewest further
  // characters, at least r, that reach an accepting state (past the maximum: none do).
  std::vector<std::uint32_t> at_least_;
};

}  // namespace moed::server
