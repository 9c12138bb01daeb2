#include "moed/model/tokenizer.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <queue>
#include <sstream>
#include <stdexcept>

#include "moed/model/gguf.hpp"
#include "moed/model/model_spec.hpp"
#include "unicode_regex.hpp"
#include "utf8.hpp"

namespace moed::model {
namespace {

using json = nlohmann::json;

[[noreturn]] void fail(const std::string& origin, const std::string& where,
                       const std::string& what) {
  throw std::runtime_error(origin + ": " + where + ": " + what);
}

// Length in bytes of the UTF-8 sequence starting at s[i] (1 for a stray byte).
std::size_t utf8_length(std::string_view s, std::size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  std::size_t n = 1;
  if (c >= 0xf0)
    n = 4;
  else if (c >= 0xe0)
    n = 3;
  else if (c >= 0xc0)
    n = 2;
  return std::min(n, s.size() - i);
}

char32_t decode_codepoint(std::string_view s, std::size_t i, std::size_t n) {
  const auto c = static_cast<unsigned char>(s[i]);
  if (n == 1) return c;
  char32_t cp = c & (0x7f >> n);
  for (std::size_t k = 1; k < n; ++k)
    cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3f);
  return cp;
}

bool valid_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t n = c < 0x80 ? 1 : c >= 0xf0 && c < 0xf5 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (std::size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return false;
    i += n;
  }
  return true;
}

// Replaces every invalid UTF-8 byte with U+FFFD, as Hugging Face's lossy decoding does.
std::string lossy_utf8(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = utf8_length(s, i);
    if (valid_utf8(s.substr(i, n)) && n == utf8_length(s, i) &&
        (n > 1 || static_cast<unsigned char>(s[i]) < 0x80)) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      out += "\xef\xbf\xbd";
      ++i;
    }
  }
  return out;
}

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  if (from.empty() || s.find(from) == std::string::npos) return;
  std::string out;
  out.reserve(s.size());
  std::size_t at = 0;
  for (std::size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, at)) {
    out.append(s, at, pos - at);
    out.append(to);
    at = pos + from.size();
  }
  out.append(s, at, std::string::npos);
  s = std::move(out);
}

// GPT-2's reversible byte <-> printable-character map.
const std::array<char32_t, 256>& byte_to_char() {
  static const auto table = [] {
    std::array<char32_t, 256> t{};
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae);
      t[b] = printable ? static_cast<char32_t>(b) : next++;
    }
    return t;
  }();
  return table;
}

const std::unordered_map<char32_t, unsigned char>& char_to_byte() {
  static const auto table = [] {
    std::unordered_map<char32_t, unsigned char> t;
    for (int b = 0; b < 256; ++b) t[byte_to_char()[b]] = static_cast<unsigned char>(b);
    return t;
  }();
  return table;
}

// The byte a "<0xNN>" token stands for.
std::optional<char> byte_token_value(std::string_view token) {
  if (token.size() != 6 || !token.starts_with("<0x") || token.back() != '>' ||
      !std::isxdigit(static_cast<unsigned char>(token[3])) ||
      !std::isxdigit(static_cast<unsigned char>(token[4])))
    return std::nullopt;
  return static_cast<char>(std::stoi(std::string(token.substr(3, 2)), nullptr, 16));
}

// A byte-level token's bytes: each character of GPT-2's byte map is its byte. Any other
// character stays as it is (tokenizers' ByteLevel decoder), or with `mark_unknown` becomes an
// [UNK_BYTE_0x..] marker, as llama.cpp's llama_decode_text writes a normal token's.
std::string byte_level_to_bytes(std::string_view token, bool mark_unknown = false) {
  std::string bytes;
  for (std::size_t k = 0; k < token.size();) {
    const std::size_t n = utf8_length(token, k);
    auto it = char_to_byte().find(decode_codepoint(token, k, n));
    if (it != char_to_byte().end()) {
      bytes += static_cast<char>(it->second);
    } else if (!mark_unknown) {
      bytes.append(token, k, n);
    } else {
      bytes += "[UNK_BYTE_0x";
      for (std::size_t b = 0; b < n; ++b) {
        char hex[4];
        std::snprintf(hex, sizeof hex, "%02x", static_cast<unsigned char>(token[k + b]));
        bytes += hex;
      }
      bytes.append(token);
      bytes += ']';
    }
    k += n;
  }
  return bytes;
}

std::string merge_key(std::string_view left, std::string_view right) {
  std::string key;
  key.reserve(left.size() + right.size() + 1);
  key.append(left);
  key += '\xff';  // never occurs in UTF-8, so the key is unambiguous
  key.append(right);
  return key;
}

Tokenizer::PrependScheme parse_prepend_scheme(const json& node, const std::string& origin,
                                              const std::string& where) {
  if (node.contains("prepend_scheme")) {
    const auto scheme = node["prepend_scheme"].get<std::string>();
    if (scheme == "always") return Tokenizer::PrependScheme::always;
    if (scheme == "first") return Tokenizer::PrependScheme::first;
    if (scheme == "never") return Tokenizer::PrependScheme::never;
    fail(origin, where + ".prepend_scheme", "unknown value '" + scheme + "'");
  }
  return node.value("add_prefix_space", true) ? Tokenizer::PrependScheme::always
                                              : Tokenizer::PrependScheme::never;
}

// Cuts a piece at the given matches and keeps them as tokenizers' SplitDelimiterBehavior says;
// empty pieces are dropped, as tokenizers drops them.
std::vector<std::string> split_by_matches(
    const std::string& piece, const std::vector<std::pair<std::size_t, std::size_t>>& found,
    Tokenizer::SplitBehavior behavior, bool invert) {
  struct Span {
    std::size_t begin, end;
    bool is_match;
  };
  std::vector<Span> spans;
  std::size_t at = 0;
  for (const auto& [begin, end] : found) {
    if (begin > at) spans.push_back({at, begin, invert});
    spans.push_back({begin, end, !invert});
    at = end;
  }
  if (at < piece.size()) spans.push_back({at, piece.size(), invert});

  using Behavior = Tokenizer::SplitBehavior;
  std::vector<Span> kept;
  bool previous_match = false;
  switch (behavior) {
    case Behavior::removed:
      for (const auto& span : spans)
        if (!span.is_match) kept.push_back(span);
      break;
    case Behavior::isolated:
      kept = spans;
      break;
    case Behavior::merged_with_previous:
      for (const auto& span : spans) {
        if (span.is_match && !previous_match && !kept.empty())
          kept.back().end = span.end;
        else
          kept.push_back(span);
        previous_match = span.is_match;
      }
      break;
    case Behavior::merged_with_next:
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous_match && !kept.empty())
          kept.back().begin = it->begin;
        else
          kept.push_back(*it);
        previous_match = it->is_match;
      }
      std::reverse(kept.begin(), kept.end());
      break;
    case Behavior::contiguous:
      for (std::size_t i = 0; i < spans.size(); ++i) {
        if (i > 0 && spans[i].is_match == previous_match)
          kept.back().end = spans[i].end;
        else
          kept.push_back(spans[i]);
        previous_match = spans[i].is_match;
      }
      break;
  }
  std::vector<std::string> out;
  for (const auto& span : kept)
    if (span.end > span.begin) out.push_back(piece.substr(span.begin, span.end - span.begin));
  return out;
}

