// One memcached server as seen by one worker: its pipelined connection and its health.
// After `failure_limit` consecutive connection failures the server is marked down and every
// request fails fast; after a jittered, doubling delay a probe connection sends `version`,
// and only a good answer brings the server back. Worker thread only.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "proxy/backend/backend_connection.h"
#include "proxy/backend/backend_stats.h"
#include "proxy/topology/topology.h"

namespace memzone::backend {

struct ServerOptions {
  ConnectionOptions connection;
  topology::HealthSpec health;
};

class BackendServer : public ConnectionObserver, private ReplySink {
 public:
  BackendServer(event::EventBase& base, FlushList& flush_list, const topology::Backend& backend,
                ServerOptions options, BackendStats& stats);
  ~BackendServer() override;

  const std::string& address() const { return address_; }
  bool up() const { return state_ == State::kUp; }

  // Returns the reason a request cannot be sent now, or nullopt. After nullopt, encode the
  // request into output() and call commit(); the sink then hears back exactly once.
  std::optional<BackendFailure> admit() const;
  ByteBuffer& output() { return connection_->output(); }
  void commit(ReplySink* sink, uint32_t tag, protocol::ReplyShape shape);

  void setOptions(ServerOptions options);
  // The server left the topology: fail what is pending with kRemoved.
  void retire();

  // ConnectionObserver
  void onConnectionFailed(BackendConnection& connection, BackendFailure failure) override;
  void onReplyReceived() override { consecutive_failures_ = 0; }

 private:
  enum class State : uint8_t { kUp, kDown, kProbing };

  void markDown(BackendFailure failure);
  void startProbe();
  uint32_t nextRetryDelayMs();
  void onBackendReply(uint32_t tag, std::string_view reply, protocol::ReplyCode code) override;
  void onBackendFailure(uint32_t tag, BackendFailure failure) override;

  std::string address_;
  ServerOptions options_;
  BackendStats& stats_;
  std::unique_ptr<BackendConnection> connection_;
  event::Timer retry_timer_;
  State state_ = State::kUp;
  uint32_t consecutive_failures_ = 0;
  uint32_t retry_delay_ms_ = 0;
};

}  // namespace memzone::backend
