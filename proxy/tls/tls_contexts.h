// Every TLS context of the proxy: the client-facing one (--tls-cert...) and one per distinct
// backend TLS setting of the topology's pools. The control thread checks their files once a
// second (reloadAll) and exports their certificates' expiry; workers look a backend context
// up when a topology is applied (not per request). Thread-safe.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "proxy/tls/tls_context.h"

namespace memzone::tls {

class TlsContexts {
 public:
  void setClientFacing(std::shared_ptr<TlsContext> context) { client_facing_ = std::move(context); }
  const std::shared_ptr<TlsContext>& clientFacing() const { return client_facing_; }

  // The client-role context for these backend files, built on first use; null and `error`
  // when the files are unusable (the topology is then rejected).
  std::shared_ptr<TlsContext> backend(const TlsFiles& files, std::string& error);

  // Reloads changed files everywhere; logs each reload and each failure.
  void reloadAll();
  uint64_t reloadFailures() const;

 private:
  std::shared_ptr<TlsContext> client_facing_;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<TlsContext>> backends_;
};

}  // namespace memzone::tls
