#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "moed/memtier/trace.hpp"
#include "moed/server/json_schema.hpp"
#include "moed/server/tool_calls.hpp"

namespace moed::server {

// Request bodies keep their key order: chat templates may print messages or tools as given.
using Body = nlohmann::ordered_json;

// A request the client got wrong. what() reads "field: why" (or just "why" when the body as a
// whole is at fault); field() is OpenAI's "param".
class RequestError : public std::invalid_argument {
 public:
  enum class Kind { invalid, unknown_model, context_length_exceeded };
  RequestError(std::string field, const std::string& why, Kind kind = Kind::invalid);
  const std::string& field() const { return field_; }
  Kind kind() const { return kind_; }

 private:
  std::string field_;
  Kind kind_;
};

// What a request is checked against: the served model and the daemon's limits.
struct ModelLimits {
  std::string model_id;
  std::int64_t vocab_size = 0;
  std::int64_t context = 0;  // max_position_embeddings: prompt + completion tokens
  std::int64_t num_layers = 0;
  std::int64_t num_experts = 0;
  std::int64_t default_max_tokens = 16;         // /v1/completions' (OpenAI's)
  std::int64_t default_chat_max_tokens = 2048;  // /v1/chat/completions'; 0: none
};

// A validated /v1/completions or /v1/chat/completions request.
struct GenerationParams {
  std::vector<std::int32_t> prompt;
  // The client's, or (max_tokens_given false) the daemon's default, which the scheduler cuts to
  // the context and the KV room; 0 there: none.
  std::int64_t max_tokens = 0;
  bool max_tokens_given = false;
  float temperature = 1.0f;
  float top_p = 1.0f;
  std::int32_t top_k = 0;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  std::vector<std::pair<std::int32_t, float>> logit_bias;
  std::optional<std::uint64_t> seed;  // none: the daemon draws one
  int top_logprobs = 0;
  std::vector<std::string> stops;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: a last chunk with the usage
  bool chat = false;
  bool logprobs = false;
  // Chat: the shape the calls the model writes come back in (the older "functions" offered:
  // function_call; "parallel_tool_calls": false: only the first).
  CallsAs calls_as = CallsAs::tool_calls;
  // response_format {"type": "json_object"}: the answer is one JSON object.
  bool json_object = false;
  // response_format {"type": "json_schema"}: the answer is an instance of this schema.
  std::shared_ptr<const CompiledSchema> json_schema;
  // Chat: tool_choice "required" (every tool offered) or a named tool (or function_call
  // naming a function): the answer is one call to one of these. Empty: no call is forced.
  std::vector<std::string> forced_tools;
  // What each forced tool's arguments follow: its parameters, or any object.
  std::vector<std::shared_ptr<const CompiledSchema>> forced_tool_schemas;
  // The call forced is a named one (not "required"): OpenAI then answers finish_reason "stop".
  bool forced_by_name = false;
};

// A body that must be a JSON object, nested no deeper than this.
inline constexpr int kMaxBodyDepth = 64;
Body parse_body(std::string_view text);

// /v1/completions. `encode` turns a text prompt into token ids (the model's tokenizer).
using Encoder = std::function<std::vector<std::int32_t>(const std::string&)>;
GenerationParams parse_completion(const Body& body, const ModelLimits& limits,
                                  const Encoder& encode);

// /v1/chat/completions, in two steps around the chat template: the template's context from the
// body's messages (text content parts joined) and tools, then the rest of the request with the
// rendered and encoded prompt.
Body chat_context(const Body& body, const std::string& bos_token, const std::string& eos_token);
GenerationParams parse_chat(const Body& body, std::vector<std::int32_t> prompt,
                            const ModelLimits& limits);

// POST /admin/cache: the fields given, not yet applied; "" where a field is absent (an empty
// host_budget changes nothing).
struct CacheSettings {
  std::string host_budget;
  std::string policy;
  std::optional<double> auto_pin;  // share of the host budget pinned automatically; 0: off
};
CacheSettings parse_cache_settings(const Body& body);

// POST /admin/pin and /admin/unpin.
struct ExpertRef {
  std::int32_t layer = 0;
  std::int32_t expert = 0;
};
ExpertRef parse_expert_ref(const Body& body, const ModelLimits& limits);

// POST /admin/trace/simulate: the cache sizes in expert blocks ("blocks", required), and as
// `moectl trace simulate` takes them: "auto_pin" (share of the cache, 0..1), "prefetch" (layers
// ahead, 0..2), "predictor" ("transition" or "previous"), "prefetch_width" and "reads_per_layer".
struct SimulateRequest {
  std::vector<std::uint64_t> blocks;
  double auto_pin_share = 0;
  memtier::PrefetchOptions prefetch{.horizons = 0};
};
SimulateRequest parse_simulate_request(const Body& body);

}  // namespace moed::server
