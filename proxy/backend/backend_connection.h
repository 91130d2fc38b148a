// One pipelined TCP connection to a memcached server: requests are written in order and the
// replies are matched to a FIFO of pending requests. A timeout, a disconnect or a reply that
// does not match breaks the pipeline, so the connection then fails every pending request and
// closes; the next request reconnects. Owned by a BackendServer; worker thread only.
//
// Each reply proves which request it answers (issue 22): every request carries an opaque this
// connection chose (random at construction, then counted), and a reply is accepted for the
// request at the head of the queue only with that opaque and a shape the request allows
// (protocol/backend_reply.h says why no client byte can fool this). A reply that does not
// match is a desync: every request on the connection fails with `SERVER_ERROR backend
// desync` and it reconnects. Replies are delivered as soon as each is verified.
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
#include "proxy/protocol/backend_reply.h"
#include "proxy/protocol/backend_request.h"
#include "proxy/tls/tls_context.h"
#include "proxy/tls/tls_counters.h"
#include "proxy/tls/tls_stream.h"

namespace memzone::backend {

struct ConnectionOptions {
  uint32_t connect_timeout_ms = 200;
  uint32_t request_timeout_ms = 250;
  size_t max_pending = 16384;
  // Bounds (issue 12): the buffers are charged here (the worker's buffer budget), and a reply
  // being received may not exceed max_input_bytes: one larger than that (a server flooding the
  // connection) fails it (kOversized) instead of growing it. 0: no limit.
  MemoryAccount* buffer_account = nullptr;
  size_t max_input_bytes = 0;
  // TLS (memcached -Z): with a context, each connect is followed by a handshake (bounded by
  // connect_timeout_ms again) before any request is written; requests queue meanwhile as
  // they do while connecting. A failed handshake is kTlsHandshake, never a plaintext retry.
  bool tls_enabled = false;
  std::shared_ptr<tls::TlsContext>
      tls;                      // null with tls_enabled: unusable files, every connect fails
  std::string tls_server_name;  // SNI and the name to verify; else the server's IP is verified
  tls::TlsCounters* tls_counters = nullptr;
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
  BackendConnection(const BackendConnection&) = delete;
  BackendConnection& operator=(const BackendConnection&) = delete;

  // Encode one request here, carrying opaque() as its last flag (meta commands), then
  // commit() it. `debug_key` (kMetaDebug: the key as memcached stores it) must stay valid
  // until the sink hears back. A `quiet` request (meta q) was encoded with `mn` behind it: it
  // may go unanswered, and the sink then hears a `silent` reply with `silent_code`.
  ByteBuffer& output() { return output_; }
  protocol::OpaqueToken opaque(uint32_t ahead = 0) const {
    return protocol::makeOpaqueToken(next_opaque_ + ahead);
  }
  void commit(ReplySink* sink, uint32_t tag, protocol::ReplyKind kind = protocol::ReplyKind::kMeta,
              std::string_view debug_key = {}, bool quiet = false,
              protocol::ReplyCode silent_code = protocol::ReplyCode::kOk);
  // `count` meta requests at once, carrying opaque(0) .. opaque(count - 1): one queue entry,
  // so a multi-get of many keys is one request against max_pending. The sink hears each reply
  // (all with `tag`), in order, or one failure for all that are left.
  void commitBatch(ReplySink* sink, uint32_t tag, uint32_t count);

  size_t pending() const { return pending_.size(); }
  bool full() const { return pending_.size() >= options_.max_pending; }
  bool connected() const { return state_ == State::kConnected; }
  // Other TLS settings (a topology edit, not a file rotation) close the connection as soon
  // as nothing is pending on it: the next one uses them, and none stays in plaintext.
  void setOptions(ConnectionOptions options);

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
  enum class State : uint8_t { kDisconnected, kConnecting, kHandshaking, kConnected };
  // A request, or (sink == nullptr) the `mn` behind a quiet one.
  struct Pending {
    ReplySink* sink = nullptr;
    uint32_t tag = 0;
    protocol::ReplyKind kind = protocol::ReplyKind::kMeta;
    bool quiet = false;
    uint32_t count = 1;  // replies still expected (commitBatch), opaque counting up
    protocol::ReplyCode silent_code = protocol::ReplyCode::kOk;
    uint32_t opaque = 0;
    std::string_view debug_key;
    int64_t deadline_us = 0;
  };

  void startConnect();
  void onIo(bool readable, bool writable);
  void onConnectDone();
  // Connected and, with TLS, handshaken: requests may go.
  void onReady();
  void continueHandshake();
  ssize_t receive(char* data, size_t size);
  ssize_t sendOut(const char* data, size_t size);
  void readReplies();
  void writeOutput();
  void onTimer();
  void armTimerForHead();
  void closeSocket();
  void failPending(BackendFailure failure);
  // Matches what input_ holds to pending requests and delivers each reply; false when the
  // connection failed.
  bool matchReplies();

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
  uint32_t next_opaque_;  // the next request's opaque (wraps)
  // TLS records end where requests end. memcached (1.6, -Z) reads the tail of a value that
  // spans records with an exact-length read and leaves what follows it in the same record
  // inside its TLS session, unseen until more bytes arrive: a pipelined request behind a
  // large value would wait for the request timeout. So each write is whole requests of at most
  // kTlsRecordBytes, or one larger request alone.
  static constexpr size_t kTlsRecordBytes = 16 * 1024;
  void markRequestEnd() {
    if (options_.tls_enabled) request_ends_.push_back(written_total_ + output_.size());
  }
  size_t tlsChunk(size_t available);
  RingQueue<uint64_t> request_ends_;     // absolute output offsets (TLS only)
  uint64_t written_total_ = 0;           // output bytes written since the connect
  uint64_t last_end_ = 0;                // the last request end written
  bool reconnect_ = false;               // TLS settings changed: close once idle
  std::unique_ptr<tls::TlsStream> tls_;  // null: plaintext
  SSL_SESSION* tls_session_ = nullptr;   // offered on the next connect (resumption)
  std::string address_text_;             // for log lines
};

}  // namespace memzone::backend
