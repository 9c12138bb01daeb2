// Completes a prompt and answers a chat through libmoed-client: consumer SOCKET
#include <iostream>
#include <moed/client.hpp>

int main(int argc, char** argv) {
  moed::Client client(argc > 1 ? argv[1] : "/run/moed/moed.sock");
  moed::CompletionRequest request;
  request.prompt = "Hello";
  request.max_tokens = 4;
  request.temperature = 0;
  const auto c = client.complete(request);
  std::cout << c.completion_tokens << " " << c.finish_reason << "\n";
  try {
    request.max_tokens = -1;
    client.complete(request);
  } catch (const moed::Error& e) {
    std::cout << e.status() << " " << e.param() << "\n";
  }
  moed::ChatRequest chat;
  chat.messages = {{"system", "Be brief."}, {"user", "Hello"}};
  chat.max_tokens = 3;
  chat.temperature = 0;
  chat.logprobs = 2;
  const auto reply = client.chat(chat);
  std::string streamed;
  client.chat_stream(chat, [&](std::string_view piece) {
    streamed += piece;
    return true;
  });
  std::cout << "chat " << reply.completion_tokens << " " << reply.logprobs.size() << " "
            << (streamed == reply.text ? "same" : "differs") << "\n";
}
