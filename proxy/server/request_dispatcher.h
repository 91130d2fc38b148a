// Turns a parsed client request into a ClientRequest: answers proxy-local commands, routes
// keys (prefix -> pool) and picks the plan (single server; write copied to every zone; read
// with zone failover; multi-get; every server); the plan itself (ClientRequest::start*)
// sends the backend requests and builds the reply. Worker thread only.
#pragma once

#include <functional>
#include <string>

#include "proxy/backend/backend_registry.h"
#include "proxy/protocol/request.h"
#include "proxy/server/client_request.h"
#include "proxy/server/proxy_stats.h"

namespace memzone::server {

// Renders the proxy-wide `stats` reply (summed over every worker); any thread.
using StatsRenderer = std::function<void(ByteBuffer& out)>;

class RequestDispatcher {
 public:
  RequestDispatcher(backend::BackendRegistry& registry, RequestPool& pool, ProxyStats& stats,
                    StatsRenderer render_stats);

  // Never returns null; the request is ready at once or will call its owner back.
  ClientRequest* dispatch(const protocol::Request& request, RequestOwner* owner);
  // A request answered by the proxy itself, in order, with `reply` (may be empty); by
  // default one the parser rejected.
  ClientRequest* localReply(std::string_view reply, RequestOwner* owner,
                            protocol::Command command = protocol::Command::kUnknown);
  // A storage request whose value is too large to forward: like memcached, the key is
  // deleted (in every zone its writes go to) and the client hears `reply` (may be empty).
  ClientRequest* deleteForTooLarge(const protocol::Request& request, std::string_view reply,
                                   RequestOwner* owner);

 private:
  backend::BackendRegistry& registry_;
  RequestPool& pool_;
  ProxyStats& stats_;
  StatsRenderer render_stats_;
  ByteBuffer scratch_;
  protocol::Request delete_request_;
  std::string placement_scratch_;  // a b key's decoded bytes (placementKey)  // ... parsed, reused
                                   // (its token vector keeps capacity)
};

}  // namespace memzone::server
