// memzone-controller's command line (DESIGN.md §2).
#pragma once

#include <string>
#include <vector>

namespace memzone::controlplane {

struct ControllerOptions {
  std::string source;  // "file" | "kubernetes"
  std::string config_path;
  std::string grpc_listen = "0.0.0.0:18000";
  std::string metrics_listen;
  std::string kube_namespace;
  std::string kube_api;
  std::string kube_token_file;
  std::string kube_ca_file;
  unsigned poll_interval_ms = 200;
  // Leader election among replicas (kubernetes source): client-go's defaults.
  bool leader_elect = true;
  std::string leader_elect_resource_name = "memzone-controller";
  unsigned leader_elect_lease_duration_ms = 15000;
  unsigned leader_elect_renew_deadline_ms = 10000;
  unsigned leader_elect_retry_period_ms = 2000;
  // How long a proxy that disconnected owing invalidations keeps its servers dirty
  // (dirty_servers.h): time for its stream to come back or for it to restart from --state-dir.
  unsigned dirty_retain_ms = 60000;
  // How long after it starts the controller says no version is applied everywhere
  // (applied_everywhere.h): the proxies of a controller it replaced reconnect meanwhile.
  unsigned applied_grace_ms = 12000;
  // mTLS on the topology stream (all empty: plaintext, for the local demo only).
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;
  std::vector<std::string> tls_allowed_identities;  // SAN DNS/URI patterns; empty: any
  unsigned tls_reload_interval_ms = 10000;
  // Where the other replicas reach this one's --grpc-listen port for the dirty-set exchange
  // (kubernetes source); "": POD_IP and the port, else --grpc-listen unless it is a wildcard.
  std::string advertise_address;
};

// "15s", "1500ms", "1m" -> milliseconds; false when it does not parse.
bool parseDurationMs(const std::string& text, unsigned& out_ms);

struct ControllerFlags {
  ControllerOptions options;
  bool help = false;
  bool version = false;
  std::string error;  // one line; exit 2
};

ControllerFlags parseControllerFlags(const std::vector<std::string>& args);
std::string controllerUsage();

}  // namespace memzone::controlplane
