#include "proxy/server/request_dispatcher.h"

#include "proxy/protocol/client_errors.h"
#include "proxy/protocol/request_encoder.h"

namespace memzone::server {

using protocol::Command;
using Plan = ClientRequest::Plan;

namespace {
// Numeric "1.6.x" first: client libraries parse the version with strtol.
constexpr std::string_view kVersionReply = "VERSION 1.6.0-memzone-" MEMZONE_VERSION "\r\n";
}  // namespace

RequestDispatcher::RequestDispatcher(backend::BackendRegistry& registry, RequestPool& pool,
                                     ProxyStats& stats, StatsRenderer render_stats)
    : registry_(registry), pool_(pool), stats_(stats), render_stats_(std::move(render_stats)) {}

ClientRequest* RequestDispatcher::localReply(std::string_view reply, RequestOwner* owner) {
  ClientRequest* r = pool_.acquire();
  r->start(owner, Command::kVersion, Plan::kLocal, &stats_);
  r->setLocalReply(reply);
  return r;
}

ClientRequest* RequestDispatcher::dispatch(const protocol::Request& request, RequestOwner* owner) {
  stats_.commands[static_cast<int>(request.command)].add();
  switch (request.command) {
    case Command::kVersion:
      return localReply(kVersionReply, owner);
    case Command::kVerbosity:
      return localReply(request.noreply ? "" : "OK\r\n", owner);
    case Command::kMetaNoop:
      return localReply("MN\r\n", owner);
    case Command::kStats:
      if (request.tokens.size() > 1) return localReply(protocol::errors::kError, owner);
      scratch_.clear();
      render_stats_(scratch_);
      return localReply(scratch_.view(), owner);
    default:
      break;
  }
  backend::TopologyView* view = registry_.current();
  if (view == nullptr) return localReply(protocol::errors::kNoTopology, owner);

  ClientRequest* r = pool_.acquire();
  if (request.command == Command::kFlushAll) {
    if (!view->topology->allow_flush_all) {
      r->start(owner, request.command, Plan::kLocal, &stats_);
      r->setLocalReply(request.noreply ? "" : protocol::errors::kFlushDisabled);
      return r;
    }
    r->start(owner, request.command, Plan::kBroadcast, &stats_);
    r->pinView(&registry_, view);
    dispatchFlushAll(request, r, view);
  } else if (protocol::isRetrieval(request.command) && request.key_count > 1) {
    r->start(owner, request.command, Plan::kMultiGet, &stats_);
    r->pinView(&registry_, view);
    dispatchMultiGet(request, r, view);
  } else {
    r->start(owner, request.command, Plan::kSingle, &stats_);
    r->pinView(&registry_, view);
    dispatchSingle(request, r, view);
  }
  return r;
}

backend::BackendServer* RequestDispatcher::serverFor(std::string_view key,
                                                     backend::TopologyView* view) const {
  uint32_t pool = view->topology->router.poolFor(key);
  if (pool == routing::PrefixRouter::kNoPool) return nullptr;
  const backend::PoolView& pv = view->pools[pool];
  const backend::ZoneView& zv = pv.zones[pv.local_zone];
  return zv.servers[zv.zone->ring.serverFor(key)];
}

void RequestDispatcher::send(ClientRequest* r, uint32_t child, backend::BackendServer* server,
                             const protocol::Request& request) {
  if (auto refused = server->admit()) {
    r->failChild(child, *refused);
    return;
  }
  protocol::encodeForward(request, server->output());
  r->expectReplies(1);
  server->commit(r, child, protocol::replyShapeFor(request.command));
}

void RequestDispatcher::dispatchSingle(const protocol::Request& request, ClientRequest* r,
                                       backend::TopologyView* view) {
  r->setFlags(request.noreply, request.quiet);
  backend::BackendServer* server = serverFor(request.key(), view);
  if (server == nullptr) {
    r->setLocalReply(request.noreply ? "" : protocol::errors::kNoRoute);
    return;
  }
  uint32_t child = r->addChild(server);
  send(r, child, server, request);
  r->sealed();
}

void RequestDispatcher::dispatchMultiGet(const protocol::Request& request, ClientRequest* r,
                                         backend::TopologyView* view) {
  for (size_t i = 0; i < request.key_count; ++i) {
    std::string_view key = request.key(i);
    backend::BackendServer* server = serverFor(key, view);
    uint32_t child = UINT32_MAX;
    for (uint32_t c = 0; c < r->childCount(); ++c) {
      if (r->child(c).server == server) child = c;
    }
    if (child == UINT32_MAX) {
      child = r->addChild(server);
      if (server == nullptr) r->failChild(child, backend::BackendFailure::kRemoved);
    }
    r->addKey(key, child);
  }
  // One backend request per server, keys in the client's order.
  for (uint32_t c = 0; c < r->childCount(); ++c) {
    backend::BackendServer* server = r->child(c).server;
    if (server == nullptr) continue;
    if (auto refused = server->admit()) {
      r->failChild(c, *refused);
      continue;
    }
    ByteBuffer& out = server->output();
    out.append(request.tokens[0]);
    if (request.first_key == 2) {
      out.append(' ');
      out.append(request.tokens[1]);
    }
    for (size_t i = 0; i < request.key_count; ++i) {
      if (r->keyChild(i) != c) continue;
      out.append(' ');
      out.append(request.key(i));
    }
    out.append("\r\n");
    r->expectReplies(1);
    server->commit(r, c, protocol::ReplyShape::kRetrieval);
  }
  r->sealed();
}

void RequestDispatcher::dispatchFlushAll(const protocol::Request& request, ClientRequest* r,
                                         backend::TopologyView* view) {
  r->setFlags(request.noreply, false);
  for (backend::BackendServer* server : registry_.allServers()) {
    uint32_t child = r->addChild(server);
    send(r, child, server, request);
  }
  (void)view;
  r->sealed();
}

}  // namespace memzone::server
