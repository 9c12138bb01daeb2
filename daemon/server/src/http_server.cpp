#include "moed/server/http_server.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <boost/beast/core.hpp>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <system_error>

namespace moed::server {
namespace {

// An origin server with a clock sends Date on every answer (RFC 9110, 6.6.1): IMF-fixdate, its
// names in English whatever the locale.
std::string http_date_now() {
  static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char text[40];
  std::snprintf(text, sizeof text, "%s, %02d %s %04d %02d:%02d:%02d GMT", kDays[utc.tm_wday],
                utc.tm_mday, kMonths[utc.tm_mon], utc.tm_year + 1900, utc.tm_hour, utc.tm_min,
                utc.tm_sec);
  return text;
}

}  // namespace

namespace asio = boost::asio;
namespace beast = boost::beast;
using unix_socket = asio::local::stream_protocol;
using Clock = std::chrono::steady_clock;

struct HttpServer::Connection {
  std::function<void()> close;  // shuts the socket down from another thread
  int fd = -1;                  // to see from stop() whether a request has come
  Clock::time_point deadline = Clock::time_point::max();        // for the current request head
  Clock::time_point write_deadline = Clock::time_point::max();  // for the write under way
  bool busy = false;       // handling a request (not waiting for one)
  bool receiving = false;  // a request's first bytes have come: stop() lets it finish
};

namespace {

bool readable_now(int fd) {
  pollfd poller{fd, POLLIN, 0};
  return ::poll(&poller, 1, 0) == 1 && (poller.revents & POLLIN) != 0;
}

// Bytes a large answer is written in, each slice with its own write deadline.
constexpr std::uint32_t kWriteSliceBytes = 64 * 1024;
// How long a connection refused for its body's size keeps reading what the client still sends.
constexpr auto kLingerAfterRefusal = std::chrono::seconds(1);

// Arms the connection's write deadline for one write; the watchdog closes the socket when it
// passes, which fails the blocked write.
using WriteDeadline = std::function<void(bool writing)>;

template <typename Socket>
class SocketWriter final : public ResponseWriter {
 public:
  // `allow_origin`: the request's origin where CORS lets it read the answer ("*" for any), else
  // "".
  SocketWriter(Socket& socket, unsigned version, bool keep_alive, bool head_only,
               WriteDeadline deadline, std::string allow_origin = {})
      : socket_(socket),
        version_(version),
        may_keep_alive_(keep_alive),
        head_only_(head_only),
        deadline_(std::move(deadline)),
        allow_origin_(std::move(allow_origin)) {}
  bool streamed() const { return streamed_; }
  bool ok() const { return ok_; }
  // Whether the answer sent left the connection open for another request.
  bool kept_alive() const { return kept_alive_; }

