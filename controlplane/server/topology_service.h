// The gRPC TopologyService: one stream reactor per proxy (callback API), at most one write in
// flight per stream, and one snapshot awaiting its ACK/NACK at a time.
//
// What is sent, and when (the xDS traps avoided): a proxy gets the current snapshot unless
// it already ACKed that version (including at connect time, from its state file), and never
// again a version it NACKed: a NACKed snapshot is resent only once the content, and so the
// version, has changed. Answers carrying a stale nonce are ignored. A message with no nonce
// after the first is a health report (which backends the proxy has down, which servers it owes
// invalidations). Initial metadata goes out at once, so a proxy knows the stream is
// established even when it is sent nothing.
//
// Proxies that report what they owe are also sent the dirty-server set (dirty_servers.h)
// whenever it changes, ahead of any snapshot: a message with an empty version, never ACKed,
// so it never waits behind a snapshot's answer. Proxies that ask are also sent, in the same
// version-less messages, the version every proxy has applied (applied_everywhere.h) whenever it
// changes: their key movers wait for it.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "controlplane/server/applied_everywhere.h"
#include "controlplane/server/dirty_servers.h"
#include "controlplane/server/proxy_registry.h"
#include "controlplane/server/snapshot_cache.h"
#include "memzone/v1/topology.grpc.pb.h"

namespace memzone::controlplane {

// Answers a proxy's zone from what it told us (its --zone, or its node's zone label).
using ZoneResolver = std::function<std::string(const v1::TopologyRequest& hello)>;

class TopologyService final : public v1::TopologyService::CallbackService {
 public:
  TopologyService(SnapshotCache& cache, ProxyRegistry& registry, DirtyServers& dirty,
                  AppliedEverywhere& everywhere, ZoneResolver zones);

  grpc::ServerBidiReactor<v1::TopologyRequest, v1::TopologySnapshot>* StreamTopology(
      grpc::CallbackServerContext* context) override;

 private:
  SnapshotCache& cache_;
  ProxyRegistry& registry_;
  DirtyServers& dirty_;
  AppliedEverywhere& everywhere_;
  ZoneResolver zones_;
};

}  // namespace memzone::controlplane
