// Topology snapshots for unit tests: pool "main", zone "a", one backend.
#pragma once

#include <string>

#include "memzone/v1/topology.pb.h"
#include "memzone/v1/topology_yaml.h"

namespace memzone::testing {

// Its version set from its content, as the controller publishes it.
inline v1::TopologySnapshot snapshotWith(const std::string& address) {
  v1::TopologySnapshot snapshot;
  v1::Pool* pool = snapshot.add_pools();
  pool->set_name("main");
  v1::Zone* zone = pool->add_zones();
  zone->set_zone("a");
  v1::Backend* backend = zone->add_backends();
  backend->set_address(address);
  backend->set_port(11211);
  snapshot.set_version(v1::snapshotVersion(snapshot));
  return snapshot;
}

}  // namespace memzone::testing
