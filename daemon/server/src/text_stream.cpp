#include "moed/server/text_stream.hpp"

#include <algorithm>
#include <span>

namespace moed::server {

TextStream::TextStream(const model::Tokenizer& tokenizer, std::vector<std::string> stops,
                       ToolCallSyntax tool_calls)
    : tokenizer_(tokenizer),
      stops_(std::move(stops)),
      tool_calls_(tool_calls),
      opening_(tool_calls_opening(tool_calls)) {
  for (const std::string_view token : tool_call_tokens(tool_calls))
    if (const auto id = tokenizer_.token_id(token)) kept_ids_.push_back(*id);
}

std::string TextStream::decoded() const {
  const std::span<const std::int32_t> ids(ids_);
  if (committed_ids_ == 0) return tokenizer_.decode(ids, true, kept_ids_);
  // The ids after the commit decoded after those before them, less their text, so that the
  // first keeps a leading space a decoder strips at the start; alone where that text changes in
  // their company. The context reaches back over a character spelled in byte tokens (at most
  // four): its last byte alone reads as U+FFFD, and with byte tokens after it as a run that is
  // not UTF-8, which ByteFallback turns into U+FFFD throughout.
  constexpr std::string_view kReplacement = "\xef\xbf\xbd";
  std::size_t from = committed_ids_ - 1;
  std::string context = tokenizer_.decode(ids.subspan(from, 1), true, kept_ids_);
  while (context.find(kReplacement) != std::string::npos && from > 0 && committed_ids_ - from < 4) {
    --from;
    context = tokenizer_.decode(ids.subspan(from, committed_ids_ - from), true, kept_ids_);
  }
  const std::string with_context = tokenizer_.decode(ids.subspan(from), true, kept_ids_);
  if (with_context.starts_with(context))
    return committed_text_ + with_context.substr(context.size());
  return committed_text_ + tokenizer_.decode(ids.subspan(committed_ids_), true, kept_ids_);
}

void TextStream::commit_returned_text() {
  // All ids but the newest: text of theirs that was still held (a partial character or stop
  // string, in the run the newest regrouped) is dropped.
  committed_ids_ = ids_.size() - 1;
  committed_text_ = emitted_;
}

std::string TextStream::answer() {
  std::string text = decoded();
  std::size_t stop_at = std::string::npos;
  for (const auto& s : stops_) stop_at = std::min(stop_at, text.find(s));
  if (stop_at != std::string::npos) {
    stopped_ = true;
    text.resize(stop_at);
  }
  return text;
}

std::size_t TextStream::calls_search_start(const std::string& text) {
  constexpr std::string_view kThinkOpen = "<think>", kThinkClose = "</think>";
  // Reasoning may mention the syntax (Qwen3, DeepSeek-R1); the calls come after it. A template
  // may open the reasoning in the prompt, so the answer holds only its end.
  if (const std::size_t close = text.rfind(kThinkClose); close != std::string::npos)
    return close + kThinkClose.size();
  const std::size_t start = text.find_first_not_of(" \t\r\n");
  if (start != std::string::npos && text.compare(start, kThinkOpen.size(), kThinkOpen) == 0)
    return std::string::npos;  // still reasoning
  return 0;
}

std::string TextStream::add(std::int32_t id) {
  ids_.push_back(id);
  std::string text = answer();
  if (!text.starts_with(emitted_)) {
    commit_returned_text();
    stopped_ = false;
    text = answer();
  }
  calls_text_.clear();
  if (!opening_.empty())
    if (const std::size_t from = calls_search_start(text); from != std::string::npos)
      if (const std::size_t at = text.find(opening_, from); at != std::string::npos) {
        calls_text_ = text.substr(at);
        return take(text, at);
      }
  if (stopped_) return take(text, text.size());
  // Replacement characters at the end may be a multi-byte character still arriving byte by
  // byte (byte-fallback tokens); later tokens turn them into the real character.
  std::size_t safe = text.size();
  while (safe >= 3 && text.compare(safe - 3, 3, "\xef\xbf\xbd") == 0) safe -= 3;
  std::size_t hold = 0;
  auto hold_prefix_of = [&](const std::string& s) {
    for (std::size_t k = std::min(s.size() - 1, safe); k > hold; --k)
      if (text.compare(safe - k, k, s, 0, k) == 0) {
        hold = k;
        return;
      }
  };
  for (const auto& s : stops_) hold_prefix_of(s);
  if (!opening_.empty()) hold_prefix_of(opening_);
  return take(text, safe - hold);
}

std::string TextStream::finish() {
  if (!calls_text_.empty())
    if (auto parsed = parse_tool_calls(calls_text_, tool_calls_)) {
      calls_ = std::move(parsed->calls);
      emitted_ += parsed->content;
      return parsed->content;
    }
  const std::string text = answer();
  return take(text, text.size());
}

std::string TextStream::take(const std::string& text, std::size_t end) {
  end = std::min(end, text.size());
  while (end > 0 && end < text.size() && (static_cast<unsigned char>(text[end]) & 0xc0) == 0x80)
    --end;
  if (!text.starts_with(emitted_)) return "";
  std::string delta;
  if (end > emitted_.size()) {
    delta = text.substr(emitted_.size(), end - emitted_.size());
    emitted_ += delta;
  }
  // All the answer so far is returned: its ids need not be decoded again (decoding all of a
  // long answer at every token made streaming it quadratic).
  if (emitted_.size() == text.size() && calls_text_.empty()) {
    committed_ids_ = ids_.size();
    committed_text_ = emitted_;
  }
  return delta;
}

}  // namespace moed::server
