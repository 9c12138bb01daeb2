#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "moed/server/http_server.hpp"

using namespace moed::server;

TEST(PlainError, AnyMessageGivesValidJsonInTheOpenAiShape) {
  // Control characters, quotes, backslashes and bytes that are not UTF-8, as client input
  // quoted in an error message may hold.
  const std::string message = std::string("bad \"x\" \\ tab\there\nnul:") + '\0' + "\x01\xff end";
  const Response r = plain_error(http::status::bad_request, message, "invalid_request_error");
  EXPECT_EQ(r.result(), http::status::bad_request);
  EXPECT_EQ(r[http::field::content_type], "application/json");
  EXPECT_FALSE(r.keep_alive());
  const auto body = nlohmann::json::parse(r.body());  // throws on invalid JSON
  const std::string got = body.at("error").at("message");
  EXPECT_EQ(got, std::string("bad \"x\" \\ tab\there\nnul:") + '\0' + "\x01\xEF\xBF\xBD end");
  EXPECT_EQ(body["error"]["type"], "invalid_request_error");
  EXPECT_TRUE(body["error"]["code"].is_null());
}
