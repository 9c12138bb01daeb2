#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "moed/engine/engine.hpp"
#include "moed/engine/scheduler.hpp"
#include "moed/model/chat_template.hpp"
#include "moed/model/tokenizer.hpp"
#include "moed/server/config.hpp"
#include "moed/server/http_server.hpp"
#include "moed/server/json_constraint.hpp"
#include "moed/server/request_parse.hpp"
#include "moed/server/tool_calls.hpp"

namespace moed::server {

// The daemon's request handling, independent of the transport: OpenAI routes, health,
// metrics and admin. Loads the model in the background, so /health answers at once.
class Service {
 public:
  explicit Service(Config config);
  ~Service();

  void start_loading();  // background; progress and errors show in /health
  bool wait_ready();     // blocks until loaded (true) or failed (false)
  bool loading() const;  // the load has neither finished nor failed
  std::string load_error() const;
  void handle(const Request& request, const Peer& peer, ResponseWriter& writer);
  // SIGHUP: budgets, policy, limits. False, changing nothing, while the model is still loading.
  bool reload(const Config& config);
  void drain();  // SIGTERM: no new requests, finish running ones
  std::string status_line() const;
  // Once loaded: the kernels that compute the model (path, formats, how streamed experts run).
  std::string kernels_line() const;

 private:
  // A validated generation request and how to answer it.
  struct Generation {
    engine::GenerationRequest request;
    std::vector<std::string> stops;
    bool stream = false;
    bool include_usage = false;  // streams end with a chunk of usage and no choices
    bool chat = false;           // chat.completion shapes instead of text_completion
    bool logprobs = false;       // return the sampled tokens' logprobs
    // Calls in this syntax are parsed out of the answer (tools were offered), and given back so.
    ToolCallSyntax tool_calls = ToolCallSyntax::none;
    CallsAs calls_as = CallsAs::tool_calls;
    bool json_object = false;  // the answer is constrained to one JSON object
    std::shared_ptr<const CompiledSchema> json_schema;  // ... to an instance of this schema
    std::vector<std::string> forced_tools;              // the answer is a call to one of these
    std::vector<std::shared_ptr<const CompiledSchema>> forced_tool_schemas;  // with these arguments
    bool forced_by_name = false;  // finish_reason "stop" for its call, as OpenAI
  };
  void require_serving() const;
  // A constraint (a JSON answer, a forced call) ends its answer with an end-of-generation token.
  void require_end_token(const char* field) const;
  ModelLimits limits() const;
  static Generation to_generation(GenerationParams params);
  void completions(const Request& request, ResponseWriter& writer);
  void chat_completions(const Request& request, ResponseWriter& writer);
  void generate(Generation g, ResponseWriter& writer);
  void health(ResponseWriter& writer);
  void models(ResponseWriter& writer);
  void model(std::string_view id, ResponseWriter& writer);
  nlohmann::json model_object() const;
  void metrics(ResponseWriter& writer);
  void admin(const Request& request, const Peer& peer, ResponseWriter& writer);
  bool is_admin(const Peer& peer) const;
  void apply_memory_settings(const Config& config);

  Config config_;
  std::string model_id_;
  std::chrono::system_clock::time_point started_;
  std::thread loader_;
  mutable std::mutex mutex_;
  std::atomic<double> progress_{0.0};
  std::atomic<bool> ready_{false};
  std::atomic<bool> draining_{false};
  std::string load_error_;
  std::unique_ptr<engine::Engine> engine_;
  std::unique_ptr<engine::Scheduler> scheduler_;
  std::optional<model::Tokenizer> tokenizer_;
  std::shared_ptr<const ConstraintVocabulary> constraint_vocabulary_;
  std::optional<model::ChatTemplate> chat_template_;
  std::string chat_template_error_;                         // why the template could not be parsed
  ToolCallSyntax tool_call_syntax_ = ToolCallSyntax::none;  // the chat template's
  std::optional<CallForm> call_form_;  // how the template writes a call, to force one
  std::string kernels_;                // Engine::matmul_implementation(), taken at load
  // Under mutex_: admin calls on several connections run at once.
  std::optional<std::filesystem::path> trace_path_;
  std::atomic<std::uint64_t> requests_{0}, errors_{0}, client_disconnects_{0};
};

}  // namespace moed::server