  void send(Response response) override {
    // Read before the version changes: a handler's answer is HTTP/1.1, persistent unless it
    // says close, where the same answer read as 1.0 would be taken for a close (RFC 9112, 9.3).
    kept_alive_ = may_keep_alive_ && response.keep_alive();
    response.version(version_);
    response.keep_alive(kept_alive_);
    response.set(http::field::server, "moed");
    response.set(http::field::date, http_date_now());
    set_cors(response);
    response.prepare_payload();
    // A 204 has no body, and says nothing of its length (RFC 9110, 8.6).
    if (response.result() == http::status::no_content) response.erase(http::field::content_length);
    // Written in slices with the deadline armed for each, so the send timeout ends a client that
    // makes no progress, not a slow one reading a large answer (a trace download).
    http::response_serializer<http::string_body> serializer{response};
    serializer.limit(kWriteSliceBytes);
    beast::error_code ec;
    // HEAD: the head a GET would get, Content-Length included, and no body (RFC 9110, 9.3.2).
    if (head_only_) {
      deadline_(true);
      http::write_header(socket_, serializer, ec);
    } else {
      while (!ec && !serializer.is_done()) {
        deadline_(true);
        http::write_some(socket_, serializer, ec);
      }
    }
    deadline_(false);
    ok_ = !ec;
  }
  bool start_stream(http::status status, const std::string& content_type) override {
    http::response<http::empty_body> head{status, version_};
    head.set(http::field::server, "moed");
    head.set(http::field::date, http_date_now());
    head.set(http::field::content_type, content_type);
    head.set(http::field::cache_control, "no-cache");
    set_cors(head);
    // HTTP/1.0 has no chunked coding: the stream is the body as it comes, ended by the close.
    chunked_ = version_ >= 11;
    head.chunked(chunked_);
    head.keep_alive(false);
    http::response_serializer<http::empty_body> serializer{head};
    beast::error_code ec;
    deadline_(true);
    http::write_header(socket_, serializer, ec);
    deadline_(false);
    streamed_ = true;
    return ok_ = !ec;
  }
  bool write_chunk(std::string_view data) override {
    if (!ok_) return false;
    beast::error_code ec;
    deadline_(true);
    const asio::const_buffer bytes(data.data(), data.size());
    if (chunked_)
      asio::write(socket_, http::make_chunk(bytes), ec);
    else
      asio::write(socket_, bytes, ec);
    deadline_(false);
    return ok_ = !ec;
  }
  void end_stream() override {
    if (!ok_ || !chunked_) return;
    beast::error_code ec;
    deadline_(true);
    asio::write(socket_, http::make_chunk_last(), ec);
    deadline_(false);
    ok_ = !ec;
  }
  bool client_connected() override {
    if (!ok_) return false;
    pollfd check{socket_.native_handle(), POLLRDHUP, 0};
    if (::poll(&check, 1, 0) > 0 && (check.revents & (POLLRDHUP | POLLHUP | POLLERR))) ok_ = false;
    return ok_;
  }

 private:
  template <typename Message>
  void set_cors(Message& message) const {
    if (allow_origin_.empty()) return;
    message.set(http::field::access_control_allow_origin, allow_origin_);
    // An answer that names one origin differs by origin: caches must keep them apart.
    if (allow_origin_ != "*") message.set(http::field::vary, "Origin");
  }

