#include "proxy/server/client_connection.h"

#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "memzone/ops/log.h"
#include "proxy/protocol/client_errors.h"
#include "proxy/protocol/memcached_syntax.h"
#include "proxy/server/request_cost.h"

namespace memzone::server {

using protocol::Command;
using protocol::ParseStatus;

namespace {

// Bytes per recv, as memcached reads (its 16 KiB read buffer): whether a long line without a
// newline is hung up on depends on what one read brings, and the proxy must decide as
// memcached would (test_differential.py).
constexpr size_t kReadSize = 16 * 1024;
// Output that drains slowly is reallocated to what is left once it is mostly sent.
constexpr size_t kOutputKeep = 64 * 1024;
// What an idle connection keeps of its output buffer (ByteBuffer starts at 512 bytes).
constexpr size_t kIdleOutputKeep = 512;
// Replies from this size on are written from the request's buffer rather than copied.
constexpr size_t kZeroCopyReply = 16 * 1024;
// Segments per sendmsg.
constexpr int kMaxIov = 64;
// A line known to hold this many bytes without a newline is weighed before it is parsed
// (request_cost.h). Past memcached's 2048, only a get/gets line may be that long unparsed.
constexpr size_t kLongLine = 16 * 1024;
static_assert(kLongLine > protocol::mc::kMaxLineWithoutNewline);
// The parser's token vector is kept between requests up to this many tokens; the one a huge
// multi-get grew is given back once the request is dispatched or refused.
constexpr size_t kKeepTokens = 1024;

std::string_view outOfMemoryReply(const protocol::Request& request) {
  if (request.noreply) return {};  // memcached says nothing to noreply, errors included
  if (protocol::isStorage(request.command) || request.command == Command::kMetaSet) {
    return protocol::errors::kOutOfMemoryStoring;
  }
  if (protocol::isRetrieval(request.command) || request.command == Command::kMetaGet) {
    return protocol::errors::kOutOfMemoryGet;
  }
  return protocol::errors::kOutOfMemory;
}

}  // namespace

ClientConnection::ClientConnection(int fd, ConnectionContext& context, SSL_CTX* tls)
    : fd_(fd),
      context_(context),
      io_(context.base, fd, [this](bool r, bool w) { onIo(r, w); }),
      input_account_(&context.budget.memory().client_input),
      output_account_(&context.budget.memory().client_output),
      requests_account_(&context.budget.memory().requests),
      input_(&input_account_),
      output_(&output_account_),
      reply_estimate_(context.limits.initial_reply_estimate),
      inflight_window_(1),
      get_estimate_(context.parser.limits().max_item_size) {
  noteReplySize(reply_estimate_);
  context_.stats.curr_connections.add();
  context_.stats.total_connections.add();
  if (tls != nullptr) {
    tls_ = std::make_unique<tls::TlsStream>(tls, fd, tls::Role::kServer);
    handshaking_ = true;
    handshake_since_us_ = event::nowMicros();
    context_.handshaking.push_back(this);
    context_.stats.tls.handshaking.add();
    context_.budget.memory().tls.charge(kTlsHandshakeMemory);
  }
  io_.want(true, false);
}

ClientConnection::~ClientConnection() {
  context_.flush_list.forget(this);
  context_.budget.forget(this);
  io_.want(false, false);
  // Requests still waiting on backends finish on their own and go back to the pool.
  while (!fifo_.empty()) {
    Entry e = fifo_.front();
    fifo_.pop_front();
    if (e.reserved != 0) context_.budget.unreserve(e.reserved);
    e.request->releaseByOwner(context_.pool);
  }
  while (!out_.empty()) {
    if (out_.front().request != nullptr) out_.front().request->releaseByOwner(context_.pool);
    out_.pop_front();
  }
  if (tls_) {
    if (handshaking_) {
      context_.stats.tls.handshaking.sub();
    } else {
      context_.stats.tls.connections.sub();
    }
    context_.budget.memory().tls.charge(-(handshaking_ ? kTlsHandshakeMemory : kTlsSessionMemory));
    tls_.reset();  // before the socket closes (no close_notify: nothing is owed by then)
  }
  if (fd_ >= 0) ::close(fd_);
  context_.stats.curr_connections.sub();
}

void ClientConnection::continueHandshake() {
  if (!tls_->valid()) {
    context_.stats.tls.count(tls::HandshakeResult::kFailed);
    close(CloseReason::kTlsHandshake);
    return;
  }
  switch (tls_->handshake()) {
    case tls::TlsStream::Step::kWantRead:
      io_.want(true, false);
      return;
    case tls::TlsStream::Step::kWantWrite:
      io_.want(false, true);
      return;
    case tls::TlsStream::Step::kFailed:
      context_.stats.tls.count(tls::HandshakeResult::kFailed);
      ops::logEvent(ops::LogLevel::kInfo, "tls-client-handshake", "client tls handshake failed: %s",
                    tls_->error().c_str());
      close(CloseReason::kTlsHandshake);
      return;
    case tls::TlsStream::Step::kDone:
      break;
  }
  handshaking_ = false;
  handshake_since_us_ = 0;
  ListLink<HandshakeTag>::unlink();
  context_.stats.tls.handshaking.sub();
  context_.stats.tls.connections.add();
  context_.budget.memory().tls.charge(kTlsSessionMemory - kTlsHandshakeMemory);
  context_.stats.tls.count(tls_->resumed() ? tls::HandshakeResult::kResumed
                                           : tls::HandshakeResult::kOk);
  io_.want(true, false);
  readRequests();  // a request may have come with the handshake's last flight
}

void ClientConnection::onIo(bool readable, bool writable) {
  if (handshaking_) {
    continueHandshake();
    return;
  }
  // Output this queues (here and on backends) is flushed after the loop turn (Worker).
  // A TLS read that had to write first (a key update) goes on once writable.
  if (readable || (writable && tls_ && tls_->wantsWrite())) readRequests();
  if (!closed_ && writable) makeProgress();
}

bool ClientConnection::overloaded() const {
  return fifo_.size() >= inflight_window_ || unsent_ >= context_.limits.max_output_bytes;
}

void ClientConnection::noteReplySize(size_t bytes) {
  // Jumps up at once to a large reply, decays slowly (1/16 per reply) back to small ones,
  // so a mixed workload stays conservative and a small-value workload keeps deep pipelines.
  reply_estimate_ = std::max(bytes, reply_estimate_ - reply_estimate_ / 16);
  size_t window = context_.limits.max_output_bytes / std::max<size_t>(reply_estimate_, 1);
  inflight_window_ = std::clamp<size_t>(window, 1, context_.limits.max_pending_requests);
}

void ClientConnection::noteRetrievalReply(size_t bytes, uint32_t keys) {
  // The first reply replaces the guess (a new client of small values is small at once, even
  // at the budget, where its next get would be refused as large); after that, up at once
  // and down by half per reply, so one large value puts it back among the large.
  uint64_t per_key = bytes / std::max<uint32_t>(keys, 1);
  get_estimate_ = get_estimate_known_ ? std::max(per_key, get_estimate_ / 2) : per_key;
  get_estimate_known_ = true;
}

uint64_t ClientConnection::reservationFor(const protocol::Request& request) const {
  bool retrieval = protocol::isRetrieval(request.command) || request.command == Command::kMetaGet;
  if (!retrieval) return 0;  // a write's or a delete's answer is a line
  uint64_t keys = std::max<size_t>(request.key_count, 1);
  // One request reserves at most the large-reply allowance: a multi-get of 500 keys of
  // unknown size must not look like the whole budget (what really arrives is counted).
  return std::min(get_estimate_ * keys, context_.budget.largeAllowance());
}

void ClientConnection::readRequests() {
  ByteBuffer& shared = context_.read_buffer;
  bool progressed = false;
  for (int round = 0; round < 4 && !read_closed_ && !overloaded() && !budget_blocked_; ++round) {
    // Nothing kept from earlier reads: read into the worker's buffer, keep only leftovers.
    // Otherwise append to what is kept, growing with it (a large value arriving in pieces).
    bool fresh = input_.empty();
    ByteBuffer& in = fresh ? shared : input_;
    char* dst = fresh ? shared.prepare(kReadSize)
                      : input_.prepare(std::clamp<size_t>(input_.size(), 1024, kReadSize));
    size_t room = std::min(in.writableBytes(), kReadSize);
    ssize_t n = receive(dst, room);
    if (n == 0) {
      read_closed_ = true;  // answer what was asked, then close
      break;
    }
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (errno == EINTR) continue;
      close(CloseReason::kError);
      return;
    }
    context_.stats.bytes_read.add(static_cast<uint64_t>(n));
    in.commit(static_cast<size_t>(n));
    size_t before = in.size();
    parseRequests(in);
    progressed |= in.size() < before;
    if (fresh) {
      if (!shared.empty()) input_.append(shared.view());
      shared.clear();
    }
    if (closed_) return;
    // A short read drained the socket: skip the recv that would only say EAGAIN (unless
    // the TLS session holds decrypted bytes no readable event will announce).
    if (static_cast<size_t>(n) < room && !tlsBuffered()) break;
  }
  input_.release();
  trackPartial(progressed);
  takeReadyReplies();
  context_.flush_list.schedule(this);
  updateInterest();
}

