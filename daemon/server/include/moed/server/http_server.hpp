#pragma once

#include <sys/types.h>

// clang-format off
#include <utility>  // before Boost 1.74's asio: its awaitable.hpp uses std::exchange without it
#include <boost/asio.hpp>
// clang-format on
#include <atomic>
#include <boost/beast/http.hpp>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace moed::server {

namespace http = boost::beast::http;
using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

// Who is on the other end of a connection: SO_PEERCRED on the Unix socket; none over TCP.
struct Peer {
  bool has_credentials = false;
  uid_t uid = 0;
  gid_t gid = 0;
  pid_t pid = 0;
};

// How a handler answers: one whole response, or a chunked stream (Server-Sent Events).
class ResponseWriter {
 public:
  virtual ~ResponseWriter() = default;
  virtual void send(Response response) = 0;
  // false when the client is gone.
  virtual bool start_stream(http::status status, const std::string& content_type) = 0;
  virtual bool write_chunk(std::string_view data) = 0;
  virtual void end_stream() = 0;
  // false once the client has closed its end (or a write failed), without blocking: lets a
  // handler stop work nobody will read.
  virtual bool client_connected() = 0;
};

using Handler = std::function<void(const Request&, const Peer&, ResponseWriter&)>;

// The largest request head (request line and headers) a connection may send. Heads are small; a
// larger one is an attack or a bug, answered 431.
inline constexpr std::uint32_t kMaxRequestHeadBytes = 16 * 1024;

// An OpenAI-shaped JSON error answer (`{"error": {"message", "type", "param", "code"}}`) that
// closes the connection, for what the server itself refuses (malformed HTTP, limits, overload). Any
// bytes in `message` give valid JSON.
Response plain_error(http::status status, const std::string& message, const std::string& type);

struct HttpOptions {
  std::string socket_path;  // "" for none
  std::uint32_t socket_mode = 0660;
  std::string tcp;  // "host:port" or ""
  std::uint64_t max_body_bytes = 1 << 20;
  std::uint32_t max_connections = 256;
  std::uint32_t header_timeout_ms = 10000;
  // A write that makes no progress for this long (a client that stopped reading) closes the
  // connection, so the handler sees the client gone and frees what it holds.
  std::uint32_t send_timeout_ms = 30000;
  // Origins (scheme://host[:port], or "*") whose browser pages may read the answers (CORS):
  // their requests get Access-Control-Allow-Origin, and their preflights (OPTIONS) the methods
  // and headers they ask for. Empty: no CORS headers, so browsers keep other sites' pages
  // from reading moed's answers.
  std::vector<std::string> cors_origins;
};

// HTTP/1.1 over a Unix stream socket (and optionally TCP). One thread per connection; a
// watchdog closes connections whose request head does not arrive in time (slow clients, idle
// keep-alives) or whose answer is not read in time (clients that stopped reading), so they
// cannot pin threads. Requests over the limits get 413/431/503 answers.
// Accepts the listening sockets systemd passes (LISTEN_FDS) instead of binding its own.
class HttpServer {
 public:
  HttpServer(HttpOptions options, Handler handler);
  ~HttpServer();

  void listen();  // binds (or adopts systemd's sockets); throws naming the path on failure
  void stop();    // stops accepting, closes idle connections, waits for busy ones to finish
  std::string describe() const;  // where it listens, for logs

 private:
  struct Connection;
  template <typename Acceptor>
  void accept_loop(Acceptor& acceptor);
  // The value of Access-Control-Allow-Origin for this request: its Origin where
  // cors_origins lets it in ("*" where any may), else "".
  std::string allowed_origin(const Request& request) const;
  Response options_answer(const Request& request) const;
  template <typename Socket>
  void serve(std::shared_ptr<Connection> connection, Socket socket, Peer peer);
  void watchdog();

  HttpOptions options_;
  Handler handler_;
  // Shared with the connection threads, which may outlive stop() by a few instructions.
  std::shared_ptr<boost::asio::io_context> io_ = std::make_shared<boost::asio::io_context>();
  std::unique_ptr<boost::asio::local::stream_protocol::acceptor> unix_acceptor_;
  std::unique_ptr<boost::asio::ip::tcp::acceptor> tcp_acceptor_;
  std::vector<std::thread> accept_threads_;
  std::thread watchdog_thread_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<Connection*, std::shared_ptr<Connection>> connections_;
  std::atomic<bool> stopping_{false};
  bool owns_socket_file_ = false;
};

}  // namespace moed::server
