// The last applied snapshot on disk (--state-dir), so a restarted proxy serves before the
// controller answers, and the one before it, so a proxy restarted inside a ring change's
// migration window keeps the window (its writes still reach the keys' previous owners). Written
// atomically (temporary file, fsync, rename); a file that is missing, unreadable or corrupt is
// reported and ignored. Any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "memzone/v1/topology.pb.h"

namespace memzone::topology {

// Returns "" on success, else why it failed.
std::string saveSnapshot(const std::string& dir, const v1::TopologySnapshot& snapshot);
// nullopt with `error` empty: no state yet; nullopt with `error`: unusable.
std::optional<v1::TopologySnapshot> loadSnapshot(const std::string& dir, std::string& error);

struct PreviousSnapshot {
  v1::TopologySnapshot snapshot;
  int64_t age_us = 0;  // how long ago the proxy switched from it
};
// The snapshot the saved one replaced, as loadSnapshot.
std::optional<PreviousSnapshot> loadPreviousSnapshot(const std::string& dir, std::string& error);

}  // namespace memzone::topology
