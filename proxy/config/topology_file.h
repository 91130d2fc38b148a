// Reads the topology YAML of DESIGN.md §2 into a TopologySpec. Schema-first: unknown keys
// are rejected, every error is collected with its line ("FILE:LINE: field: reason"), then
// the spec is built and cross-checked by topology::buildTopology.
#pragma once

#include <string>
#include <vector>

#include "proxy/topology/topology.h"

namespace memzone::config {

struct TopologyFileResult {
  topology::TopologySpec spec;
  std::vector<std::string> errors;  // empty on success
};

TopologyFileResult parseTopologyYaml(const std::string& text, const std::string& file_name);
TopologyFileResult loadTopologyFile(const std::string& path);

}  // namespace memzone::config
