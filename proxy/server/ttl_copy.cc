#include "proxy/server/ttl_copy.h"

#include <string>

namespace memzone::server {
namespace {

class TtlCopy final : public backend::ReplySink {
 public:
  TtlCopy(backend::BackendRegistry& registry, backend::TopologyView* view,
          backend::BackendServer* server, std::string_view wire_key)
      : registry_(registry), view_(view), server_(server), wire_key_(wire_key) {
    registry_.pin(view_);
  }
  ~TtlCopy() override { registry_.unpin(view_); }

  void onBackendReply(uint32_t, const protocol::BackendReply& reply) override {
    // HD: changed; EN: nothing there to change. A refusal (CLIENT_ERROR) is the local zone's
    // too; only a server error leaves the copy unknown.
    if (reply.code == protocol::ReplyCode::kServerError) server_->invalidate(wire_key_);
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
};

}  // namespace

void copyTtlToZone(backend::BackendRegistry& registry, backend::TopologyView* view,
                   const backend::ZoneView& zv, std::string_view key, std::string_view wire_key,
                   std::string_view ttl) {
  backend::BackendServer* server = zv.servers[zv.zone->ring.serverFor(key)];
  registry.stats().zones[zv.zone->stats_slot].copies_sent.add();
  if (server->admit()) {
    server->invalidate(wire_key);  // down or saturated: the delete waits for it
    return;
  }
  ByteBuffer& out = server->output();
  out.append("mg ");
  out.append(wire_key);
  out.append(" T");
  out.append(ttl);
  out.append(" ");
  out.append(server->opaque().view());
  out.append("\r\n");
  server->commit(new TtlCopy(registry, view, server, wire_key), 0);
}

}  // namespace memzone::server
