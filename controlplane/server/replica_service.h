// The server side of the replicas' direct dirty-set exchange (ReplicaService.ShareDirty in
// topology.proto, dirty_servers.h): another replica streams what its proxies owe; each message
// goes into the dirty set at once, and the stream is answered the latest of that replica's
// generations every proxy connected here has applied. One reactor per stream (callback API),
// one write in flight. Served on the topology port, with its credentials (mTLS when set). What
// the other replica says its proxies applied goes to `everywhere` (applied_everywhere.h).
#pragma once

#include "controlplane/server/applied_everywhere.h"
#include "controlplane/server/dirty_servers.h"
#include "memzone/v1/topology.grpc.pb.h"

namespace memzone::controlplane {

class ReplicaService final : public v1::ReplicaService::CallbackService {
 public:
  ReplicaService(DirtyServers& dirty, AppliedEverywhere& everywhere)
      : dirty_(dirty), everywhere_(everywhere) {}

  grpc::ServerBidiReactor<v1::ReplicaDirty, v1::ReplicaDirtyApplied>* ShareDirty(
      grpc::CallbackServerContext* context) override;

 private:
  DirtyServers& dirty_;
  AppliedEverywhere& everywhere_;
};

}  // namespace memzone::controlplane
