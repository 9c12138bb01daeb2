#include "daemon.hpp"

#include <signal.h>
#include <systemd/sd-daemon.h>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <thread>

#include "moed/model/checkpoint.hpp"
#include "moed/server/config.hpp"
#include "moed/server/http_server.hpp"
#include "moed/server/service.hpp"

namespace moed::cli {
namespace {

server::Config load_config(const DaemonArgs& args) {
  server::Config c =
      args.config.empty() ? server::Config{} : server::Config::from_file(args.config);
  if (args.model) c.model = *args.model;
  if (args.chat_template) c.chat_template = *args.chat_template;
  if (args.socket) c.socket = *args.socket;
  if (args.socket_mode)
    c.socket_mode = static_cast<std::uint32_t>(std::stoul(*args.socket_mode, nullptr, 8));
  if (args.tcp) c.tcp = *args.tcp;
  if (!args.cors_origins.empty()) c.cors_origins = args.cors_origins;
  if (args.host_budget) c.host_budget = *args.host_budget;
  if (args.policy) c.policy = *args.policy;
  if (args.admin_group) c.admin_group = *args.admin_group;
  if (args.state_dir) c.state_dir = *args.state_dir;
  if (args.threads) c.threads = *args.threads;
  if (args.max_queue) c.max_queue = *args.max_queue;
  if (args.max_batch) c.max_batch = *args.max_batch;
  if (args.kv_dtype) c.kv_dtype = *args.kv_dtype;
  if (args.prefill_chunk) c.prefill_chunk = *args.prefill_chunk;
  if (c.model.empty())
    throw std::invalid_argument(
        "no model: pass --model DIR (or FILE.gguf) or set model.path in the config file");
  c.validate();
  model::require_model(c.model);  // at start, rather than as the first file missing from it
  return c;
}

}  // namespace

int run_daemon(const DaemonArgs& args) {
  server::Config config = load_config(args);
  // Signals are taken synchronously by this thread; every thread started later inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);  // a client that vanishes makes writes fail, not the daemon die

  server::Service service(config);
  server::HttpServer http(
      {config.socket, config.socket_mode, config.tcp, config.max_body_bytes, config.max_connections,
       config.header_timeout_ms, config.send_timeout_ms, config.cors_origins},
      [&](const server::Request& r, const server::Peer& p, server::ResponseWriter& w) {
        service.handle(r, p, w);
      });
  http.listen();  // before loading, so /health answers at once
  std::fprintf(stderr, "moed: listening on %s; loading %s\n", http.describe().c_str(),
               config.model.c_str());
  sd_notifyf(0, "STATUS=loading %s", config.model.c_str());
  service.start_loading();
  std::thread ready([&] {
    if (service.wait_ready()) {
      std::fprintf(stderr, "moed: %s\n", service.status_line().c_str());
      std::fprintf(stderr, "moed: kernels: %s\n", service.kernels_line().c_str());
      sd_notifyf(0, "READY=1\nSTATUS=%s", service.status_line().c_str());
    } else {
      std::fprintf(stderr, "moed: error: %s\n", service.load_error().c_str());
      sd_notifyf(0, "STATUS=failed to load: %s", service.load_error().c_str());
      ::kill(::getpid(), SIGTERM);
    }
  });

  int exit_code = 0;
  while (true) {
    int signal = 0;
    sigwait(&signals, &signal);
    if (signal == SIGHUP) {
      if (args.config.empty()) {
        std::fprintf(stderr, "moed: SIGHUP: no config file to re-read\n");
        continue;
      }
      // No RELOADING/READY pair while loading: READY=1 then would tell systemd the service is up
      // before its model is.
      try {
        const server::Config fresh = load_config(args);
        if (!service.reload(fresh)) {
          std::fprintf(stderr,
                       "moed: SIGHUP: the model is still loading; nothing changed (send SIGHUP "
                       "again once it serves)\n");
          continue;
        }
        sd_notify(0, "RELOADING=1");
        std::fprintf(
            stderr, "moed: SIGHUP: re-read %s (host_budget '%s', policy %s, max_queue %u)\n",
            args.config.c_str(), fresh.host_budget.c_str(), fresh.policy.c_str(), fresh.max_queue);
        sd_notify(0, "READY=1");
      } catch (const std::exception& e) {
        std::fprintf(stderr, "moed: SIGHUP: kept the running settings: %s\n", e.what());
      }
      continue;
    }
    std::fprintf(stderr, "moed: %s: draining in-flight requests\n",
                 signal == SIGTERM ? "SIGTERM" : "SIGINT");
    sd_notify(0, "STOPPING=1\nSTATUS=draining");
    break;
  }
  if (service.loading()) {
    // A load cannot be cut short, and a large model on a slow disk would outlast systemd's stop
    // timeout. Only /health and /metrics are served before the model is up, and nothing is
    // written, so the requests under way are answered and the load is abandoned with the process.
    http.stop();
    std::fprintf(stderr, "moed: stopped while loading %s (the load was abandoned)\n",
                 config.model.c_str());
    std::fflush(stderr);
    std::_Exit(exit_code);
  }
  ready.join();
  if (!service.load_error().empty()) exit_code = 1;
  http.stop();      // no new connections; in-flight requests finish
  service.drain();  // and nothing is left running in the engine
  std::fprintf(stderr, "moed: stopped\n");
  return exit_code;
}

}  // namespace moed::cli
