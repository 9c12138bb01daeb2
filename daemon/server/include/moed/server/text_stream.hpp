#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "moed/model/tokenizer.hpp"
#include "moed/server/tool_calls.hpp"

namespace moed::server {

// Streams an answer's detokenised text: emits what is final, holding back an incomplete UTF-8
// character at the end and any tail that could still grow into a stop string. With a tool-call
// syntax, the text from the syntax's opening on (after any <think> reasoning, which may mention
// it) is held too, as the answer's calls: finish() parses it, and gives as content the text
// around the calls, or all of it where it does not parse.
class TextStream {
 public:
  TextStream(const model::Tokenizer& tokenizer, std::vector<std::string> stops,
             ToolCallSyntax tool_calls = ToolCallSyntax::none);

  // Adds a token; returns the new final content. Sets stopped() when a stop string appeared.
  std::string add(std::int32_t id);
  // Once generation is over: parses the answer's calls, and returns the content not yet
  // returned (the text after or between the calls; all of it where they do not parse).
  std::string finish();
  // The calls finish() parsed: nullopt where the answer has none in the syntax.
  const std::optional<std::vector<ToolCall>>& calls() const { return calls_; }
  bool stopped() const { return stopped_; }
  const std::string& text() const { return emitted_; }  // the content returned so far

 private:
  // The decoded answer, cut at the first stop string (setting stopped_).
  std::string answer();
  // committed_text_ and the text of the ids after committed_ids_.
  std::string decoded() const;
  // Where a new token changed text already returned (a byte token regrouping those before it:
  // Hugging Face's ByteFallback gives one U+FFFD per byte of a run of byte tokens that is not
  // UTF-8 as a whole, so a stray byte undoes a character given before it), the text returned
  // stays: what is decoded from here on starts from it, so the answer goes on rather than
  // stalling on text it can no longer match.
  void commit_returned_text();
  // Where calls may open in `text`: after the reasoning; npos while it is still reasoning.
  static std::size_t calls_search_start(const std::string& text);
  std::string take(const std::string& text, std::size_t end);

  const model::Tokenizer& tokenizer_;
  std::vector<std::string> stops_;
  ToolCallSyntax tool_calls_;
  std::string opening_;                 // tool_calls_opening(tool_calls_)
  std::vector<std::int32_t> kept_ids_;  // the syntax's marker tokens in this vocabulary
  std::vector<std::int32_t> ids_;
  std::string emitted_;
  // The first committed_ids_ ids read as committed_text_, whatever the ids after them decode
  // to: committed each time all of the answer is returned, and by commit_returned_text.
  std::size_t committed_ids_ = 0;
  std::string committed_text_;
  std::string calls_text_;  // the answer from opening_ on, once it appeared
  std::optional<std::vector<ToolCall>> calls_;
  bool stopped_ = false;
};

}  // namespace moed::server
