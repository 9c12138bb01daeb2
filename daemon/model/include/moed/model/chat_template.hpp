#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>

namespace moed::model {

// The template is broken or uses Jinja we do not implement (a server-side problem).
class ChatTemplateError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The template itself refused the conversation via raise_exception() (a client problem, such as
// roles that do not alternate). what() is the template's own message.
class ChatTemplateRejected : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A Hugging Face chat template (tokenizer_config.json's "chat_template", or chat_template.jinja),
// rendered as transformers' apply_chat_template does: Jinja2 with trim_blocks, lstrip_blocks and
// loop controls, raise_exception(), strftime_now() and a tojson that writes Python's json.dumps
// layout. The subset covers the statements, expressions, filters and tests that published MoE
// and Llama-family templates use; anything else fails at parse time naming the line and
// construct, never renders silently wrong.
class ChatTemplate {
 public:
  ChatTemplate(std::string_view source, std::string origin = "chat_template");
  ~ChatTemplate();
  ChatTemplate(ChatTemplate&&) noexcept;
  ChatTemplate& operator=(ChatTemplate&&) noexcept;

  // `context` is the template's global variables: messages, add_generation_prompt, bos_token,
  // eos_token, tools, ... Keys keep their order (dicts print in insertion order, as in Python).
  std::string render(const nlohmann::ordered_json& context) const;

  struct Program;

 private:
  std::unique_ptr<Program> program_;
};

}  // namespace moed::model
