#include "controlplane/config/controller_flags.h"

#include <charconv>

namespace memzone::controlplane {

std::string controllerUsage() {
  return "usage: memzone-controller (--source file --config FILE |\n"
         "                           --source kubernetes [--namespace NS]\n"
         "                           [--kube-api URL --kube-token-file F --kube-ca-file F])\n"
         "                          --grpc-listen HOST:PORT [--metrics-listen HOST:PORT]\n"
         "\n"
         "  --source           where the topology comes from: file or kubernetes\n"
         "  --config           the topology YAML (file source); re-read when it changes\n"
         "  --grpc-listen      address of the topology stream for proxies (default 0.0.0.0:18000)\n"
         "  --metrics-listen   Prometheus /metrics, /healthz, /readyz\n"
         "  --namespace        where ReplicatedPools and EndpointSlices live (default: the\n"
         "                     service account's namespace, else default)\n"
         "  --kube-api         API server URL (default: in-cluster config)\n"
         "  --kube-token-file  bearer token file, re-read every minute and after a 401\n"
         "  --kube-ca-file     CA bundle for the API server's certificate\n"
         "  --poll-interval-ms how often the file source checks its file (default 200)\n"
         "  --leader-elect[=false]  kubernetes source: only the holder of a Lease writes\n"
         "                     ReplicatedPool status; every replica serves proxies (default on)\n"
         "  --leader-elect-lease-duration  DURATION (default 15s; whole seconds)\n"
         "  --leader-elect-renew-deadline  DURATION (default 10s)\n"
         "  --leader-elect-retry-period    DURATION (default 2s)\n"
         "  --leader-elect-resource-name   the Lease's name (default memzone-controller)\n"
         "  --dirty-retain     DURATION a proxy that disconnected owing invalidations keeps\n"
         "                     its servers dirty, unread by every proxy (default 60s)\n"
         "  --applied-grace    DURATION after start-up and after the first proxy connects, no\n"
         "                     word that a ring change is applied everywhere: a restarted\n"
         "                     controller's proxies reconnect meanwhile, and their key\n"
         "                     movers wait (default 12s, the proxies' longest backoff)\n"
         "  --tls-cert FILE    the controller's certificate (PEM, chain allowed): mutual TLS on\n"
         "                     the topology stream; needs --tls-key and --tls-client-ca.\n"
         "                     Without it the stream is plaintext (local demo only)\n"
         "  --tls-key FILE     its private key (PEM)\n"
         "  --tls-client-ca FILE  proxies must present a certificate from this CA\n"
         "  --tls-allowed-identities LIST  comma-separated SAN DNS names or URIs a proxy\n"
         "                     certificate must carry one of; * matches anything\n"
         "                     (spiffe://td/ns/memzone/sa/*). Default: any from the CA\n"
         "  --tls-reload-interval DURATION  how often the files are re-read (default 10s)\n"
         "  --advertise-address HOST:PORT  where the other replicas reach this one's\n"
         "                     --grpc-listen port to share dirty servers (default: $POD_IP\n"
         "                     and its port, else --grpc-listen unless it is a wildcard)\n"

         "  --help, --version\n";
}

bool parseDurationMs(const std::string& text, unsigned& out_ms) {
  unsigned long long n = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || p == text.data()) return false;
  std::string unit(p, text.data() + text.size());
  unsigned long long scale = unit == "ms" ? 1 : unit == "s" ? 1000 : unit == "m" ? 60000 : 0;
  if (scale == 0 || n > 3600000 / scale) return false;
  out_ms = static_cast<unsigned>(n * scale);
  return true;
}

