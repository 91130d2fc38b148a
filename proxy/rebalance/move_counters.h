// What the key mover did, per zone slot (topology/zone_slots.h). Written by the mover's one
// thread, read at scrape and `stats`: relaxed atomics, never on the request path.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>

#include "proxy/topology/zone_slots.h"

namespace memzone::rebalance {

struct ZoneMoveCounters {
  std::atomic<uint64_t> moved{0};  // copied to their new owner and deleted at the old one
  std::atomic<uint64_t> dropped{
      0};                           // deleted at the old owner without a copy (no target, expiring)
  std::atomic<uint64_t> purged{0};  // copies a server held from before it owned the key
  std::atomic<uint64_t> crawls_done{0};
  std::atomic<uint64_t> crawls_failed{0};     // given up when the migration window ended
  std::atomic<uint64_t> crawls_elsewhere{0};  // another proxy held the server's lease
  // Moves started at their bound without the controller's word that every proxy applied the
  // change (key_mover.h): a late proxy may have written behind them.
  std::atomic<uint64_t> moves_unconfirmed{0};
  void add(std::atomic<uint64_t>& c, uint64_t n = 1) { c.fetch_add(n, std::memory_order_relaxed); }
};

struct MoveCounters {
  std::array<ZoneMoveCounters, topology::kMaxZoneSlots> zones;
};

}  // namespace memzone::rebalance
