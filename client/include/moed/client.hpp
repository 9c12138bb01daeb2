#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

// libmoed-client: the C++ API over moed's socket. It speaks only the wire protocol (HTTP/1.1 and
// JSON over the Unix socket), so it works against any moed version with the same routes.
namespace moed {

// An error answer from the daemon, in OpenAI's shape: HTTP status, type, the request field at
// fault (param) and a code such as "model_not_found".
class Error : public std::runtime_error {
 public:
  Error(int status, std::string type, std::string message, std::string param = {},
        std::string code = {})
      : std::runtime_error(std::move(message)),
        status_(status),
        type_(std::move(type)),
        param_(std::move(param)),
        code_(std::move(code)) {}
  int status() const { return status_; }
  const std::string& type() const { return type_; }
  const std::string& param() const { return param_; }
  const std::string& code() const { return code_; }

 private:
  int status_;
  std::string type_, param_, code_;
};

// The daemon could not be reached or broke the protocol (status 0).
class ConnectionError : public Error {
 public:
  explicit ConnectionError(std::string message)
      : Error(0, "connection_error", std::move(message)) {}
};

// Sampling and limits shared by completions and chat.
struct GenerationOptions {
  std::int64_t max_tokens = 16;
  double temperature = 1.0;
  double top_p = 1.0;
  std::int32_t top_k = 0;
  std::optional<std::uint64_t> seed;
  std::vector<std::string> stop;
  int logprobs = 0;          // alternatives per token to return (0: no logprobs)
  std::string model;         // "" for the daemon's model
  bool json_object = false;  // the answer is one JSON object (response_format json_object)
  // A JSON Schema's text: the answer is an instance of it (response_format json_schema, strict).
  std::string json_schema;
};

struct CompletionRequest : GenerationOptions {
  std::string prompt;                       // text, or
  std::vector<std::int32_t> prompt_tokens;  // token ids (used when not empty)
};

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

// Rendered by the model's chat template in the daemon.
struct ChatRequest : GenerationOptions {
  std::vector<ChatMessage> messages;
};

struct TokenLogprob {
  std::string token;
  float logprob;
  std::vector<std::pair<std::string, float>> top;
};

struct Completion {
  std::string id;
  std::string text;
  std::string finish_reason;  // "length" or "stop"
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
  std::vector<TokenLogprob> logprobs;
};

struct Health {
  std::string status;  // "ok", "loading", "draining" or "failed"
  std::string model;
  double progress = 0;
  std::string error;
};

class Client {
 public:
  explicit Client(std::string socket_path = "/run/moed/moed.sock", int timeout_ms = 600000);

  Completion complete(const CompletionRequest& request);
  // Streams the completion (Server-Sent Events); on_text gets each piece of text as it comes and
  // may return false to stop early (the daemon then frees the session).
  Completion complete_stream(const CompletionRequest& request,
                             const std::function<bool(std::string_view text)>& on_text);
  // The assistant's reply to a conversation (/v1/chat/completions); text holds its content.
  Completion chat(const ChatRequest& request);
  Completion chat_stream(const ChatRequest& request,
                         const std::function<bool(std::string_view text)>& on_text);
  Health health();
  std::vector<std::string> models();
  std::string metrics();  // Prometheus text

  // Admin calls (root, the daemon's user or its admin group only); answers are JSON text.
  std::string cache();
  // Empty strings and no auto_pin leave a setting as it is; auto_pin is the share of the host
  // budget experts may be pinned automatically (0: off).
  std::string set_cache(const std::string& host_budget, const std::string& policy,
                        const std::string& gpu_budget = {},
                        std::optional<double> auto_pin = std::nullopt);
  std::string pin(int layer, int expert);
  std::string unpin(int layer, int expert);
  std::string experts();
  void trace_start();
  void trace_stop();
  std::string trace_download();
  std::string simulate(const std::vector<std::uint64_t>& blocks);

  // One raw call: method, target and JSON body; returns the body of a 2xx answer, throws Error.
  std::string call(const std::string& method, const std::string& target,
                   const std::string& body = {});

 private:
  Completion stream(const std::string& target, const std::string& body, bool chat,
                    const std::function<bool(std::string_view text)>& on_text);

  std::string socket_path_;
  int timeout_ms_;
};

}  // namespace moed
