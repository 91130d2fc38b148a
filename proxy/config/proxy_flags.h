// Command-line flags of memzone-proxy (DESIGN.md §2).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace memzone::config {

// One listening address; `tls` (a "tls:" prefix in --listen) serves TLS on it.
struct ListenerSpec {
  std::string address;
  bool tls = false;
  bool operator==(const ListenerSpec&) const = default;
};

enum class TlsVerify : uint8_t { kNone, kOptional, kRequire };

// Client-facing TLS (issue 15), like memcached's ssl_chain_cert, ssl_key, ssl_ca_cert and
// ssl_verify_mode.
struct ClientTlsOptions {
  std::string cert_file;
  std::string key_file;
  std::string client_ca_file;
  TlsVerify verify = TlsVerify::kNone;  // require when only --tls-client-ca is given
  uint32_t handshake_timeout_ms = 5000;
};

struct ProxyOptions {
  std::string listen = "0.0.0.0:11211";
  std::vector<ListenerSpec> listeners{{"0.0.0.0:11211", false}};  // --listen, parsed
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
  // Ring changes move keys in the background (rebalance/key_mover.h).
  bool move_keys = true;
  // TLS to the controller (all empty: plaintext, for the local demo only).
  std::string controller_tls_cert;
  std::string controller_tls_key;
  std::string controller_ca;           // verifies the controller's certificate
  std::string controller_server_name;  // default: the host of the first --controller entry
  unsigned controller_tls_reload_interval_s = 10;
  ClientTlsOptions tls;
};

struct FlagsResult {
  ProxyOptions options;
  std::string error;  // one line; exit 2
  bool help = false;
  bool version = false;
};

// "ADDR[,ADDR...]" where an ADDR may be prefixed "tls:"; "" when good, else the reason.
std::string parseListeners(const std::string& text, std::vector<ListenerSpec>& out);
// Cross-flag rules of client TLS: a tls: listener needs --tls-cert and --tls-key, and so on.
std::string validateTls(ProxyOptions& options, bool verify_given);

FlagsResult parseProxyFlags(const std::vector<std::string>& args);
// "512M", "64K", "2G" (binary units) or plain bytes; false on anything else or overflow.
bool parseByteSize(const std::string& text, uint64_t& out);
std::string proxyUsage();

}  // namespace memzone::config
