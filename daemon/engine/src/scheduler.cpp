#include "moed/engine/scheduler.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <future>

#include "moed/kernels/cpu_ops.hpp"
#include "moed/memtier/byte_size.hpp"

namespace moed::engine {

const char* to_string(FinishReason reason) {
  switch (reason) {
    case FinishReason::running:
      return "running";
    case FinishReason::length:
      return "length";
    case FinishReason::eos:
      return "stop";
    case FinishReason::cancelled:
      return "cancelled";
    case FinishReason::error:
      return "error";
  }
  return "?";
}

std::vector<std::pair<std::int32_t, float>> top_logprobs(const float* logits, std::int64_t vocab,
                                                         int n) {
  const double log_total = kernels::log_sum_exp(logits, vocab);
  // A NaN logit weighs nothing, as in sampling, and is not listed (it would also break the
  // sort's ordering).
  std::vector<std::int32_t> ids;
  ids.reserve(static_cast<std::size_t>(vocab));
  for (std::int32_t id = 0; id < vocab; ++id)
    if (!std::isnan(logits[id])) ids.push_back(id);
  const auto count = std::min<std::int64_t>(n, static_cast<std::int64_t>(ids.size()));
  std::partial_sort(ids.begin(), ids.begin() + count, ids.end(),
                    [&](std::int32_t a, std::int32_t b) {
                      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
                    });
  std::vector<std::pair<std::int32_t, float>> out;
  for (std::int64_t i = 0; i < count; ++i)
    out.emplace_back(ids[i], static_cast<float>(static_cast<double>(logits[ids[i]]) - log_total));
  return out;
}

bool Session::next(TokenEvent& event) {
  std::unique_lock lock(mutex_);
  ready_.wait(lock, [&] { return !events_.empty() || reason_ != FinishReason::running; });
  if (events_.empty()) return false;
  event = std::move(events_.front());
  events_.pop_front();
  return true;
}

Session::Next Session::next_for(TokenEvent& event, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  if (!ready_.wait_for(lock, timeout,
                       [&] { return !events_.empty() || reason_ != FinishReason::running; }))
    return Next::waiting;
  if (events_.empty()) return Next::ended;
  event = std::move(events_.front());
  events_.pop_front();
  return Next::token;
}

FinishReason Session::finish_reason() const {
  std::lock_guard lock(mutex_);
  return reason_;
}

std::string Session::error() const {
  std::lock_guard lock(mutex_);
  return error_;
}

void Session::emit(TokenEvent event) {
  {
    std::lock_guard lock(mutex_);
    events_.push_back(std::move(event));
  }
  ready_.notify_all();
}

void Session::finish(FinishReason reason, std::string error) {
  {
    std::lock_guard lock(mutex_);
    if (reason_ != FinishReason::running) return;
    reason_ = reason;
    error_ = std::move(error);
  }
  cache_.reset();  // frees the KV cache now, not when the client lets go of the session
  ready_.notify_all();
}

Scheduler::Scheduler(Engine& engine, SchedulerOptions options)
    : engine_(engine), options_(options) {
  if (options_.max_batch == 0) throw std::invalid_argument("scheduler: max_batch must be >= 1");
  if (options_.prefill_chunk == 0)
    throw std::invalid_argument("scheduler: prefill_chunk must be >= 1");
  thread_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
  for (auto& s : queue_) s->finish(FinishReason::error, "the daemon is shutting down");
  for (auto& s : active_) s->finish(FinishReason::error, "the daemon is shutting down");
  if (prefilling_) prefilling_->finish(FinishReason::error, "the daemon is shutting down");
}

std::shared_ptr<Session> Scheduler::submit(GenerationRequest request) {
  const auto& spec = engine_.spec();
  if (request.prompt.empty())
    throw std::invalid_argument("prompt: must contain at least one token");
  for (const auto id : request.prompt)
    if (id < 0 || id >= spec.vocab_size)
      throw std::invalid_argument("prompt: token id " + std::to_string(id) +
                                  " is outside the vocabulary [0, " +
                                  std::to_string(spec.vocab_size) + ")");
  if (request.max_tokens < (request.max_tokens_given ? 1 : 0))
    throw std::invalid_argument("max_tokens: must be at least 1");
  const auto context = spec.max_position_embeddings;
  const auto prompt_tokens = static_cast<std::int64_t>(request.prompt.size());
  if (prompt_tokens >= context)
    throw std::invalid_argument("prompt: " + std::to_string(request.prompt.size()) +
                                " tokens do not fit the model's context of " +
                                std::to_string(context));
  const KvRoom room = engine_.kv_room();
  if (!request.max_tokens_given) {
    std::int64_t fit = context - prompt_tokens;
    if (room.limit != UINT64_MAX)
      fit = std::min(fit,
                     static_cast<std::int64_t>(room.limit / engine_.kv_bytes(1)) - prompt_tokens);
    if (request.max_tokens > 0) fit = std::min(fit, request.max_tokens);
    request.max_tokens = std::max<std::int64_t>(fit, 1);  // none fits: refused below, as usual
  }
  request.max_tokens = std::min<std::int64_t>(request.max_tokens, context - prompt_tokens);
  const auto positions = prompt_tokens + request.max_tokens;
  const std::uint64_t kv_bytes = engine_.kv_bytes(positions);
  using memtier::format_byte_size;
  const std::string kv_need = format_byte_size(kv_bytes) + " of " + to_string(engine_.kv_dtype()) +
                              " KV cache (" + std::to_string(positions) +
                              " positions: prompt + max_tokens)";
  if (kv_bytes > room.limit)
    throw InsufficientMemory(
        "this request needs " + kv_need + ", but the host budget leaves at most " +
        format_byte_size(room.limit) + " for KV caches; " +
        (request.max_tokens_given ? "lower max_tokens or the prompt" : "shorten the prompt") +
        ", or raise memory.host_budget");
  auto session = std::shared_ptr<Session>(new Session(std::move(request)));  // validates sampling
  session->kv_bytes_ = kv_bytes;
  {
    std::lock_guard lock(mutex_);
    if (draining_ || stopping_) throw std::runtime_error("the daemon is shutting down");
    if (queue_.size() >= options_.max_queue)
      throw QueueFull("the request queue is full (" + std::to_string(options_.max_queue) +
                      " waiting); this request needs " + kv_need + ", " +
                      (room.limit == UINT64_MAX ? std::string("no KV limit")
                                                : format_byte_size(room.free()) + " free now"));
    queue_.push_back(session);
  }
  wake_.notify_all();
  return session;
}

void Scheduler::call(const std::function<void()>& fn) {
  auto done = std::make_shared<std::promise<void>>();
  auto future = done->get_future();
  {
    std::lock_guard lock(mutex_);
    calls_.emplace_back(fn, done);
  }
  wake_.notify_all();
  future.get();
}

void Scheduler::drain() {
  std::unique_lock lock(mutex_);
  draining_ = true;
  wake_.notify_all();
  idle_.wait(lock, [&] { return queue_.empty() && running_ == 0; });
}

void Scheduler::set_max_queue(std::size_t max_queue) {
  std::lock_guard lock(mutex_);
  options_.max_queue = max_queue;
}

Scheduler::Counters Scheduler::counters() const {
  std::lock_guard lock(mutex_);
  Counters c = counters_;
  c.queued = queue_.size();
  c.active = running_;
  c.max_queue = options_.max_queue;
  c.max_batch = options_.max_batch;
  return c;
}

bool Scheduler::sample_and_emit(Session& session, const float* logits) {
  const std::int64_t vocab = engine_.spec().vocab_size;
  SampledToken token{};
  try {
    token = session.sampler_.sample(logits, vocab);
  } catch (const ConstraintDeadEnd& e) {
    fail(session, e.what());
    return false;
  }
  TokenEvent event{token.id, token.logprob, {}};
  if (session.request_.top_logprobs > 0)
    event.top = top_logprobs(logits, vocab, session.request_.top_logprobs);
  session.last_ = token.id;
  ++session.generated_;
  session.emit(std::move(event));
  std::lock_guard lock(mutex_);
  ++counters_.generated_tokens;
  return true;
}

bool Scheduler::finished(Session& session) {
  const auto& eos = engine_.spec().eos_token_ids;
  FinishReason reason;
  if (session.cancelled_) {
    reason = FinishReason::cancelled;
  } else if (std::find(eos.begin(), eos.end(), session.last_) != eos.end()) {
    reason = FinishReason::eos;
  } else if (session.generated_ >= session.request_.max_tokens) {
    reason = FinishReason::length;
  } else {
    return false;
  }
  {
    std::lock_guard lock(mutex_);  // counted before the client can see the end
    ++counters_.completed;
  }
  session.finish(reason);
  return true;
}

void Scheduler::fail(Session& session, const std::string& error) {
  {
    std::lock_guard lock(mutex_);
    ++counters_.failed;
  }
  session.finish(FinishReason::error, error);
}

void Scheduler::prefill_chunk(std::vector<float>& logits) {
  const auto session = prefilling_;
  if (finished(*session)) {  // cancelled while its prompt was read
    prefilling_.reset();
    return;
  }
  try {
    const auto& prompt = session->request_.prompt;
    const auto total = static_cast<std::int64_t>(prompt.size());
    const std::int64_t count =
        std::min(static_cast<std::int64_t>(options_.prefill_chunk), total - session->prefilled_);
    engine_.forward(std::span(prompt).subspan(static_cast<std::size_t>(session->prefilled_),
                                              static_cast<std::size_t>(count)),
                    *session->cache_, logits, false);
    session->prefilled_ += count;
    {
      std::lock_guard lock(mutex_);
      counters_.prompt_tokens += static_cast<std::uint64_t>(count);
    }
    if (session->prefilled_ < total) return;
    prefilling_.reset();
    if (sample_and_emit(*session, logits.data()) && !finished(*session)) active_.push_back(session);
  } catch (const std::exception& e) {
    prefilling_.reset();
    fail(*session, e.what());
  }
}

void Scheduler::loop() {
  using Clock = std::chrono::steady_clock;
  std::vector<float> logits;
  while (true) {
    std::shared_ptr<Session> admitted;
    std::vector<std::shared_ptr<Session>> left_queue;  // cancelled while waiting
    std::pair<std::function<void()>, std::shared_ptr<std::promise<void>>> call;
    {
      std::unique_lock lock(mutex_);
      running_ = active_.size() + (prefilling_ ? 1 : 0);
      if (queue_.empty() && running_ == 0) idle_.notify_all();
      wake_.wait(lock,
                 [&] { return stopping_ || !calls_.empty() || !queue_.empty() || running_ > 0; });
      if (stopping_) return;
      // A request whose client left while it waited frees its place in the queue at the next
      // step, not when it reaches the head.
      std::erase_if(queue_, [&](const std::shared_ptr<Session>& s) {
        if (!s->cancelled_) return false;
        left_queue.push_back(s);
        return true;
      });
      if (!calls_.empty()) {
        call = std::move(calls_.front());
        calls_.pop_front();
      } else if (!queue_.empty() && !prefilling_ && active_.size() < options_.max_batch) {
        // The head waits for KV room while others run; with nothing running it is taken even
        // when it does not fit (the budget shrank since it was queued), and fails below.
        const auto& head = queue_.front();
        if (head->cancelled_ || running_ == 0 || head->kv_bytes_ <= engine_.kv_room().free()) {
          admitted = head;
          queue_.pop_front();
          ++running_;  // with the pop, so drain() cannot see it as neither queued nor running
        }
      }
    }
    for (const auto& s : left_queue) s->finish(FinishReason::cancelled);
    if (call.first) {
      try {
        call.first();
        call.second->set_value();
      } catch (...) {
        call.second->set_exception(std::current_exception());
      }
      continue;
    }
    const auto start = Clock::now();
    if (admitted) {
      const KvRoom room = engine_.kv_room();
      if (admitted->cancelled_) {
        admitted->finish(FinishReason::cancelled);
      } else if (admitted->kv_bytes_ > room.free()) {
        fail(*admitted, "this request needs " + memtier::format_byte_size(admitted->kv_bytes_) +
                            " of KV cache, but the host budget leaves " +
                            memtier::format_byte_size(room.free()) +
                            " for KV caches with nothing else running");
      } else {
        try {
          admitted->cache_.emplace(
              engine_.new_cache(static_cast<std::int64_t>(admitted->request_.prompt.size()) +
                                admitted->request_.max_tokens));
          prefilling_ = admitted;
        } catch (const std::exception& e) {
          fail(*admitted, e.what());
        }
      }
    }
    // Sequences whose clients left are dropped before the step, not after.
    std::erase_if(active_, [&](const std::shared_ptr<Session>& s) {
      if (!s->cancelled_) return false;
      finished(*s);
      return true;
    });
    if (!active_.empty()) {
      std::vector<std::int32_t> tokens;
      std::vector<KvCache*> caches;
      for (const auto& s : active_) {
        tokens.push_back(s->last_);
        caches.push_back(&*s->cache_);
      }
      try {
        engine_.decode(tokens, caches, logits);
        const std::int64_t vocab = engine_.spec().vocab_size;
        std::vector<bool> failed(active_.size());
        for (std::size_t i = 0; i < active_.size(); ++i)
          failed[i] = !sample_and_emit(*active_[i], logits.data() + i * vocab);
        std::size_t i = 0;
        std::erase_if(active_, [&](const std::shared_ptr<Session>& s) {
          return failed[i++] || finished(*s);
        });
      } catch (const std::exception& e) {
        // A failed step (e.g. a disk read error) fails the requests in it; the next ones run.
        {
          std::lock_guard lock(mutex_);
          counters_.failed += active_.size();
        }
        for (auto& s : active_) s->finish(FinishReason::error, e.what());
        active_.clear();
      }
      std::lock_guard lock(mutex_);
      ++counters_.steps;
    }
    if (prefilling_) prefill_chunk(logits);
    std::lock_guard lock(mutex_);
    counters_.busy_seconds += std::chrono::duration<double>(Clock::now() - start).count();
  }
}

}  // namespace moed::engine
