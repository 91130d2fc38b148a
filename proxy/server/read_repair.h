// Read repair: a value that another zone served (the local zone missed or failed) is copied
// back into the local zone with its remaining TTL and its flags, so the next read is local.
//
// Towards the backends it uses the meta protocol: `mg <key> v t f` on the zone that served
// the hit (text `get` shows neither TTL nor a way to ask for it), then `ms <key> <n> T<ttl>
// F<flags> ME` on the local server. Mode E is add: it stores only if the local server has no
// value, so a repair never overwrites a value written locally in the meantime. What it
// cannot exclude is a delete that reaches the local server between our mg and our ms; that
// window is the same one every cache-aside fill has, and a later write or delete of the key
// corrects it. Failover hits are rare, so each repair is a small heap object.
#pragma once

#include <string_view>

#include "proxy/backend/backend_registry.h"
#include "proxy/server/proxy_stats.h"

namespace memzone::server {

// Starts a repair of `key` from `source` into `target`; owns and frees itself. The view is
// pinned until it ends, so neither server goes away under it. `on_store` (may be null) also
// counts a stored repair (a churn window's: keys warmed, migration repairs). With `move` (a
// migration from the key's previous owner in the same zone) the source's copy is deleted once
// the target has a value, so no later ring change can bring the old copy back (a delete that
// fails or cannot be sent is queued as an invalidation of the source).
// Worker thread only.
void startReadRepair(backend::BackendRegistry& registry, backend::TopologyView* view,
                     std::string_view key, backend::BackendServer* source,
                     backend::BackendServer* target, ProxyStats& stats,
                     metrics::Counter* on_store = nullptr, bool move = false);

}  // namespace memzone::server
