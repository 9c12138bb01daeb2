#include "moed/server/config.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <functional>
#include <map>
#include <stdexcept>

#include "moed/engine/engine.hpp"
#include "moed/memtier/byte_size.hpp"
#include "moed/memtier/policy.hpp"

namespace moed::server {
namespace {

[[noreturn]] void fail(const std::filesystem::path& file, const std::string& key,
                       const std::string& what) {
  throw std::runtime_error(file.string() + ": " + key + ": " + what);
}

}  // namespace

Config Config::from_file(const std::filesystem::path& path) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path.string());
  } catch (const YAML::BadFile&) {
    throw std::runtime_error(path.string() + ": cannot open the config file");
  } catch (const YAML::Exception& e) {
    throw std::runtime_error(path.string() + ": not valid YAML: " + e.what());
  }
  Config c;
  if (root.IsNull()) return c;
  if (!root.IsMap()) fail(path, "(root)", "must be a mapping of sections");

  auto text = [&](const std::string& key, const YAML::Node& n) {
    if (!n.IsScalar()) fail(path, key, "expected a string");
    return n.as<std::string>();
  };
  auto number = [&](const std::string& key, const YAML::Node& n, long long lo, long long hi) {
    long long v = 0;
    try {
      v = n.as<long long>();
    } catch (const YAML::Exception&) {
      fail(path, key,
           "expected an integer, got '" + (n.IsScalar() ? n.as<std::string>() : std::string("?")) +
               "'");
    }
    if (v < lo || v > hi)
      fail(path, key,
           std::to_string(v) + " is outside [" + std::to_string(lo) + ", " + std::to_string(hi) +
               "]");
    return v;
  };
  auto boolean = [&](const std::string& key, const YAML::Node& n) {
    try {
      return n.as<bool>();
    } catch (const YAML::Exception&) {
      fail(path, key, "expected true or false");
    }
  };
  auto size = [&](const std::string& key, const YAML::Node& n) {
    try {
      return memtier::parse_byte_size(text(key, n));
    } catch (const std::invalid_argument& e) {
      fail(path, key, e.what());
    }
  };
  using Setter = std::function<void(const std::string&, const YAML::Node&)>;
  const std::map<std::string, std::map<std::string, Setter>> sections = {
      {"model",
       {{"path", [&](auto& k, auto& n) { c.model = text(k, n); }},
        {"name", [&](auto& k, auto& n) { c.model_name = text(k, n); }},
        {"chat_template", [&](auto& k, auto& n) { c.chat_template = text(k, n); }}}},
      {"listen",
       {{"socket", [&](auto& k, auto& n) { c.socket = text(k, n); }},
        {"socket_mode",
         [&](auto& k, auto& n) {
           const auto s = text(k, n);
           std::size_t used = 0;
           unsigned long mode = 01000;
           try {
             mode = std::stoul(s, &used, 8);
           } catch (const std::exception&) {
           }
           if (used != s.size() || mode > 0777)
             fail(path, k, "'" + s + "' is not an octal mode such as \"0660\"");
           c.socket_mode = static_cast<std::uint32_t>(mode);
         }},
        {"tcp", [&](auto& k, auto& n) { c.tcp = text(k, n); }},
        {"cors_origins",
         [&](auto& k, auto& n) {
           if (!n.IsSequence())
             fail(path, k, "expected a list of origins, e.g. [\"http://localhost:3000\"]");
           c.cors_origins.clear();
           for (std::size_t i = 0; i < n.size(); ++i)
             c.cors_origins.push_back(text(k + "[" + std::to_string(i) + "]", n[i]));
         }}}},
      {"memory",
       {{"host_budget", [&](auto& k, auto& n) { c.host_budget = text(k, n); }},
        {"policy", [&](auto& k, auto& n) { c.policy = text(k, n); }},
        {"auto_pin",
         [&](auto& k, auto& n) {
           double share = -1;
           try {
             share = n.template as<double>();
           } catch (const YAML::Exception&) {
           }
           if (!(share >= 0 && share <= 1))
             fail(path, k,
                  "'" + (n.IsScalar() ? n.template as<std::string>() : std::string("?")) +
                      "' is not a share of the budget from 0 (off) to 1, e.g. 0.25");
           c.auto_pin = share;
         }},
        {"reader", [&](auto& k, auto& n) { c.reader = text(k, n); }},
        {"queue_depth",
         [&](auto& k, auto& n) {
           c.queue_depth = static_cast<std::uint32_t>(number(k, n, 1, 4096));
         }},
        {"prefetch", [&](auto& k, auto& n) { c.prefetch = boolean(k, n); }},
        {"prefetch_horizon",
         [&](auto& k, auto& n) { c.prefetch_horizon = static_cast<int>(number(k, n, 1, 2)); }},
        {"ring_sections",
         [&](auto& k, auto& n) {
           c.ring_sections = static_cast<std::uint32_t>(number(k, n, 1, 64));
         }},
        {"kv_dtype", [&](auto& k, auto& n) { c.kv_dtype = text(k, n); }}}},
      {"compute",
       {{"threads", [&](auto& k, auto& n) { c.threads = static_cast<int>(number(k, n, 0, 1024)); }},
        {"prefill_chunk",
         [&](auto& k, auto& n) {
           c.prefill_chunk = static_cast<std::uint32_t>(number(k, n, 1, 1 << 20));
         }}}},
      {"limits",
       {{"max_queue",
         [&](auto& k, auto& n) {
           c.max_queue = static_cast<std::uint32_t>(number(k, n, 0, 1 << 20));
         }},
        {"max_batch",
         [&](auto& k, auto& n) {
           c.max_batch = static_cast<std::uint32_t>(number(k, n, 1, 1024));
         }},
        {"max_body", [&](auto& k, auto& n) { c.max_body_bytes = size(k, n); }},
        {"max_connections",
         [&](auto& k, auto& n) {
           c.max_connections = static_cast<std::uint32_t>(number(k, n, 1, 65536));
         }},
        {"header_timeout_ms",
         [&](auto& k, auto& n) {
           c.header_timeout_ms = static_cast<std::uint32_t>(number(k, n, 100, 600000));
         }},
        {"send_timeout_ms",
         [&](auto& k, auto& n) {
           c.send_timeout_ms = static_cast<std::uint32_t>(number(k, n, 100, 3600000));
         }},
        {"default_max_tokens",
         [&](auto& k, auto& n) {
           c.default_max_tokens = static_cast<std::uint32_t>(number(k, n, 1, 1 << 20));
         }},
        {"default_chat_max_tokens",
         [&](auto& k, auto& n) {
           c.default_chat_max_tokens = static_cast<std::uint32_t>(number(k, n, 0, 1 << 20));
         }}}},
      {"admin", {{"group", [&](auto& k, auto& n) { c.admin_group = text(k, n); }}}},
  };
  for (const auto& entry : root) {
    const auto section = entry.first.as<std::string>();
    if (section == "state_dir") {
      c.state_dir = text(section, entry.second);
      continue;
    }
    auto it = sections.find(section);
    if (it == sections.end()) fail(path, section, "unknown key");
    if (entry.second.IsNull()) continue;
    if (!entry.second.IsMap()) fail(path, section, "must be a mapping");
    for (const auto& item : entry.second) {
      const auto key = item.first.as<std::string>();
      auto setter = it->second.find(key);
      if (setter == it->second.end()) fail(path, section + "." + key, "unknown key");
      setter->second(section + "." + key, item.second);
    }
  }
  try {
    c.validate();
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(path.string() + ": " + e.what());
  }
  return c;
}

