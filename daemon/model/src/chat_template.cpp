#include "moed/model/chat_template.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <vector>

#include "utf8.hpp"

// A Jinja2 interpreter for chat templates. Values are ordered_json; Jinja's Undefined is the
// json "discarded" value, which never appears in real data.
namespace moed::model {
namespace {

using Value = nlohmann::ordered_json;

const Value& undefined() {
  static const Value u(Value::value_t::discarded);
  return u;
}
bool is_undefined(const Value& v) {
  return v.is_discarded();
}

// ---------------------------------------------------------------------------------------------
// Python semantics for values

bool truthy(const Value& v) {
  if (is_undefined(v) || v.is_null()) return false;
  if (v.is_boolean()) return v.get<bool>();
  if (v.is_number_integer()) return v.get<std::int64_t>() != 0;
  if (v.is_number()) return v.get<double>() != 0.0;
  if (v.is_string()) return !v.get_ref<const std::string&>().empty();
  return !v.empty();
}

std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, d);
  std::string s(buf, r.ptr);
  if (s.find_first_of(".en") == std::string::npos) s += ".0";
  return s;
}

std::string py_repr(const Value& v);

// str(x) as Python prints it; Undefined prints as nothing.
std::string to_str(const Value& v) {
  if (is_undefined(v)) return "";
  if (v.is_string()) return v.get<std::string>();
  return py_repr(v);
}

std::string py_repr(const Value& v) {
  if (is_undefined(v)) return "";
  if (v.is_null()) return "None";
  if (v.is_boolean()) return v.get<bool>() ? "True" : "False";
  if (v.is_number_integer()) return std::to_string(v.get<std::int64_t>());
  if (v.is_number_unsigned()) return std::to_string(v.get<std::uint64_t>());
  if (v.is_number_float()) return float_repr(v.get<double>());
  if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    const char quote =
        s.find('\'') != std::string::npos && s.find('"') == std::string::npos ? '"' : '\'';
    std::string out(1, quote);
    for (const char c : s) {
      if (c == quote || c == '\\') out += '\\';
      if (c == '\n') {
        out += "\\n";
      } else if (c == '\t') {
        out += "\\t";
      } else if (c == '\r') {
        out += "\\r";
      } else {
        out += c;
      }
    }
    return out + quote;
  }
  std::string out = v.is_array() ? "[" : "{";
  bool first = true;
  if (v.is_array()) {
    for (const auto& item : v) {
      out += first ? "" : ", ";
      out += py_repr(item);
      first = false;
    }
  } else {
    for (const auto& [key, item] : v.items()) {
      out += first ? "" : ", ";
      out += py_repr(Value(key)) + ": " + py_repr(item);
      first = false;
    }
  }
  return out + (v.is_array() ? "]" : "}");
}

// json.dumps(value, ensure_ascii=False, indent=indent): ", " and ": " separators without indent.
std::string py_json(const Value& v, int indent, int depth = 0) {
  if (is_undefined(v)) return "null";
  if (v.is_number_float()) return float_repr(v.get<double>());
  if (!v.is_array() && !v.is_object())
    return v.dump(-1, ' ', false, Value::error_handler_t::replace);
  if (v.empty()) return v.is_array() ? "[]" : "{}";
  const std::string pad =
      indent >= 0 ? "\n" + std::string(std::size_t(indent * (depth + 1)), ' ') : "";
  const std::string close = indent >= 0 ? "\n" + std::string(std::size_t(indent * depth), ' ') : "";
  const char* sep = indent >= 0 ? "," : ", ";
  std::string out = v.is_array() ? "[" : "{";
  bool first = true;
  if (v.is_array()) {
    for (const auto& item : v) {
      out += (first ? "" : sep) + pad + py_json(item, indent, depth + 1);
      first = false;
    }
  } else {
    for (const auto& [key, item] : v.items()) {
      out += (first ? "" : sep) + pad + Value(key).dump() + ": " + py_json(item, indent, depth + 1);
      first = false;
    }
  }
  return out + close + (v.is_array() ? "]" : "}");
}

std::string type_name(const Value& v) {
  if (is_undefined(v)) return "undefined";
  if (v.is_null()) return "None";
  if (v.is_boolean()) return "bool";
  if (v.is_number_integer() || v.is_number_unsigned()) return "int";
  if (v.is_number_float()) return "float";
  if (v.is_string()) return "str";
  return v.is_array() ? "list" : "dict";
}

// ---------------------------------------------------------------------------------------------
// Lexing the template into text and tags

struct Segment {
  enum class Kind { text, expr, stmt } kind;
  std::string content;
  int line;
};

struct ParseFailure {
  int line;
  std::string message;
};

// How deep expressions and blocks may nest. Parsing and rendering recurse once per level, so
// without a bound a template of nested brackets, "not"s, "if"s or a long chain of operators
// overflows the stack. Published templates nest a handful of levels.
constexpr int kMaxNesting = 128;
// The longest string '*' may build: a chat prompt is far shorter, and a larger one would only
// exhaust memory.
constexpr std::uint64_t kMaxStringBytes = 64ull << 20;
constexpr std::int64_t kMaxIndent = 1024;

