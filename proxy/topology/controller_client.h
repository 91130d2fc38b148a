// The proxy's subscription to memzone-controller's topology stream (DESIGN.md §2).
//
// One thread owns one gRPC bidirectional stream at a time: it says who the proxy is and
// which version it serves, then answers every snapshot with an ACK (applied) or a NACK
// (refused, with the reason; the previous topology keeps serving). When the stream breaks
// it reconnects with capped, jittered exponential backoff; the proxy serves its last
// topology meanwhile. gRPC keepalive notices a dead controller within seconds.
#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "memzone/v1/topology.pb.h"

namespace grpc {
class ClientContext;
}

namespace memzone::topology {

struct ControllerClientOptions {
  std::string target;  // HOST:PORT
  std::string node_id;
  std::string node_name;        // NODE_NAME (Kubernetes), may be empty
  std::string zone;             // --zone, may be empty
  std::string initial_version;  // what the proxy serves already (state file), or ""
  uint32_t initial_backoff_ms = 250;
  uint32_t max_backoff_ms = 10000;
};

enum class ControllerState { kConnecting, kConnected, kDisconnected };

class ControllerClient {
 public:
  // Applies a snapshot; returns "" when applied, else the reason it was refused (NACK).
  // Called on the client's thread.
  using ApplyFn = std::function<std::string(const v1::TopologySnapshot&)>;
  using StateFn = std::function<void(ControllerState)>;

  ControllerClient(ControllerClientOptions options, ApplyFn apply, StateFn on_state = {});
  ~ControllerClient();  // stops and joins

  void start();
  void stop();

 private:
  void run();
  bool waitBackoff(uint32_t ms);  // false when stopping

  ControllerClientOptions options_;
  ApplyFn apply_;
  StateFn on_state_;
  std::string applied_version_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  grpc::ClientContext* context_ = nullptr;  // the live stream's, under mu_, for cancel
};

}  // namespace memzone::topology
