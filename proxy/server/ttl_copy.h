// Reads that change a TTL (gat, gats, mg ... T) change it in every zone (issue 23): the zone
// that served the read did it there, and, once it answered, each other zone of the key's pool
// gets `mg <key> T<ttl>` in the background, like a `wait: local` write copy. A copy that fails (or
// that memcached answers with a server error) leaves an invalidation for that server, so a zone
// never keeps serving a value past the TTL the client set. A miss there needs nothing. Worker
// thread only; each copy owns itself and pins the view until it hears back.
#pragma once

#include <string_view>

#include "proxy/backend/backend_registry.h"

namespace memzone::server {

// `key` places the key in `zone`, `wire_key` names it on the line (text, or "<base64> b");
// `ttl` is the TTL in digits.
void copyTtlToZone(backend::BackendRegistry& registry, backend::TopologyView* view,
                   const backend::ZoneView& zone, std::string_view key, std::string_view wire_key,
                   std::string_view ttl);

}  // namespace memzone::server
