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

// Returns "" on success, else why it failed.
std::string saveSnapshot(const std::string& dir, const v1::TopologySnapshot& snapshot);
// nullopt with `error` empty: no state yet; nullopt with `error`: unusable.
std::optional<v1::TopologySnapshot> loadSnapshot(const std::string& dir, std::string& error);

// One switch of the history: the snapshot the proxy switched away from, and how long ago.
struct PastSnapshot {
  v1::TopologySnapshot snapshot;
  int64_t age_us = 0;
};
// The last switches (at most 8), oldest first, each with the snapshot it replaced: the first
// entry's snapshot, then each next one's, then the saved one, is the order the proxy served
// them. An unreadable entry, or one dated in the future, drops it and everything older (with
// `error` set): the chain before it is unknown.
std::vector<PastSnapshot> loadHistory(const std::string& dir, std::string& error);

}  // namespace memzone::topology
