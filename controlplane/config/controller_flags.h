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
};

struct ControllerFlags {
  ControllerOptions options;
  bool help = false;
  bool version = false;
  std::string error;  // one line; exit 2
};

ControllerFlags parseControllerFlags(const std::vector<std::string>& args);
std::string controllerUsage();

}  // namespace memzone::controlplane