std::vector<Segment> split_template(std::string_view src) {
  std::vector<Segment> out;
  std::size_t pos = 0;
  bool strip_next = false;  // the previous tag ended with '-'
  // Counts lines incrementally (its calls never go back), so that many tags stay linear.
  std::size_t counted_to = 0;
  int line = 1;
  auto line_of = [&](std::size_t at) {
    line += static_cast<int>(std::count(src.begin() + std::ptrdiff_t(counted_to),
                                        src.begin() + std::ptrdiff_t(at), '\n'));
    counted_to = at;
    return line;
  };
  auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  while (pos <= src.size()) {
    std::size_t start = pos;
    while (true) {
      start = src.find('{', start);
      if (start == std::string_view::npos || start + 1 >= src.size()) {
        start = std::string_view::npos;
        break;
      }
      if (src[start + 1] == '{' || src[start + 1] == '%' || src[start + 1] == '#') break;
      ++start;
    }
    std::string text(
        src.substr(pos, start == std::string_view::npos ? src.size() - pos : start - pos));
    if (strip_next) {
      std::size_t k = 0;
      while (k < text.size() && is_space(text[k])) ++k;
      text.erase(0, k);
    }
    if (start == std::string_view::npos) {
      if (!text.empty()) out.push_back({Segment::Kind::text, text, line_of(pos)});
      break;
    }
    const char kind = src[start + 1];
    std::size_t inner = start + 2;
    const bool left_strip = inner < src.size() && src[inner] == '-';
    const bool left_keep = inner < src.size() && src[inner] == '+';
    if (left_strip || left_keep) ++inner;
    if (left_strip) {
      while (!text.empty() && is_space(text.back())) text.pop_back();
    } else if (kind != '{' && !left_keep) {
      // lstrip_blocks: spaces and tabs from the start of the line up to a block or comment tag
      // (looking back no further than this text, which keeps many tags linear).
      std::size_t from = start;
      while (from > pos && (src[from - 1] == ' ' || src[from - 1] == '\t')) --from;
      if (from == 0 || src[from - 1] == '\n')
        text.erase(text.size() - std::min(text.size(), start - from));
    }
    if (!text.empty()) out.push_back({Segment::Kind::text, text, line_of(pos)});

    const char* closer = kind == '{' ? "}}" : kind == '%' ? "%}" : "#}";
    std::size_t end = inner;
    if (kind == '#') {
      end = src.find(closer, inner);
    } else {
      char quote = 0;
      for (; end + 1 < src.size(); ++end) {
        const char c = src[end];
        if (quote) {
          if (c == '\\') {
            ++end;
          } else if (c == quote) {
            quote = 0;
          }
        } else if (c == '\'' || c == '"') {
          quote = c;
        } else if (c == closer[0] && src[end + 1] == closer[1]) {
          break;
        }
      }
      if (end + 1 >= src.size()) end = std::string_view::npos;
    }
    if (end == std::string_view::npos)
      throw ParseFailure{line_of(start),
                         std::string("unclosed '{") + kind + "': expected '" + closer + "'"};
    std::size_t content_end = end;
    const bool right_strip = content_end > inner && src[content_end - 1] == '-';
    const bool right_keep = content_end > inner && src[content_end - 1] == '+';
    if (right_strip || right_keep) --content_end;
    if (kind != '#')
      out.push_back({kind == '{' ? Segment::Kind::expr : Segment::Kind::stmt,
                     std::string(src.substr(inner, content_end - inner)), line_of(start)});
    pos = end + 2;
    strip_next = right_strip;
    // trim_blocks: the first newline after a block or comment tag.
    if (kind != '{' && !right_strip && !right_keep && pos < src.size()) {
      if (src[pos] == '\n') {
        ++pos;
      } else if (src.compare(pos, 2, "\r\n") == 0) {
        pos += 2;
      }
    }
    if (pos == src.size()) break;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Expressions

struct Token {
  enum class Kind { name, string, integer, number, op, end } kind;
  std::string text;
  Value value;
};

std::vector<Token> lex(const std::string& src, int line) {
  std::vector<Token> out;
  std::size_t i = 0;
  static const char* kOps[] = {"//", "**", "==", "!=", "<=", ">=", "(", ")", "[",
                               "]",  "{",  "}",  ",",  ":",  ".",  "|", "~", "+",
                               "-",  "*",  "/",  "%",  "<",  ">",  "="};
  while (i < src.size()) {
    const char c = src[i];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      ++i;
    } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      std::size_t j = i;
      while (j < src.size() && (std::isalnum(static_cast<unsigned char>(src[j])) || src[j] == '_'))
        ++j;
      out.push_back({Token::Kind::name, src.substr(i, j - i), {}});
      i = j;
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      std::size_t j = i;
      bool is_float = false;
      while (j < src.size() && (std::isdigit(static_cast<unsigned char>(src[j])) || src[j] == '_'))
        ++j;
      if (j + 1 < src.size() && src[j] == '.' &&
          std::isdigit(static_cast<unsigned char>(src[j + 1]))) {
        is_float = true;
        ++j;
        while (j < src.size() && std::isdigit(static_cast<unsigned char>(src[j]))) ++j;
      }
      if (j + 1 < src.size() && (src[j] == 'e' || src[j] == 'E')) {  // 1e6, 1.5e-3
        std::size_t k = j + 1;
        if (k < src.size() && (src[k] == '+' || src[k] == '-')) ++k;
        if (k < src.size() && std::isdigit(static_cast<unsigned char>(src[k]))) {
          is_float = true;
          j = k;
          while (j < src.size() && std::isdigit(static_cast<unsigned char>(src[j]))) ++j;
        }
      }
      std::string digits = src.substr(i, j - i);
      std::erase(digits, '_');
      out.push_back(is_float ? Token{Token::Kind::number, digits, Value(std::stod(digits))}
                             : Token{Token::Kind::integer, digits, Value(std::stoll(digits))});
      i = j;
    } else if (c == '\'' || c == '"') {
      std::string s;
      std::size_t j = i + 1;
      for (; j < src.size() && src[j] != c; ++j) {
        if (src[j] != '\\' || j + 1 >= src.size()) {
          s += src[j];
          continue;
        }
        const char e = src[++j];
        switch (e) {
          case 'n':
            s += '\n';
            break;
          case 't':
            s += '\t';
            break;
          case 'r':
            s += '\r';
            break;
          case '0':
            s += '\0';
            break;
          case '\\':
            s += '\\';
            break;
          case '\'':
            s += '\'';
            break;
          case '"':
            s += '"';
            break;
          case '\n':
            break;
          case 'x':
          case 'u':
          case 'U': {
            const std::size_t digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
            if (j + digits >= src.size())
              throw ParseFailure{line, "truncated \\" + std::string(1, e) + " escape"};
            const auto code = std::stoul(src.substr(j + 1, digits), nullptr, 16);
            j += digits;
            append_utf8(s, static_cast<char32_t>(code));
            break;
          }
          default:
            s += '\\';
            s += e;
        }
      }
      if (j >= src.size()) throw ParseFailure{line, "unterminated string literal"};
      out.push_back({Token::Kind::string, {}, Value(s)});
      i = j + 1;
    } else {
      bool matched = false;
      for (const char* op : kOps) {
        const std::size_t n = std::char_traits<char>::length(op);
        if (src.compare(i, n, op) == 0) {
          out.push_back({Token::Kind::op, op, {}});
          i += n;
          matched = true;
          break;
        }
      }
      if (!matched) throw ParseFailure{line, std::string("unexpected character '") + c + "'"};
    }
  }
  out.push_back({Token::Kind::end, {}, {}});
  return out;
}

struct Expr;
using ExprPtr = std::shared_ptr<const Expr>;

struct Expr {
  enum class Kind {
    literal,
    name,
    list,
    dict,
    attr,
    item,
    slice,
    call,
    filter,
    test,
    unary,
    binary,
    cond
  };
  Expr(Kind k, std::string n = {}, Value v = {}, std::vector<ExprPtr> a = {})
      : kind(k), name(std::move(n)), value(std::move(v)), args(std::move(a)) {}
  Kind kind;
  std::string name;           // variable, attribute, operator, filter or test
  Value value;                // literal
  std::vector<ExprPtr> args;  // operands; for call/filter/test args[0] is the callee or subject
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  bool negated = false;  // "is not"
  int line = 0;
  int height = 1;  // levels of expressions in this one, itself included
};

const std::vector<std::string> kFilters = {
    "trim",       "length", "count",  "tojson",  "upper",   "lower",   "capitalize", "title",
    "string",     "int",    "float",  "abs",     "join",    "default", "d",          "first",
    "last",       "list",   "items",  "replace", "safe",    "reverse", "sort",       "selectattr",
    "rejectattr", "map",    "unique", "min",     "max",     "sum",     "round",      "indent",
    "wordcount",  "e",      "escape", "batch",   "dictsort"};
const std::vector<std::string> kTests = {
    "defined",  "undefined", "none",    "string", "number", "integer", "float",  "mapping",
    "iterable", "sequence",  "boolean", "true",   "false",  "odd",     "even",   "divisibleby",
    "equalto",  "eq",        "ne",      "in",     "lower",  "upper",   "sameas", "callable"};

class ExprParser {
 public:
  ExprParser(std::vector<Token> tokens, int line) : tokens_(std::move(tokens)), line_(line) {}

