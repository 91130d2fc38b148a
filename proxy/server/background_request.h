// A request the proxy sends on its own behalf and nobody waits for (a previous owner's
// delete, a TTL copy): it owns itself and pins the topology view until it hears back. When
// the server fails it, or answers with what `settled` does not accept, the key may have been
// left as it was there, so it is queued as an invalidation of that server (as a failed write
// copy is, replicated_write.cc) and the server is not read until the delete is replayed. A
// server that left the topology is read by no one, so nothing is queued for it. Worker thread
// only.
#pragma once

#include <string>
#include <string_view>

#include "proxy/backend/backend_registry.h"

namespace memzone::server {

class BackgroundRequest final : public backend::ReplySink {
 public:
  using Settled = bool (*)(const protocol::BackendReply& reply);
  // `wire_key` names the key on meta lines (text, or "<base64> b").
  BackgroundRequest(backend::BackendRegistry& registry, backend::TopologyView* view,
                    backend::BackendServer* server, std::string_view wire_key, Settled settled)
      : registry_(registry), view_(view), server_(server), wire_key_(wire_key), settled_(settled) {
    registry_.pin(view_);
  }
  ~BackgroundRequest() override { registry_.unpin(view_); }

  void onBackendReply(uint32_t, const protocol::BackendReply& reply) override {
    if (!settled_(reply)) server_->invalidate(wire_key_);
    delete this;
  }
  void onBackendFailure(uint32_t, backend::BackendFailure failure) override {
    if (failure != backend::BackendFailure::kRemoved) server_->invalidate(wire_key_);
    delete this;
  }

 private:
  backend::BackendRegistry& registry_;
  backend::TopologyView* view_;  // pinned: server_ lives as long as we do
  backend::BackendServer* server_;
  std::string wire_key_;
  Settled settled_;
};

}  // namespace memzone::server