// A literal as a PCRE2 pattern: every ASCII punctuation character escaped.
std::string escape_literal(std::string_view literal) {
  std::string pattern;
  for (const char c : literal) {
    if (static_cast<unsigned char>(c) < 0x80 && !std::isalnum(static_cast<unsigned char>(c)))
      pattern += '\\';
    pattern += c;
  }
  return pattern;
}

Tokenizer::SplitBehavior parse_split_behavior(const json& node, const std::string& origin,
                                              const std::string& where) {
  const std::string name = node.value("behavior", "Isolated");
  if (name == "Removed") return Tokenizer::SplitBehavior::removed;
  if (name == "Isolated") return Tokenizer::SplitBehavior::isolated;
  if (name == "MergedWithPrevious") return Tokenizer::SplitBehavior::merged_with_previous;
  if (name == "MergedWithNext") return Tokenizer::SplitBehavior::merged_with_next;
  if (name == "Contiguous") return Tokenizer::SplitBehavior::contiguous;
  fail(origin, where + ".behavior", "unknown value '" + name + "'");
}

std::string string_pattern(const json& node, const std::string& origin, const std::string& where) {
  if (!node.contains("pattern") || !node["pattern"].contains("String"))
    fail(origin, where + ".pattern", "only String patterns are supported");
  return node["pattern"]["String"].get<std::string>();
}

}  // namespace

Tokenizer Tokenizer::from_model_dir(const std::filesystem::path& model_dir) {
  auto slurp = [](const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
  };
  require_model_dir(model_dir);
  const auto path = model_dir / "tokenizer.json";
  if (!std::filesystem::exists(path))
    throw std::runtime_error(path.string() +
                             ": missing; the model directory needs a tokenizer.json");
  const auto config_path = model_dir / "tokenizer_config.json";
  const std::string config = std::filesystem::exists(config_path) ? slurp(config_path) : "";
  auto tokenizer = from_json(slurp(path), config, path.string());
  // Newer checkpoints keep the template in its own file, which then takes precedence.
  if (const auto jinja = model_dir / "chat_template.jinja"; std::filesystem::exists(jinja))
    tokenizer.chat_template_ = slurp(jinja);
  return tokenizer;
}

