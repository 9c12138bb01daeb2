#include "moed/client.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

namespace moed {
namespace {

using json = nlohmann::ordered_json;  // bodies keep their keys in order: a schema's properties

// A connected Unix socket, closed on destruction.
class Socket {
 public:
  Socket(const std::string& path, int timeout_ms) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) throw ConnectionError(std::string("socket: ") + std::strerror(errno));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) throw ConnectionError(path + ": socket path too long");
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      const int err = errno;
      ::close(fd_);
      throw ConnectionError("cannot connect to moed at " + path + ": " + std::strerror(err) +
                            (err == ENOENT   ? " (is the daemon running?)"
                             : err == EACCES ? " (permission denied: socket mode or group)"
                                             : ""));
    }
    timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~Socket() { ::close(fd_); }
  void write_all(std::string_view data) {
    while (!data.empty()) {
      const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0)
        throw ConnectionError(std::string("write to moed failed: ") + std::strerror(errno));
      data.remove_prefix(static_cast<std::size_t>(n));
    }
  }
  // Appends what arrives to `buffer`; false at end of stream.
  bool read_some(std::string& buffer) {
    char chunk[16384];
    while (true) {
      const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0)
        throw ConnectionError(std::string("read from moed failed: ") + std::strerror(errno));
      if (n == 0) return false;
      buffer.append(chunk, static_cast<std::size_t>(n));
      return true;
    }
  }

 private:
  int fd_ = -1;
};

// Reads an HTTP/1.1 response; body chunks go to on_body as they arrive (chunked or sized).
struct ResponseHead {
  int status = 0;
  bool chunked = false;
  std::int64_t content_length = -1;
};

ResponseHead read_response(Socket& socket, const std::function<bool(std::string_view)>& on_body) {
  std::string buffer;
  std::size_t head_end;
  while ((head_end = buffer.find("\r\n\r\n")) == std::string::npos)
    if (!socket.read_some(buffer))
      throw ConnectionError("moed closed the connection before answering");
  ResponseHead head;
  const std::string head_text = buffer.substr(0, head_end);
  if (head_text.size() < 12 || head_text.compare(0, 5, "HTTP/") != 0)
    throw ConnectionError("not an HTTP answer");
  head.status = std::stoi(head_text.substr(9, 3));
  std::size_t at = head_text.find("\r\n");
  while (at != std::string::npos && at < head_text.size()) {
    const std::size_t next = head_text.find("\r\n", at + 2);
    std::string line =
        head_text.substr(at + 2, (next == std::string::npos ? head_text.size() : next) - at - 2);
    for (std::size_t i = 0; i < line.size() && line[i] != ':'; ++i)
      line[i] = static_cast<char>(std::tolower(line[i]));
    if (line.starts_with("transfer-encoding:") && line.find("chunked") != std::string::npos)
      head.chunked = true;
    if (line.starts_with("content-length:")) head.content_length = std::stoll(line.substr(15));
    at = next;
  }
  buffer.erase(0, head_end + 4);
  if (!head.chunked) {
    while (head.content_length < 0 ||
           static_cast<std::int64_t>(buffer.size()) < head.content_length)
      if (!socket.read_some(buffer)) break;
    if (head.content_length >= 0)
      buffer.resize(static_cast<std::size_t>(
          std::min<std::int64_t>(head.content_length, static_cast<std::int64_t>(buffer.size()))));
    on_body(buffer);
    return head;
  }
  while (true) {
    std::size_t line_end;
    while ((line_end = buffer.find("\r\n")) == std::string::npos)
      if (!socket.read_some(buffer)) throw ConnectionError("moed closed the connection mid-answer");
    const std::size_t size = std::stoul(buffer.substr(0, line_end), nullptr, 16);
    while (buffer.size() < line_end + 2 + size + 2)
      if (!socket.read_some(buffer)) throw ConnectionError("moed closed the connection mid-answer");
    if (size == 0) return head;
    if (!on_body(std::string_view(buffer).substr(line_end + 2, size))) return head;
    buffer.erase(0, line_end + 2 + size + 2);
  }
}

[[noreturn]] void throw_error(int status, const std::string& body) {
  try {
    const json j = json::parse(body);
    const auto& e = j.at("error");
    auto text = [&](const char* key) {
      return e.contains(key) && e[key].is_string() ? e[key].get<std::string>() : std::string();
    };
    throw Error(status, text("type"), text("message"), text("param"), text("code"));
  } catch (const json::exception&) {
    throw Error(status, "http_error",
                "moed answered " + std::to_string(status) + ": " + body.substr(0, 200));
  }
}

