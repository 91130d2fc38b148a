// Command-line flags of memzone-proxy (DESIGN.md §2).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace memzone::config {

struct ProxyOptions {
  std::string listen = "0.0.0.0:11211";
  std::string zone;
  unsigned threads = 0;  // 0: one per core
  std::string config_path;
  std::string controller;
  std::string metrics_listen;
  std::string state_dir;
  size_t max_item_size = 1024 * 1024;
  size_t max_connections = 65536;  // client connections of the whole proxy
  // Client-side buffer memory of the whole proxy (split evenly over the workers).
  uint64_t max_buffer_memory = 512ull << 20;
  // An incomplete request is closed this long after its first byte (slowloris); 0: never.
  uint32_t partial_request_timeout_ms = 30000;
  // Kernel send buffer of each client socket (SO_SNDBUF); 0: the kernel's autotuning.
  uint64_t client_send_buffer = 256 << 10;
  unsigned drain_timeout_s = 10;
  bool metrics_per_backend = false;  // series with an address label: off by default
  // TLS to the controller (all empty: plaintext, for the local demo only).
  std::string controller_tls_cert;
  std::string controller_tls_key;
  std::string controller_ca;           // verifies the controller's certificate
  std::string controller_server_name;  // default: the host of the first --controller entry
  unsigned controller_tls_reload_interval_s = 10;
};

struct FlagsResult {
  ProxyOptions options;
  std::string error;  // one line; exit 2
  bool help = false;
  bool version = false;
};

FlagsResult parseProxyFlags(const std::vector<std::string>& args);
// "512M", "64K", "2G" (binary units) or plain bytes; false on anything else or overflow.
bool parseByteSize(const std::string& text, uint64_t& out);
std::string proxyUsage();

}  // namespace memzone::config
