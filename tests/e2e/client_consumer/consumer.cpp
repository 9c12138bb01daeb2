// Completes a prompt through libmoed-client: consumer SOCKET
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
}