ControllerFlags parseControllerFlags(const std::vector<std::string>& args) {
  ControllerFlags result;
  ControllerOptions& o = result.options;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string flag = args[i];
    std::string value;
    size_t eq = flag.find('=');
    bool has_inline = flag.rfind("--", 0) == 0 && eq != std::string::npos;
    if (has_inline) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
    }
    if (flag == "--help" || flag == "-h") {
      result.help = true;
      return result;
    }
    if (flag == "--version") {
      result.version = true;
      return result;
    }
    if (flag == "--leader-elect") {
      if (!has_inline || value == "true") {
        o.leader_elect = true;
      } else if (value == "false") {
        o.leader_elect = false;
      } else {
        result.error = "--leader-elect must be true or false";
        return result;
      }
      continue;
    }
    static const std::vector<std::string> kWithValue = {"--source",
                                                        "--config",
                                                        "--grpc-listen",
                                                        "--metrics-listen",
                                                        "--namespace",
                                                        "--kube-api",
                                                        "--kube-token-file",
                                                        "--kube-ca-file",
                                                        "--poll-interval-ms",
                                                        "--leader-elect-lease-duration",
                                                        "--leader-elect-renew-deadline",
                                                        "--leader-elect-retry-period",
                                                        "--leader-elect-resource-name",
                                                        "--dirty-retain",
                                                        "--applied-grace",
                                                        "--tls-cert",
                                                        "--tls-key",
                                                        "--tls-client-ca",
                                                        "--tls-allowed-identities",
                                                        "--tls-reload-interval",
                                                        "--advertise-address"};
    bool known = false;
    for (const auto& k : kWithValue) known |= k == flag;
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
    if (flag == "--source")
      o.source = value;
    else if (flag == "--config")
      o.config_path = value;
    else if (flag == "--grpc-listen")
      o.grpc_listen = value;
    else if (flag == "--metrics-listen")
      o.metrics_listen = value;
    else if (flag == "--namespace")
      o.kube_namespace = value;
    else if (flag == "--kube-api")
      o.kube_api = value;
    else if (flag == "--kube-token-file")
      o.kube_token_file = value;
    else if (flag == "--kube-ca-file")
      o.kube_ca_file = value;
    else if (flag == "--poll-interval-ms") {
      unsigned n = 0;
      auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (ec != std::errc() || p != value.data() + value.size() || n < 10 || n > 60000) {
        result.error = "--poll-interval-ms must be from 10 to 60000";
        return result;
      }
      o.poll_interval_ms = n;
    } else if (flag == "--advertise-address") {
      o.advertise_address = value;
    } else if (flag == "--tls-cert") {
      o.tls_cert = value;
    } else if (flag == "--tls-key") {
      o.tls_key = value;
    } else if (flag == "--tls-client-ca") {
      o.tls_client_ca = value;
    } else if (flag == "--tls-allowed-identities") {
      o.tls_allowed_identities.clear();
      size_t start = 0;
      while (start <= value.size()) {
        size_t comma = value.find(',', start);
        std::string entry = value.substr(start, comma == std::string::npos ? comma : comma - start);
        if (entry.empty()) {
          result.error = "--tls-allowed-identities: empty entry in \"" + value + "\"";
          return result;
        }
        o.tls_allowed_identities.push_back(entry);
        if (comma == std::string::npos) break;
        start = comma + 1;
      }
    } else if (flag == "--tls-reload-interval") {
      unsigned ms = 0;
      if (!parseDurationMs(value, ms) || ms < 1000 || ms % 1000 != 0) {
        result.error = "--tls-reload-interval must be whole seconds, at least 1s (e.g. 10s)";
        return result;
      }
      o.tls_reload_interval_ms = ms;
    } else if (flag == "--leader-elect-resource-name") {
      o.leader_elect_resource_name = value;
    } else if (flag == "--applied-grace") {
      if (!parseDurationMs(value, o.applied_grace_ms)) {
        result.error = "--applied-grace must be a duration such as 12s or 500ms";
        return result;
      }
    } else if (flag == "--dirty-retain") {
      if (!parseDurationMs(value, o.dirty_retain_ms)) {
        result.error = "--dirty-retain must be a duration such as 60s or 500ms";
        return result;
      }
    } else {  // the three durations
      unsigned ms = 0;
      if (!parseDurationMs(value, ms) || ms == 0) {
        result.error = flag + " must be a duration such as 15s or 500ms";
        return result;
      }
      (flag == "--leader-elect-lease-duration"   ? o.leader_elect_lease_duration_ms
       : flag == "--leader-elect-renew-deadline" ? o.leader_elect_renew_deadline_ms
                                                 : o.leader_elect_retry_period_ms) = ms;
    }
  }
  bool any_tls = !o.tls_cert.empty() || !o.tls_key.empty() || !o.tls_client_ca.empty() ||
                 !o.tls_allowed_identities.empty();
  if (any_tls && (o.tls_cert.empty() || o.tls_key.empty() || o.tls_client_ca.empty())) {
    // Half a configuration would silently run without client authentication.
    result.error =
        "--tls-cert, --tls-key and --tls-client-ca go together (mutual TLS on the topology "
        "stream); --tls-allowed-identities needs them";
    return result;
  }
  if (o.source == "file") {
    if (o.config_path.empty()) result.error = "--source file needs --config FILE";
  } else if (o.source == "kubernetes") {
    if (!o.config_path.empty()) result.error = "--config is for --source file";
    const std::string& name = o.leader_elect_resource_name;
    bool dns_label =
        !name.empty() && name.size() <= 63 && name.front() != '-' && name.back() != '-';
    for (char c : name) dns_label &= (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
    if (!dns_label)
      result.error = "--leader-elect-resource-name must be a DNS label (a-z, 0-9, -)";
    else if (o.leader_elect_lease_duration_ms % 1000 != 0)
      result.error = "--leader-elect-lease-duration must be whole seconds (a Lease holds seconds)";
    else if (o.leader_elect_lease_duration_ms <= o.leader_elect_renew_deadline_ms)
      result.error =
          "--leader-elect-lease-duration must be greater than --leader-elect-renew-deadline";
    else if (o.leader_elect_renew_deadline_ms * 10ull <= o.leader_elect_retry_period_ms * 12ull)
      result.error =
          "--leader-elect-renew-deadline must be greater than 1.2 x --leader-elect-retry-period";
  } else if (o.source.empty()) {
    result.error = "--source is required (file or kubernetes)";
  } else {
    result.error = "--source must be file or kubernetes, not " + o.source;
  }
  return result;
}

}  // namespace memzone::controlplane