Tokenizer Tokenizer::from_json(std::string_view tokenizer_json, std::string_view config_json,
                               const std::string& origin) {
  json root;
  try {
    root = json::parse(tokenizer_json);
  } catch (const json::exception& e) {
    fail(origin, "(root)", std::string("not valid JSON: ") + e.what());
  }
  Tokenizer t;
  try {
    const auto& model = root.at("model");
    const std::string type = model.value("type", "BPE");
    if (type != "BPE") fail(origin, "model.type", "'" + type + "' is not supported (BPE is)");
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
      if (model.contains(key) && model[key].is_string() && !model[key].get<std::string>().empty())
        fail(origin, std::string("model.") + key, "is not supported");

    const auto& vocab = model.at("vocab");
    const json added = root.value("added_tokens", json::array());
    // Ids index a table, so a stray large one (or one past int32) would allocate without
    // bound: tokenizers numbers the tokens 0..n-1, so every id lies below the entry count.
    const std::size_t entries = vocab.size() + added.size();
    auto checked_id = [&](const json& id, const std::string& where) {
      if (!id.is_number_integer() || id.get<std::int64_t>() < 0 ||
          static_cast<std::uint64_t>(id.get<std::int64_t>()) >= entries)
        fail(origin, where,
             "id " + (id.is_primitive() ? id.dump() : std::string(id.type_name())) +
                 " is not in [0, " + std::to_string(entries) +
                 "), the number of vocabulary and added tokens");
      return static_cast<std::int32_t>(id.get<std::int64_t>());
    };
    std::int32_t max_id = -1;
    for (const auto& [token, id] : vocab.items()) {
      t.vocab_[token] = checked_id(id, "model.vocab['" + token + "']");
      max_id = std::max(max_id, t.vocab_[token]);
    }
    for (const auto& a : added) max_id = std::max(max_id, checked_id(a.at("id"), "added_tokens"));
    t.id_to_token_.resize(static_cast<std::size_t>(max_id + 1));
    t.special_.assign(t.id_to_token_.size(), false);
    for (const auto& [token, id] : t.vocab_) t.id_to_token_[static_cast<std::size_t>(id)] = token;
    for (const auto& a : added) {
      AddedToken token{a.at("content").get<std::string>(), a.at("id").get<std::int32_t>(),
                       a.value("special", false), a.value("lstrip", false),
                       a.value("rstrip", false)};
      if (token.id < 0) fail(origin, "added_tokens", "negative id for '" + token.content + "'");
      t.id_to_token_[static_cast<std::size_t>(token.id)] = token.content;
      t.special_[static_cast<std::size_t>(token.id)] = token.special;
      t.added_.push_back(std::move(token));
    }
    std::sort(t.added_.begin(), t.added_.end(),
              [](const auto& a, const auto& b) { return a.content.size() > b.content.size(); });

    int rank = 0;
    for (const auto& m : model.at("merges")) {
      std::string left, right;
      if (m.is_string()) {
        const auto s = m.get<std::string>();
        const auto space = s.find(' ');
        if (space == std::string::npos)
          fail(origin, "model.merges[" + std::to_string(rank) + "]", "no space in '" + s + "'");
        left = s.substr(0, space);
        right = s.substr(space + 1);
      } else {
        left = m.at(0).get<std::string>();
        right = m.at(1).get<std::string>();
      }
      t.merge_rank_.emplace(merge_key(left, right), rank++);
    }
    t.byte_fallback_ = model.value("byte_fallback", false);
    t.fuse_unk_ = model.value("fuse_unk", false);
    t.ignore_merges_ = model.value("ignore_merges", false);
    if (model.contains("unk_token") && model["unk_token"].is_string())
      if (auto id = t.token_id(model["unk_token"].get<std::string>())) t.unk_id_ = *id;

    std::vector<json> normalizers;
    if (root.contains("normalizer") && !root["normalizer"].is_null()) {
      const auto& n = root["normalizer"];
      if (n.value("type", "") == "Sequence") {
        for (const auto& step : n.at("normalizers")) normalizers.push_back(step);
      } else {
        normalizers.push_back(n);
      }
    }
    for (const auto& n : normalizers) {
      const std::string kind = n.value("type", "");
      if (kind == "Prepend") {
        t.normalizer_.push_back(
            {NormalizerStep::Kind::prepend, "", n.at("prepend").get<std::string>()});
      } else if (kind == "Replace") {
        t.normalizer_.push_back({NormalizerStep::Kind::replace,
                                 string_pattern(n, origin, "normalizer"),
                                 n.at("content").get<std::string>()});
      } else if (kind == "Lowercase") {
        t.normalizer_.push_back({NormalizerStep::Kind::lowercase, "", ""});
      } else if (kind == "NFC" || kind == "NFD" || kind == "NFKC" || kind == "NFKD") {
        t.normalizer_.push_back({NormalizerStep::Kind::unicode, kind, ""});
      } else {
        fail(origin, "normalizer", "type '" + kind + "' is not supported");
      }
    }

    std::vector<json> pre;
    bool pre_sequence = false;
    if (root.contains("pre_tokenizer") && !root["pre_tokenizer"].is_null()) {
      const auto& p = root["pre_tokenizer"];
      pre_sequence = p.value("type", "") == "Sequence";
      if (pre_sequence) {
        for (const auto& step : p.at("pretokenizers")) pre.push_back(step);
      } else {
        pre.push_back(p);
      }
    }
    for (std::size_t i = 0; i < pre.size(); ++i) {
      const auto& p = pre[i];
      const std::string where =
          pre_sequence ? "pre_tokenizer.pretokenizers[" + std::to_string(i) + "]" : "pre_tokenizer";
      const std::string kind = p.value("type", "");
      PreTokenizerStep step{};
      if (kind == "Metaspace") {
        step.kind = PreTokenizerStep::Kind::metaspace;
        t.metaspace_replacement_ = p.value("replacement", std::string("\xe2\x96\x81"));
        t.metaspace_prepend_ = parse_prepend_scheme(p, origin, where);
        t.metaspace_split_ = p.value("split", true);
      } else if (kind == "ByteLevel") {
        step.kind = PreTokenizerStep::Kind::byte_level;
        step.add_prefix_space = p.value("add_prefix_space", false);
        if (p.value("use_regex", true))
          step.regex = std::make_shared<const UnicodeRegex>(std::string(kGpt2SplitPattern));
      } else if (kind == "Split") {
        step.kind = PreTokenizerStep::Kind::split;
        const auto& pattern = p.at("pattern");
        std::string regex;
        if (pattern.contains("Regex"))
          regex = pattern["Regex"].get<std::string>();
        else if (pattern.contains("String"))
          regex = escape_literal(pattern["String"].get<std::string>());
        else
          fail(origin, where + ".pattern", "expected {\"Regex\": ...} or {\"String\": ...}");
        try {
          step.regex = std::make_shared<const UnicodeRegex>(regex);
        } catch (const std::invalid_argument& e) {
          fail(origin, where + ".pattern", e.what());
        }
        step.behavior = parse_split_behavior(p, origin, where);
        step.invert = p.value("invert", false);
      } else if (kind == "Digits") {
        step.kind = PreTokenizerStep::Kind::digits;
        step.individual_digits = p.value("individual_digits", false);
        // tokenizers splits on char::is_numeric: Unicode Nd, Nl and No, one character a match.
        step.regex = std::make_shared<const UnicodeRegex>("\\p{N}");
      } else {
        fail(origin, where, "type '" + kind + "' is not supported");
      }
      t.pre_tokenizers_.push_back(std::move(step));
    }

    if (root.contains("post_processor") && !root["post_processor"].is_null()) {
      const auto& p = root["post_processor"];
      const std::string kind = p.value("type", "");
      if (kind == "TemplateProcessing") {
        bool before = true;
        for (const auto& item : p.at("single")) {
          if (item.contains("Sequence")) {
            before = false;
            continue;
          }
          const auto name = item.at("SpecialToken").at("id").get<std::string>();
          const auto& ids = p.at("special_tokens").at(name).at("ids");
          for (const auto& id : ids)
            (before ? t.prefix_ids_ : t.suffix_ids_).push_back(id.get<std::int32_t>());
        }
      } else if (kind != "ByteLevel") {
        fail(origin, "post_processor", "type '" + kind + "' is not supported");
      }
    }

    std::vector<json> decoders;
    if (root.contains("decoder") && !root["decoder"].is_null()) {
      const auto& d = root["decoder"];
      if (d.value("type", "") == "Sequence") {
        for (const auto& step : d.at("decoders")) decoders.push_back(step);
      } else {
        decoders.push_back(d);
      }
    }
    for (const auto& d : decoders) {
      const std::string kind = d.value("type", "");
      DecoderStep step{};
      if (kind == "Replace") {
        step.kind = DecoderStep::Kind::replace;
        step.pattern = string_pattern(d, origin, "decoder");
        step.content = d.at("content").get<std::string>();
      } else if (kind == "ByteFallback") {
        step.kind = DecoderStep::Kind::byte_fallback;
      } else if (kind == "Fuse") {
        step.kind = DecoderStep::Kind::fuse;
      } else if (kind == "Strip") {
        step.kind = DecoderStep::Kind::strip;
        step.content = d.at("content").get<std::string>();
        step.start = d.value("start", 0);
        step.stop = d.value("stop", 0);
      } else if (kind == "Metaspace") {
        step.kind = DecoderStep::Kind::metaspace;
        step.content = d.value("replacement", std::string("\xe2\x96\x81"));
        step.prepend = parse_prepend_scheme(d, origin, "decoder");
      } else if (kind == "ByteLevel") {
        step.kind = DecoderStep::Kind::byte_level;
      } else {
        fail(origin, "decoder", "type '" + kind + "' is not supported");
      }
      t.decoder_.push_back(std::move(step));
    }
  } catch (const json::exception& e) {
    fail(origin, "(structure)", std::string("unexpected layout: ") + e.what());
  }

  if (!config_json.empty()) {
    try {
      const json config = json::parse(config_json);
      // Special tokens are strings or AddedToken objects ({"content": "<s>", ...}).
      auto special_token = [&](const char* key) -> std::string {
        if (!config.contains(key)) return "";
        const auto& token = config[key];
        return token.is_object()   ? token.value("content", "")
               : token.is_string() ? token.get<std::string>()
                                   : "";
      };
      // transformers' LlamaTokenizerFast and GPTNeoXTokenizerFast (which AutoTokenizer loads for
      // tokenizer_class LlamaTokenizer / GPTNeoXTokenizer, with or without "Fast") replace the
      // tokenizer.json post-processor with bos + text + eos as add_bos_token / add_eos_token say
      // (update_post_processor, run by their constructors). DeepSeek-V3's published
      // tokenizer.json has a ByteLevel post-processor and relies on this for its BOS; other
      // classes (Qwen2Tokenizer, GPT2Tokenizer) keep the file's. A key the config leaves out
      // takes the class's constructor default; a null one is None there, so false or no token.
      std::string klass;
      if (config.contains("tokenizer_class") && config["tokenizer_class"].is_string())
        klass = config["tokenizer_class"].get<std::string>();
      if (klass.ends_with("Fast")) klass.resize(klass.size() - 4);
      const bool llama = klass == "LlamaTokenizer", gpt_neox = klass == "GPTNeoXTokenizer";
      const auto class_token = [&](const char* key, const char* llama_default) -> std::string {
        if (config.contains(key) || !(llama || gpt_neox)) return special_token(key);
        return llama ? llama_default : "<|endoftext|>";
      };
      t.bos_token_ = class_token("bos_token", "<s>");
      t.eos_token_ = class_token("eos_token", "</s>");
      if (auto id = t.token_id(t.eos_token_)) t.eos_id_ = *id;
      if (auto id = t.token_id(t.bos_token_)) t.bos_id_ = *id;
      if (t.eos_id_) t.end_of_generation_ = {*t.eos_id_};
      if (llama || gpt_neox) {
        auto flag = [&](const char* key, bool fallback) {
          if (!config.contains(key)) return fallback;
          if (config[key].is_null()) return false;
          if (!config[key].is_boolean())
            fail("tokenizer_config.json", key, "expected true or false, got " + config[key].dump());
          return config[key].get<bool>();
        };
        const bool add_bos = flag("add_bos_token", llama);
        const bool add_eos = flag("add_eos_token", false);
        if (add_bos && !t.bos_id_)
          fail("tokenizer_config.json", "add_bos_token",
               "is true but bos_token '" + t.bos_token_ + "' is not a token of tokenizer.json");
        if (add_eos && !t.eos_id_)
          fail("tokenizer_config.json", "add_eos_token",
               "is true but eos_token '" + t.eos_token_ + "' is not a token of tokenizer.json");
        t.prefix_ids_.clear();
        t.suffix_ids_.clear();
        if (add_bos) t.prefix_ids_.push_back(*t.bos_id_);
        if (add_eos) t.suffix_ids_.push_back(*t.eos_id_);
      }
      // A string, or a list of named templates of which "default" is the chat template.
      if (config.contains("chat_template")) {
        const auto& chat = config["chat_template"];
        if (chat.is_string()) {
          t.chat_template_ = chat.get<std::string>();
        } else if (chat.is_array()) {
          for (const auto& named : chat)
            if (named.is_object() && named.value("name", "") == "default" &&
                named.contains("template") && named["template"].is_string())
              t.chat_template_ = named["template"].get<std::string>();
        } else if (!chat.is_null()) {
          fail("tokenizer_config.json", "chat_template",
               "expected a string or a list of templates");
        }
      }
    } catch (const json::exception& e) {
      fail("tokenizer_config.json", "(root)", std::string("not valid JSON: ") + e.what());
    }
  }
  return t;
}

