#include "proxy/config/topology_file.h"

#include "memzone/v1/topology_yaml.h"
#include "proxy/topology/snapshot_codec.h"

namespace memzone::config {
namespace {

TopologyFileResult fromYaml(v1::YamlTopologyResult yaml, const std::string& file_name) {
  TopologyFileResult result;
  result.errors = std::move(yaml.errors);
  if (!result.errors.empty()) return result;
  result.spec = topology::specFromSnapshot(yaml.snapshot);
  topology::BuildResult built = topology::buildTopology(result.spec);
  if (!built.topology) result.errors.push_back(file_name + ":1: " + built.error);
  return result;
}

}  // namespace

TopologyFileResult parseTopologyYaml(const std::string& text, const std::string& file_name) {
  return fromYaml(v1::parseTopologyYaml(text, file_name), file_name);
}

TopologyFileResult loadTopologyFile(const std::string& path) {
  return fromYaml(v1::loadTopologyYaml(path), path);
}

}  // namespace memzone::config