  ExprPtr expression() {
    const Deeper deeper(*this);
    return conditional();
  }
  bool at_end() const { return peek().kind == Token::Kind::end; }
  const Token& peek(std::size_t ahead = 0) const {
    return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)];
  }
  bool accept_op(const char* op) {
    if (peek().kind == Token::Kind::op && peek().text == op) return ++pos_, true;
    return false;
  }
  bool accept_name(const char* word) {
    if (peek().kind == Token::Kind::name && peek().text == word) return ++pos_, true;
    return false;
  }
  void expect_op(const char* op) {
    if (!accept_op(op)) fail(std::string("expected '") + op + "'");
  }
  std::string expect_name() {
    if (peek().kind != Token::Kind::name) fail("expected a name");
    return tokens_[pos_++].text;
  }
  void expect_end() {
    if (!at_end()) fail("unexpected '" + describe(peek()) + "'");
  }
  [[noreturn]] void fail(const std::string& message) const {
    throw ParseFailure{line_, message + (at_end() ? " at the end of the tag"
                                                  : " near '" + describe(peek()) + "'")};
  }
  ExprPtr or_expr() {
    auto left = and_expr();
    while (accept_name("or")) left = make_binary("or", left, and_expr());
    return left;
  }

 private:
  static std::string describe(const Token& t) {
    return t.kind == Token::Kind::string ? t.value.get<std::string>() : t.text;
  }
  // One more level of parsing recursion for as long as it lives.
  class Deeper {
   public:
    explicit Deeper(ExprParser& parser) : parser_(parser) {
      if (++parser_.nesting_ > kMaxNesting)
        parser_.fail("the expression nests deeper than " + std::to_string(kMaxNesting) + " levels");
    }
    ~Deeper() { --parser_.nesting_; }
    Deeper(const Deeper&) = delete;
    Deeper& operator=(const Deeper&) = delete;

   private:
    ExprParser& parser_;
  };
  ExprPtr make(Expr e) const {
    e.line = line_;
    for (const auto& arg : e.args)
      if (arg) e.height = std::max(e.height, arg->height + 1);
    for (const auto& [name, arg] : e.kwargs)
      if (arg) e.height = std::max(e.height, arg->height + 1);
    if (e.height > kMaxNesting)
      fail("the expression nests deeper than " + std::to_string(kMaxNesting) + " levels");
    return std::make_shared<const Expr>(std::move(e));
  }
  ExprPtr make_binary(std::string op, ExprPtr l, ExprPtr r) const {
    return make({Expr::Kind::binary, std::move(op), {}, {std::move(l), std::move(r)}});
  }
  ExprPtr conditional() {
    auto then = or_expr();
    if (!accept_name("if")) return then;
    auto cond = or_expr();
    ExprPtr otherwise;
    if (accept_name("else")) {
      const Deeper deeper(*this);
      otherwise = conditional();
    }
    return make({Expr::Kind::cond, {}, {}, {then, cond, otherwise}});
  }
  ExprPtr and_expr() {
    auto left = not_expr();
    while (accept_name("and")) left = make_binary("and", left, not_expr());
    return left;
  }
  ExprPtr not_expr() {
    if (accept_name("not")) {
      const Deeper deeper(*this);
      return make({Expr::Kind::unary, "not", {}, {not_expr()}});
    }
    return compare();
  }
  ExprPtr compare() {
    auto left = concat();
    while (true) {
      const auto& t = peek();
      if (t.kind == Token::Kind::op && (t.text == "==" || t.text == "!=" || t.text == "<" ||
                                        t.text == ">" || t.text == "<=" || t.text == ">=")) {
        const std::string op = tokens_[pos_++].text;
        left = make_binary(op, left, concat());
      } else if (accept_name("in")) {
        left = make_binary("in", left, concat());
      } else if (t.kind == Token::Kind::name && t.text == "not" && peek(1).text == "in") {
        pos_ += 2;
        left = make_binary("not in", left, concat());
      } else {
        return left;
      }
    }
  }
  ExprPtr concat() {
    auto left = sum();
    while (accept_op("~")) left = make_binary("~", left, sum());
    return left;
  }
  ExprPtr sum() {
    auto left = product();
    while (true) {
      if (accept_op("+")) {
        left = make_binary("+", left, product());
      } else if (accept_op("-")) {
        left = make_binary("-", left, product());
      } else {
        return left;
      }
    }
  }
  ExprPtr product() {
    auto left = unary();
    while (true) {
      std::string op;
      for (const char* candidate : {"*", "//", "/", "%"})
        if (accept_op(candidate)) {
          op = candidate;
          break;
        }
      if (op.empty()) return left;
      left = make_binary(op, left, unary());
    }
  }
  ExprPtr unary() {
    if (accept_op("-")) {
      const Deeper deeper(*this);
      return make({Expr::Kind::unary, "-", {}, {unary()}});
    }
    if (accept_op("+")) {
      const Deeper deeper(*this);
      return unary();
    }
    return filters(postfix(primary()));
  }
  ExprPtr primary() {
    const Token t = peek();
    ++pos_;
    switch (t.kind) {
      case Token::Kind::string: {
        std::string s = t.value.get<std::string>();
        while (peek().kind == Token::Kind::string) s += tokens_[pos_++].value.get<std::string>();
        return make({Expr::Kind::literal, {}, Value(s)});
      }
      case Token::Kind::integer:
      case Token::Kind::number:
        return make({Expr::Kind::literal, {}, t.value});
      case Token::Kind::name:
        if (t.text == "true" || t.text == "True") return make({Expr::Kind::literal, {}, true});
        if (t.text == "false" || t.text == "False") return make({Expr::Kind::literal, {}, false});
        if (t.text == "none" || t.text == "None") return make({Expr::Kind::literal, {}, nullptr});
        return make({Expr::Kind::name, t.text});
      case Token::Kind::op:
        if (t.text == "(") {
          auto inner = expression();
          if (accept_op(",")) {  // a tuple: evaluated as a list
            Expr list{Expr::Kind::list};
            list.args.push_back(inner);
            items_until(")", [&] { list.args.push_back(expression()); });
            return make(std::move(list));
          }
          expect_op(")");
          return inner;
        }
        if (t.text == "[") {
          Expr list{Expr::Kind::list};
          items_until("]", [&] { list.args.push_back(expression()); });
          return make(std::move(list));
        }
        if (t.text == "{") {
          Expr dict{Expr::Kind::dict};
          items_until("}", [&] {
            dict.args.push_back(expression());
            expect_op(":");
            dict.args.push_back(expression());
          });
          return make(std::move(dict));
        }
        break;
      case Token::Kind::end:
        break;
    }
    --pos_;
    fail("expected a value");
  }
  // Comma-separated items up to `close` (a trailing comma allowed); the opener is consumed.
  template <typename ParseItem>
  void items_until(const char* close, ParseItem parse_item) {
    while (!accept_op(close)) {
      parse_item();
      if (!accept_op(",")) {
        expect_op(close);
        break;
      }
    }
  }
  void call_arguments(Expr& call) {
    items_until(")", [&] {
      if (peek().kind == Token::Kind::name && peek(1).kind == Token::Kind::op &&
          peek(1).text == "=") {
        std::string key = tokens_[pos_].text;
        pos_ += 2;
        call.kwargs.emplace_back(std::move(key), expression());
      } else {
        call.args.push_back(expression());
      }
    });
  }
  ExprPtr postfix(ExprPtr node) {
    while (true) {
      if (accept_op(".")) {
        node = make({Expr::Kind::attr, expect_name(), {}, {node}});
      } else if (accept_op("[")) {
        ExprPtr parts[3];
        int part = 0;
        bool is_slice = false;
        while (!accept_op("]")) {
          if (accept_op(":")) {
            is_slice = true;
            if (++part > 2) fail("too many ':' in a slice");
            continue;
          }
          parts[part] = expression();
        }
        if (is_slice) {
          node = make({Expr::Kind::slice, {}, {}, {node, parts[0], parts[1], parts[2]}});
        } else {
          if (!parts[0]) fail("empty subscript");
          node = make({Expr::Kind::item, {}, {}, {node, parts[0]}});
        }
      } else if (accept_op("(")) {
        Expr call{Expr::Kind::call};
        call.args.push_back(node);
        call_arguments(call);
        node = make(std::move(call));
      } else {
        return node;
      }
    }
  }
  ExprPtr filters(ExprPtr node) {
    while (true) {
      if (accept_op("|")) {
        Expr filter{Expr::Kind::filter, expect_name()};
        if (std::find(kFilters.begin(), kFilters.end(), filter.name) == kFilters.end()) {
          --pos_;
          fail("unsupported filter '" + filter.name + "'");
        }
        filter.args.push_back(node);
        if (accept_op("(")) call_arguments(filter);
        node = make(std::move(filter));
      } else if (accept_name("is")) {
        Expr test{Expr::Kind::test};
        test.negated = accept_name("not");
        if (accept_name("none")) {
          test.name = "none";
        } else if (accept_name("true")) {
          test.name = "true";
        } else if (accept_name("false")) {
          test.name = "false";
        } else if (accept_op("==")) {
          test.name = "eq";
        } else if (accept_op("!=")) {
          test.name = "ne";
        } else {
          test.name = expect_name();
        }
        if (std::find(kTests.begin(), kTests.end(), test.name) == kTests.end()) {
          --pos_;
          fail("unsupported test '" + test.name + "'");
        }
        test.args.push_back(node);
        if (accept_op("(")) {
          call_arguments(test);
        } else if (peek().kind == Token::Kind::string || peek().kind == Token::Kind::integer ||
                   peek().kind == Token::Kind::number ||
                   (peek().kind == Token::Kind::name && peek().text != "and" &&
                    peek().text != "or" && peek().text != "else" && peek().text != "if")) {
          test.args.push_back(postfix(primary()));  // "is divisibleby 3", "is equalto x"
        }
        node = make(std::move(test));
      } else {
        return node;
      }
    }
  }

  std::vector<Token> tokens_;
  std::size_t pos_ = 0;
  int line_;
  int nesting_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Statements

struct Node;
using Body = std::vector<std::shared_ptr<const Node>>;

struct Node {
  enum class Kind {
    text,
    output,
    if_chain,
    for_loop,
    set,
    set_block,
    loop_break,
    loop_continue,
    scope
  };
  Node() = default;
  Node(Kind k, std::string t) : kind(k), text(std::move(t)) {}
  Kind kind = Kind::text;
  std::string text;
  ExprPtr expr;                                    // output, set, for: the iterable
  std::vector<std::pair<ExprPtr, Body>> branches;  // if/elif (expr null for else)
  std::vector<std::string> targets;                // for: loop variables; set: name[, attribute]
  ExprPtr filter;                                  // for ... if cond
  Body body, else_body;
  int line = 0;
};