  Socket& socket_;
  unsigned version_;
  bool may_keep_alive_;  // the request asked, and no shutdown has begun
  bool head_only_;
  WriteDeadline deadline_;
  std::string allow_origin_;
  bool kept_alive_ = false;
  bool streamed_ = false;
  bool chunked_ = true;
  bool ok_ = true;
};

}  // namespace

Response plain_error(http::status status, const std::string& message, const std::string& type) {
  Response r{status, 11};
  r.set(http::field::content_type, "application/json");
  // Messages quote client input (e.g. a parser's error text): the JSON library escapes control
  // characters and replaces invalid UTF-8 rather than throwing.
  const nlohmann::json body = {
      {"error", {{"message", message}, {"type", type}, {"param", nullptr}, {"code", nullptr}}}};
  r.body() = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  r.keep_alive(false);
  return r;
}

HttpServer::HttpServer(HttpOptions options, Handler handler)
    : options_(std::move(options)), handler_(std::move(handler)) {}

HttpServer::~HttpServer() {
  stop();
}

std::string HttpServer::describe() const {
  std::string out;
  if (unix_acceptor_) out += "unix:" + options_.socket_path;
  if (tcp_acceptor_) {
    if (!out.empty()) out += " and ";
    beast::error_code ec;
    const auto ep = tcp_acceptor_->local_endpoint(ec);
    out += "tcp:" + ep.address().to_string() + ":" + std::to_string(ep.port());
  }
  return out;
}

void HttpServer::listen() {
  const int passed = sd_listen_fds(1);
  if (passed > 0) {
    for (int fd = SD_LISTEN_FDS_START; fd < SD_LISTEN_FDS_START + passed; ++fd) {
      if (sd_is_socket_unix(fd, SOCK_STREAM, 1, nullptr, 0) > 0 && !unix_acceptor_) {
        unix_acceptor_ = std::make_unique<unix_socket::acceptor>(*io_, unix_socket(), fd);
      } else if (sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, 1, 0) > 0 && !tcp_acceptor_) {
        sockaddr_storage addr{};
        socklen_t len = sizeof addr;
        getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
        tcp_acceptor_ = std::make_unique<asio::ip::tcp::acceptor>(
            *io_, addr.ss_family == AF_INET6 ? asio::ip::tcp::v6() : asio::ip::tcp::v4(), fd);
      }
    }
    std::fprintf(stderr, "moed: using %d listening socket(s) from systemd\n", passed);
  } else {
    if (!options_.socket_path.empty()) {
      const std::filesystem::path path(options_.socket_path);
      if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
      // A socket file left by a crashed run would make bind fail; a live daemon still answers
      // on it, so only remove it when nothing does.
      if (std::filesystem::exists(path)) {
        unix_socket::socket probe(*io_);
        beast::error_code ec;
        probe.connect(unix_socket::endpoint(options_.socket_path), ec);
        if (!ec)
          throw std::runtime_error(options_.socket_path +
                                   ": another daemon is already listening there");
        std::filesystem::remove(path);
      }
      try {
        unix_acceptor_ = std::make_unique<unix_socket::acceptor>(
            *io_, unix_socket::endpoint(options_.socket_path));
      } catch (const std::exception& e) {
        throw std::runtime_error(options_.socket_path + ": cannot listen: " + e.what());
      }
      ::chmod(options_.socket_path.c_str(), options_.socket_mode);
      owns_socket_file_ = true;
    }
    if (!options_.tcp.empty()) {
      const auto colon = options_.tcp.rfind(':');
      if (colon == std::string::npos)
        throw std::runtime_error("listen.tcp: '" + options_.tcp + "' is not host:port");
      try {
        const auto address = asio::ip::make_address(options_.tcp.substr(0, colon));
        const auto port = static_cast<unsigned short>(std::stoi(options_.tcp.substr(colon + 1)));
        tcp_acceptor_ =
            std::make_unique<asio::ip::tcp::acceptor>(*io_, asio::ip::tcp::endpoint(address, port));
      } catch (const std::exception& e) {
        throw std::runtime_error("listen.tcp: cannot listen on '" + options_.tcp +
                                 "': " + e.what());
      }
    }
  }
  if (!unix_acceptor_ && !tcp_acceptor_) throw std::runtime_error("nothing to listen on");
  if (unix_acceptor_) accept_threads_.emplace_back([this] { accept_loop(*unix_acceptor_); });
  if (tcp_acceptor_) accept_threads_.emplace_back([this] { accept_loop(*tcp_acceptor_); });
  watchdog_thread_ = std::thread([this] { watchdog(); });
}

template <typename Acceptor>
void HttpServer::accept_loop(Acceptor& acceptor) {
  while (!stopping_) {
    typename Acceptor::protocol_type::socket socket(*io_);
    beast::error_code ec;
    acceptor.accept(socket, ec);
    if (ec) {
      if (stopping_) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));  // e.g. EMFILE: back off
      continue;
    }
    Peer peer;
    if constexpr (std::is_same_v<typename Acceptor::protocol_type, unix_socket>) {
      ucred cred{};
      socklen_t len = sizeof cred;
      if (getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
        peer = {true, cred.uid, cred.gid, cred.pid};
    }
    auto connection = std::make_shared<Connection>();
    {
      std::lock_guard lock(mutex_);
      if (connections_.size() >= options_.max_connections) {
        beast::error_code ignored;
        auto response =
            plain_error(http::status::service_unavailable,
                        "too many connections (" + std::to_string(options_.max_connections) + ")",
                        "server_overloaded");
        response.prepare_payload();
        http::write(socket, response, ignored);
        continue;
      }
      connections_[connection.get()] = connection;
    }
    // Shared, so that the socket outlives a thread that fails to start.
    auto owned = std::make_shared<decltype(socket)>(std::move(socket));
    try {
      std::thread([this, io = io_, connection, owned, peer] {
        serve(connection, std::move(*owned), peer);
      }).detach();
    } catch (const std::system_error& e) {
      // No thread to serve it (EAGAIN under a task limit): refused like a full house, and the
      // daemon goes on.
      {
        std::lock_guard lock(mutex_);
        connections_.erase(connection.get());
      }
      beast::error_code ignored;
      auto response =
          plain_error(http::status::service_unavailable,
                      std::string("cannot start a thread for the connection: ") + e.what(),
                      "server_overloaded");
      response.prepare_payload();
      http::write(*owned, response, ignored);
    }
  }
}

