#include "proxy/server/request_dispatcher.h"

#include "proxy/event/event_base.h"
#include "proxy/protocol/backend_request.h"
#include "proxy/protocol/client_errors.h"
#include "proxy/server/window_reads.h"

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

ClientRequest* RequestDispatcher::localReply(std::string_view reply, RequestOwner* owner,
                                             Command command) {
  ClientRequest* r = pool_.acquire();
  r->start(owner, command, Plan::kLocal, &stats_);
  r->setLocalReply(reply);
  return r;
}

ClientRequest* RequestDispatcher::deleteForTooLarge(const protocol::Request& request,
                                                    std::string_view reply, RequestOwner* owner) {
  // memcached deletes the key it would have stored: a meta `b` key by its decoded bytes.
  protocol::Request& del = delete_request_;
  bool meta = request.command == Command::kMetaSet;
  del.command = meta ? Command::kMetaDelete : Command::kDelete;
  del.tokens.assign({meta ? std::string_view("md") : std::string_view("delete"), request.key()});
  if (meta && protocol::hasMetaFlag(request, 'b')) del.tokens.push_back("b");
  del.raw = del.line = {};
  del.first_key = 1;
  del.key_count = 1;
  del.data = del.data_terminator = {};
  del.length_token = 0;
  del.noreply = del.quiet = false;
  ClientRequest* r = dispatch(del, owner);
  r->overrideReply(reply);
  return r;
}

ClientRequest* RequestDispatcher::dispatch(const protocol::Request& request, RequestOwner* owner) {
  stats_.commands[static_cast<int>(request.command)].add();
  switch (request.command) {
    case Command::kVersion:
      return localReply(kVersionReply, owner, request.command);
    case Command::kVerbosity:
      return localReply(request.noreply ? "" : "OK\r\n", owner, request.command);
    case Command::kMetaNoop:
      return localReply("MN\r\n", owner, request.command);
    case Command::kStats:
      if (request.tokens.size() > 1) {
        return localReply(protocol::errors::kError, owner, request.command);
      }
      scratch_.clear();
      render_stats_(scratch_);
      return localReply(scratch_.view(), owner, request.command);
    default:
      break;
  }
  backend::TopologyView* view = registry_.current();
  if (view == nullptr) return localReply(protocol::errors::kNoTopology, owner, request.command);

  ClientRequest* r = pool_.acquire();
  if (request.command == Command::kFlushAll) {
    if (!view->topology->allow_flush_all) {
      r->start(owner, request.command, Plan::kLocal, &stats_);
      r->setLocalReply(request.noreply ? "" : protocol::errors::kFlushDisabled);
      return r;
    }
    r->start(owner, request.command, Plan::kBroadcast, &stats_);
    r->pinView(&registry_, view);
    r->startBroadcast(request, registry_.allServers());
    return r;
  }
  if (protocol::isRetrieval(request.command) && request.key_count > 1) {
    r->start(owner, request.command, Plan::kMultiGet, &stats_);
    r->pinView(&registry_, view);
    r->startMultiGet(request, view->topology->router);
    return r;
  }
  // A b key is placed and routed by the bytes memcached stores (issue 23).
  std::string_view placement = protocol::placementKey(request, placement_scratch_);
  uint32_t pool = view->topology->router.poolFor(placement);
  if (pool == routing::PrefixRouter::kNoPool) {
    r->start(owner, request.command, Plan::kLocal, &stats_);
    r->setLocalReply(request.noreply ? "" : protocol::errors::kNoRoute);
    return r;
  }
  const backend::PoolView& pv = view->pools[pool];
  bool replicated = pv.zones.size() > 1;
  bool read = protocol::isRetrieval(request.command) || request.command == Command::kMetaGet;
  bool migrating = pv.migrate_until_us != 0;  // a churn window (window_reads.h); rarely true
  bool all_zones = replicated && pv.pool->replication.writes == topology::WritePolicy::kAllZones;
  if (migrating && protocol::isWrite(request.command)) {
    // Before the write itself: the previous owner's copy is gone before the new one is set.
    std::string wire_key(request.key());
    if (protocol::isMeta(request.command) && protocol::hasMetaFlag(request, 'b')) {
      wire_key.append(" b");
    }
    invalidatePreviousOwners(registry_, view, pv, placement, wire_key, all_zones,
                             event::nowMicros());
  }
  if (all_zones && protocol::isWrite(request.command)) {
    r->start(owner, request.command, Plan::kWrite, &stats_);
    r->pinView(&registry_, view);
    r->startWrite(request, pv);
  } else if ((replicated || migrating) && read) {  // a one-zone pool reads its old owners too
    r->start(owner, request.command, Plan::kRead, &stats_);
    r->pinView(&registry_, view);
    r->startRead(request, pv);
  } else {
    r->start(owner, request.command, Plan::kSingle, &stats_);
    r->pinView(&registry_, view);
    r->startSingle(request, pv);
  }
  return r;
}

}  // namespace memzone::server
