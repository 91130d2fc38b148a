// One client connection: reads requests, parses them in place, dispatches them, and writes
// replies strictly in request order (a FIFO of ClientRequests; only the completed head is
// flushed). Stops reading while too much is in flight (backpressure), and asks the worker's
// BufferBudget before each request (throttle, wait for the large-reply allowance, or answer
// SERVER_ERROR out of memory); a multi-get is weighed by what it will hold before it is
// dispatched, and a long get line before it is even tokenized (request_cost.h). Owned by
// its Worker; worker thread only.
//
// Memory: an idle connection holds no buffer. Reads land in the worker's shared read buffer
// and only an incomplete request's bytes are kept. Small replies are copied into one output
// buffer (one send for a pipelined batch), given back once written; a large reply is sent
// from the request's own buffer (no copy, no slack), and the request is recycled once it is
// written, so a slow reader holds exactly the replies it has not read.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <functional>
#include <memory>

#include "proxy/common/byte_buffer.h"
#include "proxy/common/flush_list.h"
#include "proxy/common/intrusive_list.h"
#include "proxy/common/memory_account.h"
#include "proxy/common/ring_queue.h"
#include "proxy/event/event_base.h"
#include "proxy/protocol/request_parser.h"
#include "proxy/server/buffer_budget.h"
#include "proxy/server/client_request.h"
#include "proxy/server/proxy_stats.h"
#include "proxy/server/request_cost.h"
#include "proxy/server/request_dispatcher.h"
#include "proxy/tls/tls_stream.h"