template <typename Socket>
void HttpServer::serve(std::shared_ptr<Connection> connection, Socket socket, Peer peer) {
  const int fd = socket.native_handle();
  {
    std::lock_guard lock(mutex_);
    connection->close = [fd] { ::shutdown(fd, SHUT_RDWR); };
    connection->fd = fd;
  }
  const WriteDeadline write_deadline = [this, connection](bool writing) {
    std::lock_guard lock(mutex_);
    connection->write_deadline =
        writing ? Clock::now() + std::chrono::milliseconds(options_.send_timeout_ms)
                : Clock::time_point::max();
  };
  beast::flat_buffer buffer;
  // Lingering close: the client may still be sending; closing at once would reset the
  // connection before it reads the refusal. Stop writing, then drain what it sends for a moment:
  // a second at most, or a client that sends a byte now and then would hold this thread, a
  // connection slot and the daemon's shutdown for as long as it liked.
  const auto linger = [&] {
    ::shutdown(fd, SHUT_WR);
    timeval wait{0, 200000};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
    const auto give_up = Clock::now() + kLingerAfterRefusal;
    char sink[16384];
    for (std::size_t drained = 0;
         drained < 8 * options_.max_body_bytes && Clock::now() < give_up;) {
      const ssize_t n = ::recv(fd, sink, sizeof sink, 0);
      if (n <= 0) break;
      drained += static_cast<std::size_t>(n);
    }
  };
  while (true) {
    {
      std::lock_guard lock(mutex_);
      // Decided under the lock stop() sweeps with, so a shutdown that began while the last
      // answer was going out cannot leave this connection waiting for another request. One
      // whose request has come (a connection accepted just before) is still served.
      if (stopping_ && buffer.size() == 0 && !readable_now(fd)) break;
      connection->busy = false;
      connection->receiving = false;
      connection->deadline = Clock::now() + std::chrono::milliseconds(options_.header_timeout_ms);
    }
    beast::error_code ec;
    // Waits for the request's first bytes apart from reading it, so that a shutdown closes only
    // connections with nothing under way: a request half sent when SIGTERM comes is answered,
    // not reset. The watchdog's head deadline still bounds a client that stops mid-head.
    if (buffer.size() == 0) socket.wait(Socket::wait_read, ec);
    {
      std::lock_guard lock(mutex_);
      connection->receiving = true;
    }
    http::request_parser<http::string_body> parser;
    parser.header_limit(kMaxRequestHeadBytes);
    parser.body_limit(options_.max_body_bytes);
    if (!ec) http::read_header(socket, buffer, parser, ec);
    // A client that asks before sending its body (curl does for large ones) waits for this, or
    // a second, then sends anyway. A body too large was refused with the head (body_limit);
    // HTTP/1.0 has no such expectation (RFC 9110, 10.1.1).
    if (!ec && !parser.is_done() && parser.get().version() >= 11 &&
        beast::iequals(parser.get()[http::field::expect], "100-continue")) {
      http::response<http::empty_body> go_on{http::status::continue_, parser.get().version()};
      http::write(socket, go_on, ec);
    }
    if (!ec && !parser.is_done()) http::read(socket, buffer, parser, ec);
    {
      std::lock_guard lock(mutex_);
      connection->busy = true;
      connection->deadline = Clock::time_point::max();
    }
    if (ec == http::error::end_of_stream || ec == asio::error::eof ||
        ec == asio::error::connection_reset)
      break;
    if (ec) {
      SocketWriter<Socket> writer(socket, 11, false, false, write_deadline);
      if (ec == http::error::body_limit) {
        writer.send(plain_error(
            http::status::payload_too_large,
            "request body exceeds " + std::to_string(options_.max_body_bytes) + " bytes",
            "invalid_request_error"));
        linger();
      } else if (ec == http::error::header_limit) {
        writer.send(plain_error(http::status::request_header_fields_too_large,
                                "request head too large", "invalid_request_error"));
        linger();
      } else if (ec != asio::error::operation_aborted && ec != asio::error::bad_descriptor &&
                 ec != asio::error::shut_down && ec != asio::error::broken_pipe) {
        writer.send(plain_error(http::status::bad_request,
                                "malformed HTTP request: " + ec.message(),
                                "invalid_request_error"));
        linger();
      }
      break;
    }
    const Request& request = parser.get();
    SocketWriter<Socket> writer(socket, request.version(), request.keep_alive() && !stopping_,
                                request.method() == http::verb::head, write_deadline,
                                allowed_origin(request));
    try {
      if (request.method() == http::verb::options)
        writer.send(options_answer(request));
      else
        handler_(request, peer, writer);
    } catch (const std::exception& e) {
      if (!writer.streamed())
        writer.send(plain_error(http::status::internal_server_error, e.what(), "server_error"));
    }
    if (writer.streamed() || !writer.ok() || !writer.kept_alive()) break;
  }
  beast::error_code ignored;
  socket.shutdown(Socket::shutdown_both, ignored);
  std::lock_guard lock(mutex_);
  connections_.erase(connection.get());
  changed_.notify_all();
}

