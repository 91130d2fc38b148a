#include "proxy/config/proxy_flags.h"

#include <charconv>

#include "proxy/topology/controller_client.h"

namespace memzone::config {
namespace {

bool parseUnsigned(const std::string& s, unsigned long long min, unsigned long long max,
                   unsigned long long& out) {
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return !s.empty() && ec == std::errc() && ptr == s.data() + s.size() && out >= min && out <= max;
}

}  // namespace

std::string parseListeners(const std::string& text, std::vector<ListenerSpec>& out) {
  out.clear();
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    std::string item = text.substr(start, comma - start);
    start = comma + 1;
    ListenerSpec spec;
    if (item.starts_with("tls:")) {
      spec.tls = true;
      item = item.substr(4);
    }
    size_t colon = item.rfind(':');
    if (item.empty() || colon == std::string::npos || colon + 1 == item.size()) {
      return "--listen: want HOST:PORT or tls:HOST:PORT, comma-separated; got \"" + text + "\"";
    }
    spec.address = item;
    for (const ListenerSpec& seen : out) {
      if (seen.address == spec.address) return "--listen: " + spec.address + " given twice";
    }
    out.push_back(std::move(spec));
  }
  return "";
}

std::string validateTls(ProxyOptions& o, bool verify_given) {
  bool any_tls = false;
  for (const ListenerSpec& l : o.listeners) any_tls |= l.tls;
  ClientTlsOptions& t = o.tls;
  bool files = !t.cert_file.empty() || !t.key_file.empty() || !t.client_ca_file.empty();
  if (!any_tls) {
    if (files || verify_given) {
      return "--tls-cert, --tls-key, --tls-client-ca and --tls-verify need a tls: listener "
             "(e.g. --listen 0.0.0.0:11211,tls:0.0.0.0:11212)";
    }
    return "";
  }
  if (t.cert_file.empty() || t.key_file.empty()) {
    return "a tls: listener needs --tls-cert and --tls-key";
  }
  if (!verify_given && !t.client_ca_file.empty()) t.verify = TlsVerify::kRequire;
  if (t.verify != TlsVerify::kNone && t.client_ca_file.empty()) {
    return "--tls-verify optional|require needs --tls-client-ca (the CA client certificates "
           "must chain to)";
  }
  if (t.verify == TlsVerify::kNone && !t.client_ca_file.empty()) {
    return "--tls-client-ca with --tls-verify none would not be used; say optional or require";
  }
  return "";
}

bool parseByteSize(const std::string& text, uint64_t& out) {
  if (text.empty()) return false;
  std::string digits = text;
  unsigned shift = 0;
  switch (text.back()) {
    case 'K':
    case 'k':
      shift = 10;
      break;
    case 'M':
    case 'm':
      shift = 20;
      break;
    case 'G':
    case 'g':
      shift = 30;
      break;
    default:
      break;
  }
  if (shift != 0) digits.pop_back();
  unsigned long long n = 0;
  if (!parseUnsigned(digits, 0, ~0ull >> shift, n)) return false;
  out = static_cast<uint64_t>(n) << shift;
  return true;
}