void ClientConnection::parseRequests(ByteBuffer& in) {
  size_t used = 0;
  int64_t now = event::nowMicros();  // the whole batch was read at once
  std::string_view view = in.view();
  need_more_ = false;
  budget_blocked_ = false;
  while (used < view.size() && !read_closed_ && !overloaded()) {
    // One branch on the request path for the rare states.
    if (swallow_ > 0 || discarding_line_ || scanned_ > kLongLine) [[unlikely]] {
      size_t taken = 0;
      if (takeUnparsed(view.substr(used), now, &taken)) {
        used += taken;
        continue;
      }
    }
    protocol::ParseResult r = context_.parser.parse(view.substr(used), request_, &scanned_);
    if (r.status == ParseStatus::kNeedMore) {
      need_more_ = true;
      break;
    }
    if (r.status == ParseStatus::kTooLarge) {
      context_.stats.client_errors.add();
      ClientRequest* dispatched =
          r.deletes_key ? context_.dispatcher.deleteForTooLarge(request_, r.reply, this)
                        : context_.dispatcher.localReply(r.reply, this, request_.command);
      push(dispatched, now, 0, 0);
      swallow_ = r.swallow;
    } else if (r.status == ParseStatus::kOk) {
      if (request_.command == Command::kQuit) {
        read_closed_ = true;  // memcached closes without a reply
        used += r.consumed;
        break;
      }
      if (!admitAndDispatch(now)) break;  // waits for the budget: stays unread
    } else {
      context_.stats.client_errors.add();
      push(context_.dispatcher.localReply(r.reply, this), now, 0, 0);
      if (r.status == ParseStatus::kSwallow) swallow_ = r.swallow;
      if (r.status == ParseStatus::kFatal) {
        read_closed_ = true;
        close_reason_ = CloseReason::kProtocol;
        break;
      }
    }
    used += r.consumed;
  }
  in.consume(used);
  if (request_.tokens.capacity() > kKeepTokens)
    std::vector<std::string_view>().swap(request_.tokens);
}