void check_cors_origin(const std::string& origin) {
  if (origin == "*") return;
  const std::size_t scheme_end = origin.find("://");
  const std::string scheme = origin.substr(0, scheme_end);
  if (scheme_end == std::string::npos || (scheme != "http" && scheme != "https"))
    throw std::invalid_argument("'" + origin +
                                "' is not an origin: expected http://HOST[:PORT], "
                                "https://HOST[:PORT] or *");
  const std::string host = origin.substr(scheme_end + 3);
  const bool host_ok = !host.empty() && std::all_of(host.begin(), host.end(), [](char ch) {
    return std::isalnum(static_cast<unsigned char>(ch)) || ch == '.' || ch == '-' || ch == ':' ||
           ch == '[' || ch == ']';
  });
  if (!host_ok)
    throw std::invalid_argument("'" + origin +
                                "' is not an origin: a browser sends scheme://host[:port], with "
                                "no path, no trailing slash and no wildcard in the host");
}

void Config::validate() const {
  for (std::size_t i = 0; i < cors_origins.size(); ++i) {
    try {
      check_cors_origin(cors_origins[i]);
    } catch (const std::invalid_argument& e) {
      throw std::runtime_error("listen.cors_origins[" + std::to_string(i) + "]: " + e.what());
    }
  }
  if (std::ranges::find(memtier::policy_names(), policy) == memtier::policy_names().end())
    throw std::runtime_error("memory.policy: '" + policy + "' is not one of " +
                             memtier::policy_list());
  if (reader != "io_uring" && reader != "pread")
    throw std::runtime_error("memory.reader: '" + reader + "' is not one of io_uring, pread");
  try {
    engine::parse_kv_dtype(kv_dtype);
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(std::string("memory.kv_dtype: ") + e.what());
  }
  if (prefill_chunk == 0) throw std::runtime_error("compute.prefill_chunk: must be at least 1");
  try {
    engine::HostBudget::parse(host_budget);
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(std::string("memory.host_budget: ") + e.what());
  }
  if (socket.empty() && tcp.empty())
    throw std::runtime_error("listen.socket: needs a socket path (or listen.tcp)");
}

}  // namespace moed::server