std::string proxyUsage() {
  return "usage: memzone-proxy --listen [tls:]HOST:PORT[,...] --zone ZONE [--threads N]\n"
         "                     (--config FILE | --controller HOST:PORT[,HOST:PORT...])\n"
         "                     [--metrics-listen HOST:PORT] [--state-dir DIR]\n"
         "                     [--max-item-size BYTES] [--max-connections N]\n"
         "                     [--max-buffer-memory BYTES] [--partial-request-timeout-ms MS]\n"
         "                     [--client-send-buffer BYTES]\n"
         "                     [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE]\n"
         "                      [--tls-verify none|optional|require]\n"
         "                      [--tls-handshake-timeout-ms MS]]\n"
         "                     [--drain-timeout SECONDS]\n"
         "\n"
         "  --listen           addresses for memcached clients, comma-separated; a tls:\n"
         "                     prefix serves TLS there, so plaintext and TLS listeners can\n"
         "                     run side by side (default 0.0.0.0:11211)\n"
         "  --zone             this proxy's zone: reads go here first (default: NODE_NAME's\n"
         "                     zone from the controller, else the first zone of each pool)\n"
         "  --threads          worker threads (default: one per core)\n"
         "  --config           static topology YAML (no controller); SIGHUP reloads it\n"
         "  --controller       memzone-controller's gRPC address(es): stream the topology from\n"
         "                     one of them; a name may resolve to several (headless Service)\n"
         "  --state-dir        keep the deletes owed to servers here (they survive a restart)\n"
         "                     and, with --controller, the last applied snapshot, served at\n"
         "                     start-up until the controller answers\n"
         "  --move-keys        on|off: after a ring change, move keys to their new owners and\n"
         "                     delete copies a server held from before it owned them, in the\n"
         "                     background (lru_crawler metadump; default on)\n"
         "  --metrics-listen   serve /metrics, /healthz, /readyz here\n"
         "  --metrics-per-backend  also export per-server series (address label; off by\n"
         "                     default: one series per memcached server adds up)\n"
         "  --max-item-size    largest value accepted (default 1048576)\n"
         "  --max-connections  client connections of the proxy; beyond, a new one is told\n"
         "                     \"ERROR Too many open connections\" and closed (default 65536)\n"
         "  --max-buffer-memory  client-side buffer memory of the proxy, split over the\n"
         "                     workers; suffixes K, M, G (default 512M)\n"
         "  --partial-request-timeout-ms  close a connection whose request is still\n"
         "                     incomplete this long after its first byte; 0: never\n"
         "                     (default 30000; idle connections are never closed)\n"
         "  --client-send-buffer  kernel send buffer of each client socket, so a slow reader\n"
         "                     cannot park megabytes in the kernel; 0: autotuning (default 256K)\n"
         "  --drain-timeout    on SIGTERM, seconds to finish in-flight requests (default 10)\n"
         "  --controller-ca FILE  TLS to the controller: verify its certificate with this CA\n"
         "                     (PEM). Without it the stream is plaintext (local demo only)\n"
         "  --controller-tls-cert FILE, --controller-tls-key FILE  this proxy's client\n"
         "                     certificate and key (PEM), for a controller that requires one\n"
         "  --controller-server-name NAME  the name the controller's certificate must carry\n"
         "                     (SAN DNS or IP; default: the host of the first --controller)\n"
         "  --controller-tls-reload-interval SECONDS  how often those files are re-read\n"
         "                     (default 10)\n"
         "  --tls-cert         PEM certificate chain served on tls: listeners (re-read when\n"
         "                     it changes, like --tls-key and --tls-client-ca)\n"
         "  --tls-key          PEM private key of --tls-cert\n"
         "  --tls-client-ca    CA bundle client certificates must chain to\n"
         "  --tls-verify       client certificates: none, optional (checked if sent) or\n"
         "                     require (default: require with --tls-client-ca, else none)\n"
         "  --tls-handshake-timeout-ms  close a TLS connection whose handshake is not done\n"
         "                     this long after accept (default 5000)\n"
         "  --help, --version\n";
}

