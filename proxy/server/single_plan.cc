// ClientRequest, plans kSingle and kBroadcast: one backend's answer is the client's answer
// (an unreplicated pool, or a replicated one for what is neither a copied write nor a
// failover read), and flush_all, sent to every server, answered OK only if all said OK.
#include "proxy/server/client_request.h"
#include "proxy/server/proxy_stats.h"

namespace memzone::server {

using protocol::Command;
using protocol::ReplyCode;

void ClientRequest::startSingle(const protocol::Request& request, const backend::PoolView& pool) {
  keepForm(request);
  const backend::ZoneView& zv = pool.zones[pool.local_zone];
  backend::BackendServer* server = zv.servers[zv.zone->ring.serverFor(keyAt(0))];
  send(addChild(server), server, request);
  sealed();
}

void ClientRequest::startBroadcast(const protocol::Request& request,
                                   const std::vector<backend::BackendServer*>& servers) {
  keepForm(request);
  for (backend::BackendServer* server : servers) send(addChild(server), server, request);
  sealed();
}

void ClientRequest::finishSingle() {
  if (override_) return;
  Child& c = children_[0];
  if (c.failed) {
    stats_->server_errors.add();
    reply_.append(backend::failureReply(c.failure));
    return;
  }
  if (protocol::isRetrieval(command_) || command_ == Command::kMetaGet) {
    bool hit =
        c.code == ReplyCode::kHit || (command_ == Command::kMetaGet && c.code == ReplyCode::kOk);
    (hit ? stats_->get_hits : stats_->get_misses).add();
  }
  reply_child_ = 0;  // empty when a quiet request was answered with silence
}

void ClientRequest::finishBroadcast() {
  for (size_t i = 0; i < child_count_; ++i) {
    const Child& c = children_[i];
    if (c.failed) {
      reply_.append(backend::failureReply(c.failure));
      return;
    }
    if (c.code != ReplyCode::kOk) {
      reply_.append(c.reply.view());
      return;
    }
  }
  reply_.append("OK\r\n");
}

}  // namespace memzone::server