std::optional<std::int32_t> Tokenizer::token_id(std::string_view token) const {
  for (const auto& a : added_)
    if (a.content == token) return a.id;
  if (auto it = vocab_.find(std::string(token)); it != vocab_.end()) return it->second;
  return std::nullopt;
}

bool Tokenizer::is_special(std::int32_t id) const {
  return id >= 0 && static_cast<std::size_t>(id) < special_.size() &&
         special_[static_cast<std::size_t>(id)];
}

std::optional<double> Tokenizer::merge_priority(const std::string& left,
                                                const std::string& right) const {
  if (!merge_scores_.empty()) {
    auto it = vocab_.find(left + right);
    if (it == vocab_.end()) return std::nullopt;
    return -static_cast<double>(merge_scores_[static_cast<std::size_t>(it->second)]);
  }
  auto it = merge_rank_.find(merge_key(left, right));
  if (it == merge_rank_.end()) return std::nullopt;
  return it->second;
}

void Tokenizer::bpe_word(std::string_view word, std::vector<std::int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (auto it = vocab_.find(std::string(word)); it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  // Symbols in a doubly linked list; the adjacent pair of lowest priority merges first, ties to
  // the leftmost, as Hugging Face's BPE (by merge rank) and llama.cpp's llm_tokenizer_spm (by
  // score) do. Stale queue entries are skipped by a version check.
  struct Symbol {
    std::string text;
    int prev, next;
    unsigned version;
  };
  std::vector<Symbol> symbols;
  for (std::size_t i = 0; i < word.size();) {
    const std::size_t n = utf8_length(word, i);
    const int index = static_cast<int>(symbols.size());
    symbols.push_back({std::string(word.substr(i, n)), index - 1, index + 1, 0});
    i += n;
  }
  symbols.back().next = -1;
  struct Candidate {
    double priority;
    int left;
    unsigned left_version, right_version;
    bool operator>(const Candidate& o) const {
      return priority != o.priority ? priority > o.priority : left > o.left;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  auto consider = [&](int left) {
    if (left < 0 || symbols[left].next < 0) return;
    const int right = symbols[left].next;
    if (const auto priority = merge_priority(symbols[left].text, symbols[right].text))
      queue.push({*priority, left, symbols[left].version, symbols[right].version});
  };
  for (int i = 0; i + 1 < static_cast<int>(symbols.size()); ++i) consider(i);
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& left = symbols[c.left];
    if (left.version != c.left_version || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    if (right.version != c.right_version) continue;
    left.text += right.text;
    ++left.version;
    right.version = ~0u;  // dead
    left.next = right.next;
    if (left.next >= 0) symbols[left.next].prev = c.left;
    consider(left.prev);
    consider(c.left);
  }
  bool last_was_unk = false;
  for (int i = 0; i >= 0; i = symbols[i].next) {
    const std::string& piece = symbols[i].text;
    if (auto it = vocab_.find(piece); it != vocab_.end()) {
      out.push_back(it->second);
      last_was_unk = false;
      continue;
    }
    if (byte_fallback_) {
      bool all_found = true;
      std::vector<std::int32_t> bytes;
      for (unsigned char c : piece) {
        char name[8];
        std::snprintf(name, sizeof name, "<0x%02X>", c);
        auto it = vocab_.find(name);
        if (it == vocab_.end()) {
          all_found = false;
          break;
        }
        bytes.push_back(it->second);
      }
      if (all_found) {
        out.insert(out.end(), bytes.begin(), bytes.end());
        last_was_unk = false;
        continue;
      }
    }
    if (!unk_id_)
      throw UnencodableText("tokenizer: '" + piece + "' is not in the vocabulary and the " +
                            "tokenizer has no unk_token or byte fallback");
    if (!(fuse_unk_ && last_was_unk)) out.push_back(*unk_id_);
    last_was_unk = true;
  }
}

std::vector<std::string> Tokenizer::pre_tokenize_segment(std::string_view segment,
                                                         bool first_segment) const {
  std::string text(segment);
  for (const auto& step : normalizer_) {
    switch (step.kind) {
      case NormalizerStep::Kind::prepend:
        if (!text.empty()) text = step.content + text;
        break;
      case NormalizerStep::Kind::replace:
        replace_all(text, step.pattern, step.content);
        break;
      case NormalizerStep::Kind::lowercase:
        for (auto& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        break;
      case NormalizerStep::Kind::unicode:
        text = normalize_unicode(text, step.pattern);
        break;
    }
  }
  std::vector<std::string> pieces{text};
  for (const auto& step : pre_tokenizers_) {
    std::vector<std::string> next;
    for (std::size_t index = 0; index < pieces.size(); ++index) {
      std::string piece = std::move(pieces[index]);
      switch (step.kind) {
        case PreTokenizerStep::Kind::metaspace: {
          replace_all(piece, " ", metaspace_replacement_);
          const bool prepend =
              metaspace_prepend_ == PrependScheme::always ||
              (metaspace_prepend_ == PrependScheme::first && first_segment && index == 0);
          if (prepend && !piece.empty() && !piece.starts_with(metaspace_replacement_))
            piece = metaspace_replacement_ + piece;
          if (!metaspace_split_) {
            next.push_back(std::move(piece));
            break;
          }
          std::size_t begin = 0;
          while (begin < piece.size()) {
            std::size_t end = piece.find(metaspace_replacement_, begin + 1);
            if (end == std::string::npos) end = piece.size();
            next.push_back(piece.substr(begin, end - begin));
            begin = end;
          }
          break;
        }
        case PreTokenizerStep::Kind::byte_level: {
          if (step.add_prefix_space && !piece.empty() && !piece.starts_with(' '))
            piece = " " + piece;
          std::vector<std::string> words =
              step.regex ? split_by_matches(piece, step.regex->find_all(piece),
                                            SplitBehavior::isolated, false)
                         : std::vector<std::string>{piece};
          for (const auto& word : words) {
            std::string mapped;
            for (unsigned char c : word) append_utf8(mapped, byte_to_char()[c]);
            next.push_back(std::move(mapped));
          }
          break;
        }
        case PreTokenizerStep::Kind::split:
          for (auto& part :
               split_by_matches(piece, step.regex->find_all(piece), step.behavior, step.invert))
            next.push_back(std::move(part));
          break;
        case PreTokenizerStep::Kind::digits:
          for (auto& part : split_by_matches(
                   piece, step.regex->find_all(piece),
                   step.individual_digits ? SplitBehavior::isolated : SplitBehavior::contiguous,
                   false))
            next.push_back(std::move(part));
          break;
      }
    }
    pieces = std::move(next);
  }
  std::erase_if(pieces, [](const std::string& piece) { return piece.empty(); });
  return pieces;
}

std::vector<std::string> Tokenizer::pre_tokenize(std::string_view text) const {
  return pre_tokenize_segment(text, true);
}

void Tokenizer::encode_segment(std::string_view segment, bool first_segment,
                               std::vector<std::int32_t>& out) const {
  for (const auto& piece : pre_tokenize_segment(segment, first_segment)) bpe_word(piece, out);
}

std::vector<Tokenizer::Fragment> Tokenizer::split_added_tokens(std::string_view text) const {
  std::vector<Fragment> fragments;
  if (!added_longest_first_) {
    // tokenizers: the leftmost added token, the longest of those starting there.
    std::size_t segment_start = 0;
    for (std::size_t i = 0; i < text.size();) {
      const AddedToken* match = nullptr;
      for (const auto& a : added_)
        if (!a.content.empty() && text.substr(i).starts_with(a.content)) {
          match = &a;
          break;
        }
      if (!match) {
        ++i;
        continue;
      }
      if (i > segment_start) fragments.push_back({segment_start, i, nullptr});
      fragments.push_back({i, i + match->content.size(), match});
      i += match->content.size();
      segment_start = i;
    }
    if (segment_start < text.size()) fragments.push_back({segment_start, text.size(), nullptr});
    return fragments;
  }
  // llama.cpp's tokenizer_st_partition: each added token in turn, the longest first, takes all
  // its occurrences in the text the ones before it left.
  if (!text.empty()) fragments.push_back({0, text.size(), nullptr});
  for (const auto& a : added_) {
    if (a.content.empty()) continue;
    std::vector<Fragment> next;
    for (const auto& fragment : fragments) {
      if (fragment.token) {
        next.push_back(fragment);
        continue;
      }
      const std::string_view area = text.substr(0, fragment.end);
      std::size_t at = fragment.begin;
      for (auto found = area.find(a.content, at); found != std::string_view::npos;
           found = area.find(a.content, at)) {
        if (found > at) next.push_back({at, found, nullptr});
        next.push_back({found, found + a.content.size(), &a});
        at = found + a.content.size();
      }
      if (at < fragment.end) next.push_back({at, fragment.end, nullptr});
    }
    fragments = std::move(next);
  }
  return fragments;
}

std::vector<std::int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  std::vector<std::int32_t> out;
  if (add_special_tokens) out = prefix_ids_;
  const auto fragments = split_added_tokens(text);
  for (std::size_t k = 0; k < fragments.size(); ++k) {
    const Fragment& fragment = fragments[k];
    if (fragment.token) {
      out.push_back(fragment.token->id);
      continue;
    }
    std::string_view piece = text.substr(fragment.begin, fragment.end - fragment.begin);
    if (k > 0 && fragments[k - 1].token->rstrip)
      while (!piece.empty() && std::isspace(static_cast<unsigned char>(piece.front())))
        piece.remove_prefix(1);
    if (k + 1 < fragments.size() && fragments[k + 1].token->lstrip)
      while (!piece.empty() && std::isspace(static_cast<unsigned char>(piece.back())))
        piece.remove_suffix(1);
    if (!piece.empty()) encode_segment(piece, fragment.begin == 0, out);
  }
  if (add_special_tokens) out.insert(out.end(), suffix_ids_.begin(), suffix_ids_.end());
  return out;
}

bool Tokenizer::skipped(std::int32_t id, bool skip_special_tokens,
                        std::span<const std::int32_t> kept_special) const {
  return skip_special_tokens && is_special(id) &&
         std::find(kept_special.begin(), kept_special.end(), id) == kept_special.end();
}

namespace {

// tokenizers' Strip decoder on one token: its content off the start up to `start` times and off
// the end up to `stop` times.
void strip_ends(std::string& token, const Tokenizer::DecoderStep& step) {
  for (int k = 0; k < step.start && token.starts_with(step.content); ++k)
    token.erase(0, step.content.size());
  for (int k = 0; k < step.stop && token.ends_with(step.content); ++k)
    token.erase(token.size() - step.content.size());
}

}  // namespace

std::string Tokenizer::decode(std::span<const std::int32_t> ids, bool skip_special_tokens,
                              std::span<const std::int32_t> kept_special) const {
  if (!pieces_.empty()) return decode_pieces(ids, skip_special_tokens, kept_special);
  std::vector<std::string> tokens;
  for (const auto id : ids) {
    // Models pad their embedding past the tokenizer's vocabulary (Qwen: 151936 rows for 151669
    // tokens), so a sampled id may have no token; tokenizers' decode skips such ids, and so do we.
    if (id < 0 || static_cast<std::size_t>(id) >= id_to_token_.size()) continue;
    if (skipped(id, skip_special_tokens, kept_special)) continue;
    tokens.push_back(id_to_token_[static_cast<std::size_t>(id)]);
  }
  for (const auto& step : decoder_) {
    switch (step.kind) {
      case DecoderStep::Kind::replace:
        for (auto& token : tokens) replace_all(token, step.pattern, step.content);
        break;
      case DecoderStep::Kind::byte_fallback: {
        std::vector<std::string> merged;
        std::string pending;
        auto flush_bytes = [&] {
          if (pending.empty()) return;
          if (valid_utf8(pending)) {
            merged.push_back(pending);
          } else {
            for (std::size_t k = 0; k < pending.size(); ++k) merged.emplace_back("\xef\xbf\xbd");
          }
          pending.clear();
        };
        for (const auto& token : tokens) {
          // As tokenizers' ByteFallback: "<0xXX>" with two hex digits is a byte; any other
          // token, "<0xZZ>" included, is text.
          if (const auto byte = byte_token_value(token)) {
            pending += *byte;
          } else {
            flush_bytes();
            merged.push_back(token);
          }
        }
        flush_bytes();
        tokens = std::move(merged);
        break;
      }
      case DecoderStep::Kind::fuse: {
        std::string all;
        for (const auto& token : tokens) all += token;
        tokens = {all};
        break;
      }
      case DecoderStep::Kind::strip:
        for (auto& token : tokens) strip_ends(token, step);
        break;
      case DecoderStep::Kind::metaspace:
        for (std::size_t k = 0; k < tokens.size(); ++k) {
          replace_all(tokens[k], step.content, " ");
          if (k == 0 && step.prepend != PrependScheme::never && tokens[k].starts_with(" "))
            tokens[k].erase(0, 1);
        }
        break;
      case DecoderStep::Kind::byte_level: {
        std::string bytes;
        for (const auto& token : tokens) bytes += byte_level_to_bytes(token);
        tokens = {lossy_utf8(bytes)};
        break;
      }
    }
  }
  std::string text;
  for (const auto& token : tokens) text += token;
  return text;
}

std::string Tokenizer::token_bytes(std::int32_t id) const {
  if (id < 0 || static_cast<std::size_t>(id) >= id_to_token_.size()) return {};
  if (!pieces_.empty())
    return static_cast<std::size_t>(id) < pieces_.size() ? pieces_[static_cast<std::size_t>(id)]
                                                         : std::string();
  std::string token = id_to_token_[static_cast<std::size_t>(id)];
  // After a Fuse the tokens are one text, whose ends are the only place a Strip cuts.
  bool fused = false;
  for (const auto& step : decoder_) {
    switch (step.kind) {
      case DecoderStep::Kind::replace:
        replace_all(token, step.pattern, step.content);
        break;
      case DecoderStep::Kind::byte_fallback:
        if (const auto byte = byte_token_value(token)) token = std::string(1, *byte);
        break;
      case DecoderStep::Kind::fuse:
        fused = true;
        break;
      case DecoderStep::Kind::strip:
        if (!fused) strip_ends(token, step);
        break;
      case DecoderStep::Kind::metaspace:
        replace_all(token, step.content, " ");
        break;
      case DecoderStep::Kind::byte_level:
        token = byte_level_to_bytes(token);
        break;
    }
  }
  return token;
}

namespace {

// llama.cpp's llama_token_type, the values of tokenizer.ggml.token_type.
enum GgufTokenType : std::int64_t {
  kTokenNormal = 1,
  kTokenUnknown = 2,
  kTokenControl = 3,
  kTokenUserDefined = 4,
  kTokenUnused = 5,
  kTokenByte = 6,
};

// What a tokenizer.ggml.pre name stands for in llama-vocab.cpp (llm_tokenizer_bpe and
// llama_vocab::impl::load): the split regexes, applied one after another with matches and the
// text between them both kept, and the flags the name sets.
struct PreTokenizerPreset {
  std::vector<std::string> regexes;
  bool ignore_merges = false;
  bool add_bos = false;
};

// llama.cpp rewrites tokenizers' (?i:'s|'t|...) so; PCRE2 would also fold 's' with U+017F.
constexpr std::string_view kContractions =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD]))";
constexpr std::string_view kCjk = R"([\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+)";
// llama.cpp's DeepSeek LLM letters (tokenizer.json's class, as code points).
constexpr std::string_view kDeepseekLetters =
    R"(\s?[A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}-\x{293}\x{295}-\x{2AF}\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}\x{388}-\x{38A}\x{38C}\x{38E}-\x{3A1}\x{3A3}-\x{3F5}\x{3F7}-\x{481}\x{48A}-\x{52F}\x{531}-\x{556}\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF}\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D}\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D}\x{1F5F}-\x{1F7D}\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}\x{1FF6}-\x{1FFC}\x{2102}\x{2107}\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124}\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134}\x{2139}\x{213C}-\x{213F}\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4}\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F}\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F}\x{104B0}-\x{104D3}\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2}\x{118A0}-\x{118DF}\x{1E900}-\x{1E943}]+)";

bool one_of(std::string_view name, std::initializer_list<std::string_view> names) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

std::optional<PreTokenizerPreset> pre_tokenizer_preset(std::string_view pre) {
  const std::string contractions(kContractions);
  // llama.cpp writes GPT-2's split without tokenizers' final |\s+. In valid UTF-8 that
  // alternative only ever takes a lone whitespace character before a non-space, which
  // llama.cpp keeps as the unmatched piece between two matches: the pieces are the same, and
  // with it they stay the same as tokenizers' around invalid bytes too.
  const std::string gpt2(kGpt2SplitPattern);
  const std::string llama3 =
      contractions +
      R"(|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  const std::string qwen2 =
      contractions +
      R"(|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  const std::string upper = R"([\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}])";
  const std::string lower = R"([\p{Ll}\p{Lm}\p{Lo}\p{M}])";
  const std::string prefix = R"([^\r\n\p{L}\p{N}]?)";
  if (pre == "default")
    return PreTokenizerPreset{{R"([\p{P}\$\+<=>\^~\|]+)", gpt2, R"(\p{N}+)", "[0-9][0-9][0-9]"}};
  if (one_of(pre, {"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0",
                   "lfm2", "jina-v5-nano"}))
    return PreTokenizerPreset{{llama3}, true, true};
  if (one_of(pre, {"dbrx", "smaug-bpe", "glm4", "chatglm-bpe"}))
    return PreTokenizerPreset{{llama3}};
  if (pre == "deepseek-llm")
    return PreTokenizerPreset{
        {R"([\r\n])", std::string(kDeepseekLetters),
         R"(\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+)",
         R"(\s+$)", std::string(kCjk), R"(\p{N}+)"}};
  if (pre == "deepseek-coder")
    return PreTokenizerPreset{
        {R"([\r\n])", R"(\s?\p{L}+)", R"(\s?\p{P}+)", std::string(kCjk), R"(\p{N})"}};
  if (one_of(pre, {"deepseek-v3", "hunyuan-dense", "joyai-llm", "hy_v4"}))
    return PreTokenizerPreset{
        {R"(\p{N}{1,3})", R"([\x{4E00}-\x{9FA5}\x{3040}-\x{309F}\x{30A0}-\x{30FF}]+)",
         R"re([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re"}};
  if (pre == "falcon")
    return PreTokenizerPreset{{R"([\p{P}\$\+<=>\^~\|`]+)", gpt2, "[0-9][0-9][0-9]"}};
  if (one_of(pre, {"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone",
                   "minerva-7b", "mellum2"}))
    return PreTokenizerPreset{{R"(\p{N})", gpt2}};
  if (one_of(pre, {"gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de",
                   "a.x-4.0", "mellum", "modern-bert", "mpt", "olmo", "jais", "trillion",
                   "granite-docling", "exaone4"}))
    return PreTokenizerPreset{{gpt2}};
  if (one_of(pre, {"qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2",
                   "hunyuan", "solar-open", "grok-2"}))
    return PreTokenizerPreset{{qwen2}};
  if (pre == "qwen35")
    return PreTokenizerPreset{
        {contractions +
         R"(|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"}};
  if (one_of(pre, {"poro-chat", "bloom", "gpt3-finnish"}))
    return PreTokenizerPreset{
        {R"( ?[^(\s|.,!?\x{2026}\x{3002}\x{FF0C}\x{3001}\x{964}\x{6D4}\x{60C})]+)"}};
  if (pre == "tekken")
    return PreTokenizerPreset{{prefix + upper + "*" + lower + "+|" + prefix + upper + "+" + lower +
                               R"(*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)"},
                              true,
                              true};
  if (one_of(pre, {"gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"}))
    return PreTokenizerPreset{
        {prefix + upper + "*" + lower + "+" + contractions + "?|" + prefix + upper + "+" + lower +
         "*" + contractions +
         R"(?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)"}};
  if (pre == "seed-coder")
    return PreTokenizerPreset{
        {contractions +
         R"(|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+)"}};
  if (one_of(pre, {"bailingmoe", "bailingmoe2", "llada-moe"}))
    return PreTokenizerPreset{
        {R"('(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+)"}};
  return std::nullopt;
}

