// Reads the topology YAML of DESIGN.md §2 into a TopologySnapshot (the same shape the
// controller streams). Schema-first: unknown keys are rejected, every error is collected with
// its line ("FILE:LINE: field: reason"), cross-field rules are checked at the line that is
// wrong. Shared by the proxy (--config) and the controller (file source).
#pragma once

#include <string>
#include <vector>

#include "memzone/v1/topology.pb.h"

namespace memzone::v1 {

struct YamlOptions {
  // The proxy connects to numeric addresses only; the controller passes names through and
  // lets each proxy accept or refuse (NACK) them.
  bool numeric_addresses_only = true;
};

struct YamlTopologyResult {
  TopologySnapshot snapshot;        // version set to snapshotVersion(); nonce and zone empty
  std::vector<std::string> errors;  // empty on success
};

YamlTopologyResult parseTopologyYaml(const std::string& text, const std::string& file_name,
                                     const YamlOptions& options = {});
YamlTopologyResult loadTopologyYaml(const std::string& path, const YamlOptions& options = {});

// Sets timeouts, health and consistency to their documented defaults (sources that do not
// read them from a file: the Kubernetes source).
void fillDefaultSettings(TopologySnapshot& snapshot);

// A hash of the snapshot's content (pools, routes, settings; not version, nonce, zone):
// equal content, equal version; any change, a new one.
std::string snapshotVersion(const TopologySnapshot& snapshot);

// "host:port" for a backend (IPv6 hosts in brackets).
std::string backendAddress(const Backend& backend);

}  // namespace memzone::v1