bool ClientConnection::takeUnparsed(std::string_view input, int64_t now, size_t* taken) {
  if (swallow_ > 0) {
    *taken = std::min(swallow_, input.size());
    swallow_ -= *taken;
    return true;
  }
  if (discarding_line_) {
    *taken = discardLine(input, now);
    return true;
  }
  // A get line arriving in pieces is weighed before the parser tokenizes it.
  if (lineAffordable(input)) return false;
  startDiscarding(input);  // the next turn of the loop drops it
  return true;
}

bool ClientConnection::lineAffordable(std::string_view input) {
  // The parser has seen scanned_ bytes of this line and kept waiting: a get or gets line.
  size_t from = std::min(scanned_, input.size());
  const void* nl = std::memchr(input.data() + from, '\n', input.size() - from);
  size_t end = nl != nullptr ? static_cast<const char*>(nl) - input.data() : input.size();
  if (end > context_.parser.limits().max_retrieval_line) return true;  // the parser closes
  bool affordable = context_.budget.affords(held(), line_meter_.cost(input.substr(0, end)));
  // Complete: the parser takes it now (a get line has no data block), or it is refused.
  if (nl != nullptr) line_meter_.reset();
  return affordable;
}

void ClientConnection::startDiscarding(std::string_view line) {
  size_t first = line.find_first_not_of(' ');  // at most 100 (mayGrowWithoutNewline)
  discard_command_ = first != std::string_view::npos && line.substr(first).starts_with("gets ")
                         ? Command::kGets
                         : Command::kGet;
  discarding_line_ = true;
  discarded_ = 0;
  scanned_ = 0;
  line_meter_.reset();
}

