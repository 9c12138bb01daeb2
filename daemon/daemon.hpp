#pragma once

#include <optional>
#include <string>
#include <vector>

namespace moed::cli {

// `moed` with no subcommand: the long-running daemon. Flags override the config file.
struct DaemonArgs {
  std::string config;
  std::optional<std::string> model, socket, tcp, host_budget, policy, admin_group, state_dir,
      socket_mode, chat_template, kv_dtype;
  std::optional<int> threads;
  std::optional<unsigned> max_queue, max_batch, prefill_chunk;
  std::vector<std::string> cors_origins;  // replaces listen.cors_origins when given
};

int run_daemon(const DaemonArgs& args);

}  // namespace moed::cli
