// The client side of the replicas' direct dirty-set exchange (replica_service.h): one stream
// to every other replica whose address its Lease gives, each on its own thread, sending this
// replica's local dirty set with its generation whenever the generation changes, and handing
// the answers (which generation that replica's proxies applied) to the dirty set, which holds
// its confirmation back until then (dirty_servers.h). A link that fails is retried with a
// jittered backoff from 100 ms to 5 s; while it is down the other replica counts through
// our Lease (the fallback). Each message also says what our own proxies applied
// (applied_everywhere.h), sent again whenever that changes. setPeers() from any thread; the
// links are joined on stop().
#pragma once

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "controlplane/server/applied_everywhere.h"
#include "controlplane/server/dirty_servers.h"

namespace grpc {
class ChannelCredentials;
}

namespace memzone::controlplane {

struct ReplicaLinkOptions {
  std::string identity;  // ours, as in our replica Lease
  // TLS: our certificate as the client's, the replicas' CA; null: plaintext.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  std::string server_name;  // what a replica's certificate must say (TLS only)
};

class ReplicaLinks {
 public:
  ReplicaLinks(ReplicaLinkOptions options, DirtyServers& dirty, AppliedEverywhere& everywhere);
  ~ReplicaLinks();

  // The replicas to stream to now: identity -> "host:port". Links to others end.
  void setPeers(const std::map<std::string, std::string>& peers);
  void stop();

 private:
  class Link;
  ReplicaLinkOptions options_;
  DirtyServers& dirty_;
  AppliedEverywhere& everywhere_;
  std::mutex mu_;
  bool stopped_ = false;
  std::map<std::string, std::unique_ptr<Link>> links_;  // by identity
};

}  // namespace memzone::controlplane
