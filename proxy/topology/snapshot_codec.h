// The proxy's reading of a topology snapshot (proto, from the controller, the state file or
// the YAML reader) as a TopologySpec; buildTopology() then validates it in full.
#pragma once

#include "memzone/v1/topology.pb.h"
#include "proxy/topology/topology.h"

namespace memzone::topology {

TopologySpec specFromSnapshot(const v1::TopologySnapshot& snapshot);

}  // namespace memzone::topology
