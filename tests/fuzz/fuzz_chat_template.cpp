// Chat templates: input = template source, NUL, context JSON. An object context is the
// template's globals as given; anything else is taken as the messages list, with the globals
// the daemon adds (text that is not JSON: one user message). Parsing and rendering may refuse with
// ChatTemplateError or ChatTemplateRejected, nothing else.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "fuzz_input.hpp"
#include "moed/model/chat_template.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto parts = moed::fuzz::split_parts(data, size, 2);
  std::optional<moed::model::ChatTemplate> chat_template;
  try {
    chat_template.emplace(parts[0]);
  } catch (const moed::model::ChatTemplateError&) {
    return 0;
  }
  nlohmann::ordered_json context;
  try {
    context = nlohmann::ordered_json::parse(parts[1]);
  } catch (const nlohmann::ordered_json::exception&) {
    context = nlohmann::ordered_json::array({{{"role", "user"}, {"content", "Hello"}}});
  }
  if (!context.is_object())
    context = {{"messages", context},
               {"add_generation_prompt", true},
               {"bos_token", "<s>"},
               {"eos_token", "</s>"}};
  try {
    (void)chat_template->render(context);
  } catch (const moed::model::ChatTemplateError&) {
  } catch (const moed::model::ChatTemplateRejected&) {
  }
  return 0;
}
