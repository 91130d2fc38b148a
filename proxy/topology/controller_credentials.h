// The credentials of the proxy's channel to memzone-controller: TLS that verifies the
// controller's certificate against --controller-ca and its name against the server name, with
// this proxy's client certificate when it has one; or plaintext for the local demo.
//
// Rotation: gRPC's FileWatcherCertificateProvider re-reads the files every `reload_interval_s`;
// the next connection uses what it read last, an established stream is untouched.
#pragma once

#include <grpcpp/security/credentials.h>

#include <memory>
#include <string>
#include <vector>

#include "memzone/ops/tls_observer.h"

namespace memzone::topology {

struct ControllerTlsOptions {
  std::string ca_file;
  std::string cert_file;  // with key_file, or both empty
  std::string key_file;
  std::string server_name;  // the controller's certificate must carry it (SAN DNS or IP)
  unsigned reload_interval_s = 10;
};

// True when `name` matches one of the SAN DNS names (case-insensitive; "*." matches one whole
// leftmost label) or is one of the SAN IP addresses.
bool serverNameMatches(const std::string& name, const std::vector<std::string>& dns_names,
                       const std::vector<std::string>& ip_names);

// nullptr with `error` ("FILE: reason") when a file is missing or bad. `observer` counts
// handshakes and must outlive every channel made with these credentials.
std::shared_ptr<grpc::ChannelCredentials> makeControllerTlsCredentials(
    const ControllerTlsOptions& options, ops::TlsObserver& observer, std::string& error);

}  // namespace memzone::topology