// The token texts llama.cpp's llama_vocab::impl::load takes for end of generation (with the
// FIM pad, repo and file-separator tokens it adds to them), whatever the converter marked.
bool ends_generation(std::string_view text) {
  return one_of(text, {"<|eot_id|>",
                       "<|im_end|>",
                       "<|end|>",
                       "<|return|>",
                       "<|call|>",
                       "<|flush|>",
                       "<|calls|>",
                       "<end_of_turn>",
                       "<|endoftext|>",
                       "</s>",
                       "<|eom_id|>",
                       "<EOT>",
                       "_<EOT>",
                       "[EOT]",
                       "[EOS]",
                       "<|end_of_text|>",
                       "<end_of_utterance>",
                       "<eos>",
                       "<turn|>",
                       "<|tool_response>",
                       "<\uFF5Cend\u2581of\u2581sentence\uFF5C>",
                       "[e~[",
                       "<|fim_pad|>",
                       "<fim-pad>",
                       "<fim_pad>",
                       "<PAD>",
                       "[PAD]",
                       "<|fim_repo|>",
                       "<|repo_name|>",
                       "<fim-repo>",
                       "<REPO>",
                       "<reponame>",
                       "<|file_sep|>"});
}

}  // namespace

Tokenizer Tokenizer::from_gguf(const GgufMetadata& metadata, const std::string& origin) {
  // GgufMetadata's own errors name its source, which need not be origin.
  try {
    Tokenizer t;
    const std::string& model = metadata.get_string("tokenizer.ggml.model");
    const bool sentencepiece = model == "llama";
    if (!sentencepiece && model != "gpt2")
      fail(origin, "tokenizer.ggml.model", "'" + model + "' is not supported (llama and gpt2 are)");
    PreTokenizerPreset preset;
    if (!sentencepiece) {
      // A missing name is llama.cpp's "default" (with a warning); an unknown one is an error.
      const std::string pre = metadata.contains("tokenizer.ggml.pre")
                                  ? metadata.get_string("tokenizer.ggml.pre")
                                  : std::string("default");
      auto found = pre_tokenizer_preset(pre);
      if (!found)
        fail(origin, "tokenizer.ggml.pre",
             "unknown value '" + pre + "' (not one of llama.cpp's pre-tokenizer names)");
      preset = std::move(*found);
    }

    const std::vector<std::string> tokens = metadata.get_string_array("tokenizer.ggml.tokens");
    const std::size_t n = tokens.size();
    if (n == 0) fail(origin, "tokenizer.ggml.tokens", "is empty");
    if (n > static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()))
      fail(origin, "tokenizer.ggml.tokens", std::to_string(n) + " tokens do not fit int32 ids");
    const auto per_token = [&](const char* key, std::size_t count) {
      if (count < n)
        fail(origin, key, std::to_string(count) + " entries for " + std::to_string(n) + " tokens");
    };
    std::vector<std::int64_t> types(n, kTokenNormal);
    if (metadata.contains("tokenizer.ggml.token_type")) {
      const auto read = metadata.get_integer_array("tokenizer.ggml.token_type");
      per_token("tokenizer.ggml.token_type", read.size());
      types.assign(read.begin(), read.begin() + static_cast<std::ptrdiff_t>(n));
    }
    // llama.cpp's fix-ups by token text: end-of-generation tokens become control tokens; with
    // o200k_harmony's <|return|> and <|call|> (or solar-open's <|calls|> and <|flush|>),
    // <|end|> is plain text, and with Gemma 4's <|tool_response> so is </s>; gpt-oss's
    // <|channel|>, <|message|>, <|start|> and <|constrain|> are always rendered.
    std::vector<std::int32_t> end_of_generation;
    std::unordered_map<std::string_view, std::size_t> index_of;
    for (std::size_t i = 0; i < n; ++i) {
      index_of.insert_or_assign(tokens[i], i);  // the later of a duplicated text, as below
      if (ends_generation(tokens[i])) {
        types[i] = kTokenControl;
        end_of_generation.push_back(static_cast<std::int32_t>(i));
      }
      if (one_of(tokens[i], {"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"}))
        types[i] = kTokenUserDefined;
    }
    const auto has = [&](std::string_view text) { return index_of.contains(text); };
    std::optional<std::size_t> not_end_of_generation;
    if (has("<|end|>") && ((has("<|return|>") && (has("<|call|>") || has("<|calls|>"))) ||
                           ((has("<|call|>") || has("<|calls|>")) && has("<|flush|>")))) {
      not_end_of_generation = index_of.at("<|end|>");
      types[*not_end_of_generation] = kTokenUserDefined;
    } else if (has("</s>") && has("<|tool_response>")) {
      not_end_of_generation = index_of.at("</s>");
      types[*not_end_of_generation] = kTokenNormal;
    }
    if (sentencepiece) {
      // Scores rank merges: llm_tokenizer_spm merges the adjacent pair whose concatenation is
      // the token of highest score. Without scores every merge ties and the leftmost wins.
      t.merge_scores_.assign(n, 0.0f);
      if (const GgufValue* value = metadata.find("tokenizer.ggml.scores")) {
        const auto* array = std::get_if<GgufArray>(&value->data);
        if (!array || (array->element_type != GgufValueType::float32 &&
                       array->element_type != GgufValueType::int32))
          fail(origin, "tokenizer.ggml.scores",
               "should be an array of float32 or int32 but is " + value->type_description());
        per_token("tokenizer.ggml.scores", array->elements.size());
        for (std::size_t i = 0; i < n; ++i) {
          const auto& data = array->elements[i].data;
          t.merge_scores_[i] = array->element_type == GgufValueType::float32
                                   ? std::get<float>(data)
                                   : static_cast<float>(std::get<std::int32_t>(data));
        }
      }
    }

    t.id_to_token_.resize(n);
    t.special_.assign(n, false);
    t.pieces_.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
      const auto id = static_cast<std::int32_t>(i);
      // llama.cpp names an empty token so. A text listed twice is the later id's when encoding,
      // as an added token too (llama.cpp's token_to_id keeps the last); each id still decodes
      // to it.
      std::string text = tokens[i].empty() ? "[EMPTY_" + std::to_string(i) + "]" : tokens[i];
      if (const auto earlier = t.vocab_.find(text); earlier != t.vocab_.end()) {
        std::fprintf(stderr,
                     "moed: warning: %s: tokenizer.ggml.tokens lists '%s' at %d and %zu; the text "
                     "encodes as %zu\n",
                     origin.c_str(), text.c_str(), earlier->second, i, i);
        std::erase_if(t.added_,
                      [&](const auto& added_token) { return added_token.content == text; });
        earlier->second = id;
      } else {
        t.vocab_.emplace(text, id);
      }
      std::string& piece = t.pieces_[i];
      switch (types[i]) {
        case kTokenControl:
        case kTokenUnknown:
          t.special_[i] = true;
          t.added_.push_back({text, id, true, false, false});
          piece = text;
          break;
        case kTokenUserDefined:
          t.added_.push_back({text, id, false, false, false});
          piece = text;
          break;
        case kTokenNormal:
          if (sentencepiece) {
            piece = text;
            replace_all(piece, "\xe2\x96\x81", " ");
          } else {
            piece = byte_level_to_bytes(text, true);
          }
          break;
        case kTokenByte: {
          const auto byte = byte_token_value(text);
          if (!byte)
            fail(origin, "tokenizer.ggml.token_type",
                 "token " + std::to_string(i) + " '" + text + "' is a byte token but not <0xNN>");
          piece.assign(1, *byte);
          break;
        }
        default:  // unused and undefined tokens give no text, as in llama.cpp
          break;
      }
      t.id_to_token_[i] = std::move(text);
    }
    t.added_longest_first_ = true;
    std::stable_sort(t.added_.begin(), t.added_.end(), [](const auto& a, const auto& b) {
      return a.content.size() > b.content.size();
    });

    // llama.cpp's add_space_prefix: SentencePiece prefixes every text fragment (the text at the
    // start and after each special token) with a space; both types drop one from the first
    // decoded piece.
    const bool add_space_prefix = metadata.contains("tokenizer.ggml.add_space_prefix")
                                      ? metadata.get_bool("tokenizer.ggml.add_space_prefix")
                                      : sentencepiece;
    t.strip_first_space_ = add_space_prefix;
    if (sentencepiece) {
      if (add_space_prefix)
        t.normalizer_.push_back({NormalizerStep::Kind::prepend, "", t.metaspace_replacement_});
      t.normalizer_.push_back({NormalizerStep::Kind::replace, " ", t.metaspace_replacement_});
      t.byte_fallback_ = true;
    } else {
      const std::vector<std::string> merges = metadata.get_string_array("tokenizer.ggml.merges");
      for (std::size_t rank = 0; rank < merges.size(); ++rank) {
        const std::string& merge = merges[rank];
        // An entry that is not two tokens with a space merges nothing: llama.cpp ranks it as a
        // pair of empty tokens, which never occurs.
        const auto space = merge.find(' ', 1);
        if (space == std::string::npos) continue;
        t.merge_rank_.emplace(merge_key(merge.substr(0, space), merge.substr(space + 1)),
                              static_cast<int>(rank));
      }
      for (const auto& regex : preset.regexes) {
        PreTokenizerStep step{};
        step.kind = PreTokenizerStep::Kind::split;
        step.regex = std::make_shared<const UnicodeRegex>(regex);
        t.pre_tokenizers_.push_back(std::move(step));
      }
      PreTokenizerStep bytes{};
      bytes.kind = PreTokenizerStep::Kind::byte_level;
      t.pre_tokenizers_.push_back(std::move(bytes));
      t.ignore_merges_ = preset.ignore_merges;
    }

    // llama.cpp's defaults for a key that is absent: SentencePiece's <unk>=0, <s>=1, </s>=2 when
    // the vocabulary has them; none for gpt2. An id outside the vocabulary is an error for the
    // ids encoding and stopping depend on; for the others (padding, eot, eom, FIM) llama.cpp
    // warns and ignores it, and so do we: converters do write such padding ids.
    const auto special_id = [&](const char* key, std::optional<std::int32_t> fallback,
                                bool required_in_vocabulary) -> std::optional<std::int32_t> {
      if (fallback && static_cast<std::size_t>(*fallback) >= n) fallback.reset();
      if (!metadata.contains(key)) return fallback;
      const std::int64_t id = metadata.get_integer(key);
      if (id >= 0 && static_cast<std::uint64_t>(id) < n) return static_cast<std::int32_t>(id);
      if (required_in_vocabulary)
        fail(origin, key,
             "id " + std::to_string(id) + " is not in [0, " + std::to_string(n) +
                 "), the vocabulary");
      return fallback;
    };
    t.bos_id_ = special_id("tokenizer.ggml.bos_token_id",
                           sentencepiece ? std::optional<std::int32_t>(1) : std::nullopt, true);
    t.eos_id_ = special_id("tokenizer.ggml.eos_token_id",
                           sentencepiece ? std::optional<std::int32_t>(2) : std::nullopt, true);
    t.unk_id_ = special_id("tokenizer.ggml.unknown_token_id",
                           sentencepiece ? std::optional<std::int32_t>(0) : std::nullopt, true);
    special_id("tokenizer.ggml.padding_token_id", std::nullopt, false);
    if (t.eos_id_) end_of_generation.push_back(*t.eos_id_);
    for (const char* key : {"tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id",
                            "tokenizer.ggml.fim_pad_token_id", "tokenizer.ggml.fim_rep_token_id",
                            "tokenizer.ggml.fim_sep_token_id"})
      if (const auto id = special_id(key, std::nullopt, false)) end_of_generation.push_back(*id);
    if (not_end_of_generation)
      std::erase(end_of_generation, static_cast<std::int32_t>(*not_end_of_generation));
    std::sort(end_of_generation.begin(), end_of_generation.end());
    end_of_generation.erase(std::unique(end_of_generation.begin(), end_of_generation.end()),
                            end_of_generation.end());
    t.end_of_generation_ = std::move(end_of_generation);
    const auto flag = [&](const char* key, bool fallback) {
      return metadata.contains(key) ? metadata.get_bool(key) : fallback;
    };
    if (flag("tokenizer.ggml.add_bos_token", sentencepiece || preset.add_bos)) {
      if (!t.bos_id_)
        fail(origin, "tokenizer.ggml.add_bos_token", "is true but there is no bos_token_id");
      t.prefix_ids_ = {*t.bos_id_};
    }
    if (flag("tokenizer.ggml.add_eos_token", false)) {
      if (!t.eos_id_)
        fail(origin, "tokenizer.ggml.add_eos_token", "is true but there is no eos_token_id");
      t.suffix_ids_ = {*t.eos_id_};
    }
    if (t.bos_id_) t.bos_token_ = t.id_to_token_[static_cast<std::size_t>(*t.bos_id_)];
    if (t.eos_id_) t.eos_token_ = t.id_to_token_[static_cast<std::size_t>(*t.eos_id_)];
    if (metadata.contains("tokenizer.chat_template"))
      t.chat_template_ = metadata.get_string("tokenizer.chat_template");
    return t;
  } catch (const std::runtime_error& e) {
    if (std::string_view(e.what()).starts_with(origin)) throw;
    throw std::runtime_error(origin + ": " + e.what());
  }
}