class StmtParser {
 public:
  explicit StmtParser(std::vector<Segment> segments) : segments_(std::move(segments)) {}

  Body parse() {
    auto [body, end] = parse_until({});
    if (!end.empty()) throw ParseFailure{last_line_, "unexpected '{% " + end + " %}'"};
    return body;
  }

 private:
  // Parses nodes until one of `enders` (a statement keyword); returns the body and the keyword
  // met ("" at the end of the template). The ender's parser is left in current_.
  std::pair<Body, std::string> parse_until(const std::vector<std::string>& enders) {
    if (++nesting_ > kMaxNesting)
      throw ParseFailure{last_line_,
                         "blocks nest deeper than " + std::to_string(kMaxNesting) + " levels"};
    Body body;
    while (index_ < segments_.size()) {
      const Segment& seg = segments_[index_++];
      last_line_ = seg.line;
      if (seg.kind == Segment::Kind::text) {
        body.push_back(std::make_shared<const Node>(Node{Node::Kind::text, seg.content}));
        continue;
      }
      auto parser = std::make_shared<ExprParser>(lex(seg.content, seg.line), seg.line);
      if (seg.kind == Segment::Kind::expr) {
        Node out(Node::Kind::output, {});
        out.expr = parser->expression();
        parser->expect_end();
        out.line = seg.line;
        body.push_back(std::make_shared<const Node>(std::move(out)));
        continue;
      }
      const std::string keyword = parser->at_end() ? "" : parser->expect_name();
      if (std::find(enders.begin(), enders.end(), keyword) != enders.end()) {
        current_ = parser;
        --nesting_;
        return {std::move(body), keyword};
      }
      body.push_back(statement(keyword, *parser, seg.line));
    }
    if (!enders.empty())
      throw ParseFailure{last_line_, "missing '{% " + enders.back() + " %}' before the end"};
    --nesting_;
    return {std::move(body), ""};
  }

  std::shared_ptr<const Node> statement(const std::string& keyword, ExprParser& p, int line) {
    Node node;
    node.line = line;
    if (keyword == "if") {
      node.kind = Node::Kind::if_chain;
      ExprPtr cond = p.expression();
      p.expect_end();
      while (true) {
        auto [body, end] = parse_until({"elif", "else", "endif"});
        node.branches.emplace_back(cond, std::move(body));
        if (end == "endif") {
          current_->expect_end();
          break;
        }
        if (end == "else") {
          current_->expect_end();
          auto [rest, fin] = parse_until({"endif"});
          current_->expect_end();
          node.branches.emplace_back(nullptr, std::move(rest));
          break;
        }
        cond = current_->expression();
        current_->expect_end();
      }
    } else if (keyword == "for") {
      node.kind = Node::Kind::for_loop;
      node.targets.push_back(p.expect_name());
      while (p.accept_op(",")) node.targets.push_back(p.expect_name());
      if (!p.accept_name("in")) p.fail("expected 'in'");
      node.expr = p.or_expr();
      if (p.accept_name("if")) node.filter = p.or_expr();
      if (p.accept_name("recursive")) p.fail("recursive loops are not supported");
      p.expect_end();
      auto [body, end] = parse_until({"else", "endfor"});
      current_->expect_end();
      node.body = std::move(body);
      if (end == "else") {
        auto [rest, fin] = parse_until({"endfor"});
        current_->expect_end();
        node.else_body = std::move(rest);
      }
    } else if (keyword == "set") {
      node.targets.push_back(p.expect_name());
      if (p.accept_op(".")) node.targets.push_back(p.expect_name());
      if (p.accept_op("=")) {
        node.kind = Node::Kind::set;
        node.expr = p.expression();
        p.expect_end();
      } else {
        p.expect_end();
        node.kind = Node::Kind::set_block;
        auto [body, end] = parse_until({"endset"});
        current_->expect_end();
        node.body = std::move(body);
      }
    } else if (keyword == "break" || keyword == "continue") {
      p.expect_end();
      node.kind = keyword == "break" ? Node::Kind::loop_break : Node::Kind::loop_continue;
    } else if (keyword == "generation") {  // transformers' assistant-mask marker: no output
      p.expect_end();
      node.kind = Node::Kind::scope;
      auto [body, end] = parse_until({"endgeneration"});
      current_->expect_end();
      node.body = std::move(body);
    } else if (keyword.starts_with("end") || keyword == "elif" || keyword == "else") {
      throw ParseFailure{line, "unexpected '{% " + keyword + " %}' outside its block"};
    } else {
      throw ParseFailure{line, keyword.empty() ? "empty '{% %}' tag"
                                               : "unsupported statement '{% " + keyword + " %}'"};
    }
    return std::make_shared<const Node>(std::move(node));
  }

  std::vector<Segment> segments_;
  std::size_t index_ = 0;
  int last_line_ = 1;
  int nesting_ = 0;  // parse_until calls in progress
  std::shared_ptr<ExprParser> current_;
};

// ---------------------------------------------------------------------------------------------
// Evaluation

struct RenderFailure {
  int line;
  std::string message;
};
struct Raised {
  std::string message;
};

enum class Flow { normal, loop_break, loop_continue };

class Renderer {
 public:
  explicit Renderer(const Value& globals) {
    scopes_.emplace_back();
    for (const auto& [k, v] : globals.items()) scopes_.back()[k] = v;
  }

  Flow run(const Body& body, std::string& out) {
    for (const auto& node : body) {
      const Flow flow = exec(*node, out);
      if (flow != Flow::normal) return flow;
    }
    return Flow::normal;
  }

 private:
  Flow exec(const Node& node, std::string& out) {
    line_ = node.line;
    switch (node.kind) {
      case Node::Kind::text:
        out += node.text;
        break;
      case Node::Kind::output:
        out += to_str(eval(*node.expr));
        break;
      case Node::Kind::if_chain:
        for (const auto& [cond, body] : node.branches)
          if (!cond || truthy(eval(*cond))) return run(body, out);
        break;
      case Node::Kind::for_loop:
        return for_loop(node, out);
      case Node::Kind::set:
        assign(node, eval(*node.expr));
        break;
      case Node::Kind::set_block: {
        std::string captured;
        run(node.body, captured);
        assign(node, Value(captured));
        break;
      }
      case Node::Kind::scope:
        return run(node.body, out);
      case Node::Kind::loop_break:
        return Flow::loop_break;
      case Node::Kind::loop_continue:
        return Flow::loop_continue;
    }
    return Flow::normal;
  }

  void assign(const Node& node, Value value) {
    if (node.targets.size() == 1) {
      scopes_.back()[node.targets[0]] = std::move(value);
      return;
    }
    Value* target = lookup(node.targets[0]);
    if (!target || !target->is_object())
      fail("cannot set '" + node.targets[1] + "' on '" + node.targets[0] +
           "': it is not a namespace");
    (*target)[node.targets[1]] = std::move(value);
  }

  Flow for_loop(const Node& node, std::string& out) {
    const Value iterable = eval(*node.expr);
    std::vector<Value> items;
    if (iterable.is_array()) {
      items.assign(iterable.begin(), iterable.end());
    } else if (iterable.is_object()) {
      for (const auto& [k, v] : iterable.items()) items.emplace_back(k);
    } else if (iterable.is_string()) {
      for (const auto& ch : utf8_chars(iterable.get<std::string>())) items.emplace_back(ch);
    } else if (!is_undefined(iterable) && !iterable.is_null()) {
      fail("cannot loop over a " + type_name(iterable));
    }
    scopes_.emplace_back();
    std::vector<Value> kept;
    for (auto& item : items) {
      bind(node.targets, item);
      if (!node.filter || truthy(eval(*node.filter))) kept.push_back(std::move(item));
    }
    const std::size_t n = kept.size();
    for (std::size_t i = 0; i < n; ++i) {
      scopes_.back().clear();  // what one iteration sets is gone in the next, as in Jinja
      bind(node.targets, kept[i]);
      scopes_.back()["loop"] = Value{{"index", i + 1},
                                     {"index0", i},
                                     {"revindex", n - i},
                                     {"revindex0", n - i - 1},
                                     {"first", i == 0},
                                     {"last", i + 1 == n},
                                     {"length", n},
                                     {"previtem", i > 0 ? kept[i - 1] : undefined()},
                                     {"nextitem", i + 1 < n ? kept[i + 1] : undefined()}};
      if (run(node.body, out) == Flow::loop_break) break;
    }
    scopes_.pop_back();
    if (n == 0) return run(node.else_body, out);
    return Flow::normal;
  }