json options_json(const GenerationOptions& r, bool stream) {
  json body = {{"max_tokens", r.max_tokens},
               {"temperature", r.temperature},
               {"top_p", r.top_p},
               {"stream", stream}};
  if (stream) body["stream_options"] = {{"include_usage", true}};
  if (r.top_k > 0) body["top_k"] = r.top_k;
  if (r.seed) body["seed"] = *r.seed;
  if (!r.stop.empty()) body["stop"] = r.stop;
  if (!r.model.empty()) body["model"] = r.model;
  if (r.json_object) body["response_format"] = {{"type", "json_object"}};
  if (!r.json_schema.empty())
    body["response_format"] = {
        {"type", "json_schema"},
        {"json_schema",
         {{"name", "answer"}, {"strict", true}, {"schema", json::parse(r.json_schema)}}}};
  return body;
}

json request_json(const CompletionRequest& r, bool stream) {
  json body = options_json(r, stream);
  if (!r.prompt_tokens.empty())
    body["prompt"] = r.prompt_tokens;
  else
    body["prompt"] = r.prompt;
  if (r.logprobs > 0) body["logprobs"] = r.logprobs;
  return body;
}

json request_json(const ChatRequest& r, bool stream) {
  json body = options_json(r, stream);
  body["messages"] = json::array();
  for (const auto& m : r.messages)
    body["messages"].push_back({{"role", m.role}, {"content", m.content}});
  if (r.logprobs > 0) {
    body["logprobs"] = true;
    body["top_logprobs"] = r.logprobs;
  }
  return body;
}

// Completions carry parallel lists; chat carries one entry per token.
void read_logprobs(const json& lp, Completion& out) {
  if (!lp.is_object()) return;
  if (lp.contains("content")) {
    for (const auto& entry : lp["content"]) {
      TokenLogprob t{entry["token"].get<std::string>(), entry["logprob"].get<float>(), {}};
      for (const auto& alt : entry["top_logprobs"])
        t.top.emplace_back(alt["token"].get<std::string>(), alt["logprob"].get<float>());
      out.logprobs.push_back(std::move(t));
    }
    return;
  }
  for (std::size_t i = 0; i < lp["tokens"].size(); ++i) {
    TokenLogprob t{lp["tokens"][i].get<std::string>(), lp["token_logprobs"][i].get<float>(), {}};
    for (const auto& [tok, value] : lp["top_logprobs"][i].items())
      t.top.emplace_back(tok, value.get<float>());
    out.logprobs.push_back(std::move(t));
  }
}

Completion parse_answer(const json& r, bool chat) {
  Completion out;
  out.id = r["id"].get<std::string>();
  const auto& choice = r["choices"][0];
  const json& content = chat ? choice["message"]["content"] : choice["text"];
  out.text = content.is_string() ? content.get<std::string>() : "";
  out.finish_reason =
      choice["finish_reason"].is_string() ? choice["finish_reason"].get<std::string>() : "";
  out.prompt_tokens = r["usage"]["prompt_tokens"].get<std::int64_t>();
  out.completion_tokens = r["usage"]["completion_tokens"].get<std::int64_t>();
  read_logprobs(choice["logprobs"], out);
  return out;
}

}  // namespace

Client::Client(std::string socket_path, int timeout_ms)
    : socket_path_(std::move(socket_path)), timeout_ms_(timeout_ms) {}

std::string Client::call(const std::string& method, const std::string& target,
                         const std::string& body) {
  Socket socket(socket_path_, timeout_ms_);
  std::string request = method + " " + target + " HTTP/1.1\r\nHost: moed\r\nConnection: close\r\n";
  if (!body.empty() || method == "POST")
    request +=
        "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  request += "\r\n" + body;
  socket.write_all(request);
  std::string answer;
  const auto head = read_response(socket, [&](std::string_view piece) {
    answer.append(piece);
    return true;
  });
  if (head.status < 200 || head.status >= 300) throw_error(head.status, answer);
  return answer;
}

Completion Client::complete(const CompletionRequest& request) {
  return parse_answer(
      json::parse(call("POST", "/v1/completions", request_json(request, false).dump())), false);
}

Completion Client::complete_stream(const CompletionRequest& request,
                                   const std::function<bool(std::string_view)>& on_text) {
  return stream("/v1/completions", request_json(request, true).dump(), false, on_text);
}

Completion Client::chat(const ChatRequest& request) {
  return parse_answer(
      json::parse(call("POST", "/v1/chat/completions", request_json(request, false).dump())), true);
}

