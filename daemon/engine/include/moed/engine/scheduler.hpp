#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "moed/engine/engine.hpp"
#include "moed/engine/sampler.hpp"

namespace moed::engine {

struct GenerationRequest {
  std::vector<std::int32_t> prompt;
  // At most this many tokens. A default (the client named none: max_tokens_given false) is cut to
  // what the context and the KV room allow rather than refused, and 0 there sets no limit of its
  // own; the request reserves KV for all of them.
  std::int64_t max_tokens = 16;
  bool max_tokens_given = true;
  SamplingParams sampling;
  int top_logprobs = 0;  // most likely alternatives to report per token (0: none)
};

struct TokenEvent {
  std::int32_t id = -1;
  float logprob = 0;
  std::vector<std::pair<std::int32_t, float>> top;  // (id, logprob), most likely first
};

enum class FinishReason { running, length, eos, cancelled, error };
const char* to_string(FinishReason reason);

// One request's stream of tokens, filled by the scheduler's thread, read by its client's.
class Session {
 public:
  // Blocks for the next token; false once the stream has ended (see finish_reason()).
  bool next(TokenEvent& event);
  enum class Next { token, ended, waiting };
  // As next(), but waits at most `timeout`: `waiting` when neither a token nor the end came, so
  // a client thread can check that its client is still there.
  Next next_for(TokenEvent& event, std::chrono::milliseconds timeout);
  // The client is gone or has what it wants (e.g. a stop string): the sequence is freed at
  // the scheduler's next step.
  void cancel() { cancelled_ = true; }
  FinishReason finish_reason() const;
  std::string error() const;
  std::int64_t prompt_tokens() const { return static_cast<std::int64_t>(request_.prompt.size()); }

 private:
  friend class Scheduler;
  explicit Session(GenerationRequest request)
      : request_(std::move(request)), sampler_(request_.sampling) {}
  void emit(TokenEvent event);
  void finish(FinishReason reason, std::string error = {});

  GenerationRequest request_;
  Sampler sampler_;
  std::optional<KvCache> cache_;
  std::uint64_t kv_bytes_ = 0;  // KV capacity for prompt + max_tokens, reserved at admission
  std::int64_t prefilled_ = 0;  // prompt tokens already run through the model
  std::int64_t generated_ = 0;
  std::int32_t last_ = -1;
  std::atomic<bool> cancelled_{false};
  mutable std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<TokenEvent> events_;
  FinishReason reason_ = FinishReason::running;
  std::string error_;
};

struct SchedulerOptions {
  std::size_t max_queue = 64;  // waiting requests beyond the running batch; more get QueueFull
  std::size_t max_batch = 16;  // sequences decoded together in one step
  // Prompt tokens prefilled per step: a long prompt is spread over steps that also decode the
  // running sequences, so their streams keep flowing while it is read.
  std::size_t prefill_chunk = 256;
};

// The queue is full: the client may retry later (HTTP 503).
class QueueFull : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The request's KV cache cannot fit the host budget even with nothing else running (HTTP 503).
class InsufficientMemory : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Continuous batching over one engine: waiting requests join the running batch between decode
// steps (after their prefill), finished or cancelled ones leave it, and every step decodes all
// running sequences together, so tokens routed to the same expert share one weight read. One
// request at a time is prefilled, at most prefill_chunk prompt tokens per step, after that
// step's decode. Admission is by memory too: a request's KV cache for prompt + max_tokens is
// reserved when it leaves the queue, and the head of the queue waits until the engine's host
// budget has room for it. The engine is only touched from the scheduler's thread. Knows nothing
// of sockets or HTTP.
class Scheduler {
 public:
  Scheduler(Engine& engine, SchedulerOptions options);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Throws QueueFull when the queue is full, InsufficientMemory when the request's KV cache can
  // never fit the host budget, std::invalid_argument for a bad request (named field),
  // std::runtime_error once draining.
  std::shared_ptr<Session> submit(GenerationRequest request);
  // Runs fn on the scheduler's thread between steps and returns its result (or exception).
  void call(const std::function<void()>& fn);
  // Refuses new requests and waits until every queued and running one has finished.
  void drain();
  void set_max_queue(std::size_t max_queue);

  struct Counters {
    std::uint64_t queued = 0, active = 0, completed = 0, failed = 0;
    std::uint64_t prompt_tokens = 0, generated_tokens = 0, steps = 0;
    double busy_seconds = 0;
    std::size_t max_queue = 0, max_batch = 0;
  };
  Counters counters() const;

 private:
  void loop();
  // Runs the next chunk of the prefilling request's prompt; it joins the batch when done.
  void prefill_chunk(std::vector<float>& logits);
  void fail(Session& session, const std::string& error);
  // False when the session failed instead (its constraint left no token to draw).
  bool sample_and_emit(Session& session, const float* logits);
  bool finished(Session& session);

  Engine& engine_;
  SchedulerOptions options_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable idle_;
  std::deque<std::shared_ptr<Session>> queue_;
  std::vector<std::shared_ptr<Session>> active_;  // scheduler thread only
  std::shared_ptr<Session> prefilling_;           // scheduler thread only
  std::deque<std::pair<std::function<void()>, std::shared_ptr<std::promise<void>>>> calls_;
  bool draining_ = false;
  bool stopping_ = false;
  // Requests out of the queue and not finished: active_ plus the one prefilling. Updated in the
  // same critical section that pops a request, so drain() never sees a popped one as gone.
  std::size_t running_ = 0;
  Counters counters_;
  std::thread thread_;
};

// The n most likely tokens with their log-probabilities, most likely first (NaN logits left out).
std::vector<std::pair<std::int32_t, float>> top_logprobs(const float* logits, std::int64_t vocab,
                                                         int n);

}  // namespace moed::engine
