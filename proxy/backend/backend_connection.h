// One pipelined TCP connection to a memcached server: requests are written in order and the
// replies are matched to a FIFO of pending requests. A timeout, a disconnect or a reply that
// does not match breaks the pipeline, so the connection then fails every pending request and
// closes; the next request reconnects. Owned by a BackendServer; worker thread only.
//
// Replies are proven to belong to their requests (issue 11: a backend is untrusted input,
// and one reply too many or too few on a shared connection would hand every later reply to
// the wrong client). Each batch of requests ends with a fence, `mg <key> O<opaque>`, whose
// opaque is unguessable (random per connection, then counted): memcached answers it with
// `EN`/`HD O<opaque>`. Replies are parsed as they arrive but held until their batch's fence
// reply comes back exactly where expected; only then are they delivered. An extra, missing
// or misshapen reply, or a wrong fence, is a desync: nothing held is delivered, every
// request on the connection fails with `SERVER_ERROR backend desync`, and it reconnects.
// A request memcached may leave unanswered (meta `q`) is fenced on its own, so its fence's
// reply arriving first proves it was silent.
//
// Why a fence per batch rather than an opaque per request: text-protocol requests carry no
// opaque, and rewriting them into meta commands would mean rebuilding every reply; a fence
// costs one short command per batch (bench/RESULTS.md) and proves the count and order of the
// replies in between, which per-reply shape checks alone cannot.
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
#include "proxy/tls/tls_context.h"
#include "proxy/tls/tls_counters.h"
#include "proxy/tls/tls_stream.h"

namespace memzone::backend {

struct ConnectionOptions {
  uint32_t connect_timeout_ms = 200;
  uint32_t request_timeout_ms = 250;
  size_t max_pending = 16384;
  // Bounds (issue 12): the buffers are charged here (the worker's buffer budget), and replies
  // received but not yet delivered (a batch waits for its fence) may not exceed
  // max_input_bytes: a server flooding the connection, or answering a multi-get larger than
  // any client could be sent, fails it (kOversized) instead of growing it. 0: no limit.
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

  // Encode one request here, then commit() it. A `quiet` request may get no reply at all;
  // the sink then hears `silent_code` with an empty reply.
  ByteBuffer& output() { return output_; }
  void commit(ReplySink* sink, uint32_t tag, protocol::ReplyShape shape, bool quiet = false,
              protocol::ReplyCode silent_code = protocol::ReplyCode::kOk);

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
  // A request, or a fence (sink == nullptr) that ends a batch.
  struct Pending {
    ReplySink* sink = nullptr;
    uint32_t tag = 0;
    protocol::ReplyShape shape = protocol::ReplyShape::kLine;
    bool quiet = false;
    protocol::ReplyCode code = protocol::ReplyCode::kOk;  // silent code, then the reply's
    int64_t deadline_us = 0;
    uint64_t fence = 0;   // fences: the opaque
    size_t reply_at = 0;  // matched, held reply: where it starts in input_, and its length
    size_t reply_len = 0;
  };
  enum class FenceMatch : uint8_t { kMatch, kNeedMore, kMismatch };
  // Requests per fence at most: bounds how many replies are held at once.
  static constexpr uint32_t kMaxUnfenced = 32;

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
  void push(Pending pending);
  void appendFence();
  FenceMatch matchFence(std::string_view input, uint64_t opaque, size_t& length) const;
  // Matches what input_ holds to pending requests; false when the connection failed.
  bool matchReplies();
  // Delivers the held replies before the fence at matched_; false when the connection failed.
  bool deliverBatch();

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
  size_t matched_ = 0;     // pending_[0, matched_) hold matched replies waiting for their fence
  size_t scanned_ = 0;     // bytes of input_ those replies span
  uint32_t unfenced_ = 0;  // requests committed since the last fence
  uint64_t next_fence_;    // the next fence's opaque
  // TLS records end where requests end. memcached (1.6, -Z) reads the tail of a value that
  // spans records with an exact-length read and leaves what follows it in the same record
  // inside its TLS session, unseen until more bytes arrive: a pipelined request (or our
  // fence) behind a large value would wait for the request timeout. So each write is whole
  // requests of at most kTlsRecordBytes, or one larger request alone.
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
