// One pipelined TCP connection to a memcached server: requests are written in order and the
// replies are matched to a FIFO of pending requests. A timeout, a disconnect or a reply that
// does not parse breaks the pipeline, so the connection then fails every pending request and
// closes; the next request reconnects. Owned by a BackendServer; worker thread only.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <string>

#include "proxy/backend/backend_failure.h"
#include "proxy/backend/reply_sink.h"
#include "proxy/common/byte_buffer.h"
#include "proxy/common/flush_list.h"
#include "proxy/common/ring_queue.h"
#include "proxy/event/event_base.h"

namespace memzone::backend {

struct ConnectionOptions {
  uint32_t connect_timeout_ms = 200;
  uint32_t request_timeout_ms = 250;
  size_t max_pending = 16384;
};

class BackendConnection;

// What the connection tells its server about its health.
class ConnectionObserver {
 public:
  virtual ~ConnectionObserver() = default;
  virtual void onConnectionFailed(BackendConnection& connection, BackendFailure failure) = 0;
  virtual void onReplyReceived() = 0;
};

class BackendConnection : public Flushable {
 public:
  BackendConnection(event::EventBase& base, FlushList& flush_list, const sockaddr_storage& address,
                    socklen_t address_len, ConnectionObserver& observer, ConnectionOptions options);
  ~BackendConnection() override;

  // Encode one request here, then commit() it.
  ByteBuffer& output() { return output_; }
  void commit(ReplySink* sink, uint32_t tag, protocol::ReplyShape shape);

  size_t pending() const { return pending_.size(); }
  bool full() const { return pending_.size() >= options_.max_pending; }
  bool connected() const { return state_ == State::kConnected; }
  void setOptions(ConnectionOptions options) { options_ = options; }

  // Connects now rather than at the first request (a server just added to the topology).
  void connectAhead() {
    if (state_ == State::kDisconnected) startConnect();
  }
  // Closes the socket and fails every pending request with `failure` (observer first).
  void fail(BackendFailure failure);
  // Fails pending requests without telling the observer (the server is going away).
  void abandon();

  void flushNow() override;

 private:
  enum class State : uint8_t { kDisconnected, kConnecting, kConnected };
  struct Pending {
    ReplySink* sink = nullptr;
    uint32_t tag = 0;
    protocol::ReplyShape shape = protocol::ReplyShape::kLine;
    int64_t deadline_us = 0;
  };

  void startConnect();
  void onIo(bool readable, bool writable);
  void onConnectDone();
  void readReplies();
  void writeOutput();
  void onTimer();
  void armTimerForHead();
  void closeSocket();
  void failPending(BackendFailure failure);

  event::EventBase& base_;
  FlushList& flush_list_;
  sockaddr_storage address_;
  socklen_t address_len_;
  ConnectionObserver& observer_;
  ConnectionOptions options_;
  State state_ = State::kDisconnected;
  int fd_ = -1;
  std::unique_ptr<event::IoEvent> io_;
  event::Timer timer_;
  ByteBuffer input_;
  ByteBuffer output_;
  RingQueue<Pending> pending_;
  int64_t connect_deadline_us_ = 0;
};

}  // namespace memzone::backend
