#include "proxy/tls/tls_contexts.h"

#include "memzone/ops/log.h"

namespace memzone::tls {

std::shared_ptr<TlsContext> TlsContexts::backend(const TlsFiles& files, std::string& error) {
  std::string key = files.ca + '\n' + files.cert + '\n' + files.key + '\n' +
                    std::string(verifyName(files.verify));
  {
    std::lock_guard lock(mu_);
    if (auto it = backends_.find(key); it != backends_.end()) return it->second;
  }
  std::shared_ptr<TlsContext> context = TlsContext::create(Role::kClient, files, error);
  if (!context) return nullptr;
  std::lock_guard lock(mu_);
  auto [it, inserted] = backends_.emplace(key, context);
  return it->second;
}

void TlsContexts::reloadAll() {
  std::vector<std::shared_ptr<TlsContext>> all;
  if (client_facing_) all.push_back(client_facing_);
  {
    std::lock_guard lock(mu_);
    for (auto& [key, context] : backends_) all.push_back(context);
  }
  for (const auto& context : all) {
    bool changed = false;
    std::string error;
    const char* who = context->role() == Role::kServer ? "client-facing" : "backend";
    if (!context->reloadIfChanged(changed, error)) {
      ops::logEvent(ops::LogLevel::kError, "tls-reload:" + context->files().cert,
                    "%s TLS files changed but cannot be used (%s); keeping the previous "
                    "certificate",
                    who, error.c_str());
    } else if (changed) {
      ops::logEvent(ops::LogLevel::kInfo, "tls-reloaded:" + context->files().cert,
                    "%s TLS certificate reloaded from %s; new handshakes use it", who,
                    context->files().cert.empty() ? context->files().ca.c_str()
                                                  : context->files().cert.c_str());
    }
  }
}

uint64_t TlsContexts::reloadFailures() const {
  uint64_t n = client_facing_ ? client_facing_->reloadFailures() : 0;
  std::lock_guard lock(mu_);
  for (const auto& [key, context] : backends_) n += context->reloadFailures();
  return n;
}

}  // namespace memzone::tls