std::string HttpServer::allowed_origin(const Request& request) const {
  const auto origin = request.find(http::field::origin);
  if (origin == request.end()) return {};
  const std::string_view value(origin->value().data(), origin->value().size());
  for (const auto& allowed : options_.cors_origins) {
    if (allowed == "*") return "*";
    if (allowed == value) return allowed;
  }
  return {};
}

// OPTIONS: every route takes GET (and HEAD) or POST (RFC 9110, 9.3.7). A browser's CORS
// preflight from an allowed origin is also told the method and headers it asked for may be
// used, for ten minutes; one from another origin gets no such headers, so the browser refuses.
Response HttpServer::options_answer(const Request& request) const {
  Response answer{http::status::no_content, 11};
  answer.set(http::field::allow, "GET, HEAD, POST, OPTIONS");
  const auto method = request.find(http::field::access_control_request_method);
  if (method != request.end() && !allowed_origin(request).empty()) {
    answer.set(http::field::access_control_allow_methods, "GET, HEAD, POST");
    const auto headers = request.find(http::field::access_control_request_headers);
    if (headers != request.end())
      answer.set(http::field::access_control_allow_headers, headers->value());
    answer.set(http::field::access_control_max_age, "600");
  }
  return answer;
}

void HttpServer::watchdog() {
  std::unique_lock lock(mutex_);
  // Runs until the last connection is gone, so that during stop() a client that stopped reading
  // is still closed after the send timeout instead of holding the shutdown.
  while (!stopping_ || !connections_.empty()) {
    changed_.wait_for(lock, std::chrono::milliseconds(100));
    const auto now = Clock::now();
    for (auto& [key, c] : connections_)
      if (((!c->busy && c->deadline < now) || c->write_deadline < now) && c->close) {
        c->close();
        c->deadline = Clock::time_point::max();
        c->write_deadline = Clock::time_point::max();
      }
  }
}

void HttpServer::stop() {
  if (stopping_.exchange(true)) return;
  // shutdown() wakes the accept threads; the acceptors are closed only once those have left
  // them, as an Asio object must not be used by two threads at once.
  if (unix_acceptor_) ::shutdown(unix_acceptor_->native_handle(), SHUT_RDWR);
  if (tcp_acceptor_) ::shutdown(tcp_acceptor_->native_handle(), SHUT_RDWR);
  for (auto& t : accept_threads_) t.join();
  beast::error_code ignored;
  if (unix_acceptor_) unix_acceptor_->close(ignored);
  if (tcp_acceptor_) tcp_acceptor_->close(ignored);
  {
    std::unique_lock lock(mutex_);
    for (auto& [key, c] : connections_)
      // Idle: nothing under way, not even a request whose bytes wait for its thread to wake.
      if (!c->busy && !c->receiving && c->close && !readable_now(c->fd)) c->close();
    changed_.notify_all();
    changed_.wait(lock, [&] { return connections_.empty(); });
  }
  if (watchdog_thread_.joinable()) watchdog_thread_.join();
  if (owns_socket_file_) std::filesystem::remove(options_.socket_path);
}

}  // namespace moed::server
