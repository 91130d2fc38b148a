// The last applied snapshot on disk (--state-dir), so a restarted proxy serves before the
// controller answers. Written atomically (temporary file, fsync, rename); a file that is
// missing, unreadable or corrupt is reported and ignored. Any thread.
#pragma once

#include <optional>
#include <string>

#include "memzone/v1/topology.pb.h"

namespace memzone::topology {

// Returns "" on success, else why it failed.
std::string saveSnapshot(const std::string& dir, const v1::TopologySnapshot& snapshot);
// nullopt with `error` empty: no state yet; nullopt with `error`: unusable.
std::optional<v1::TopologySnapshot> loadSnapshot(const std::string& dir, std::string& error);

}  // namespace memzone::topology
