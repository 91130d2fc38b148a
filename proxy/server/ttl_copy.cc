#include "proxy/server/ttl_copy.h"

#include <string>

#include "proxy/server/background_request.h"

namespace memzone::server {
namespace {

// HD: changed; EN: nothing there to change. A refusal (CLIENT_ERROR) is the answering zone's
// too; only a server error leaves the copy unknown.
bool ttlSettled(const protocol::BackendReply& reply) {
  return reply.code != protocol::ReplyCode::kServerError;
}

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
  server->commit(new BackgroundRequest(registry, view, server, wire_key, &ttlSettled), 0);
}

}  // namespace memzone::server
