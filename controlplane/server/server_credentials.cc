#include "controlplane/server/server_credentials.h"

#include <fnmatch.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_certificate_verifier.h>
#include <grpcpp/security/tls_credentials_options.h>

#include "memzone/ops/log.h"
#include "memzone/ops/tls_files.h"

namespace memzone::controlplane {
namespace {

// Runs after the chain was verified against the client CA: decides whether this proxy
// identity may subscribe.
class IdentityVerifier final : public grpc::experimental::ExternalCertificateVerifier {
 public:
  // `what`: whose certificate this checks ("proxy", or "replica" when dialing one).
  IdentityVerifier(std::vector<std::string> allowed, ops::TlsObserver* observer,
                   std::string what = "proxy")
      : allowed_(std::move(allowed)), observer_(observer), what_(std::move(what)) {}

  bool Verify(grpc::experimental::TlsCustomVerificationCheckRequest* request,
              std::function<void(grpc::Status)> /*callback*/, grpc::Status* sync_status) override {
    std::vector<std::string> identities;
    for (const auto& name : request->dns_names()) identities.emplace_back(name.data(), name.size());
    for (const auto& uri : request->uri_names()) identities.emplace_back(uri.data(), uri.size());
    if (allowed_.empty() || identityAllowed(allowed_, identities)) {
      observer_->count(ops::TlsHandshakeResult::kOk);
      *sync_status = grpc::Status::OK;
      return true;
    }
    observer_->count(ops::TlsHandshakeResult::kIdentityNotAllowed);
    std::string shown;
    for (const auto& id : identities) shown += (shown.empty() ? "" : " ") + id;
    if (shown.empty()) shown = "(no DNS or URI SAN)";
    grpc::string_ref cn = request->common_name();
    ops::logEvent(ops::LogLevel::kWarn, "tls-identity:" + shown,
                  "refused a %s: its certificate (CN %.*s, SAN %s) matches no "
                  "--tls-allowed-identities entry",
                  what_.c_str(), static_cast<int>(cn.size()), cn.data(), shown.c_str());
    *sync_status = grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                                what_ + " identity " + shown + " is not allowed");
    return true;
  }

  void Cancel(grpc::experimental::TlsCustomVerificationCheckRequest*) override {}

 private:
  std::vector<std::string> allowed_;
  ops::TlsObserver* observer_;
  std::string what_;
};

}  // namespace

bool identityAllowed(const std::vector<std::string>& patterns,
                     const std::vector<std::string>& identities) {
  for (const auto& pattern : patterns) {
    for (const auto& id : identities) {
      // No FNM_PATHNAME: `*` spans `/` and `.` (spiffe://td/ns/memzone/sa/*, *.memzone.svc).
      if (fnmatch(pattern.c_str(), id.c_str(), 0) == 0) return true;
    }
  }
  return false;
}

std::shared_ptr<grpc::ServerCredentials> makeServerTlsCredentials(const ServerTlsOptions& options,
                                                                  ops::TlsObserver& observer,
                                                                  std::string& error) {
  for (std::string e :
       {ops::checkCertificateFile(options.cert_file), ops::checkPrivateKeyFile(options.key_file),
        ops::checkCertificateFile(options.client_ca_file),
        ops::checkKeyMatchesCertificate(options.cert_file, options.key_file)}) {
    if (!e.empty()) {
      error = e;
      return nullptr;
    }
  }
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      options.key_file, options.cert_file, options.client_ca_file, options.reload_interval_s);
  grpc::experimental::TlsServerCredentialsOptions tls(provider);
  tls.watch_root_certs();
  tls.watch_identity_key_cert_pairs();
  tls.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  tls.set_certificate_verifier(
      grpc::experimental::ExternalCertificateVerifier::Create<IdentityVerifier>(
          options.allowed_identities, &observer));
  tls.set_check_call_host(false);
  return grpc::experimental::TlsServerCredentials(tls);
}

std::shared_ptr<grpc::ChannelCredentials> makePeerTlsCredentials(const ServerTlsOptions& options,
                                                                 ops::TlsObserver& observer,
                                                                 std::string& error) {
  for (std::string e :
       {ops::checkCertificateFile(options.cert_file), ops::checkPrivateKeyFile(options.key_file),
        ops::checkCertificateFile(options.client_ca_file)}) {
    if (!e.empty()) {
      error = e;
      return nullptr;
    }
  }
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      options.key_file, options.cert_file, options.client_ca_file, options.reload_interval_s);
  grpc::experimental::TlsChannelCredentialsOptions tls;
  tls.set_certificate_provider(provider);
  tls.watch_root_certs();
  tls.watch_identity_key_cert_pairs();
  tls.set_verify_server_certs(true);  // the chain, against the client CA
  tls.set_certificate_verifier(
      grpc::experimental::ExternalCertificateVerifier::Create<IdentityVerifier>(
          options.allowed_identities, &observer, "replica"));
  tls.set_check_call_host(false);  // replicas are dialed by address, not by name
  return grpc::experimental::TlsCredentials(tls);
}

}  // namespace memzone::controlplane
