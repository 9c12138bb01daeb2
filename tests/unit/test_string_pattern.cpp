#include <gtest/gtest.h>

#include <random>
#include <regex>
#include <string>
#include <string_view>

#include "moed/server/string_pattern.hpp"

namespace {

using moed::server::PatternError;
using moed::server::StringPattern;

// Whether `pattern` takes `spelled` (a JSON string's text between its quotes) whole.
bool takes(const StringPattern& pattern, std::string_view spelled) {
  std::uint32_t state = pattern.start();
  std::uint32_t characters = 0;
  for (const char c : spelled) {
    bool completes = false;
    state = pattern.next(state, characters, static_cast<unsigned char>(c), completes);
    if (state == StringPattern::kDead) return false;
    characters += completes ? 1 : 0;
  }
  return pattern.may_end(state, characters);
}

bool takes(std::string_view regex, std::string_view spelled, std::uint32_t min = 0,
           std::uint32_t max = StringPattern::kUnbounded) {
  return takes(StringPattern::compile(regex, min, max), spelled);
}

std::size_t error_offset(std::string_view regex) {
  try {
    StringPattern::compile(regex);
  } catch (const PatternError& error) {
    return error.offset;
  }
  ADD_FAILURE() << regex << " compiled";
  return 0;
}

TEST(StringPattern, MatchesAnywhereUnlessAnchored) {
  EXPECT_TRUE(takes("abc", "xxabcyy"));
  EXPECT_FALSE(takes("abc", "xxabyy"));
  EXPECT_TRUE(takes("^abc", "abcyy"));
  EXPECT_FALSE(takes("^abc", "xabc"));
  EXPECT_TRUE(takes("abc$", "xxabc"));
  EXPECT_FALSE(takes("abc$", "abcx"));
  EXPECT_TRUE(takes("^abc$", "abc"));
  EXPECT_FALSE(takes("^abc$", "abcabc"));
  EXPECT_TRUE(takes("^a|b$", "ax"));
  EXPECT_TRUE(takes("^a|b$", "xb"));
  EXPECT_FALSE(takes("^a|b$", "xbx"));
  EXPECT_TRUE(takes("", ""));
  EXPECT_TRUE(takes("^$", ""));
  EXPECT_FALSE(takes("^$", "a"));
  EXPECT_FALSE(takes("a^b", "ab"));
  EXPECT_TRUE(takes("$^", ""));  // as ECMA-262: at the empty string the end and the start meet
  EXPECT_FALSE(takes("$^", "a"));
}

TEST(StringPattern, ReadsClassesEscapesAndQuantifiers) {
  EXPECT_TRUE(takes("^[a-z0-9_-]+$", "ab-9_"));
  EXPECT_FALSE(takes("^[a-z0-9_-]+$", "aB"));
  EXPECT_TRUE(takes("^\\d{3}-\\d{4}$", "555-1234"));
  EXPECT_FALSE(takes("^\\d{3}-\\d{4}$", "55-12345"));
  EXPECT_TRUE(takes("^a{2,}$", "aaaa"));
  EXPECT_FALSE(takes("^a{2,}$", "a"));
  EXPECT_TRUE(takes("^a{1,3}?b$", "aaab"));
  EXPECT_FALSE(takes("^a{1,3}b$", "aaaab"));
  EXPECT_TRUE(takes("^(?:ab|cd)*$", "abcdab"));
  EXPECT_TRUE(takes("^(?<word>\\w+)\\s\\W$", "x1 !"));
  EXPECT_TRUE(takes("^[\\w-.]+$", "a.b-c"));
  EXPECT_TRUE(takes("^\\x41\\u0042\\u{43}\\cJ$", "ABC\\n"));
  EXPECT_TRUE(takes("^a{$", "a{"));
  EXPECT_TRUE(takes("^]}$", "]}"));
  EXPECT_TRUE(takes("^\\.\\*\\/$", ".*/"));
  EXPECT_FALSE(takes("^.$", "\\n"));
  EXPECT_TRUE(takes("^[^a]$", "\\n"));
  EXPECT_FALSE(takes("^[]$", "a"));
  EXPECT_TRUE(takes("^[^]$", "a"));
}

TEST(StringPattern, TakesEachCharacterInItsJsonSpelling) {
  // UTF-8 as it is, a surrogate pair in the pattern as one character.
  EXPECT_TRUE(takes("^caf\u00e9 \\ud83d\\ude00$", "caf\xc3\xa9 \xf0\x9f\x98\x80"));
  EXPECT_TRUE(takes("^[\u00e0-\u00ff]{2}$", "\xc3\xa9\xc3\xbf"));
  EXPECT_FALSE(takes("^[\u00e0-\u00ff]{2}$", "\xc3\x9f\xc3\xbf"));
  // '"' and '\' escaped; '/' either way; controls as short escapes or \u00XX.
  EXPECT_TRUE(takes("^a\"b\\\\c$", "a\\\"b\\\\c"));
  EXPECT_FALSE(takes("^a\"b$", "a\"b"));
  EXPECT_TRUE(takes("^/$", "/"));
  EXPECT_TRUE(takes("^/$", "\\/"));
  EXPECT_TRUE(takes("^\\n\\t$", "\\n\\t"));
  EXPECT_TRUE(takes("^\\n\\x1f$", "\\u000a\\u001F"));
  EXPECT_FALSE(takes("^\\n$", "\n"));
  EXPECT_FALSE(takes("^.$", "\\ud83d\\ude00"));  // moed writes such a character as UTF-8
  // The closing quote is only where a character has ended.
  const auto quote = StringPattern::compile("^\"$");
  bool completes = false;
  const std::uint32_t escape = quote.next(quote.start(), 0, '\\', completes);
  ASSERT_NE(escape, StringPattern::kDead);
  EXPECT_FALSE(quote.at_character_boundary(escape));
  EXPECT_TRUE(quote.at_character_boundary(quote.start()));
}

TEST(StringPattern, HoldsLengthBoundsInCharacters) {
  EXPECT_FALSE(takes("^a+$", "aa", 3, 5));
  EXPECT_TRUE(takes("^a+$", "aaa", 3, 5));
  EXPECT_FALSE(takes("^a+$", "aaaaaa", 3, 5));
  EXPECT_TRUE(takes("^.+$", "\xc3\xa9\xc3\xa9", 2, 2));
  EXPECT_TRUE(takes("^.+$", "\\\"\\\\", 2, 2));
  EXPECT_FALSE(takes("^.+$", "\xc3\xa9\xc3\xa9", 3));
  // Lengths the pattern cannot reach between the bounds.
  EXPECT_FALSE(StringPattern::compile("^(ab)+$", 3, 3).satisfiable());
  EXPECT_TRUE(takes("^(ab)+$", "abab", 3, 4));
  EXPECT_FALSE(StringPattern::compile("^\\d{4}$", 5).satisfiable());
  EXPECT_FALSE(StringPattern::compile("^\\d{4}$", 0, 3).satisfiable());
  EXPECT_TRUE(StringPattern::compile("x", 0, 1).satisfiable());
  // Bounds far apart cost the minimum's worth of tables, not the maximum's.
  EXPECT_TRUE(takes("\\S", "a", 1, 10000));
  EXPECT_FALSE(takes("\\S", " ", 1, 10000));
  EXPECT_TRUE(takes("^\\d{3}-\\d{4}$", "555-1234", 1, 100000));
  EXPECT_FALSE(StringPattern::compile("^\\d{3}-\\d{4}$", 9, 100000).satisfiable());
  EXPECT_TRUE(takes("^(?:[a-z]{1,3}|[0-9]+)$", "0123456789", 10, 10000));
  EXPECT_FALSE(takes("^(?:[a-z]{1,3}|[0-9]+)$", "abc", 10, 10000));
  EXPECT_FALSE(StringPattern::compile("^a$", 2, StringPattern::kUnbounded - 1).satisfiable());
  // A byte that leaves only strings past the maximum is refused at once.
  const auto pattern = StringPattern::compile("^ab*c$", 0, 3);
  std::uint32_t state = pattern.start(), characters = 0;
  for (const char c : std::string_view("abb")) {
    bool completes = false;
    state = pattern.next(state, characters, static_cast<unsigned char>(c), completes);
    if (state == StringPattern::kDead) break;
    characters += completes;
  }
  EXPECT_EQ(state, StringPattern::kDead);
}

TEST(StringPattern, RefusesWhatItCannotHoldNamingTheByte) {
  EXPECT_EQ(error_offset("ab(?=c)"), 2u);
  EXPECT_EQ(error_offset("a(?<!c)"), 1u);
  EXPECT_EQ(error_offset("(a)\\1"), 3u);
  EXPECT_EQ(error_offset("a\\b"), 1u);
  EXPECT_EQ(error_offset("\\p{L}"), 0u);
  EXPECT_EQ(error_offset("a**"), 2u);
  EXPECT_EQ(error_offset("*a"), 0u);
  EXPECT_EQ(error_offset("x[b-a]"), 2u);
  EXPECT_EQ(error_offset("x(a"), 1u);
  EXPECT_EQ(error_offset("ab)"), 2u);
  EXPECT_EQ(error_offset("[ab"), 0u);
  EXPECT_EQ(error_offset("a{3,2}"), 1u);
  EXPECT_EQ(error_offset("a{1001}"), 1u);
  EXPECT_EQ(error_offset("\\q"), 0u);
  EXPECT_EQ(error_offset("(?i)a"), 0u);
  EXPECT_EQ(error_offset("\xc3\xa9\\"), 2u);  // bytes, not characters
  EXPECT_EQ(error_offset("(?<>a)"), 0u);
  EXPECT_EQ(error_offset("(?<1a>a)"), 3u);
  EXPECT_EQ(error_offset("a\xe0\x80\x80"), 1u);  // overlong
  EXPECT_EQ(error_offset("\xed\xa0\x80"), 0u);   // a surrogate
  // Work that grows past the budget is refused, not done: closures of a long chain of optional
  // items, beside an automaton of the last 13 characters.
  EXPECT_THROW(StringPattern::compile("x(?:(?:y?){1000}){4}|[ab]*a[ab]{13}$"), PatternError);
  // An automaton that would outgrow the limit: the last 20 characters seen, unanchored.
  EXPECT_THROW(StringPattern::compile("a[ab]{20}$"), PatternError);
}

TEST(StringPattern, FormatsAdmitValidStringsOnly) {
  auto format = [](const char* name, std::string_view text) {
    const auto f = StringPattern::format(name);
    EXPECT_TRUE(f.has_value()) << name;
    return takes(StringPattern::compile(f->pattern, 0, f->max_characters), text);
  };
  EXPECT_TRUE(format("date", "2024-02-28"));
  EXPECT_FALSE(format("date", "2024-02-30"));
  EXPECT_FALSE(format("date", "2024-04-31"));
  EXPECT_FALSE(format("date", "0000-01-01"));
  EXPECT_TRUE(format("date-time", "1999-12-31T23:59:59.123456+01:00"));
  EXPECT_FALSE(format("date-time", "1999-12-31 23:59:59Z"));
  EXPECT_TRUE(format("time", "08:30:00Z"));
  EXPECT_FALSE(format("time", "24:00:00Z"));
  EXPECT_TRUE(format("duration", "P1Y2M3DT4H5M6S"));
  EXPECT_TRUE(format("duration", "P3W"));
  EXPECT_FALSE(format("duration", "P"));
  EXPECT_FALSE(format("duration", "PT"));
  EXPECT_TRUE(format("email", "jane.doe+x@mail.example.org"));
  EXPECT_FALSE(format("email", "jane..doe@example.org"));
  EXPECT_FALSE(format("email", std::string(65, 'a') + "@example.org"));  // RFC 5321: 64 at most
  EXPECT_TRUE(format("hostname", "a-1.example.com"));
  EXPECT_FALSE(format("hostname", "-a.example.com"));
  EXPECT_FALSE(format("hostname", std::string(64, 'a')));
  EXPECT_FALSE(format("hostname", "1.2.3.4"));        // a top-level name is not all digits
  EXPECT_FALSE(format("hostname", "ab--c.example"));  // as IDNA's "xn--"
  EXPECT_TRUE(format("ipv4", "192.168.0.255"));
  EXPECT_FALSE(format("ipv4", "192.168.0.256"));
  EXPECT_FALSE(format("ipv4", "01.1.1.1"));
  EXPECT_TRUE(format("ipv6", "2001:db8:0:0:0:0:0:1"));
  EXPECT_TRUE(format("ipv6", "2001:db8::1"));
  EXPECT_TRUE(format("ipv6", "::"));
  EXPECT_TRUE(format("ipv6", "1:2:3:4:5:6:7::"));
  EXPECT_FALSE(format("ipv6", "1::2::3"));
  EXPECT_FALSE(format("ipv6", "1:2:3:4:5:6:7:8:9"));
  EXPECT_TRUE(format("uuid", "123e4567-e89b-12d3-a456-426614174000"));
  EXPECT_FALSE(format("uuid", "123e4567e89b12d3a456426614174000"));
  EXPECT_FALSE(StringPattern::format("color").has_value());
}

// Random walks through the automaton, each byte among those it lets through, end in strings that
// std::regex (an independent ECMAScript implementation) finds the pattern in; and no walk meets a
// state with neither a next byte nor an end.
TEST(StringPattern, RandomWalksEndInStringsStdRegexMatches) {
  const std::vector<std::string> patterns = {
      "^[a-c]{2,4}(x|yz)?$",
      "ab+c",
      "^(?:[0-9]{1,3}\\.){3}[0-9]{1,3}$",
      "[^abc]c$",
      "^(a|ab)(c|bcd)(d*)$",
      "^\\w+@\\w+\\.(com|org)$",
      "^$|^a",
      "^(?:a{2}|b{3})+$",
      "q?r?s?",
  };
  std::mt19937 rng(7);
  for (const auto& text : patterns) {
    for (const auto& [min, max] : std::vector<std::pair<std::uint32_t, std::uint32_t>>{
             {0, StringPattern::kUnbounded}, {3, 8}, {0, 6}}) {
      const auto pattern = StringPattern::compile(text, min, max);
      if (!pattern.satisfiable()) continue;
      const std::regex independent(text, std::regex::ECMAScript);
      for (int walk = 0; walk < 60; ++walk) {
        std::uint32_t state = pattern.start(), characters = 0;
        std::string spelled;
        bool abandoned = false;
        for (;;) {
          // Bytes of the patterns' own first, so that walks reach their ends.
          std::vector<int> bytes;
          for (const char c : std::string_view("abcdqrsxyz0129.@ ")) {
            bool completes = false;
            if (pattern.next(state, characters, static_cast<unsigned char>(c), completes) !=
                StringPattern::kDead)
              bytes.push_back(c);
          }
          for (int b = 0x20; b < 0x7f && bytes.empty(); ++b) {
            bool completes = false;
            if (b != '\\' && pattern.next(state, characters, static_cast<unsigned char>(b),
                                          completes) != StringPattern::kDead)
              bytes.push_back(b);
          }
          const bool may_end = pattern.may_end(state, characters);
          ASSERT_TRUE(may_end || !bytes.empty()) << text << " dead-ends after " << spelled;
          if (may_end && (bytes.empty() || rng() % 4 == 0 || spelled.size() > 40)) break;
          if (spelled.size() > 400) {
            abandoned = true;
            break;
          }
          const int b = bytes[rng() % bytes.size()];
          bool completes = false;
          state = pattern.next(state, characters, static_cast<unsigned char>(b), completes);
          characters += completes;
          spelled += static_cast<char>(b);
        }
        if (abandoned) continue;
        EXPECT_TRUE(std::regex_search(spelled, independent)) << text << ": " << spelled;
        EXPECT_GE(spelled.size(), min);
        EXPECT_LE(spelled.size(), max);
      }
    }
  }
}

}  // namespace
