#include "proxy/topology/controller_credentials.h"

#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_certificate_verifier.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <strings.h>

#include "memzone/ops/log.h"
#include "memzone/ops/tls_files.h"

namespace memzone::topology {
namespace {

std::vector<std::string> strings(const std::vector<grpc::string_ref>& refs) {
  std::vector<std::string> out;
  for (const auto& r : refs) out.emplace_back(r.data(), r.size());
  return out;
}

// Runs after the controller's chain was verified against the CA: is it the controller we
// meant to reach?
class ServerNameVerifier final : public grpc::experimental::ExternalCertificateVerifier {
 public:
  ServerNameVerifier(std::string server_name, ops::TlsObserver* observer)
      : server_name_(std::move(server_name)), observer_(observer) {}

  bool Verify(grpc::experimental::TlsCustomVerificationCheckRequest* request,
              std::function<void(grpc::Status)> /*callback*/, grpc::Status* sync_status) override {
    std::vector<std::string> dns = strings(request->dns_names());
    std::vector<std::string> ips = strings(request->ip_names());
    if (serverNameMatches(server_name_, dns, ips)) {
      observer_->count(ops::TlsHandshakeResult::kOk);
      *sync_status = grpc::Status::OK;
      return true;
    }
    observer_->count(ops::TlsHandshakeResult::kNameMismatch);
    std::string shown;
    for (const auto& d : dns) shown += (shown.empty() ? "" : " ") + d;
    for (const auto& i : ips) shown += (shown.empty() ? "" : " ") + i;
    if (shown.empty()) shown = "(no DNS or IP SAN)";
    ops::logEvent(ops::LogLevel::kError, "controller-tls-name",
                  "refused the controller's certificate: it is for %s, not %s "
                  "(--controller-server-name)",
                  shown.c_str(), server_name_.c_str());
    *sync_status = grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                                "controller certificate is not for " + server_name_);
    return true;
  }

  void Cancel(grpc::experimental::TlsCustomVerificationCheckRequest*) override {}

 private:
  std::string server_name_;
  ops::TlsObserver* observer_;
};

}  // namespace

bool serverNameMatches(const std::string& name, const std::vector<std::string>& dns_names,
                       const std::vector<std::string>& ip_names) {
  for (const auto& ip : ip_names)
    if (ip == name) return true;
  for (const auto& dns : dns_names) {
    if (dns.size() == name.size() && strncasecmp(dns.c_str(), name.c_str(), name.size()) == 0)
      return true;
    // "*.example.com" stands for exactly one leftmost label.
    if (dns.size() > 2 && dns[0] == '*' && dns[1] == '.') {
      size_t dot = name.find('.');
      if (dot == std::string::npos || dot == 0) continue;
      std::string rest = name.substr(dot);
      if (rest.size() == dns.size() - 1 &&
          strncasecmp(rest.c_str(), dns.c_str() + 1, rest.size()) == 0)
        return true;
    }
  }
  return false;
}

std::shared_ptr<grpc::ChannelCredentials> makeControllerTlsCredentials(
    const ControllerTlsOptions& options, ops::TlsObserver& observer, std::string& error) {
  std::vector<std::string> problems = {ops::checkCertificateFile(options.ca_file)};
  if (!options.cert_file.empty()) {
    problems.push_back(ops::checkCertificateFile(options.cert_file));
    problems.push_back(ops::checkPrivateKeyFile(options.key_file));
    problems.push_back(ops::checkKeyMatchesCertificate(options.cert_file, options.key_file));
  }
  for (const std::string& e : problems) {
    if (!e.empty()) {
      error = e;
      return nullptr;
    }
  }
  std::shared_ptr<grpc::experimental::FileWatcherCertificateProvider> provider;
  if (options.cert_file.empty()) {
    provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
        options.ca_file, options.reload_interval_s);
  } else {
    provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
        options.key_file, options.cert_file, options.ca_file, options.reload_interval_s);
  }
  grpc::experimental::TlsChannelCredentialsOptions tls;
  tls.set_certificate_provider(provider);
  tls.watch_root_certs();
  if (!options.cert_file.empty()) tls.watch_identity_key_cert_pairs();
  tls.set_verify_server_certs(true);
  tls.set_certificate_verifier(
      grpc::experimental::ExternalCertificateVerifier::Create<ServerNameVerifier>(
          options.server_name, &observer));
  tls.set_check_call_host(false);  // the verifier checks the name, once per connection
  return grpc::experimental::TlsCredentials(tls);
}

}  // namespace memzone::topology