namespace memzone::server {

struct ConnectionLimits {
  size_t max_pending_requests = 4096;         // stop reading beyond this many replies owed
  size_t max_output_bytes = 8 * 1024 * 1024;  // ... or this many reply bytes unsent
  // Until replies show how big they are, assume this much per request, so a burst of
  // large gets from a client that does not read cannot pin max_pending × 1 MiB.
  size_t initial_reply_estimate = 1024 * 1024;
  // An incomplete request (slowloris) is closed this long after its first byte; 0: never.
  // A connection idle between requests is never timed out.
  uint32_t partial_request_timeout_ms = 0;
};

class ClientConnection;
struct PartialRequestTag {};
struct WorkerListTag {};
struct HandshakeTag {};

// What every connection of a worker shares (owned by the Worker).
struct ConnectionContext {
  event::EventBase& base;
  FlushList& flush_list;
  const protocol::RequestParser& parser;
  RequestDispatcher& dispatcher;
  RequestPool& pool;
  ProxyStats& stats;
  BufferBudget& budget;
  ByteBuffer& read_buffer;  // reads land here first; only leftovers are copied out
  ConnectionLimits limits;
  // Connections holding an incomplete request, oldest first (--partial-request-timeout-ms).
  IntrusiveList<ClientConnection, PartialRequestTag>& partial;
  // TLS connections still in their handshake, oldest first (--tls-handshake-timeout-ms).
  IntrusiveList<ClientConnection, HandshakeTag>& handshaking;
  std::function<void(ClientConnection*)> on_close;  // the worker destroys it after the callback
};

class ClientConnection : public Flushable,
                         public RequestOwner,
                         public BudgetWaiter,
                         public ListLink<PartialRequestTag>,
                         public ListLink<HandshakeTag>,
                         public ListLink<WorkerListTag> {
 public:
  // With `tls` (a tls: listener) the connection first runs a server-side handshake on it.
  ClientConnection(int fd, ConnectionContext& context, SSL_CTX* tls = nullptr);
  ~ClientConnection() override;

  void onRequestReady() override { context_.flush_list.schedule(this); }
  void flushNow() override;
  // Once a second (the worker's maintenance): an idle connection gives back its small output
  // buffer, so idle connections hold no buffers.
  void releaseIdleBuffers() {
    if (output_.empty()) output_.release();
  }
  void onBudgetAvailable(bool large_turn) override;
  // SIGTERM drain: keep serving, close at the first moment nothing is owed or half-read.
  // The worker force-closes whatever is left at the drain deadline.
  void drain();
  void close(CloseReason reason);
  bool idle() const { return fifo_.empty() && out_.empty(); }

  // Buffer bytes this connection holds (input, unsent output, its requests and their
  // replies) plus the reply bytes it expects for requests in flight.
  uint64_t held() const {
    return static_cast<uint64_t>(input_account_.bytes() + output_account_.bytes() +
                                 requests_account_.bytes()) +
           reserved_;
  }
  // Reply bytes waiting for the client to read them: what a slow reader holds.
  size_t unsent() const { return unsent_; }
  // When the incomplete request at the head of the input began (0: none).
  int64_t partialSinceUs() const { return partial_since_us_; }
  // When the TLS handshake began (accept), while it is not done.
  int64_t handshakeSinceUs() const { return handshake_since_us_; }
  // OpenSSL's state of one TLS connection, charged to the budget as an estimate: during the
  // handshake the SSL object, its handshake state and both record buffers; once established
  // the session and keys only (record buffers are released between records:
  // SSL_MODE_RELEASE_BUFFERS), so ten thousand idle TLS clients do not look like a budget's
  // worth of buffers.
  static constexpr int64_t kTlsHandshakeMemory = 48 * 1024;
  static constexpr int64_t kTlsSessionMemory = 8 * 1024;

 private:
  struct Entry {
    ClientRequest* request;
    uint32_t reserved;    // reply bytes reserved in the budget until the reply is taken
    uint32_t keys : 31;   // retrievals: keys asked (teaches the per-key reply estimate)
    uint32_t credit : 1;  // Admission::kAdmitOnCredit: a large reply is refused at take
  };
  // What is to be written, in order: `bytes` of output_ (request == nullptr) or a large
  // reply still in its request.
  struct OutSegment {
    ClientRequest* request;
    size_t bytes;
  };

  void onIo(bool readable, bool writable);
  void continueHandshake();
  // recv/sendmsg, through the TLS session when there is one: one branch per system call,
  // nothing per request, for plaintext connections.
  ssize_t receive(char* data, size_t size) {
    return tls_ ? tls_->read(data, size) : ::recv(fd_, data, size, 0);
  }
  bool tlsBuffered() const { return tls_ && tls_->hasBuffered(); }
  void readRequests();
  // Parses and dispatches from `in` (the worker's read buffer or input_), consuming what it
  // handled.
  void parseRequests(ByteBuffer& in);
  // False when the request must wait for the budget (it stays unread).
  bool admitAndDispatch(int64_t now);
  // Answers request_ SERVER_ERROR out of memory (memcached's words for its command).
  void refuse(int64_t now);
  // What is not parsed at the head of `input`: a value being swallowed, a refused get line
  // being dropped, or a long get line the budget cannot afford (which starts dropping it).
  // True when `taken` bytes were handled so; false: parse.
  bool takeUnparsed(std::string_view input, int64_t now, size_t* taken);
  // Whether the budget affords the get line arriving at the head of `input` (complete or
  // not), weighed before it is tokenized (request_cost.h).
  bool lineAffordable(std::string_view input);
  // Refuses the get line starting `line`: its bytes are dropped as they arrive, and at its
  // newline it is answered out of memory (discardLine, which returns the bytes it took).
  void startDiscarding(std::string_view line);
  size_t discardLine(std::string_view input, int64_t now);
  void push(ClientRequest* request, int64_t now, uint64_t reserved, uint32_t keys,
            bool credit = false);
  void takeReadyReplies();
  void recordDone(const ClientRequest& r, int64_t now);
  void queueOutput(ClientRequest* request);
  // `bytes` just appended to output_ join the last buffer segment (or start one).
  void appendBufferSegment(size_t bytes);
  void writeOutput();
  // Accounts `n` bytes just written: consumes output_, recycles fully written requests.
  void consumeOutput(size_t n);
  void makeProgress();
  // Parses what input_ holds back, as far as nothing outside this connection is awaited.
  void parseHeldInput();
  void updateInterest();
  bool overloaded() const;
  bool socketHasData() const;
  void noteReplySize(size_t bytes);
  void noteRetrievalReply(size_t bytes, uint32_t keys);
  uint64_t reservationFor(const protocol::Request& request) const;
  // Starts, restarts (a request completed) or stops the partial-request clock.
  void trackPartial(bool progressed);

  int fd_;
  ConnectionContext& context_;
  event::IoEvent io_;
  MemoryAccount input_account_;
  MemoryAccount output_account_;
  MemoryAccount requests_account_;
  ByteBuffer input_;   // an incomplete request, or requests not yet admitted
  ByteBuffer output_;  // small replies not yet written
  RingQueue<Entry> fifo_;
  RingQueue<OutSegment> out_;
  size_t unsent_ = 0;        // bytes in out_
  size_t head_written_ = 0;  // of a request segment at the head of out_
  // Replies in flight are bounded by bytes, not only by count: the window is
  // max_output_bytes / (recent large reply size), between 1 and max_pending_requests.
  size_t reply_estimate_;
  size_t inflight_window_;
  // Per key of a retrieval: what the budget reserves for a get. Starts at the largest item
  // (unknown), then the first reply's size; follows large replies at once and small ones
  // within a few replies.
  uint64_t get_estimate_;
  bool get_estimate_known_ = false;  // a retrieval reply has been seen
  uint64_t reserved_ = 0;
  int64_t partial_since_us_ = 0;
  protocol::Request request_;     // reused: its tokens keep their capacity (kKeepTokens)
  size_t swallow_ = 0;            // bytes of an oversized value still to discard
  LineMeter line_meter_;          // the long get line at the head of the input, weighed so far
  size_t discarded_ = 0;          // bytes of a refused get line dropped so far
  bool discarding_line_ = false;  // a refused get line: drop up to its newline, then answer
  protocol::Command discard_command_ = protocol::Command::kGet;
  size_t scanned_ = 0;        // bytes at the head of input_ known to hold no newline
  bool read_closed_ = false;  // peer sent FIN, or quit/fatal error: read no more
  bool draining_ = false;
  bool closed_ = false;
  bool need_more_ = false;       // the last parse stopped at an incomplete request
  bool budget_blocked_ = false;  // a request waits for the budget: do not read
  bool granted_ = false;         // woken at the head of the large-reply queue
  CloseReason close_reason_ = CloseReason::kClient;  // once read_closed_: why
  bool handshaking_ = false;
  int64_t handshake_since_us_ = 0;
  std::unique_ptr<tls::TlsStream> tls_;  // null: plaintext
};

}  // namespace memzone::server
