// One client connection: reads into a bounded buffer, parses requests in place, dispatches
// them, and writes replies strictly in request order (a FIFO of ClientRequests; only the
// completed head is flushed). Stops reading while too much is in flight (backpressure).
// Owned by its Worker; worker thread only.
#pragma once

#include <memory>

#include "proxy/common/byte_buffer.h"
#include "proxy/common/flush_list.h"
#include "proxy/common/ring_queue.h"
#include "proxy/event/event_base.h"
#include "proxy/protocol/request_parser.h"
#include "proxy/server/client_request.h"
#include "proxy/server/request_dispatcher.h"

namespace memzone::server {

struct ConnectionLimits {
  size_t max_pending_requests = 4096;         // stop reading beyond this many replies owed
  size_t max_output_bytes = 8 * 1024 * 1024;  // ... or this many reply bytes unsent
  // Until replies show how big they are, assume this much per request, so a burst of
  // large gets from a client that does not read cannot pin max_pending × 1 MiB.
  size_t initial_reply_estimate = 1024 * 1024;
};

class ClientConnection : public Flushable, public RequestOwner {
 public:
  using CloseCallback = std::function<void(ClientConnection*)>;
  ClientConnection(int fd, event::EventBase& base, FlushList& flush_list,
                   const protocol::RequestParser& parser, RequestDispatcher& dispatcher,
                   RequestPool& pool, ProxyStats& stats, ConnectionLimits limits,
                   CloseCallback on_close);
  ~ClientConnection() override;

  void onRequestReady() override { flush_list_.schedule(this); }
  void flushNow() override;
  // SIGTERM drain: keep serving, close at the first moment nothing is owed or half-read.
  // The worker force-closes whatever is left at the drain deadline.
  void drain();
  bool idle() const { return fifo_.empty() && output_.empty(); }

 private:
  void onIo(bool readable, bool writable);
  void readRequests();
  void parseRequests();
  void takeReadyReplies();
  void recordDone(const ClientRequest& r, int64_t now);
  void writeOutput();
  void makeProgress();
  void updateInterest();
  bool overloaded() const;
  bool socketHasData() const;
  void noteReplySize(size_t bytes);
  void close();

  int fd_;
  FlushList& flush_list_;
  const protocol::RequestParser& parser_;
  RequestDispatcher& dispatcher_;
  RequestPool& pool_;
  ProxyStats& stats_;
  ConnectionLimits limits_;
  CloseCallback on_close_;
  event::IoEvent io_;
  ByteBuffer input_;
  ByteBuffer output_;
  RingQueue<ClientRequest*> fifo_;
  // Replies in flight are bounded by bytes, not only by count: the window is
  // max_output_bytes / (recent large reply size), between 1 and max_pending_requests.
  size_t reply_estimate_;
  size_t inflight_window_;
  protocol::Request request_;  // reused: its token vector keeps its capacity
  size_t swallow_ = 0;         // bytes of an oversized value still to discard
  size_t scanned_ = 0;         // bytes at the head of input_ known to hold no newline
  bool read_closed_ = false;   // peer sent FIN, or quit/fatal error: read no more
  bool draining_ = false;
  bool closed_ = false;
};

}  // namespace memzone::server