size_t ClientConnection::discardLine(std::string_view input, int64_t now) {
  const void* nl = std::memchr(input.data(), '\n', input.size());
  size_t n = nl != nullptr ? static_cast<const char*>(nl) - input.data() + 1 : input.size();
  discarded_ += n;
  // The line's bytes so far, without its newline: past the limit the parser would close.
  size_t line_bytes = discarded_ - (nl != nullptr);
  if (line_bytes > context_.parser.limits().max_retrieval_line) {
    discarding_line_ = false;
    context_.stats.client_errors.add();
    push(context_.dispatcher.localReply(protocol::errors::kLineTooLong, this), now, 0, 0);
    read_closed_ = true;
    close_reason_ = CloseReason::kProtocol;
    return n;
  }
  if (nl == nullptr) return n;
  discarding_line_ = false;
  context_.budget.counters().rejected.add();
  context_.stats.commands[static_cast<int>(discard_command_)].add();
  push(context_.dispatcher.localReply(protocol::errors::kOutOfMemoryGet, this, discard_command_),
       now, 0, 0);
  return n;
}

bool ClientConnection::admitAndDispatch(int64_t now) {
  BufferBudget& budget = context_.budget;
  // Refused before it is expanded: what the request will hold once dispatched must fit.
  uint64_t cost = dispatchCost(request_);
  if (cost != 0 && !budget.affords(held(), cost)) {
    refuse(now);
    return true;
  }
  uint64_t reservation = reservationFor(request_);
  bool granted = granted_;
  granted_ = false;
  BufferBudget::Asker asker;
  asker.held = held();
  asker.owes_nothing = fifo_.empty() && out_.empty();
  asker.unknown = !get_estimate_known_;
  asker.granted = granted;
  asker.guessing = !get_estimate_known_ && reserved_ > 0;
  Admission admission = budget.admit(asker, reservation);
  switch (admission) {
    case Admission::kWait:
      budget.waitForMemory(this);
      budget_blocked_ = true;
      return false;
    case Admission::kWaitLarge:
      budget.waitForLarge(this, reservation, /*front=*/granted);
      budget_blocked_ = true;
      return false;
    case Admission::kWaitReply:
      budget_blocked_ = true;  // our own reply in flight wakes us (onRequestReady)
      return false;
    case Admission::kReject:
      refuse(now);
      return true;
    case Admission::kAdmit:
    case Admission::kAdmitOnCredit:
      break;
  }
  ClientRequest* dispatched = context_.dispatcher.dispatch(request_, this);
  bool retrieval = reservation > 0 || protocol::isRetrieval(request_.command) ||
                   request_.command == Command::kMetaGet;
  uint32_t keys = retrieval ? static_cast<uint32_t>(std::max<size_t>(request_.key_count, 1)) : 0;
  push(dispatched, now, dispatched->ready() ? 0 : reservation, keys,
       admission == Admission::kAdmitOnCredit);
  return true;
}

void ClientConnection::refuse(int64_t now) {
  context_.budget.counters().rejected.add();
  context_.stats.commands[static_cast<int>(request_.command)].add();
  push(context_.dispatcher.localReply(outOfMemoryReply(request_), this, request_.command), now, 0,
       0);
}

void ClientConnection::push(ClientRequest* request, int64_t now, uint64_t reserved, uint32_t keys,
                            bool credit) {
  request->setStartedUs(now);
  request->chargeTo(&requests_account_);
  if (reserved != 0) {
    reserved_ += reserved;
    context_.budget.reserve(reserved);
  }
  fifo_.push_back({request, static_cast<uint32_t>(reserved), keys, credit});
}

void ClientConnection::takeReadyReplies() {
  int64_t now = 0;  // read once, and only if something is ready
  while (!fifo_.empty() && fifo_.front().request->ready()) {
    Entry e = fifo_.front();
    fifo_.pop_front();
    ClientRequest* r = e.request;
    if (e.reserved != 0) {
      reserved_ -= e.reserved;
      context_.budget.unreserve(e.reserved);
    }
    size_t size = r->reply().size();
    noteReplySize(size);
    // An error says nothing about the values (a backend failure would pass for a tiny one).
    if (e.keys != 0 && protocol::classifyReply(r->command(), r->reply()) !=
                           protocol::RequestResult::kServerError) {
      noteRetrievalReply(size, e.keys);
    }
    if (e.credit && size >= BufferBudget::kLargeReply && context_.budget.saturated()) {
      // Admitted on credit and it came back large: refused now (its bytes are freed when
      // the request is recycled, below).
      context_.budget.counters().rejected.add();
      r->overrideReply(r->command() == Command::kMetaGet ? protocol::errors::kOutOfMemory
                                                         : protocol::errors::kOutOfMemoryGet);
    }
    if (now == 0) now = event::nowMicros();
    recordDone(*r, now);
    queueOutput(r);
  }
}