FlagsResult parseProxyFlags(const std::vector<std::string>& args) {
  FlagsResult result;
  ProxyOptions& o = result.options;
  bool verify_given = false;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string flag = args[i];
    std::string value;
    bool has_inline = false;
    if (auto eq = flag.find('='); flag.starts_with("--") && eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
      has_inline = true;
    }
    if (flag == "--help" || flag == "-h") {
      result.help = true;
      return result;
    }
    if (flag == "--version") {
      result.version = true;
      return result;
    }
    if (flag == "--metrics-per-backend" && !has_inline) {
      o.metrics_per_backend = true;
      continue;
    }
    static const char* kValued[] = {"--listen",        "--zone",          "--threads",
                                    "--config",        "--controller",    "--metrics-listen",
                                    "--state-dir",     "--max-item-size", "--max-connections",
                                    "--drain-timeout", "--move-keys"};
    // Issue 12's limits.
    static const char* kLimitFlags[] = {"--max-buffer-memory", "--partial-request-timeout-ms",
                                        "--client-send-buffer"};
    // Issue 15's TLS to the controller.
    static const char* kControllerTlsFlags[] = {"--controller-ca", "--controller-tls-cert",
                                                "--controller-tls-key", "--controller-server-name",
                                                "--controller-tls-reload-interval"};
    // Issue 15's client-facing TLS.
    static const char* kTlsFlags[] = {"--tls-cert", "--tls-key", "--tls-client-ca", "--tls-verify",
                                      "--tls-handshake-timeout-ms"};
    bool known = false;
    for (const char* k : kValued) known |= flag == k;
    for (const char* k : kLimitFlags) known |= flag == k;
    for (const char* k : kControllerTlsFlags) known |= flag == k;
    for (const char* k : kTlsFlags) known |= flag == k;
    if (!known) {
      result.error = "unknown flag " + flag + " (see --help)";
      return result;
    }
    if (!has_inline) {
      if (i + 1 >= args.size()) {
        result.error = flag + " needs a value";
        return result;
      }
      value = args[++i];
    }
    unsigned long long n = 0;
    if (flag == "--listen") {
      if (std::string error = parseListeners(value, o.listeners); !error.empty()) {
        result.error = error;
        return result;
      }
      o.listen = value;
    } else if (flag == "--tls-cert") {
      o.tls.cert_file = value;
    } else if (flag == "--tls-key") {
      o.tls.key_file = value;
    } else if (flag == "--tls-client-ca") {
      o.tls.client_ca_file = value;
    } else if (flag == "--tls-verify") {
      verify_given = true;
      if (value == "none") {
        o.tls.verify = TlsVerify::kNone;
      } else if (value == "optional") {
        o.tls.verify = TlsVerify::kOptional;
      } else if (value == "require") {
        o.tls.verify = TlsVerify::kRequire;
      } else {
        result.error = "--tls-verify must be none, optional or require";
        return result;
      }
    } else if (flag == "--tls-handshake-timeout-ms") {
      if (!parseUnsigned(value, 10, 600000, n)) {
        result.error = "--tls-handshake-timeout-ms must be from 10 to 600000";
        return result;
      }
      o.tls.handshake_timeout_ms = static_cast<uint32_t>(n);
    } else if (flag == "--zone") {
      o.zone = value;
    } else if (flag == "--move-keys") {
      if (value != "on" && value != "off") {
        result.error = "--move-keys must be on or off";
        return result;
      }
      o.move_keys = value == "on";
    } else if (flag == "--threads") {
      if (!parseUnsigned(value, 1, 256, n)) {
        result.error = "--threads must be from 1 to 256";
        return result;
      }
      o.threads = static_cast<unsigned>(n);
    } else if (flag == "--config") {
      o.config_path = value;
    } else if (flag == "--controller") {
      std::vector<std::string> targets;
      if (std::string error = topology::parseControllerTargets(value, targets); !error.empty()) {
        result.error = error;
        return result;
      }
      o.controller = value;
    } else if (flag == "--metrics-listen") {
      o.metrics_listen = value;
    } else if (flag == "--state-dir") {
      o.state_dir = value;
    } else if (flag == "--max-item-size") {
      if (!parseUnsigned(value, 1024, 1ull << 30, n)) {
        result.error = "--max-item-size must be from 1024 to 1073741824 bytes";
        return result;
      }
      o.max_item_size = n;
    } else if (flag == "--max-connections") {
      if (!parseUnsigned(value, 1, 10000000, n)) {
        result.error = "--max-connections must be from 1 to 10000000";
        return result;
      }
      o.max_connections = n;
    } else if (flag == "--max-buffer-memory") {
      uint64_t bytes = 0;
      if (!parseByteSize(value, bytes) || bytes < (1ull << 20) || bytes > (1ull << 40)) {
        result.error = "--max-buffer-memory must be from 1M to 1024G (suffix K, M or G)";
        return result;
      }
      o.max_buffer_memory = bytes;
    } else if (flag == "--client-send-buffer") {
      uint64_t bytes = 0;
      if (!parseByteSize(value, bytes) || (bytes != 0 && bytes < 4096) || bytes > (64ull << 20)) {
        result.error = "--client-send-buffer must be 0 or from 4K to 64M";
        return result;
      }
      o.client_send_buffer = bytes;
    } else if (flag == "--partial-request-timeout-ms") {
      if (!parseUnsigned(value, 0, 86400000, n)) {
        result.error = "--partial-request-timeout-ms must be from 0 to 86400000";
        return result;
      }
      o.partial_request_timeout_ms = static_cast<uint32_t>(n);
    } else if (flag == "--controller-ca") {
      o.controller_ca = value;
    } else if (flag == "--controller-tls-cert") {
      o.controller_tls_cert = value;
    } else if (flag == "--controller-tls-key") {
      o.controller_tls_key = value;
    } else if (flag == "--controller-server-name") {
      o.controller_server_name = value;
    } else if (flag == "--controller-tls-reload-interval") {
      std::string digits = value.ends_with('s') ? value.substr(0, value.size() - 1) : value;
      if (!parseUnsigned(digits, 1, 3600, n)) {
        result.error = "--controller-tls-reload-interval must be from 1 to 3600 seconds";
        return result;
      }
      o.controller_tls_reload_interval_s = static_cast<unsigned>(n);
    } else if (flag == "--drain-timeout") {
      if (!parseUnsigned(value, 0, 3600, n)) {
        result.error = "--drain-timeout must be from 0 to 3600 seconds";
        return result;
      }
      o.drain_timeout_s = static_cast<unsigned>(n);
    }
  }
  if (o.config_path.empty() == o.controller.empty()) {
    result.error = "exactly one of --config or --controller is required";
  } else if (o.controller_tls_cert.empty() != o.controller_tls_key.empty()) {
    result.error = "--controller-tls-cert and --controller-tls-key go together";
  } else if ((!o.controller_tls_cert.empty() || !o.controller_server_name.empty()) &&
             o.controller_ca.empty()) {
    // A client certificate over a connection that trusts any server would be half of TLS.
    result.error = "--controller-tls-cert and --controller-server-name need --controller-ca";
  } else if (!o.controller_ca.empty() && o.controller.empty()) {
    result.error = "--controller-ca is for --controller";
  }
  if (!result.error.empty()) return result;
  result.error = validateTls(o, verify_given);
  return result;
}

}  // namespace memzone::config
