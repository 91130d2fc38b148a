// The last applied snapshot on disk (--state-dir), so a restarted proxy serves before the
// controller answers; and the history of its last switches (the snapshot each replaced, and
// when), so a proxy restarted inside a ring change's windows keeps them (its writes still reach
// the keys' previous owners). Written atomically (temporary file, fsync, rename); a file that
// is missing, unreadable or corrupt is reported and ignored. Any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "memzone/v1/topology.pb.h"

namespace memzone::topology {

// One switch: the snapshot the proxy switched away from, and how long ago.
struct PastSnapshot {
  v1::TopologySnapshot snapshot;
  int64_t age_us = 0;
};

// Returns "" on success, else why it failed. A switch of version adds the snapshot it replaced
// to the history, now; or, with `switches`, those (a chain replayed from the controller, which
// ends with the snapshot `snapshot` replaced).
std::string saveSnapshot(const std::string& dir, const v1::TopologySnapshot& snapshot,
                         const std::vector<PastSnapshot>* switches = nullptr);
// Adds `switches` (oldest first) to the history; keeps the last 8.
std::string appendHistory(const std::string& dir, const std::vector<PastSnapshot>& switches);
// nullopt with `error` empty: no state yet; nullopt with `error`: unusable.
std::optional<v1::TopologySnapshot> loadSnapshot(const std::string& dir, std::string& error);
// The last switches (at most 8), oldest first, each with the snapshot it replaced: the first
// entry's snapshot, then each next one's, then the saved one, is the order the proxy served
// them. An unreadable entry, or one dated in the future or before the entry it follows (the
// clock stepped), drops it and everything older (with `error` set): the chain before it is
// unknown.
std::vector<PastSnapshot> loadHistory(const std::string& dir, std::string& error);

}  // namespace memzone::topology
