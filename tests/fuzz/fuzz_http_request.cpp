// The request path from raw bytes to a validated request: HTTP/1.1 parsing with the server's
// limits (Beast's parser, as HttpServer does), then the route's body through the validation the
// daemon runs (request_parse.hpp). Prompts are encoded one token per byte, as the tokenizer has
// its own target; a chat request's prompt is its template context's JSON.

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "moed/server/http_server.hpp"
#include "moed/server/request_parse.hpp"

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
using namespace moed::server;

// Mixtral-8x7B's limits, and the daemon's defaults.
const ModelLimits kLimits{"model", 32000, 32768, 32, 8, 16};

std::vector<std::int32_t> bytes_as_tokens(const std::string& text) {
  std::vector<std::int32_t> ids;
  for (const char c : text) ids.push_back(static_cast<std::uint8_t>(c));
  return ids;
}

void validate(const http::request<http::string_body>& request) {
  const std::string target(request.target());
  const std::string path = target.substr(0, target.find('?'));
  const bool post = request.method() == http::verb::post;
  if (!post ||
      !(path == "/v1/completions" || path == "/v1/chat/completions" || path.starts_with("/admin/")))
    return;
  const Body body = request.body().empty() && path.starts_with("/admin/")
                        ? Body::object()
                        : parse_body(request.body());
  if (path == "/v1/completions") {
    (void)parse_completion(body, kLimits, bytes_as_tokens);
  } else if (path == "/v1/chat/completions") {
    const Body context = chat_context(body, "<s>", "</s>");
    (void)parse_chat(body, bytes_as_tokens(context.dump()), kLimits);
  } else if (path == "/admin/cache") {
    (void)parse_cache_settings(body);
  } else if (path == "/admin/pin" || path == "/admin/unpin") {
    (void)parse_expert_ref(body, kLimits);
  } else if (path == "/admin/trace/simulate") {
    (void)parse_simulate_request(body);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  http::request_parser<http::string_body> parser;
  parser.header_limit(kMaxRequestHeadBytes);
  parser.body_limit(HttpOptions{}.max_body_bytes);
  parser.eager(true);
  beast::error_code ec;
  std::size_t used = 0;
  while (!ec && !parser.is_done() && used < size) {
    const std::size_t n = parser.put(boost::asio::buffer(data + used, size - used), ec);
    if (n == 0 && !ec) break;  // needs more bytes than there are
    used += n;
  }
  if (!ec && !parser.is_done()) parser.put_eof(ec);
  if (ec || !parser.is_done()) return 0;
  try {
    validate(parser.get());
  } catch (const RequestError&) {
  }
  return 0;
}