void ClientConnection::queueOutput(ClientRequest* r) {
  std::string_view reply = r->reply();
  if (reply.size() >= kZeroCopyReply) {
    out_.push_back({r, reply.size()});  // the request lives until its reply is written
    unsent_ += reply.size();
    return;
  }
  if (!reply.empty()) {
    output_.append(reply);
    appendBufferSegment(reply.size());
  }
  r->releaseByOwner(context_.pool);
}

void ClientConnection::appendBufferSegment(size_t bytes) {
  unsent_ += bytes;
  if (!out_.empty() && out_.back().request == nullptr) {
    out_.back().bytes += bytes;
  } else {
    out_.push_back({nullptr, bytes});
  }
}

void ClientConnection::recordDone(const ClientRequest& r, int64_t now) {
#ifdef MEMZONE_BENCH_NO_REQUEST_METRICS
  // Benchmark-only build: measures what per-request metrics cost (bench/RESULTS.md).
  (void)r;
  (void)now;
  return;
#endif
  // Latency ends when the reply is ready to go out, in order: head-of-line waits count.
  uint64_t us = static_cast<uint64_t>(std::max<int64_t>(0, now - r.startedUs()));
  ProxyStats& stats = context_.stats;
  stats.latency[latencyBucket(us)].add();
  stats.latency_sum_us.add(us);
  int command = static_cast<int>(r.command());
  stats.results[command][static_cast<int>(protocol::classifyReply(r.command(), r.reply()))].add();
}

void ClientConnection::flushNow() { makeProgress(); }

void ClientConnection::onBudgetAvailable(bool large_turn) {
  granted_ = large_turn;
  budget_blocked_ = false;
  makeProgress();
  granted_ = false;
}

void ClientConnection::makeProgress() {
  if (closed_) return;
  if (handshaking_) {
    if (draining_) close(CloseReason::kDrain);
    return;
  }
  takeReadyReplies();
  writeOutput();
  if (closed_) return;
  if (!input_.empty() && !read_closed_) {
    parseHeldInput();
    if (closed_) return;
  }
  if (tlsBuffered() && !read_closed_ && !overloaded() && !budget_blocked_) {
    readRequests();  // decrypted bytes left in the session when reading stopped
    return;
  }
  updateInterest();
}

void ClientConnection::parseHeldInput() {
  // Requests left unparsed while we were overloaded go now: the peer may have sent
  // everything already, so no readable event will come for them, and when the requests
  // ahead were answered by the proxy itself (version, an unrouted key, a bad command) no
  // backend event either. So this goes on until the input is used up or something that
  // will wake us holds it: a request waiting on a backend (onRequestReady), the budget
  // (onBudgetAvailable), or the client not reading (writable).
  bool parsed = false;
  bool progressed = false;
  while (!input_.empty() && !read_closed_) {
    if (overloaded()) {
      // After takeReadyReplies a full window means its head waits on a backend.
      if (fifo_.size() >= inflight_window_) break;
      writeOutput();  // the output is full: the socket may take some
      if (closed_) return;
      if (overloaded()) break;
    }
    size_t before = input_.size();
    parseRequests(input_);
    parsed = true;
    if (closed_) return;
    if (input_.size() == before) break;  // incomplete, or waiting for the budget
    progressed = true;
    takeReadyReplies();
  }
  if (!parsed) return;
  input_.release();
  trackPartial(progressed);
  writeOutput();
}