  void bind(const std::vector<std::string>& targets, const Value& item) {
    if (targets.size() == 1) {
      scopes_.back()[targets[0]] = item;
      return;
    }
    if (!item.is_array() || item.size() != targets.size())
      fail("cannot unpack " + py_repr(item) + " into " + std::to_string(targets.size()) +
           " loop variables");
    for (std::size_t k = 0; k < targets.size(); ++k) scopes_.back()[targets[k]] = item[k];
  }

  Value* lookup(const std::string& name) {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it)
      if (auto found = it->find(name); found != it->end()) return &found->second;
    return nullptr;
  }

  [[noreturn]] void fail(const std::string& message) const { throw RenderFailure{line_, message}; }

  static std::vector<std::string> utf8_chars(const std::string& s) {
    std::vector<std::string> out;
    for (std::size_t i = 0; i < s.size();) {
      std::size_t n = 1;
      while (i + n < s.size() && (static_cast<unsigned char>(s[i + n]) & 0xc0) == 0x80) ++n;
      out.push_back(s.substr(i, n));
      i += n;
    }
    return out;
  }

  std::vector<Value> eval_args(const Expr& e, std::size_t from) {
    std::vector<Value> out;
    for (std::size_t k = from; k < e.args.size(); ++k) out.push_back(eval(*e.args[k]));
    return out;
  }
  std::optional<Value> kwarg(const Expr& e, const char* key) {
    for (const auto& [k, v] : e.kwargs)
      if (k == key) return eval(*v);
    return std::nullopt;
  }

  // Python's ints are unbounded; ours are int64, and a result outside it is an error rather
  // than undefined behaviour.
  // An indentation width: Python takes any, but one past kMaxIndent only builds huge strings.
  int width(const Value& v) const {
    const std::int64_t w = as_int(v);
    if (w > kMaxIndent)
      fail("indent " + std::to_string(w) + " exceeds " + std::to_string(kMaxIndent));
    return static_cast<int>(std::max<std::int64_t>(w, -1));
  }
  std::int64_t as_int(const Value& v) const {
    if (v.is_number_integer() || v.is_number_unsigned()) return v.get<std::int64_t>();
    if (v.is_boolean()) return v.get<bool>() ? 1 : 0;
    const double d = v.get<double>();
    if (!(d >= -9.2e18 && d <= 9.2e18)) fail(Value(d).dump() + " does not fit a 64-bit integer");
    return static_cast<std::int64_t>(d);
  }
  static bool is_int(const Value& v) {
    return v.is_number_integer() || v.is_number_unsigned() || v.is_boolean();
  }
  static bool is_num(const Value& v) { return v.is_number() || v.is_boolean(); }

  Value eval(const Expr& e) {
    line_ = e.line;
    switch (e.kind) {
      case Expr::Kind::literal:
        return e.value;
      case Expr::Kind::name: {
        if (const Value* v = lookup(e.name)) return *v;
        return undefined();
      }
      case Expr::Kind::list: {
        Value list = Value::array();
        for (const auto& a : e.args) list.push_back(eval(*a));
        return list;
      }
      case Expr::Kind::dict: {
        Value dict = Value::object();
        for (std::size_t k = 0; k + 1 < e.args.size(); k += 2) {
          const Value key = eval(*e.args[k]);
          if (!key.is_string()) fail("dict keys must be strings, got " + type_name(key));
          dict[key.get<std::string>()] = eval(*e.args[k + 1]);
        }
        return dict;
      }
      case Expr::Kind::attr:
        return member(eval(*e.args[0]), Value(e.name), e.name);
      case Expr::Kind::item: {
        const Value obj = eval(*e.args[0]);
        return member(obj, eval(*e.args[1]), "");
      }
      case Expr::Kind::slice:
        return slice(e);
      case Expr::Kind::call:
        return call(e);
      case Expr::Kind::filter:
        return filter(e);
      case Expr::Kind::test: {
        const bool result = test(e);
        return e.negated ? !result : result;
      }
      case Expr::Kind::unary: {
        const Value v = eval(*e.args[0]);
        if (e.name == "not") return !truthy(v);
        if (is_int(v)) {
          const std::int64_t i = as_int(v);
          if (i == std::numeric_limits<std::int64_t>::min()) fail("integer overflow in -");
          return -i;
        }
        if (v.is_number()) return -v.get<double>();
        fail("bad operand type for unary -: " + type_name(v));
      }
      case Expr::Kind::binary:
        return binary(e);
      case Expr::Kind::cond:
        if (truthy(eval(*e.args[1]))) return eval(*e.args[0]);
        return e.args[2] ? eval(*e.args[2]) : undefined();
    }
    return undefined();
  }

  // obj.name / obj[key]: dict keys, list indices, string characters; missing ones are Undefined
  // as in Jinja, but looking into Undefined is an error (Jinja's UndefinedError).
  Value member(const Value& obj, const Value& key, const std::string& attr_name) {
    if (is_undefined(obj))
      fail("cannot read " +
           (attr_name.empty() ? "[" + py_repr(key) + "]" : "'." + attr_name + "'") +
           " of an undefined value");
    if (obj.is_null())
      fail("cannot read " +
           (attr_name.empty() ? "[" + py_repr(key) + "]" : "'." + attr_name + "'") + " of None");
    if (obj.is_object() && key.is_string()) {
      const auto it = obj.find(key.get<std::string>());
      return it == obj.end() ? undefined() : *it;
    }
    if ((obj.is_array() || obj.is_string()) && is_int(key) && !key.is_boolean()) {
      const auto size = static_cast<std::int64_t>(
          obj.is_array() ? obj.size() : obj.get_ref<const std::string&>().size());
      auto index = as_int(key);
      if (index < 0) index += size;
      if (index < 0 || index >= size) return undefined();
      if (obj.is_array()) return obj[static_cast<std::size_t>(index)];
      return Value(obj.get_ref<const std::string&>().substr(static_cast<std::size_t>(index), 1));
    }
    return undefined();
  }

  Value slice(const Expr& e) {
    const Value obj = eval(*e.args[0]);
    auto bound = [&](const ExprPtr& p) -> std::optional<std::int64_t> {
      if (!p) return std::nullopt;
      const Value v = eval(*p);
      if (v.is_null()) return std::nullopt;
      if (!is_int(v)) fail("slice indices must be integers, got " + type_name(v));
      return as_int(v);
    };
    const auto start = bound(e.args[1]), stop = bound(e.args[2]);
    const std::int64_t step = bound(e.args[3]).value_or(1);
    if (step == 0) fail("slice step cannot be zero");
    std::vector<Value> items;
    if (obj.is_array()) {
      items.assign(obj.begin(), obj.end());
    } else if (obj.is_string()) {
      for (const auto& c : utf8_chars(obj.get<std::string>())) items.emplace_back(c);
    } else {
      fail("cannot slice a " + type_name(obj));
    }
    const auto n = static_cast<std::int64_t>(items.size());
    auto clamp = [&](std::optional<std::int64_t> v, std::int64_t fallback) {
      if (!v) return fallback;
      std::int64_t x = *v < 0 ? *v + n : *v;
      return step > 0 ? std::clamp<std::int64_t>(x, 0, n) : std::clamp<std::int64_t>(x, -1, n - 1);
    };
    const std::int64_t from = clamp(start, step > 0 ? 0 : n - 1);
    const std::int64_t to = clamp(stop, step > 0 ? n : -1);
    Value out = Value::array();
    std::string text;
    for (std::int64_t i = from; step > 0 ? i < to : i > to; i += step) {
      if (obj.is_string()) {
        text += items[static_cast<std::size_t>(i)].get<std::string>();
      } else {
        out.push_back(items[static_cast<std::size_t>(i)]);
      }
    }
    return obj.is_string() ? Value(text) : out;
  }

  Value binary(const Expr& e) {
    if (e.name == "and") {
      Value l = eval(*e.args[0]);
      return truthy(l) ? eval(*e.args[1]) : l;
    }
    if (e.name == "or") {
      Value l = eval(*e.args[0]);
      return truthy(l) ? l : eval(*e.args[1]);
    }
    const Value l = eval(*e.args[0]);
    const Value r = eval(*e.args[1]);
    line_ = e.line;
    const std::string& op = e.name;
    if (op == "==") return equal(l, r);
    if (op == "!=") return !equal(l, r);
    if (op == "in" || op == "not in") return contains(r, l) == (op == "in");
    if (op == "~") return to_str(l) + to_str(r);
    if (op == "<" || op == ">" || op == "<=" || op == ">=") {
      int cmp = 0;
      if (is_num(l) && is_num(r)) {
        const double a = l.is_number() ? l.get<double>() : double(as_int(l));
        const double b = r.is_number() ? r.get<double>() : double(as_int(r));
        cmp = a < b ? -1 : a > b ? 1 : 0;
      } else if (l.is_string() && r.is_string()) {
        cmp = l.get<std::string>().compare(r.get<std::string>());
      } else {
        fail("'" + op + "' is not supported between " + type_name(l) + " and " + type_name(r));
      }
      return op == "<" ? cmp < 0 : op == ">" ? cmp > 0 : op == "<=" ? cmp <= 0 : cmp >= 0;
    }
    if (op == "+") {
      if (l.is_string() && r.is_string()) return l.get<std::string>() + r.get<std::string>();
      if (l.is_array() && r.is_array()) {
        Value out = l;
        for (const auto& x : r) out.push_back(x);
        return out;
      }
    }
    if (op == "*" && l.is_string() && is_int(r)) {
      const std::int64_t times = as_int(r);
      const std::string& piece = l.get_ref<const std::string&>();
      if (times > 0 && piece.size() > kMaxStringBytes / static_cast<std::uint64_t>(times))
        fail("'*' would make a string of more than " + std::to_string(kMaxStringBytes) + " bytes");
      std::string out;
      if (!piece.empty())
        for (std::int64_t k = 0; k < times; ++k) out += piece;
      return out;
    }
    if (!is_num(l) || !is_num(r))
      fail("unsupported operand types for " + op + ": " + type_name(l) + " and " + type_name(r));
    if (is_int(l) && is_int(r) && op != "/") {
      const std::int64_t a = as_int(l), b = as_int(r);
      if ((op == "//" || op == "%") && b == 0) fail("integer division or modulo by zero");
      std::int64_t result = 0;
      if ((op == "+" && __builtin_add_overflow(a, b, &result)) ||
          (op == "-" && __builtin_sub_overflow(a, b, &result)) ||
          (op == "*" && __builtin_mul_overflow(a, b, &result)) ||
          (b == -1 && a == std::numeric_limits<std::int64_t>::min()))
        fail("integer overflow in " + std::to_string(a) + " " + op + " " + std::to_string(b));
      if (op == "+" || op == "-" || op == "*") return result;
      const std::int64_t q = a / b - ((a % b != 0) && ((a < 0) != (b < 0)));  // floor division
      return op == "//" ? q : a - q * b;
    }
    const double a = l.is_number() ? l.get<double>() : double(as_int(l));
    const double b = r.is_number() ? r.get<double>() : double(as_int(r));
    if ((op == "/" || op == "//" || op == "%") && b == 0) fail("division by zero");
    if (op == "+") return a + b;
    if (op == "-") return a - b;
    if (op == "*") return a * b;
    if (op == "/") return a / b;
    if (op == "//") return std::floor(a / b);
    return a - std::floor(a / b) * b;
  }

  static bool equal(const Value& a, const Value& b) {
    if (is_undefined(a) || is_undefined(b)) return is_undefined(a) && is_undefined(b);
    if (is_num(a) && is_num(b))
      return (a.is_number() ? a.get<double>() : double(a.get<bool>())) ==
             (b.is_number() ? b.get<double>() : double(b.get<bool>()));
    return a == b;
  }

  bool contains(const Value& haystack, const Value& needle) {
    if (haystack.is_string()) {
      if (!needle.is_string())
        fail("'in <string>' requires a string on the left, got " + type_name(needle));
      return haystack.get<std::string>().find(needle.get<std::string>()) != std::string::npos;
    }
    if (haystack.is_array())
      return std::any_of(haystack.begin(), haystack.end(),
                         [&](const Value& x) { return equal(x, needle); });
    if (haystack.is_object())
      return needle.is_string() && haystack.contains(needle.get<std::string>());
    if (is_undefined(haystack)) fail("'in' on an undefined value");
    fail("argument of type " + type_name(haystack) + " is not iterable");
  }

  std::string strip(const std::string& s, const Value& chars, bool left, bool right) {
    const std::string set = chars.is_string() ? chars.get<std::string>() : " \t\n\r\f\v";
    std::size_t a = 0, b = s.size();
    if (left)
      while (a < b && set.find(s[a]) != std::string::npos) ++a;
    if (right)
      while (b > a && set.find(s[b - 1]) != std::string::npos) --b;
    return s.substr(a, b - a);
  }

  static std::string replace_all(std::string s, const std::string& from, const std::string& to,
                                 std::int64_t limit = -1) {
    if (from.empty()) return s;
    std::string out;
    std::size_t pos = 0, hit;
    while (limit != 0 && (hit = s.find(from, pos)) != std::string::npos) {
      out.append(s, pos, hit - pos);
      out += to;
      pos = hit + from.size();
      --limit;
    }
    out.append(s, pos, std::string::npos);
    return out;
  }

  static std::string change_case(std::string s,
                                 int mode) {  // 0 lower, 1 upper, 2 capitalize, 3 title
    bool word_start = true;
    for (std::size_t i = 0; i < s.size(); ++i) {
      auto c = static_cast<unsigned char>(s[i]);
      const bool upper = mode == 1 || ((mode == 2 && i == 0) || (mode == 3 && word_start));
      s[i] = static_cast<char>(upper ? std::toupper(c) : std::tolower(c));
      word_start = !std::isalnum(c);
    }
    return s;
  }

  Value call(const Expr& e) {
    const Expr& callee = *e.args[0];
    auto args = eval_args(e, 1);
    auto arg = [&](std::size_t k) -> const Value& {
      return k < args.size() ? args[k] : undefined();
    };
    if (callee.kind == Expr::Kind::name && !lookup(callee.name)) {
      const std::string& fn = callee.name;
      if (fn == "raise_exception") throw Raised{to_str(arg(0))};
      if (fn == "range") {
        std::int64_t start = 0, stop = 0, step = 1;
        if (args.size() == 1) {
          stop = as_int(arg(0));
        } else if (args.size() >= 2) {
          start = as_int(arg(0));
          stop = as_int(arg(1));
          if (args.size() > 2) step = as_int(arg(2));
        }
        if (step == 0) fail("range() step must not be zero");
        Value out = Value::array();
        for (std::int64_t i = start; step > 0 ? i < stop : i > stop;) {
          if (out.size() > 1000000) fail("range() longer than a million items");
          out.push_back(i);
          if (__builtin_add_overflow(i, step, &i)) break;  // past any stop
        }
        return out;
      }
      if (fn == "namespace" || fn == "dict") {
        Value ns = args.empty() || !arg(0).is_object() ? Value::object() : arg(0);
        for (const auto& [k, v] : e.kwargs) ns[k] = eval(*v);
        return ns;
      }
      if (fn == "strftime_now") {
        const std::time_t now = std::time(nullptr);
        std::tm tm{};
        ::localtime_r(&now, &tm);
        char buf[256];
        const std::string format = to_str(arg(0));
        const std::size_t n = std::strftime(buf, sizeof buf, format.c_str(), &tm);
        return std::string(buf, n);
      }
      fail("'" + fn + "' is undefined (not a function the template can call)");
    }
    if (callee.kind != Expr::Kind::attr) fail("this value cannot be called");
    const Value self = eval(*callee.args[0]);
    const std::string& method = callee.name;
    line_ = e.line;
    if (self.is_string()) {
      const auto& s = self.get_ref<const std::string&>();
      if (method == "strip") return strip(s, arg(0), true, true);
      if (method == "lstrip") return strip(s, arg(0), true, false);
      if (method == "rstrip") return strip(s, arg(0), false, true);
      if (method == "lower") return change_case(s, 0);
      if (method == "upper") return change_case(s, 1);
      if (method == "capitalize") return change_case(s, 2);
      if (method == "title") return change_case(s, 3);
      if (method == "startswith" || method == "endswith") {
        std::vector<Value> options;
        if (arg(0).is_array()) {
          options.assign(arg(0).begin(), arg(0).end());
        } else {
          options.push_back(arg(0));
        }
        for (const auto& o : options) {
          if (!o.is_string()) fail(method + "() takes strings, got " + type_name(o));
          const auto& p = o.get_ref<const std::string&>();
          if (method == "startswith" ? s.starts_with(p) : s.ends_with(p)) return true;
        }
        return false;
      }
      if (method == "replace")
        return replace_all(s, to_str(arg(0)), to_str(arg(1)),
                           args.size() > 2 ? as_int(arg(2)) : -1);
      if (method == "split") {
        Value out = Value::array();
        std::int64_t limit = args.size() > 1 ? as_int(arg(1)) : -1;
        if (!arg(0).is_string()) {
          std::size_t i = 0;
          while (i < s.size()) {
            while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
            if (i >= s.size()) break;
            std::size_t j = i;
            if (limit == 0) {
              j = s.size();
              while (j > i && std::isspace(static_cast<unsigned char>(s[j - 1]))) --j;
            } else {
              while (j < s.size() && !std::isspace(static_cast<unsigned char>(s[j]))) ++j;
            }
            out.push_back(s.substr(i, j - i));
            --limit;
            i = j;
          }
          return out;
        }
        const auto& sep = arg(0).get_ref<const std::string&>();
        if (sep.empty()) fail("split(): empty separator");
        std::size_t pos = 0, hit;
        while (limit != 0 && (hit = s.find(sep, pos)) != std::string::npos) {
          out.push_back(s.substr(pos, hit - pos));
          pos = hit + sep.size();
          --limit;
        }
        out.push_back(s.substr(pos));
        return out;
      }
      if (method == "count") {
        const std::string needle = to_str(arg(0));
        if (needle.empty()) return static_cast<std::int64_t>(s.size() + 1);
        std::int64_t n = 0;
        for (std::size_t pos = s.find(needle); pos != std::string::npos;
             pos = s.find(needle, pos + needle.size()))
          ++n;
        return n;
      }
      if (method == "find") {
        const auto pos = s.find(to_str(arg(0)));
        return pos == std::string::npos ? std::int64_t{-1} : static_cast<std::int64_t>(pos);
      }
      if (method == "isdigit" || method == "isspace" || method == "isalpha")
        return !s.empty() && std::all_of(s.begin(), s.end(), [&](char c) {
          const auto u = static_cast<unsigned char>(c);
          return method == "isdigit"   ? std::isdigit(u) != 0
                 : method == "isspace" ? std::isspace(u) != 0
                                       : std::isalpha(u) != 0;
        });
    } else if (self.is_object()) {
      if (method == "items") {
        Value out = Value::array();
        for (const auto& [k, v] : self.items()) out.push_back(Value::array({k, v}));
        return out;
      }
      if (method == "keys" || method == "values") {
        Value out = Value::array();
        for (const auto& [k, v] : self.items()) out.push_back(method == "keys" ? Value(k) : v);
        return out;
      }
      if (method == "get") {
        const Value found = arg(0).is_string() && self.contains(arg(0).get<std::string>())
                                ? self[arg(0).get<std::string>()]
                                : undefined();
        return is_undefined(found) ? (args.size() > 1 ? arg(1) : Value(nullptr)) : found;
      }
    }
    if (is_undefined(self)) fail("cannot call '." + method + "()' on an undefined value");
    fail("'" + type_name(self) + "' has no method '" + method + "'");
  }

  std::vector<Value> as_list(const Value& v, const std::string& what) {
    if (v.is_array()) return {v.begin(), v.end()};
    if (v.is_object()) {
      std::vector<Value> keys;
      for (const auto& [k, x] : v.items()) keys.emplace_back(k);
      return keys;
    }
    if (v.is_string()) {
      std::vector<Value> out;
      for (const auto& c : utf8_chars(v.get<std::string>())) out.emplace_back(c);
      return out;
    }
    if (is_undefined(v)) return {};
    fail(what + ": a " + type_name(v) + " is not iterable");
  }

  Value filter(const Expr& e) {
    const std::string& f = e.name;
    const Value subject = eval(*e.args[0]);
    if (f == "default" || f == "d") {
      const bool boolean = (e.args.size() > 2 && truthy(eval(*e.args[2]))) ||
                           truthy(kwarg(e, "boolean").value_or(false));
      const bool use_default = is_undefined(subject) || (boolean && !truthy(subject));
      return use_default ? (e.args.size() > 1 ? eval(*e.args[1]) : Value("")) : subject;
    }
    auto args = eval_args(e, 1);
    auto arg = [&](std::size_t k) -> const Value& {
      return k < args.size() ? args[k] : undefined();
    };
    line_ = e.line;
    if (f == "safe" || f == "e" || f == "escape") {
      if (f == "safe") return subject;
      std::string out;
      for (const char c : to_str(subject)) {
        switch (c) {
          case '&':
            out += "&amp;";
            break;
          case '<':
            out += "&lt;";
            break;
          case '>':
            out += "&gt;";
            break;
          case '"':
            out += "&#34;";
            break;
          case '\'':
            out += "&#39;";
            break;
          default:
            out += c;
        }
      }
      return out;
    }
    if (f == "trim") return strip(to_str(subject), arg(0), true, true);
    if (f == "upper" || f == "lower" || f == "capitalize" || f == "title")
      return change_case(to_str(subject), f == "lower"        ? 0
                                          : f == "upper"      ? 1
                                          : f == "capitalize" ? 2
                                                              : 3);
    if (f == "string") return to_str(subject);
    if (f == "replace")
      return replace_all(to_str(subject), to_str(arg(0)), to_str(arg(1)),
                         args.size() > 2 ? as_int(arg(2)) : -1);
    if (f == "length" || f == "count") {
      if (subject.is_string())
        return static_cast<std::int64_t>(utf8_chars(subject.get<std::string>()).size());
      if (subject.is_array() || subject.is_object())
        return static_cast<std::int64_t>(subject.size());
      if (is_undefined(subject)) return std::int64_t{0};
      fail("object of type " + type_name(subject) + " has no length");
    }
    if (f == "tojson") {
      const auto indent = kwarg(e, "indent").value_or(args.empty() ? Value(nullptr) : arg(0));
      return py_json(subject, indent.is_null() || is_undefined(indent) ? -1 : width(indent));
    }
    if (f == "int") {
      if (is_num(subject)) return as_int(subject);
      try {
        return static_cast<std::int64_t>(std::stoll(to_str(subject)));
      } catch (const std::exception&) {
        return args.empty() ? Value(std::int64_t{0}) : arg(0);
      }
    }
    if (f == "float") {
      if (is_num(subject))
        return subject.is_number() ? subject.get<double>() : double(as_int(subject));
      try {
        return std::stod(to_str(subject));
      } catch (const std::exception&) {
        return args.empty() ? Value(0.0) : arg(0);
      }
    }
    if (f == "abs") {
      if (is_int(subject)) {
        const std::int64_t i = as_int(subject);
        if (i == std::numeric_limits<std::int64_t>::min()) fail("integer overflow in abs");
        return std::llabs(i);
      }
      if (subject.is_number()) return std::fabs(subject.get<double>());
      fail("abs: expected a number, got " + type_name(subject));
    }
    if (f == "round") {
      const double v = subject.is_number() ? subject.get<double>() : double(as_int(subject));
      const double scale = std::pow(10.0, args.empty() ? 0.0 : double(as_int(arg(0))));
      return std::nearbyint(v * scale) / scale;
    }
    if (f == "items") {
      Value out = Value::array();
      if (subject.is_object())
        for (const auto& [k, v] : subject.items()) out.push_back(Value::array({k, v}));
      return out;
    }
    if (f == "dictsort") {
      if (!subject.is_object()) fail("dictsort: expected a dict, got " + type_name(subject));
      Value out = Value::array();
      std::map<std::string, Value> sorted;
      for (const auto& [k, v] : subject.items()) sorted[k] = v;
      for (const auto& [k, v] : sorted) out.push_back(Value::array({k, v}));
      return out;
    }
    if (f == "wordcount") return static_cast<std::int64_t>(word_count(to_str(subject)));
    if (f == "indent") {
      const auto width_value = kwarg(e, "width").value_or(args.empty() ? Value(4) : arg(0));
      const std::string pad = width_value.is_string()
                                  ? width_value.get<std::string>()
                                  : std::string(std::size_t(std::max(0, width(width_value))), ' ');
      const bool first =
          truthy(kwarg(e, "first").value_or(args.size() > 1 ? arg(1) : Value(false)));
      const bool blank =
          truthy(kwarg(e, "blank").value_or(args.size() > 2 ? arg(2) : Value(false)));
      const std::string s = to_str(subject);
      std::string out;
      std::size_t pos = 0;
      bool first_line = true;
      while (pos <= s.size()) {
        const std::size_t nl = s.find('\n', pos);
        const std::string line =
            s.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
        if ((first_line ? first : true) && (blank || !line.empty())) out += pad;
        out += line;
        if (nl == std::string::npos) break;
        out += '\n';
        pos = nl + 1;
        first_line = false;
      }
      return out;
    }
    std::vector<Value> items = as_list(subject, f);
    if (f == "first") return items.empty() ? undefined() : items.front();
    if (f == "last") return items.empty() ? undefined() : items.back();
    if (f == "list") return Value(items);
    if (f == "reverse") {
      if (subject.is_string()) {
        std::string out;
        for (auto it = items.rbegin(); it != items.rend(); ++it) out += it->get<std::string>();
        return out;
      }
      std::reverse(items.begin(), items.end());
      return Value(items);
    }
    if (f == "join") {
      const std::string sep = to_str(arg(0));
      const auto attribute = kwarg(e, "attribute");
      std::string out;
      for (std::size_t k = 0; k < items.size(); ++k) {
        out += k ? sep : "";
        out += to_str(attribute ? member(items[k], *attribute, "") : items[k]);
      }
      return out;
    }
    if (f == "map") {
      const auto attribute = kwarg(e, "attribute");
      if (!attribute) fail("map: only map(attribute='...') is supported");
      const auto fallback = kwarg(e, "default");
      Value out = Value::array();
      for (const auto& item : items) {
        Value v = member(item, *attribute, "");
        out.push_back(is_undefined(v) && fallback ? *fallback : v);
      }
      return out;
    }
    if (f == "selectattr" || f == "rejectattr") {
      Value out = Value::array();
      for (const auto& item : items) {
        const Value attribute = member(item, arg(0), "");
        const bool pass = args.size() < 2
                              ? truthy(attribute)
                              : run_test(to_str(arg(1)), attribute,
                                         std::vector<Value>(args.begin() + 2, args.end()));
        if (pass == (f == "selectattr")) out.push_back(item);
      }
      return out;
    }
    if (f == "unique") {
      Value out = Value::array();
      for (const auto& item : items)
        if (!std::any_of(out.begin(), out.end(), [&](const Value& x) { return equal(x, item); }))
          out.push_back(item);
      return out;
    }
    if (f == "sort" || f == "min" || f == "max") {
      const bool reverse =
          truthy(kwarg(e, "reverse").value_or(f == "sort" ? arg(0) : Value(false)));
      const auto attribute = kwarg(e, "attribute");
      auto key = [&](const Value& v) { return attribute ? member(v, *attribute, "") : v; };
      auto less = [&](const Value& a, const Value& b) {
        const Value ka = key(a), kb = key(b);
        if (is_num(ka) && is_num(kb))
          return (ka.is_number() ? ka.get<double>() : double(as_int(ka))) <
                 (kb.is_number() ? kb.get<double>() : double(as_int(kb)));
        return to_str(ka) < to_str(kb);
      };
      std::stable_sort(items.begin(), items.end(), less);
      if (reverse) std::reverse(items.begin(), items.end());
      if (f == "sort") return Value(items);
      if (items.empty()) return undefined();
      return f == "min" ? items.front() : items.back();
    }
    if (f == "sum") {
      Value total = args.empty() ? Value(0) : arg(0);
      bool as_float = total.is_number_float();
      double acc = as_float ? total.get<double>() : double(as_int(total));
      for (const auto& item : items) {
        if (!is_num(item)) fail("sum: expected numbers, got " + type_name(item));
        as_float = as_float || item.is_number_float();
        acc += item.is_number() ? item.get<double>() : double(as_int(item));
      }
      return as_float ? Value(acc) : Value(static_cast<std::int64_t>(acc));
    }
    if (f == "batch") {
      const auto size = as_int(arg(0));
      if (size <= 0) fail("batch: the size must be positive");
      Value out = Value::array();
      for (std::size_t k = 0; k < items.size(); k += std::size_t(size)) {
        Value chunk = Value::array();
        for (std::size_t j = k; j < std::min(items.size(), k + std::size_t(size)); ++j)
          chunk.push_back(items[j]);
        out.push_back(chunk);
      }
      return out;
    }
    fail("unsupported filter '" + f + "'");
  }

  static std::size_t word_count(const std::string& s) {
    std::size_t n = 0;
    bool in_word = false;
    for (const char c : s) {
      const bool word = std::isalnum(static_cast<unsigned char>(c)) || c == '_';
      if (word && !in_word) ++n;
      in_word = word;
    }
    return n;
  }

  bool test(const Expr& e) {
    const Value subject = eval(*e.args[0]);
    return run_test(e.name, subject, eval_args(e, 1));
  }

  bool run_test(const std::string& t, const Value& v, const std::vector<Value>& args) {
    const Value& arg = args.empty() ? undefined() : args[0];
    if (t == "defined") return !is_undefined(v);
    if (t == "undefined") return is_undefined(v);
    if (t == "none") return v.is_null();
    if (t == "string") return v.is_string();
    if (t == "number") return v.is_number();
    if (t == "integer") return v.is_number_integer() || v.is_number_unsigned();
    if (t == "float") return v.is_number_float();
    if (t == "mapping") return v.is_object();
    if (t == "iterable") return v.is_array() || v.is_object() || v.is_string();
    if (t == "sequence") return v.is_array() || v.is_object() || v.is_string();
    if (t == "boolean") return v.is_boolean();
    if (t == "true") return v.is_boolean() && v.get<bool>();
    if (t == "false") return v.is_boolean() && !v.get<bool>();
    if (t == "callable") return false;
    if (t == "lower" || t == "upper") {
      const std::string s = to_str(v);
      return s == change_case(s, t == "lower" ? 0 : 1);
    }
    if (t == "odd" || t == "even" || t == "divisibleby") {
      if (!is_int(v)) fail("'" + t + "' needs an integer, got " + type_name(v));
      const std::int64_t n = as_int(v);
      if (t == "odd") return n % 2 != 0;
      if (t == "even") return n % 2 == 0;
      const std::int64_t d = as_int(arg);
      if (d == 0) fail("divisibleby(0)");
      return n % d == 0;
    }
    if (t == "equalto" || t == "eq" || t == "==" || t == "sameas") return equal(v, arg);
    if (t == "ne" || t == "!=") return !equal(v, arg);
    if (t == "in") return contains(arg, v);
    fail("unsupported test '" + t + "'");
  }

  std::vector<std::map<std::string, Value>> scopes_;
  int line_ = 0;
};

}  // namespace

