// Read repair: a value that another zone served (the local zone missed or failed) is copied
// back into the local zone with its remaining TTL and its flags, so the next read is local.
//
// Towards the backends it uses the meta protocol: `mg <key> v t f c` on the zone that served
// the hit (text `get` shows neither TTL nor a way to ask for it), then `ms <key> <n> T<ttl>
// F<flags> ME c` on the local server. Mode E is add: it stores only if the local server has
// no value, so a repair never overwrites a value written locally in the meantime. A delete
// (or write) can still reach the local server before our ms and the source after our mg (the
// chaos test found it: a deleted value served again); so once stored, the source is asked
// again (`mg <key> c`), and unless it still holds the item we copied, our copy is deleted
// (`md <key> C<our cas>`: only if nobody wrote it since; if that cannot be sent, a delete is
// owed). What remains is the time of those round trips, and a delete that reaches the source
// only after our second look (its acknowledgement waits for it with `wait: all`, not with
// `local`). Failover hits are rare, so each repair is a small heap object.
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
