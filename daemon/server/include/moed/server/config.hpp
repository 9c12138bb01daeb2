#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace moed::server {

// Checks an entry of listen.cors_origins: "*", or an origin as browsers send it
// (scheme://host[:port], http or https, no path). Throws std::invalid_argument saying why not.
void check_cors_origin(const std::string& origin);

// Everything moed reads from its YAML config file (configs/moed.yaml documents every key).
// Sizes are strings such as "24GiB"; the host budget may also be a share of the experts ("25%").
struct Config {
  std::string model;          // model.path
  std::string model_name;     // model.name; default: the directory's name
  std::string chat_template;  // model.chat_template: a .jinja file; "" = the model's
  std::string socket = "/run/moed/moed.sock";  // listen.socket
  std::uint32_t socket_mode = 0660;            // listen.socket_mode (octal string in YAML)
  std::string tcp;                             // listen.tcp: "127.0.0.1:8080"; "" for none
  // listen.cors_origins: origins whose pages a browser lets read moed's answers; "*" any
  std::vector<std::string> cors_origins;
  std::string host_budget;         // memory.host_budget: "" (all), "24GiB", "25%"
  std::string policy = "tinylfu";  // memory.policy: memtier::kDefaultPolicy
  double auto_pin = 0;  // memory.auto_pin: share of the budget pinned automatically (0: off)
  std::string reader = "io_uring";               // memory.reader
  std::uint32_t queue_depth = 64;                // memory.queue_depth
  bool prefetch = true;                          // memory.prefetch
  int prefetch_horizon = 2;                      // memory.prefetch_horizon: 1 or 2
  std::uint32_t ring_sections = 2;               // memory.ring_sections
  std::string kv_dtype = "bf16";                 // memory.kv_dtype: bf16, f32
  int threads = 0;                               // compute.threads
  std::uint32_t prefill_chunk = 256;             // compute.prefill_chunk
  std::uint32_t max_queue = 64;                  // limits.max_queue
  std::uint32_t max_batch = 16;                  // limits.max_batch
  std::uint64_t max_body_bytes = 1 << 20;        // limits.max_body
  std::uint32_t max_connections = 256;           // limits.max_connections
  std::uint32_t header_timeout_ms = 10000;       // limits.header_timeout_ms
  std::uint32_t send_timeout_ms = 30000;         // limits.send_timeout_ms
  std::uint32_t default_max_tokens = 16;         // limits.default_max_tokens
  std::uint32_t default_chat_max_tokens = 2048;  // limits.default_chat_max_tokens; 0: none
  std::string admin_group;                       // admin.group
  std::string state_dir = "/var/lib/moed";       // state_dir: routing traces land here

  // Reads and validates a YAML file; throws std::runtime_error naming the key path
  // (e.g. "limits.max_batch") for unknown keys and bad values.
  static Config from_file(const std::filesystem::path& path);
  // Checks cross-key rules; throws naming the key.
  void validate() const;
};

}  // namespace moed::server