Completion Client::chat_stream(const ChatRequest& request,
                               const std::function<bool(std::string_view)>& on_text) {
  return stream("/v1/chat/completions", request_json(request, true).dump(), true, on_text);
}

Completion Client::stream(const std::string& target, const std::string& body, bool chat,
                          const std::function<bool(std::string_view)>& on_text) {
  Socket socket(socket_path_, timeout_ms_);
  socket.write_all("POST " + target +
                   " HTTP/1.1\r\nHost: moed\r\nConnection: close\r\nContent-Type: "
                   "application/json\r\nContent-Length: " +
                   std::to_string(body.size()) + "\r\n\r\n" + body);
  Completion out;
  std::string pending, error_body;
  bool stopped = false;
  const auto head = read_response(socket, [&](std::string_view piece) {
    pending.append(piece);
    std::size_t end;
    while ((end = pending.find("\n\n")) != std::string::npos) {
      const std::string event = pending.substr(0, end);
      pending.erase(0, end + 2);
      if (!event.starts_with("data: ")) continue;
      const std::string data = event.substr(6);
      if (data == "[DONE]") return true;
      const json chunk = json::parse(data);
      if (chunk.contains("error")) {
        error_body = data;
        return true;
      }
      out.id = chunk["id"].get<std::string>();
      if (chunk.contains("usage") && chunk["usage"].is_object()) {
        out.prompt_tokens = chunk["usage"]["prompt_tokens"].get<std::int64_t>();
        out.completion_tokens = chunk["usage"]["completion_tokens"].get<std::int64_t>();
      }
      if (chunk["choices"].empty()) continue;  // the usage chunk
      const auto& choice = chunk["choices"][0];
      const json& content = chat ? choice["delta"].value("content", json("")) : choice["text"];
      const std::string text = content.is_string() ? content.get<std::string>() : "";
      out.text += text;
      read_logprobs(choice["logprobs"], out);
      if (choice["finish_reason"].is_string())
        out.finish_reason = choice["finish_reason"].get<std::string>();
      if (!text.empty() && !on_text(text)) {
        stopped = true;
        return false;
      }
    }
    return true;
  });
  if (head.status < 200 || head.status >= 300) throw_error(head.status, pending);
  if (!error_body.empty()) throw_error(500, error_body);
  if (stopped) out.finish_reason = "cancelled";
  return out;
}

Health Client::health() {
  Socket socket(socket_path_, timeout_ms_);
  socket.write_all("GET /health HTTP/1.1\r\nHost: moed\r\nConnection: close\r\n\r\n");
  std::string answer;
  read_response(socket, [&](std::string_view piece) {
    answer.append(piece);
    return true;
  });
  const json j = json::parse(answer);
  Health h{j.value("status", ""), j.value("model", ""), j.value("progress", 0.0),
           j.value("error", "")};
  return h;
}

std::vector<std::string> Client::models() {
  const json j = json::parse(call("GET", "/v1/models"));
  std::vector<std::string> out;
  for (const auto& m : j["data"]) out.push_back(m["id"].get<std::string>());
  return out;
}

std::string Client::metrics() {
  return call("GET", "/metrics");
}
std::string Client::cache() {
  return call("GET", "/admin/cache");
}

std::string Client::set_cache(const std::string& host_budget, const std::string& policy,
                              const std::string& gpu_budget, std::optional<double> auto_pin) {
  json body = json::object();
  if (auto_pin) body["auto_pin"] = *auto_pin;
  if (!gpu_budget.empty()) body["gpu_budget"] = gpu_budget;
  if (!host_budget.empty()) body["host_budget"] = host_budget;
  if (!policy.empty()) body["policy"] = policy;
  return call("POST", "/admin/cache", body.dump());
}

std::string Client::pin(int layer, int expert) {
  return call("POST", "/admin/pin", json{{"layer", layer}, {"expert", expert}}.dump());
}

std::string Client::unpin(int layer, int expert) {
  return call("POST", "/admin/unpin", json{{"layer", layer}, {"expert", expert}}.dump());
}

std::string Client::experts() {
  return call("GET", "/admin/experts");
}
void Client::trace_start() {
  call("POST", "/admin/trace/start");
}
void Client::trace_stop() {
  call("POST", "/admin/trace/stop");
}
std::string Client::trace_download() {
  return call("GET", "/admin/trace");
}

std::string Client::simulate(const std::vector<std::uint64_t>& blocks) {
  return call("POST", "/admin/trace/simulate", json{{"blocks", blocks}}.dump());
}

}  // namespace moed
