// The proxy's static topology (--config): the YAML of DESIGN.md §2, read by the shared
// reader (errors "FILE:LINE: field: reason"), then validated in full by buildTopology.
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
