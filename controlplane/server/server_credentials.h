// The credentials of the controller's gRPC listener: mutual TLS with certificates re-read from
// their files (gRPC's FileWatcherCertificateProvider), or plaintext for the local demo.
//
// Rotation: the provider re-reads the key, certificate and client CA every
// `reload_interval_s`; new handshakes use what it read last, established streams are untouched.
// A Kubernetes Secret volume swaps its `..data` symlink, so a whole set changes at once.
#pragma once

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include <memory>
#include <string>
#include <vector>

#include "memzone/ops/tls_observer.h"

namespace memzone::controlplane {

struct ServerTlsOptions {
  std::string cert_file;
  std::string key_file;
  std::string client_ca_file;  // proxies must present a certificate from this CA
  // SAN DNS names or URIs a proxy certificate must carry one of; `*` matches any run of
  // characters. Empty: any certificate from the CA.
  std::vector<std::string> allowed_identities;
  unsigned reload_interval_s = 10;
};

// True when one of the certificate's SAN DNS names or URIs matches one of `patterns`.
bool identityAllowed(const std::vector<std::string>& patterns,
                     const std::vector<std::string>& identities);

// mTLS credentials, or nullptr with `error` ("FILE: reason") when a file is missing or bad.
// `observer` counts handshakes and must outlive the server.
std::shared_ptr<grpc::ServerCredentials> makeServerTlsCredentials(const ServerTlsOptions& options,
                                                                  ops::TlsObserver& observer,
                                                                  std::string& error);

// How this replica dials the other replicas (replica_links.h), with the same files: its own
// certificate as the client's (so it must allow client auth, come from the client CA and match
// the allowed identities, like a proxy's), and the other replica's certificate checked the
// way a proxy's is (from the client CA, one of the allowed identities). Re-read like above.
std::shared_ptr<grpc::ChannelCredentials> makePeerTlsCredentials(const ServerTlsOptions& options,
                                                                 ops::TlsObserver& observer,
                                                                 std::string& error);

}  // namespace memzone::controlplane
