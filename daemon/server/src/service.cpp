#include "moed/server/service.hpp"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "moed/memtier/trace.hpp"
#include "moed/server/request_parse.hpp"
#include "moed/server/text_stream.hpp"

namespace moed::server {
namespace {

// Whether a chat template writes the tools a request offers into the prompt: a probe tool's
// name appears when a one-message conversation is rendered with it. A template that cannot
// render that conversation is given the benefit of the doubt.
bool renders_tools(const model::ChatTemplate& chat_template) {
  constexpr std::string_view kProbe = "moed_probe_tool_name";
  const nlohmann::ordered_json context = {
      {"messages", {{{"role", "user"}, {"content", "Hello"}}}},
      {"add_generation_prompt", true},
      {"bos_token", ""},
      {"eos_token", ""},
      {"tools",
       {{{"type", "function"},
         {"function",
          {{"name", kProbe},
           {"description", "A probe"},
           {"parameters",
            {{"type", "object"}, {"properties", nlohmann::ordered_json::object()}}}}}}}}};
  try {
    return chat_template.render(context).find(kProbe) != std::string::npos;
  } catch (const model::ChatTemplateError&) {
    return true;
  } catch (const model::ChatTemplateRejected&) {
    return true;
  }
}

using json = nlohmann::json;

// A client error with the OpenAI error shape; `param` names the request field at fault.
struct ApiError {
  ApiError(http::status s, std::string m, std::string t = "invalid_request_error",
           std::string p = {}, std::string c = {})
      : status(s),
        message(std::move(m)),
        type(std::move(t)),
        param(std::move(p)),
        code(std::move(c)) {}
  http::status status;
  std::string message;
  std::string type;
  std::string param;
  std::string code;
  std::string allow;  // a 405's Allow header: the methods the route takes (RFC 9110, 15.5.6)
};

// Model output can hold any bytes; invalid UTF-8 becomes U+FFFD rather than an exception.
std::string dump(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

Response json_response(http::status status, const json& body) {
  Response r{status, 11};
  r.set(http::field::content_type, "application/json");
  r.body() = dump(body);
  return r;
}

Response error_response(const ApiError& e) {
  json error = {{"message", e.message}, {"type", e.type}, {"param", nullptr}, {"code", nullptr}};
  if (!e.param.empty()) error["param"] = e.param;
  if (!e.code.empty()) error["code"] = e.code;
  Response response = json_response(e.status, {{"error", error}});
  if (!e.allow.empty()) response.set(http::field::allow, e.allow);
  return response;
}

// How often a request's handler checks that its client is still connected.
constexpr std::chrono::milliseconds kClientCheck{200};

// The request's fault, found by request_parse.cpp: a 400 naming the field (404 for a model that
// is not served, as OpenAI answers), with OpenAI's codes where clients look for them (a client
// may trim its history on context_length_exceeded).
ApiError api_error(const RequestError& e) {
  switch (e.kind()) {
    case RequestError::Kind::unknown_model:
      return ApiError{http::status::not_found, e.what(), "invalid_request_error", e.field(),
                      "model_not_found"};
    case RequestError::Kind::context_length_exceeded:
      return ApiError{http::status::bad_request, e.what(), "invalid_request_error", e.field(),
                      "context_length_exceeded"};
    case RequestError::Kind::invalid:
      break;
  }
  return ApiError{http::status::bad_request, e.what(), "invalid_request_error", e.field()};
}

// Text a request sends that the served tokenizer cannot encode is the request's fault.
std::vector<std::int32_t> encode_field(const model::Tokenizer& tokenizer, std::string_view text,
                                       bool add_special_tokens, const char* field) {
  try {
    return tokenizer.encode(text, add_special_tokens);
  } catch (const model::UnencodableText& e) {
    throw RequestError(field, e.what());
  }
}

// The target's path, with runs of slashes taken as one and no slash at the end, as nginx merges
// them: a client whose base URL ends in a slash asks for /v1//chat/completions.
std::string path_of(const Request& request) {
  const std::string target(request.target());
  const std::string_view raw = std::string_view(target).substr(0, target.find('?'));
  std::string path;
  for (const char c : raw)
    if (c != '/' || path.empty() || path.back() != '/') path += c;
  if (path.size() > 1 && path.back() == '/') path.pop_back();
  return path;
}

std::string completion_id(const char* prefix) {
  static std::atomic<std::uint64_t> next{1};
  static const std::uint64_t salt = std::random_device{}();
  char id[48];
  std::snprintf(id, sizeof id, "%s%016llx%06llx", prefix, static_cast<unsigned long long>(salt),
                static_cast<unsigned long long>(next++));
  return id;
}

}  // namespace

Service::Service(Config config)
    : config_(std::move(config)), started_(std::chrono::system_clock::now()) {
  model_id_ = config_.model_name.empty() ? std::filesystem::path(config_.model).filename().string()
                                         : config_.model_name;
  if (model_id_.empty())
    model_id_ = std::filesystem::path(config_.model).parent_path().filename().string();
}

Service::~Service() {
  if (loader_.joinable()) loader_.join();
  scheduler_.reset();
}

void Service::start_loading() {
  loader_ = std::thread([this] {
    try {
      auto tokenizer = model::load_tokenizer(config_.model);
      std::string template_source = tokenizer.chat_template();
      std::string template_origin =
          (std::filesystem::path(config_.model) / "chat template").string();
      if (!config_.chat_template.empty()) {
        std::ifstream in(config_.chat_template, std::ios::binary);
        if (!in)
          throw std::runtime_error("model.chat_template: cannot read '" + config_.chat_template +
                                   "'");
        std::ostringstream source;
        source << in.rdbuf();
        template_source = source.str();
        template_origin = config_.chat_template;
      }
      std::optional<model::ChatTemplate> chat_template;
      std::string chat_template_error;
      if (!template_source.empty()) {
        try {
          chat_template.emplace(template_source, template_origin);
          // A request's tools reach the model only through the template (DeepSeek-V3's own
          // renders earlier calls and results, not the tools list).
          if (!renders_tools(*chat_template))
            std::fprintf(stderr,
                         "moed: note: the chat template (%s) does not render `tools`: the tools a "
                         "request offers will not reach the model; give a template that does with "
                         "model.chat_template or --chat-template\n",
                         template_origin.c_str());
        } catch (const model::ChatTemplateError& e) {
          chat_template_error = e.what();
          std::fprintf(stderr, "moed: warning: %s; /v1/chat/completions will refuse requests\n",
                       e.what());
        }
      }
      engine::EngineOptions options;
      options.threads = config_.threads;
      options.policy = config_.policy;
      options.reader.kind =
          config_.reader == "pread" ? memtier::ReaderKind::pread : memtier::ReaderKind::io_uring;
      options.reader.queue_depth = config_.queue_depth;
      options.prefetch = config_.prefetch;
      options.prefetch_horizon = config_.prefetch_horizon;
      options.ring_sections = config_.ring_sections;
      options.kv_dtype = engine::parse_kv_dtype(config_.kv_dtype);
      options.host_budget = engine::HostBudget::parse(config_.host_budget);
      options.on_progress = [this](double p) { progress_ = p; };
      auto engine = std::make_unique<engine::Engine>(config_.model, options);
      engine->host_tier().set_auto_pin(config_.auto_pin);
      engine->add_stop_tokens(tokenizer.end_of_generation_ids());
      std::string kernels = engine->matmul_implementation();
      auto scheduler = std::make_unique<engine::Scheduler>(
          *engine,
          engine::SchedulerOptions{config_.max_queue, config_.max_batch, config_.prefill_chunk});
      const auto& spec = engine->spec();
      auto json_vocabulary = constraint_vocabulary(tokenizer, spec.vocab_size, spec.eos_token_ids);
      const ToolCallSyntax syntax =
          chat_template ? tool_call_syntax(template_source) : ToolCallSyntax::none;
      std::lock_guard lock(mutex_);
      constraint_vocabulary_ = std::move(json_vocabulary);
      call_form_ = call_form(syntax, template_source);
      tokenizer_.emplace(std::move(tokenizer));
      tool_call_syntax_ = syntax;
      chat_template_ = std::move(chat_template);
      chat_template_error_ = std::move(chat_template_error);
      kernels_ = std::move(kernels);
      engine_ = std::move(engine);
      scheduler_ = std::move(scheduler);
      progress_ = 1.0;
      ready_ = true;
    } catch (const std::exception& e) {
      std::lock_guard lock(mutex_);
      load_error_ = e.what();
    }
  });
}

bool Service::wait_ready() {
  if (loader_.joinable()) loader_.join();
  return ready_;
}

bool Service::loading() const {
  return !ready_ && load_error().empty();
}

std::string Service::load_error() const {
  std::lock_guard lock(mutex_);
  return load_error_;
}

std::string Service::status_line() const {
  if (!ready_)
    return "loading " + model_id_ + " (" + std::to_string(static_cast<int>(progress_ * 100)) + "%)";
  const auto c = scheduler_->counters();
  return "serving " + model_id_ + ": " + std::to_string(c.active) + " active, " +
         std::to_string(c.queued) + " queued";
}

std::string Service::kernels_line() const {
  std::lock_guard lock(mutex_);
  return kernels_;
}

void Service::apply_memory_settings(const Config& config) {
  scheduler_->call([&] {
    if (!config.host_budget.empty())
      engine_->set_host_budget(engine::HostBudget::parse(config.host_budget));
    engine_->set_policy(config.policy);
    engine_->host_tier().set_auto_pin(config.auto_pin);
  });
}

bool Service::reload(const Config& config) {
  if (!ready_) return false;
  apply_memory_settings(config);
  scheduler_->set_max_queue(config.max_queue);
  std::lock_guard lock(mutex_);
  config_.host_budget = config.host_budget;
  config_.policy = config.policy;
  config_.auto_pin = config.auto_pin;
  config_.max_queue = config.max_queue;
  config_.default_max_tokens = config.default_max_tokens;
  config_.default_chat_max_tokens = config.default_chat_max_tokens;
  config_.admin_group = config.admin_group;
  return true;
}

void Service::drain() {
  draining_ = true;
  if (ready_) scheduler_->drain();
}

bool Service::is_admin(const Peer& peer) const {
  if (!peer.has_credentials) return false;
  if (peer.uid == 0 || peer.uid == ::geteuid()) return true;
  std::string group;
  {
    std::lock_guard lock(mutex_);
    group = config_.admin_group;
  }
  if (group.empty()) return false;
  // Connection threads call this at once: the reentrant lookups, each into its own buffer.
  std::vector<char> buffer(16384);
  ::group group_entry{};
  ::group* g = nullptr;
  while (::getgrnam_r(group.c_str(), &group_entry, buffer.data(), buffer.size(), &g) == ERANGE)
    buffer.resize(buffer.size() * 2);
  if (!g) return false;
  const gid_t admin_gid = g->gr_gid;
  if (peer.gid == admin_gid) return true;
  ::passwd user_entry{};
  ::passwd* pw = nullptr;
  while (::getpwuid_r(peer.uid, &user_entry, buffer.data(), buffer.size(), &pw) == ERANGE)
    buffer.resize(buffer.size() * 2);
  if (!pw) return false;
  int count = 64;
  std::vector<gid_t> groups(static_cast<std::size_t>(count));
  while (::getgrouplist(pw->pw_name, pw->pw_gid, groups.data(), &count) < 0) {
    if (static_cast<std::size_t>(count) <= groups.size()) return false;  // failed, not too few
    groups.resize(static_cast<std::size_t>(count));  // count now says how many there are
  }
  groups.resize(static_cast<std::size_t>(count));
  return std::find(groups.begin(), groups.end(), admin_gid) != groups.end();
}

void Service::handle(const Request& request, const Peer& peer, ResponseWriter& writer) {
  ++requests_;
  const std::string path = path_of(request);
  try {
    // HEAD is a GET whose body the transport leaves out (RFC 9110, 9.3.2).
    const bool get = request.method() == http::verb::get || request.method() == http::verb::head;
    const bool post = request.method() == http::verb::post;
    if (path == "/health" && get) return health(writer);
    if (path == "/metrics" && get) return metrics(writer);
    if (path == "/v1/models" && get) return models(writer);
    if (path.starts_with("/v1/models/") && get) return model(path.substr(11), writer);
    if (path == "/v1/completions" && post) return completions(request, writer);
    if (path == "/v1/chat/completions" && post) return chat_completions(request, writer);
    if (path.starts_with("/admin/")) return admin(request, peer, writer);
    const bool gets = path == "/health" || path == "/metrics" || path == "/v1/models" ||
                      path.starts_with("/v1/models/");
    if (gets || path == "/v1/completions" || path == "/v1/chat/completions") {
      ApiError refusal{http::status::method_not_allowed,
                       std::string(request.method_string()) + " is not allowed on " + path};
      refusal.allow = gets ? "GET, HEAD" : "POST";
      throw refusal;
    }
    throw ApiError{http::status::not_found,
                   "no route " + std::string(request.method_string()) + " " + path};
  } catch (const ApiError& e) {
    ++errors_;
    writer.send(error_response(e));
  } catch (const RequestError& e) {
    ++errors_;
    writer.send(error_response(api_error(e)));
  }
}

void Service::health(ResponseWriter& writer) {
  // One read of each flag: the loader may set ready_ between two reads, and a 200 must never
  // carry "loading".
  const std::string error = load_error();
  const bool draining = draining_;
  const bool ready = ready_;
  const char* status = !error.empty() ? "failed" : draining ? "draining" : ready ? "ok" : "loading";
  json body = {
      {"status", status},
      {"model", model_id_},
      {"progress", progress_.load()},
      {"uptime_s",
       std::chrono::duration<double>(std::chrono::system_clock::now() - started_).count()}};
  if (!error.empty()) body["error"] = error;
  writer.send(json_response(
      ready && !draining ? http::status::ok : http::status::service_unavailable, body));
}

json Service::model_object() const {
  const auto created =
      std::chrono::duration_cast<std::chrono::seconds>(started_.time_since_epoch()).count();
  return {{"id", model_id_}, {"object", "model"}, {"created", created}, {"owned_by", "moed"}};
}

void Service::models(ResponseWriter& writer) {
  writer.send(json_response(http::status::ok,
                            {{"object", "list"}, {"data", json::array({model_object()})}}));
}

// OpenAI's GET /v1/models/{model} (models.retrieve in its client libraries); an id with a slash
// may come percent-encoded.
void Service::model(std::string_view id, ResponseWriter& writer) {
  std::string decoded;
  for (std::size_t i = 0; i < id.size(); ++i) {
    if (id[i] == '%' && i + 2 < id.size() && std::isxdigit(static_cast<unsigned char>(id[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(id[i + 2]))) {
      decoded += static_cast<char>(std::stoi(std::string(id.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else {
      decoded += id[i];
    }
  }
  if (decoded != model_id_)
    throw ApiError{
        http::status::not_found,
        "The model '" + decoded + "' does not exist; this daemon serves '" + model_id_ + "'",
        "invalid_request_error", "model", "model_not_found"};
  writer.send(json_response(http::status::ok, model_object()));
}

void Service::require_serving() const {
  const bool ready = ready_;
  const bool draining = draining_;
  if (ready && !draining) return;
  const std::string error = load_error();
  throw ApiError{http::status::service_unavailable,
                 draining         ? "the daemon is shutting down"
                 : !error.empty() ? "the model failed to load: " + error
                                  : "the model is still loading (" +
                                        std::to_string(static_cast<int>(progress_ * 100)) + "%)",
                 "server_unavailable"};
}

ModelLimits Service::limits() const {
  std::lock_guard lock(mutex_);
  return {model_id_,
          engine_->spec().vocab_size,
          engine_->spec().max_position_embeddings,
          engine_->spec().num_layers,
          engine_->spec().num_experts,
          config_.default_max_tokens,
          config_.default_chat_max_tokens};
}

void Service::require_end_token(const char* field) const {
  if (engine_->spec().eos_token_ids.empty())
    throw RequestError(field,
                       "a constrained answer must end where its format closes, and this model "
                       "has no end-of-generation token");
}

Service::Generation Service::to_generation(GenerationParams params) {
  Generation g;
  g.request.prompt = std::move(params.prompt);
  g.request.max_tokens = params.max_tokens;
  g.request.max_tokens_given = params.max_tokens_given;
  g.request.sampling.temperature = params.temperature;
  g.request.sampling.top_p = params.top_p;
  g.request.sampling.top_k = params.top_k;
  g.request.sampling.presence_penalty = params.presence_penalty;
  g.request.sampling.frequency_penalty = params.frequency_penalty;
  g.request.sampling.logit_bias = std::move(params.logit_bias);
  g.request.sampling.seed = params.seed ? *params.seed : std::random_device{}();
  g.request.top_logprobs = params.top_logprobs;
  g.stops = std::move(params.stops);
  g.stream = params.stream;
  g.include_usage = params.include_usage;
  g.chat = params.chat;
  g.logprobs = params.logprobs;
  g.calls_as = params.calls_as;
  g.json_object = params.json_object;
  g.json_schema = std::move(params.json_schema);
  g.forced_tools = std::move(params.forced_tools);
  g.forced_tool_schemas = std::move(params.forced_tool_schemas);
  g.forced_by_name = params.forced_by_name;
  return g;
}

void Service::completions(const Request& request, ResponseWriter& writer) {
  require_serving();
  const Body body = parse_body(request.body());
  GenerationParams params = parse_completion(body, limits(), [&](const std::string& text) {
    return encode_field(*tokenizer_, text, true, "prompt");
  });
  generate(to_generation(std::move(params)), writer);
}

void Service::chat_completions(const Request& request, ResponseWriter& writer) {
  require_serving();
  const Body body = parse_body(request.body());
  if (!chat_template_) {
    throw ApiError{http::status::bad_request,
                   chat_template_error_.empty()
                       ? "the model '" + model_id_ +
                             "' has no chat template (tokenizer_config.json has no "
                             "chat_template); use /v1/completions or set model.chat_template in "
                             "the config"
                       : "the model's chat template cannot be used: " + chat_template_error_,
                   "invalid_request_error", "messages", "no_chat_template"};
  }
  const Body context = chat_context(body, tokenizer_->bos_token(), tokenizer_->eos_token());
  std::string prompt;
  try {
    prompt = chat_template_->render(context);
  } catch (const model::ChatTemplateRejected& e) {
    throw RequestError("messages", e.what());
  } catch (const model::ChatTemplateError& e) {
    // The template parsed at load, so what fails now is this conversation's shape (a null
    // content where the template adds strings, say), as transformers would raise it.
    throw RequestError("messages",
                       std::string("the chat template cannot render these messages: ") + e.what());
  }
  // The template writes BOS and the other special tokens itself.
  GenerationParams params =
      parse_chat(body, encode_field(*tokenizer_, prompt, false, "messages"), limits());
  Generation g = to_generation(std::move(params));
  if (context.contains("tools")) g.tool_calls = tool_call_syntax_;
  if (!g.forced_tools.empty()) {
    const char* const choice_field = body.contains("tool_choice") ? "tool_choice" : "function_call";
    if (!call_form_)
      throw RequestError(choice_field,
                         "the model's chat template writes tool calls in no syntax moed knows "
                         "(Hermes, Mistral, DeepSeek-V3), so it cannot force one");
    require_end_token(choice_field);
    // The syntax's marker tokens are written as themselves (a tokenizer may mark them special,
    // and the model wrote them as one token in training); the text between them as any tokens
    // that spell it, so that the model may join it to the name or the arguments as it would.
    auto literal = [&](OutputPattern& pattern, std::string_view text) -> OutputPattern& {
      while (!text.empty()) {
        std::size_t at = text.size();
        std::string_view marker;
        std::int32_t marker_id = -1;
        for (const auto candidate : tool_call_tokens(tool_call_syntax_))
          if (const std::size_t found = text.find(candidate); found < at)
            if (const auto id = tokenizer_->token_id(candidate)) {
              at = found;
              marker = candidate;
              marker_id = *id;
            }
        pattern.literal(std::string(text.substr(0, at)));
        if (marker_id < 0) break;
        pattern.literal(std::string(marker), {marker_id});
        text.remove_prefix(at + marker.size());
      }
      return pattern;
    };
    auto pattern = std::make_shared<OutputPattern>();
    literal(*pattern, call_form_->before_name).choice(g.forced_tools);
    literal(*pattern, call_form_->before_arguments).json_schema(std::move(g.forced_tool_schemas));
    literal(*pattern, call_form_->after_arguments);
    g.request.sampling.constraint =
        std::make_shared<PatternConstraint>(constraint_vocabulary_, std::move(pattern));
  }
  generate(std::move(g), writer);
}

void Service::generate(Generation g, ResponseWriter& writer) {
  // The tokens before the next one, which its text is read after (see token_text).
  const auto& prompt = g.request.prompt;
  std::vector<std::int32_t> recent(prompt.end() - std::min<std::ptrdiff_t>(prompt.size(), 4),
                                   prompt.end());
  if (g.json_object || g.json_schema) {
    require_end_token("response_format");
    g.request.sampling.constraint =
        g.json_schema ? json_schema_constraint(constraint_vocabulary_, std::move(g.json_schema))
                      : json_object_constraint(constraint_vocabulary_);
  }
  std::shared_ptr<engine::Session> session;
  try {
    session = scheduler_->submit(std::move(g.request));
  } catch (const engine::QueueFull& e) {
    throw ApiError{http::status::service_unavailable, e.what(), "server_overloaded"};
  } catch (const engine::InsufficientMemory& e) {
    throw ApiError{http::status::service_unavailable, e.what(), "insufficient_memory"};
  } catch (const std::invalid_argument& e) {
    throw ApiError{http::status::bad_request, e.what()};
  } catch (const std::runtime_error& e) {
    throw ApiError{http::status::service_unavailable, e.what(), "server_unavailable"};
  }
  // Whatever ends this call (an answer, a client gone, an exception) ends the sequence too, or
  // it would decode for nobody to max_tokens, holding its KV and a batch slot. Cancelling one
  // that has finished does nothing.
  struct CancelOnExit {
    engine::Session& session;
    ~CancelOnExit() { session.cancel(); }
  } cancel_on_exit{*session};

  const std::string id = completion_id(g.chat ? "chatcmpl-" : "cmpl-");
  const char* object = g.chat ? "chat.completion" : "text_completion";
  const auto created = std::chrono::duration_cast<std::chrono::seconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count();
  TextStream text(*tokenizer_, g.stops, g.tool_calls);
  // Completions: OpenAI's legacy shape (parallel lists). Chat: one entry per token with its
  // text, bytes and alternatives.
  auto empty_logprobs = [&] {
    return g.chat ? json{{"content", json::array()}}
                  : json{{"tokens", json::array()},
                         {"token_logprobs", json::array()},
                         {"top_logprobs", json::array()},
                         {"text_offset", json::array()}};
  };
  // A token's text as it adds to the answer, as OpenAI gives it (" world", not "world" or
  // "\u2581world"): decoded after the few tokens before it and less their text, as decoders strip
  // or add a space at the start of what they decode. An id past the tokenizer's vocabulary,
  // which a padded embedding may sample, adds none; one that completes a character split over
  // byte tokens gives the character.
  std::string recent_text;
  bool recent_decoded = false;
  auto token_text = [&](std::int32_t token) {
    if (!recent_decoded) {
      recent_text = tokenizer_->decode(recent, false);
      recent_decoded = true;
    }
    std::vector<std::int32_t> ids = recent;
    ids.push_back(token);
    const std::string text = tokenizer_->decode(ids, false);
    const auto common =
        std::mismatch(text.begin(), text.end(), recent_text.begin(), recent_text.end());
    return std::string(common.first, text.end());
  };
  auto advance = [&](std::int32_t token) {
    recent.push_back(token);
    if (recent.size() > 4) recent.erase(recent.begin());
    recent_decoded = false;
  };
  auto token_entry = [&](std::int32_t token, float logprob) {
    const std::string piece = token_text(token);
    json bytes = json::array();
    for (const char c : piece) bytes.push_back(static_cast<unsigned char>(c));
    return json{{"token", piece}, {"logprob", logprob}, {"bytes", bytes}};
  };
  // text_offset: where each token's text starts in the answer, in characters, as OpenAI counts.
  std::size_t offset = 0;
  auto add_logprobs = [&](const engine::TokenEvent& event, json& into) {
    if (g.chat) {
      json entry = token_entry(event.id, event.logprob);
      entry["top_logprobs"] = json::array();
      for (const auto& [alt, lp] : event.top) entry["top_logprobs"].push_back(token_entry(alt, lp));
      into["content"].push_back(entry);
      return;
    }
    const std::string piece = token_text(event.id);
    into["tokens"].push_back(piece);
    into["token_logprobs"].push_back(event.logprob);
    // OpenAI's completions always list the sampled token among the top ones (up to logprobs + 1).
    json top = json::object();
    for (const auto& [alt, lp] : event.top) top[token_text(alt)] = lp;
    if (!top.contains(piece)) top[piece] = event.logprob;
    into["top_logprobs"].push_back(top);
    into["text_offset"].push_back(offset);
    offset += static_cast<std::size_t>(
        std::count_if(piece.begin(), piece.end(), [](char c) { return (c & 0xC0) != 0x80; }));
  };
  json logprobs = empty_logprobs();
  std::int64_t completion_tokens = 0;
  auto usage = [&] {
    return json{{"prompt_tokens", session->prompt_tokens()},
                {"completion_tokens", completion_tokens},
                {"total_tokens", session->prompt_tokens() + completion_tokens}};
  };
  auto finish_reason = [&]() -> json {
    // OpenAI's: a call that a named tool_choice forced ends with "stop" (vLLM answers alike).
    if (text.calls() && g.forced_by_name) return "stop";
    if (text.calls()) return g.calls_as == CallsAs::function_call ? "function_call" : "tool_calls";
    if (text.stopped()) return "stop";
    const auto r = session->finish_reason();
    return r == engine::FinishReason::length ? "length"
           : r == engine::FinishReason::eos  ? "stop"
                                             : json(nullptr);
  };
  // One choice: a text piece (completions), a message (chat) or a delta (chat stream).
  auto choice = [&](const std::string& piece, const json& lp, const json& reason) {
    json c = {{"index", 0}, {"logprobs", lp}, {"finish_reason", reason}};
    if (!g.chat) {
      c["text"] = piece;
    } else if (g.stream) {
      c["delta"] = piece.empty() && !reason.is_null() ? json::object() : json{{"content", piece}};
    } else {
      c["message"] = {{"role", "assistant"}, {"content", piece}};
    }
    return c;
  };
  // With stream_options.include_usage every chunk carries "usage": null and a last one, with no
  // choices, the usage (OpenAI's shape); without it no chunk carries usage.
  auto envelope = [&](const json& c) {
    json e{{"id", id},
           {"object", g.chat && g.stream ? "chat.completion.chunk" : object},
           {"created", created},
           {"model", model_id_},
           {"choices", c.is_null() ? json::array() : json::array({c})}};
    if (g.include_usage) e["usage"] = nullptr;
    return e;
  };

  // The client is checked every kClientCheck while tokens are awaited or flow, so the work of
  // one that closed its connection (or stopped reading: see HttpOptions::send_timeout_ms) is
  // cancelled at the scheduler's next step, whether it streams or not.
  bool client_gone = false;
  auto next_check = std::chrono::steady_clock::now() + kClientCheck;
  auto next_token = [&](engine::TokenEvent& event) {  // false: the stream ended or the client left
    while (true) {
      if (std::chrono::steady_clock::now() >= next_check) {
        if (!writer.client_connected()) {
          client_gone = true;
          return false;
        }
        next_check = std::chrono::steady_clock::now() + kClientCheck;
      }
      const auto next = session->next_for(event, kClientCheck);
      if (next != engine::Session::Next::waiting) return next == engine::Session::Next::token;
    }
  };
  auto forget_client = [&] {
    // Counted first: a client that reads moed_active_sessions 0 must see its disconnect counted.
    ++client_disconnects_;
    session->cancel();  // frees the sequence at the scheduler's next step
  };

  if (g.stream) {
    if (!writer.start_stream(http::status::ok, "text/event-stream")) {
      forget_client();
      return;
    }
    auto send = [&](const json& chunk) {
      return writer.write_chunk("data: " + dump(chunk) + "\n\n");
    };
    if (g.chat) {  // the first chunk announces the role
      json first = choice("", nullptr, nullptr);
      first["delta"] = {{"role", "assistant"}, {"content", ""}};
      client_gone = !send(envelope(first));
    }
    // A token whose text is held (an incomplete character, a tail that may begin a stop string
    // or a tool call) sends no chunk of its own, as OpenAI sends none without text: its logprobs
    // wait here for the next chunk that has text, or for the last.
    json pending_logprobs = nullptr;
    engine::TokenEvent event;
    while (!client_gone && next_token(event)) {
      ++completion_tokens;
      const std::string delta = text.add(event.id);
      if (g.logprobs) {
        if (pending_logprobs.is_null()) pending_logprobs = empty_logprobs();
        add_logprobs(event, pending_logprobs);
        advance(event.id);
      }
      if (!delta.empty()) {
        if (!send(envelope(choice(delta, pending_logprobs, nullptr)))) client_gone = true;
        pending_logprobs = nullptr;
      }
      if (text.stopped()) {  // tokens past the stop string are neither sent nor counted
        session->cancel();
        break;
      }
    }
    if (client_gone) {
      forget_client();
      return;
    }
    if (session->finish_reason() == engine::FinishReason::error) {
      send({{"error",
             {{"message", session->error()},
              {"type", "server_error"},
              {"param", nullptr},
              {"code", nullptr}}}});
    } else {
      const std::string rest = text.finish();
      if (text.calls()) {
        json calls = choice("", nullptr, nullptr);
        calls["delta"] = tool_call_fields(*text.calls(), true, g.calls_as);
        send(envelope(calls));
      }
      send(envelope(choice(rest, pending_logprobs, finish_reason())));
      if (g.include_usage) {
        json last = envelope(nullptr);
        last["usage"] = usage();
        send(last);
      }
    }
    writer.write_chunk("data: [DONE]\n\n");
    writer.end_stream();
    return;
  }

  engine::TokenEvent event;
  while (next_token(event)) {
    ++completion_tokens;
    text.add(event.id);
    if (g.logprobs) {
      add_logprobs(event, logprobs);
      advance(event.id);
    }
    if (text.stopped()) {
      session->cancel();
      break;
    }
  }
  if (client_gone) {
    forget_client();
    return;
  }
  if (session->finish_reason() == engine::FinishReason::error)
    throw ApiError{http::status::internal_server_error, "generation failed: " + session->error(),
                   "server_error"};
  text.finish();
  json answer =
      envelope(choice(text.text(), g.logprobs ? logprobs : json(nullptr), finish_reason()));
  if (text.calls()) {
    json& message = answer["choices"][0]["message"];
    // OpenAI's content beside calls is null where the model wrote none.
    if (text.text().find_first_not_of(" \t\r\n") == std::string::npos) message["content"] = nullptr;
    message.update(tool_call_fields(*text.calls(), false, g.calls_as));
  }
  answer["usage"] = usage();
  writer.send(json_response(http::status::ok, answer));
}

void Service::metrics(ResponseWriter& writer) {
  std::ostringstream out;
  auto metric = [&](const char* name, const char* type, const char* help, double value) {
    out << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n'
        << name << ' ' << value << '\n';
  };
  const bool ready = ready_;  // once: the loader may set it while this runs
  metric("moed_up", "gauge", "1 when the model is loaded and serving", ready ? 1 : 0);
  metric("moed_load_progress", "gauge", "model loading progress, 0 to 1", progress_.load());
  metric("moed_http_requests_total", "counter", "HTTP requests received",
         static_cast<double>(requests_.load()));
  metric("moed_http_errors_total", "counter", "HTTP requests answered with an error",
         static_cast<double>(errors_.load()));
  if (ready) {
    const auto c = scheduler_->counters();
    metric("moed_queue_length", "gauge", "requests waiting to join the batch",
           static_cast<double>(c.queued));
    metric("moed_active_sessions", "gauge", "sequences in the running batch",
           static_cast<double>(c.active));
    metric("moed_prompt_tokens_total", "counter", "prompt tokens prefilled",
           static_cast<double>(c.prompt_tokens));
    metric("moed_generated_tokens_total", "counter", "tokens generated",
           static_cast<double>(c.generated_tokens));
    metric("moed_decode_steps_total", "counter", "batched decode steps",
           static_cast<double>(c.steps));
    metric("moed_tokens_per_second", "gauge", "generated tokens per second of engine time",
           c.busy_seconds > 0 ? static_cast<double>(c.generated_tokens) / c.busy_seconds : 0.0);
    const auto mem = engine_->memory_stats();
    const double lookups = static_cast<double>(mem.host.hits + mem.host.misses);
    metric("moed_host_hit_ratio", "gauge", "share of expert lookups served from host RAM",
           lookups > 0 ? static_cast<double>(mem.host.hits) / lookups : 0.0);
    metric("moed_host_hits_total", "counter", "expert lookups served from host RAM",
           static_cast<double>(mem.host.hits));
    metric("moed_host_misses_total", "counter", "expert lookups that read from disk",
           static_cast<double>(mem.host.misses));
    metric("moed_host_evictions_total", "counter", "experts evicted from host RAM",
           static_cast<double>(mem.host.evictions));
    metric("moed_host_bypasses_total", "counter",
           "experts read from disk, used once and not kept (no room, or refused by the filter)",
           static_cast<double>(mem.host.bypasses));
    metric("moed_host_admission_refusals_total", "counter",
           "bypasses where the policy's admission filter kept the resident victim",
           static_cast<double>(mem.host.refusals));
    metric("moed_host_policy_half_life", "gauge",
           "tinylfu: half-life of the counts that decide admission and eviction, in requests per "
           "block seen (0: another policy)",
           mem.host.policy_half_life);
    metric("moed_host_used_bytes", "gauge", "bytes of experts cached in host RAM",
           static_cast<double>(mem.host.used_bytes));
    metric("moed_host_budget_bytes", "gauge", "host RAM budget for weights (0: unlimited)",
           static_cast<double>(mem.budget_bytes));
    metric("moed_host_fixed_bytes", "gauge",
           "budget share of dense weights or ring sections and the LM head",
           static_cast<double>(mem.fixed_bytes));
    metric("moed_client_disconnects_total", "counter",
           "requests cancelled because their client closed the connection or stopped reading",
           static_cast<double>(client_disconnects_.load()));
    metric("moed_compute_threads", "gauge", "OpenMP threads the last forward pass ran with",
           static_cast<double>(mem.compute_threads));
    metric("moed_kv_bytes", "gauge", "KV cache capacity reserved by running sequences",
           static_cast<double>(mem.kv_bytes));
    metric("moed_kv_limit_bytes", "gauge",
           "most the host budget lets KV caches hold (0: unlimited)",
           static_cast<double>(mem.kv_limit_bytes));
    metric("moed_disk_read_bytes_total", "counter", "bytes read by the disk tier",
           static_cast<double>(mem.disk.bytes_read));
    metric("moed_disk_reads_total", "counter", "blocks read by the disk tier",
           static_cast<double>(mem.disk.reads));
    metric("moed_disk_read_errors_total", "counter", "block reads that failed",
           static_cast<double>(mem.disk.errors));
    metric("moed_disk_busy_seconds_total", "counter", "time with disk reads in flight",
           mem.disk.busy_seconds);
    metric("moed_disk_packing_seconds_total", "counter",
           "time spent turning read bytes into packed weights", mem.disk.materialize_seconds);
    {
      using Loader = memtier::BlockLoader;
      out << "# HELP moed_disk_loads_total blocks loaded by the disk tier, by kind: demand, "
             "raised_prefetch (a prefetch raised to a demand before it was packed), prefetch\n"
             "# TYPE moed_disk_loads_total counter\n";
      for (std::size_t k = 0; k < Loader::kLoadKinds; ++k)
        out << "moed_disk_loads_total{kind=\""
            << memtier::to_string(static_cast<Loader::LoadKind>(k)) << "\"} "
            << mem.disk.stages[k].loads << '\n';
      out << "# HELP moed_disk_load_seconds_total time the disk tier's loads spent in each stage: "
             "queued, reading, staged (waiting for the packer), packing\n"
             "# TYPE moed_disk_load_seconds_total counter\n";
      for (std::size_t k = 0; k < Loader::kLoadKinds; ++k) {
        const auto& stages = mem.disk.stages[k];
        const std::string_view kind = memtier::to_string(static_cast<Loader::LoadKind>(k));
        for (const auto& [stage, seconds] : {std::pair{"queued", stages.queued_seconds},
                                             std::pair{"reading", stages.reading_seconds},
                                             std::pair{"staged", stages.staged_seconds},
                                             std::pair{"packing", stages.packing_seconds}})
          out << "moed_disk_load_seconds_total{kind=\"" << kind << "\",stage=\"" << stage << "\"} "
              << seconds << '\n';
      }
    }
    metric("moed_disk_staging_bytes", "gauge",
           "host memory the disk tier reads blocks into before packing",
           static_cast<double>(mem.disk.staging_bytes));
    std::uint64_t issued = 0, hits = 0, late = 0, wasted = 0;
    auto per_layer = [&](const char* name, const char* help, auto field) {
      out << "# HELP " << name << ' ' << help << "\n# TYPE " << name << " counter\n";
      for (std::size_t l = 0; l < mem.layers.size(); ++l)
        out << name << "{layer=\"" << l << "\"} " << mem.layers[l].*field << '\n';
    };
    per_layer("moed_layer_hits_total", "expert lookups served from host RAM, per layer",
              &memtier::LayerCounters::hits);
    per_layer("moed_layer_misses_total", "expert lookups read from disk, per layer",
              &memtier::LayerCounters::misses);
    for (const auto& l : mem.layers) {
      issued += l.prefetch_issued;
      hits += l.prefetch_hits;
      late += l.prefetch_late;
      wasted += l.prefetch_wasted;
    }
    metric("moed_prefetch_issued_total", "counter", "expert prefetches started",
           static_cast<double>(issued));
    metric("moed_prefetch_hits_total", "counter", "prefetches resident when needed",
           static_cast<double>(hits));
    metric("moed_prefetch_late_total", "counter", "prefetches still in flight when needed",
           static_cast<double>(late));
    metric("moed_prefetch_wasted_total", "counter", "prefetches not needed",
           static_cast<double>(wasted));
    metric("moed_prefetch_accuracy", "gauge", "share of prefetches that were needed",
           issued ? static_cast<double>(hits + late) / static_cast<double>(issued) : 0.0);
    const auto horizons = memtier::horizon_totals(mem.layers);
    auto per_horizon = [&](const char* name, const char* help, auto field) {
      out << "# HELP " << name << ' ' << help << "\n# TYPE " << name << " counter\n";
      for (std::size_t h = 0; h < horizons.size(); ++h)
        out << name << "{horizon=\"" << h + 1 << "\"} " << horizons[h].*field << '\n';
    };
    per_horizon("moed_prefetch_predictions_total",
                "experts predicted for a layer this many layers ahead",
                &memtier::HorizonCounters::predicted);
    per_horizon("moed_prefetch_predictions_used_total",
                "predicted experts the layer then routed to (precision: used / predictions)",
                &memtier::HorizonCounters::used);
    per_horizon("moed_prefetch_horizon_issued_total",
                "prefetch reads started for predictions this many layers ahead",
                &memtier::HorizonCounters::issued);
    out << "# HELP moed_prefetch_outcomes_total how the prefetch reads of each horizon ended: "
           "hit (resident when needed), late (still read when needed), wasted (read, not needed "
           "or evicted first), cancelled (stale before its read started)\n"
           "# TYPE moed_prefetch_outcomes_total counter\n";
    for (std::size_t h = 0; h < horizons.size(); ++h)
      for (const auto& [outcome, value] :
           {std::pair{"hit", horizons[h].hits}, std::pair{"late", horizons[h].late},
            std::pair{"wasted", horizons[h].wasted}, std::pair{"cancelled", horizons[h].cancelled}})
        out << "moed_prefetch_outcomes_total{horizon=\"" << h + 1 << "\",outcome=\"" << outcome
            << "\"} " << value << '\n';
  }
  Response r{http::status::ok, 11};
  r.set(http::field::content_type, "text/plain; version=0.0.4");
  r.body() = out.str();
  writer.send(std::move(r));
}

void Service::admin(const Request& request, const Peer& peer, ResponseWriter& writer) {
  if (!is_admin(peer))
    throw ApiError{
        http::status::forbidden,
        peer.has_credentials
            ? "admin calls are allowed for root, the daemon's user or its admin group; peer uid " +
                  std::to_string(peer.uid) + " is none of those"
            : "admin calls are allowed only over the Unix socket",
        "permission_error"};
  if (!ready_)
    throw ApiError{http::status::service_unavailable, "the model is still loading",
                   "server_unavailable"};
  const std::string path = path_of(request);
  const bool get = request.method() == http::verb::get;
  const Body body = !get && !request.body().empty() ? parse_body(request.body()) : Body::object();
  auto cache_report = [&] {
    const auto mem = engine_->memory_stats();
    json pins = json::array();
    for (const auto& pin : mem.host.pins)
      pins.push_back({{"block", pin.block.to_string()},
                      {"layer", pin.block.layer},
                      {"expert", pin.block.expert},
                      {"by", pin.automatic ? "auto" : "admin"},
                      {"resident", pin.resident}});
    json layers = json::array();
    for (const auto& l : mem.layers)
      layers.push_back({{"hits", l.hits},
                        {"horizons", memtier::to_json(l.horizons)},
                        {"misses", l.misses},
                        {"prefetch_issued", l.prefetch_issued},
                        {"prefetch_hits", l.prefetch_hits},
                        {"prefetch_late", l.prefetch_late},
                        {"prefetch_wasted", l.prefetch_wasted},
                        {"bytes_read", l.bytes_read},
                        {"wait_seconds", l.wait_seconds}});
    json report{{"host",
                 {{"budget_bytes", mem.budget_bytes},
                  {"fixed_bytes", mem.fixed_bytes},
                  {"used_bytes", mem.host.used_bytes},
                  {"blocks", mem.host.blocks},
                  {"pinned", mem.host.pinned},
                  {"auto_pinned", mem.host.auto_pinned},
                  {"auto_pin_share", mem.host.auto_pin_share},
                  {"pins", pins},
                  {"hits", mem.host.hits},
                  {"misses", mem.host.misses},
                  {"evictions", mem.host.evictions},
                  {"bypasses", mem.host.bypasses},
                  {"refusals", mem.host.refusals},
                  {"policy", mem.host.policy},
                  {"policy_half_life", mem.host.policy_half_life}}},
                {"disk",
                 {{"reader", mem.reader},
                  {"reads", mem.disk.reads},
                  {"bytes_read", mem.disk.bytes_read},
                  {"errors", mem.disk.errors},
                  {"busy_seconds", mem.disk.busy_seconds},
                  {"packing_seconds", mem.disk.materialize_seconds},
                  {"load_stages", memtier::to_json(mem.disk.stages)},
                  {"staging_bytes", mem.disk.staging_bytes},
                  {"staging_registered", mem.disk.staging_registered}}},
                {"dense_streamed", mem.dense_streamed},
                {"expert_bytes", mem.expert_bytes_total},
                {"expert_block_bytes", engine_->expert_block_bytes()},
                {"prefetch", {{"horizons", memtier::to_json(memtier::horizon_totals(mem.layers))}}},
                {"layers", layers}};
    report["kv"] = {
        {"dtype", mem.kv_dtype}, {"bytes", mem.kv_bytes}, {"limit_bytes", mem.kv_limit_bytes}};
    return report;
  };
  auto rethrow_as_400 = [&](const std::function<void()>& fn) {
    try {
      scheduler_->call(fn);
    } catch (const std::invalid_argument& e) {
      throw ApiError{http::status::bad_request, e.what()};
    }
  };
  if (path == "/admin/cache" && get)
    return writer.send(json_response(http::status::ok, cache_report()));
  if (path == "/admin/cache" && request.method() == http::verb::post) {
    const CacheSettings settings = parse_cache_settings(body);
    rethrow_as_400([&] {
      if (!settings.host_budget.empty()) {
        try {
          engine_->set_host_budget(engine::HostBudget::parse(settings.host_budget));
        } catch (const std::invalid_argument& e) {
          throw std::invalid_argument(std::string("host_budget: ") + e.what());
        }
      }
      if (!settings.policy.empty()) engine_->set_policy(settings.policy);
      if (settings.auto_pin) engine_->host_tier().set_auto_pin(*settings.auto_pin);
    });
    return writer.send(json_response(http::status::ok, cache_report()));
  }
  if ((path == "/admin/pin" || path == "/admin/unpin") && request.method() == http::verb::post) {
    const ExpertRef ref = parse_expert_ref(body, limits());
    const auto block = memtier::BlockId::routed(ref.layer, ref.expert);
    if (path == "/admin/pin")
      engine_->host_tier().pin(block);
    else
      engine_->host_tier().unpin(block);
    return writer.send(json_response(
        http::status::ok, {{"block", block.to_string()}, {"pinned", path == "/admin/pin"}}));
  }
  if (path == "/admin/experts" && get) {
    std::vector<std::vector<std::uint64_t>> counts;
    scheduler_->call([&] { counts = engine_->activation_counts(); });
    return writer.send(json_response(
        http::status::ok,
        {{"layers", counts.size()}, {"experts", engine_->spec().num_experts}, {"counts", counts}}));
  }
  // Other connections may start a trace at the same time.
  auto recorded_trace = [&] {
    std::lock_guard lock(mutex_);
    if (!trace_path_)
      throw ApiError{http::status::not_found,
                     "no routing trace has been recorded; POST /admin/trace/start first"};
    return *trace_path_;
  };
  if (path == "/admin/trace/start" && request.method() == http::verb::post) {
    const auto file = std::filesystem::path(config_.state_dir) / "routing-trace.jsonl";
    rethrow_as_400([&] {
      std::filesystem::create_directories(config_.state_dir);
      engine_->record_trace(file);
    });
    {
      std::lock_guard lock(mutex_);
      trace_path_ = file;
    }
    return writer.send(
        json_response(http::status::ok, {{"recording", true}, {"path", file.string()}}));
  }
  if (path == "/admin/trace/stop" && request.method() == http::verb::post) {
    scheduler_->call([&] { engine_->record_trace(std::nullopt); });
    return writer.send(json_response(http::status::ok, {{"recording", false}}));
  }
  if (path == "/admin/trace" && get) {
    std::ifstream in(recorded_trace(), std::ios::binary);
    std::ostringstream data;
    data << in.rdbuf();
    Response r{http::status::ok, 11};
    r.set(http::field::content_type, "application/x-ndjson");
    r.body() = data.str();
    return writer.send(std::move(r));
  }
  if (path == "/admin/trace/simulate" && request.method() == http::verb::post) {
    const auto trace = recorded_trace();
    const SimulateRequest simulate = parse_simulate_request(body);
    const std::vector<std::string> live_policies = memtier::policy_names();
    std::vector<std::string> policies = live_policies;
    policies.push_back("belady");
    const auto events = memtier::read_trace(trace);
    const auto plain =
        memtier::simulate(events, simulate.blocks, policies, simulate.auto_pin_share);
    json results = json::array();
    for (const auto& r : plain)
      results.push_back({{"policy", r.policy},
                         {"blocks", r.budget_blocks},
                         {"hits", r.hits},
                         {"requests", r.requests},
                         {"hit_rate", r.hit_rate()}});
    json report = {{"lines", events.size()}, {"results", results}};
    if (simulate.auto_pin_share > 0) report["auto_pin"] = simulate.auto_pin_share;
    // Belady's optimum has no prefetch variant: the live policies are replayed with it.
    if (simulate.prefetch.horizons > 0)
      report["prefetch"] = memtier::prefetch_report(
          memtier::simulate_prefetch(events, simulate.blocks, live_policies, simulate.prefetch,
                                     simulate.auto_pin_share),
          plain, simulate.prefetch);
    return writer.send(json_response(http::status::ok, report));
  }
  throw ApiError{http::status::not_found,
                 "no admin route " + std::string(request.method_string()) + " " + path};
}

}  // namespace moed::server