void ClientConnection::writeOutput() {
  while (!out_.empty()) {
    iovec iov[kMaxIov];
    int count = 0;
    std::string_view buffered = output_.view();
    size_t buffered_at = 0;
    for (size_t i = 0; i < out_.size() && count < kMaxIov; ++i) {
      const OutSegment& s = out_.at(i);
      std::string_view bytes;
      if (s.request == nullptr) {
        bytes = buffered.substr(buffered_at, s.bytes);
        buffered_at += s.bytes;
      } else {
        bytes = s.request->reply().substr(i == 0 ? head_written_ : 0);
      }
      iov[count++] = {const_cast<char*>(bytes.data()), bytes.size()};
    }
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<size_t>(count);
    ssize_t n = tls_ ? tls_->write(iov, count) : ::sendmsg(fd_, &msg, MSG_NOSIGNAL);
    if (n > 0) {
      context_.stats.bytes_written.add(static_cast<uint64_t>(n));
      consumeOutput(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n < 0 && errno == EINTR) continue;
    close(CloseReason::kError);
    return;
  }
  if (output_.empty()) {
    // A small buffer stays for the next reply (releasing it after every reply cost an
    // allocation and a free per request, issue 26); the worker's maintenance frees it once
    // the connection is idle (releaseIdleBuffers).
    if (output_.capacity() > kIdleOutputKeep) output_.release();
  } else {
    output_.shrinkIfSparse(kOutputKeep);
  }
  if (fifo_.empty() && out_.empty()) {
    // Draining closes at a request boundary: nothing owed, nothing half-received.
    if (read_closed_) {
      close(close_reason_);
    } else if (draining_ && input_.empty() && swallow_ == 0 && !discarding_line_ &&
               !socketHasData()) {
      close(CloseReason::kDrain);
    }
  }
}

void ClientConnection::consumeOutput(size_t n) {
  unsent_ -= n;
  while (n > 0) {
    OutSegment& s = out_.front();
    if (s.request == nullptr) {
      size_t k = std::min(n, s.bytes);
      output_.consume(k);
      s.bytes -= k;
      n -= k;
      if (s.bytes == 0) out_.pop_front();
      continue;
    }
    size_t k = std::min(n, s.bytes - head_written_);
    head_written_ += k;
    n -= k;
    if (head_written_ == s.bytes) {
      s.request->releaseByOwner(context_.pool);
      out_.pop_front();
      head_written_ = 0;
    }
  }
}

bool ClientConnection::socketHasData() const {
  if (tlsBuffered()) return true;
  char byte;
  return ::recv(fd_, &byte, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

void ClientConnection::trackPartial(bool progressed) {
  if (context_.limits.partial_request_timeout_ms == 0) return;
  // Partial: the input stops inside a request (or inside a value being discarded) while we
  // are reading. Input kept because the budget or the window holds it back is not the
  // client's doing and is not timed.
  bool partial = !read_closed_ && (need_more_ || swallow_ > 0 || discarding_line_);
  if (!partial) {
    ListLink<PartialRequestTag>::unlink();
    partial_since_us_ = 0;
    return;
  }
  // A request completed since: the clock restarts for the next one.
  if (partial_since_us_ != 0 && !progressed) return;
  ListLink<PartialRequestTag>::unlink();
  partial_since_us_ = event::nowMicros();
  context_.partial.push_back(this);
}

void ClientConnection::updateInterest() {
  if (closed_) return;
  BufferBudget& budget = context_.budget;
  // Near the budget, the connections holding the most are not read (they are woken when
  // pressure drops, or progress on their own as they take their replies).
  bool throttled = budget_blocked_ || (budget.throttling() && budget.heavy(held()));
  if (throttled && !budget_blocked_ && need_more_ && scanned_ > kLongLine) {
    // A get line still arriving would hold its bytes while it waits for memory that may
    // only come back once such lines are gone (a few of them can hold a worker's share):
    // it is refused now, and the rest of it is dropped as it arrives.
    startDiscarding(input_.view());
    discarded_ = input_.size();
    input_.clear();
    input_.release();
    throttled = budget.throttling() && budget.heavy(held());
  }
  if (throttled && !budget_blocked_) {
    budget.waitForMemory(this);
  } else if (!throttled && waitingForMemory()) {
    budget.forget(this);
  }
  io_.want(!read_closed_ && !overloaded() && !throttled,
           !out_.empty() || (tls_ && tls_->wantsWrite()));
}

void ClientConnection::drain() {
  draining_ = true;
  context_.flush_list.schedule(this);
}

void ClientConnection::close(CloseReason reason) {
  if (closed_) return;
  closed_ = true;
  context_.stats.closed_connections[static_cast<int>(reason)].add();
  io_.want(false, false);
  context_.budget.forget(this);
  ListLink<PartialRequestTag>::unlink();
  ListLink<HandshakeTag>::unlink();
  context_.on_close(this);  // the worker destroys us after the current callback
}

}  // namespace memzone::server