struct ChatTemplate::Program {
  std::string origin;
  Body body;
};

ChatTemplate::ChatTemplate(std::string_view source, std::string origin)
    : program_(std::make_unique<Program>()) {
  program_->origin = std::move(origin);
  try {
    program_->body = StmtParser(split_template(source)).parse();
  } catch (const ParseFailure& f) {
    throw ChatTemplateError(program_->origin + " line " + std::to_string(f.line) + ": " +
                            f.message);
  } catch (const std::exception& e) {  // number literals out of range and the like
    throw ChatTemplateError(program_->origin + ": " + e.what());
  }
}

ChatTemplate::~ChatTemplate() = default;
ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;
ChatTemplate& ChatTemplate::operator=(ChatTemplate&&) noexcept = default;

std::string ChatTemplate::render(const nlohmann::ordered_json& context) const {
  std::string out;
  try {
    Renderer renderer(context);
    renderer.run(program_->body, out);
  } catch (const Raised& r) {
    throw ChatTemplateRejected(r.message);
  } catch (const RenderFailure& f) {
    throw ChatTemplateError(program_->origin + " line " + std::to_string(f.line) + ": " +
                            f.message);
  } catch (const nlohmann::ordered_json::exception& e) {
    throw ChatTemplateError(program_->origin + ": " + e.what());
  }
  return out;
}

}  // namespace moed::model