// llama.cpp's llama_detokenize, with remove_special and not unparse_special when
// skip_special_tokens, but without its clean_spaces pass (" ." to "."): llama-server streams
// token_to_piece without it, and TextStream needs the text of a prefix of the ids to be a
// prefix of the text. Bytes that are not UTF-8 become U+FFFD, as the other decoders make them.
std::string Tokenizer::decode_pieces(std::span<const std::int32_t> ids, bool skip_special_tokens,
                                     std::span<const std::int32_t> kept_special) const {
  bool remove_space = strip_first_space_;
  if (skip_special_tokens && adds_bos() && !ids.empty() && ids.front() == *bos_id_) {
    ids = ids.subspan(1);
    remove_space = false;
  }
  if (skip_special_tokens && eos_id_ && !suffix_ids_.empty() && suffix_ids_.back() == *eos_id_ &&
      !ids.empty() && ids.back() == *eos_id_)
    ids = ids.first(ids.size() - 1);
  std::string text;
  for (const auto id : ids) {
    if (id < 0 || static_cast<std::size_t>(id) >= pieces_.size()) continue;
    std::string_view piece = skipped(id, skip_special_tokens, kept_special)
                                 ? std::string_view()
                                 : std::string_view(pieces_[static_cast<std::size_t>(id)]);
    if (remove_space && piece.starts_with(' ')) piece.remove_prefix(1);
    remove_space = false;
    text.append(piece);
  }
  return lossy_utf8(text);
}

Tokenizer load_tokenizer(const std::filesystem::path& model) {
  if (model.extension() == ".gguf" && !std::filesystem::is_directory(model)) {
    const GgufFile file(model);
    return Tokenizer::from_gguf(file.metadata(), model.string());
  }
  return Tokenizer::from_model_dir(model);
}

}  // namespace moed::model
