#include "proxy/backend/backend_connection.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <random>

#include "memzone/ops/log.h"

namespace memzone::backend {

using protocol::ReplyStatus;

namespace {

uint32_t randomOpaqueBase() {
  thread_local std::mt19937 rng(std::random_device{}());
  return rng();
}

std::string formatAddress(const sockaddr_storage& address) {
  char text[INET6_ADDRSTRLEN] = {};
  if (address.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&address);
    inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof(text));
    return std::string("[") + text + "]:" + std::to_string(ntohs(a->sin6_port));
  }
  const auto* a = reinterpret_cast<const sockaddr_in*>(&address);
  inet_ntop(AF_INET, &a->sin_addr, text, sizeof(text));
  return std::string(text) + ":" + std::to_string(ntohs(a->sin_port));
}

std::string hostOf(const sockaddr_storage& address) {
  char text[INET6_ADDRSTRLEN] = {};
  if (address.ss_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&address)->sin6_addr, text,
              sizeof(text));
  } else {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&address)->sin_addr, text,
              sizeof(text));
  }
  return text;
}

}  // namespace

BackendConnection::BackendConnection(event::EventBase& base, FlushList& flush_list,
                                     const sockaddr_storage& address, socklen_t address_len,
                                     ConnectionObserver& observer, ConnectionOptions options)
    : base_(base),
      flush_list_(flush_list),
      address_(address),
      address_len_(address_len),
      observer_(observer),
      options_(options),
      timer_(base, [this] { onTimer(); }),
      next_opaque_(randomOpaqueBase()),
      address_text_(formatAddress(address)) {
  input_.setAccount(options.buffer_account);
  output_.setAccount(options.buffer_account);
}

BackendConnection::~BackendConnection() {
  flush_list_.forget(this);
  closeSocket();
  if (tls_session_ != nullptr) SSL_SESSION_free(tls_session_);
}

void BackendConnection::setOptions(ConnectionOptions options) {
  bool tls_changed = options.tls_enabled != options_.tls_enabled || options.tls != options_.tls ||
                     options.tls_server_name != options_.tls_server_name;
  options_ = std::move(options);
  input_.setAccount(options_.buffer_account);
  output_.setAccount(options_.buffer_account);
  if (!tls_changed || state_ == State::kDisconnected) return;
  if (pending_.empty()) {
    closeSocket();
  } else {
    reconnect_ = true;
  }
}

void BackendConnection::commit(ReplySink* sink, uint32_t tag, protocol::ReplyKind kind,
                               std::string_view debug_key, bool quiet,
                               protocol::ReplyCode silent_code) {
  Pending p;
  p.sink = sink;
  p.tag = tag;
  p.kind = kind;
  p.quiet = quiet;
  p.silent_code = silent_code;
  p.opaque = next_opaque_++;
  p.debug_key = debug_key;
  p.deadline_us = event::nowMicros() + int64_t{options_.request_timeout_ms} * 1000;
  bool was_empty = pending_.empty();
  pending_.push_back(p);
  if (quiet) {
    Pending noop;
    noop.deadline_us = p.deadline_us;
    pending_.push_back(noop);
  }
  if (was_empty && state_ == State::kConnected) armTimerForHead();
  markRequestEnd();
  flush_list_.schedule(this);
}

void BackendConnection::commitBatch(ReplySink* sink, uint32_t tag, uint32_t count) {
  Pending p;
  p.sink = sink;
  p.tag = tag;
  p.count = count;
  p.opaque = next_opaque_;
  next_opaque_ += count;
  p.deadline_us = event::nowMicros() + int64_t{options_.request_timeout_ms} * 1000;
  bool was_empty = pending_.empty();
  pending_.push_back(p);
  if (was_empty && state_ == State::kConnected) armTimerForHead();
  markRequestEnd();
  flush_list_.schedule(this);
}

void BackendConnection::flushNow() {
  switch (state_) {
    case State::kDisconnected:
      if (!pending_.empty()) startConnect();
      break;
    case State::kConnecting:
    case State::kHandshaking:
      break;  // written once connected
    case State::kConnected:
      writeOutput();
      // Replies read ahead into the TLS session when the last read stopped at its limit.
      if (state_ == State::kConnected && tls_ && tls_->hasBuffered()) readReplies();
      break;
  }
}

void BackendConnection::startConnect() {
  fd_ = socket(address_.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) {
    fail(BackendFailure::kConnectFailed);
    return;
  }
  int one = 1;
  setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  state_ = State::kConnecting;
  io_ = std::make_unique<event::IoEvent>(base_, fd_, [this](bool r, bool w) { onIo(r, w); });
  int rc = connect(fd_, reinterpret_cast<const sockaddr*>(&address_), address_len_);
  if (rc < 0 && errno != EINPROGRESS) {
    fail(BackendFailure::kConnectFailed);
    return;
  }
  connect_deadline_us_ = event::nowMicros() + int64_t{options_.connect_timeout_ms} * 1000;
  timer_.arm(std::chrono::milliseconds(options_.connect_timeout_ms));
  io_->want(false, true);
}

void BackendConnection::onIo(bool readable, bool writable) {
  if (state_ == State::kConnecting) {
    if (writable || readable) onConnectDone();
  } else if (state_ == State::kHandshaking) {
    continueHandshake();
  } else if (state_ == State::kConnected) {
    if (readable) readReplies();
    if (state_ == State::kConnected && writable) writeOutput();
  }
  // What replies queued for clients is flushed after the loop turn (Worker).
}

void BackendConnection::onConnectDone() {
  int err = 0;
  socklen_t len = sizeof(err);
  getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len);
  if (err != 0) {
    fail(BackendFailure::kConnectFailed);
    return;
  }
  if (options_.tls_enabled) {
    if (!options_.tls) {
      fail(BackendFailure::kTlsHandshake);
      return;
    }
    // Warm-up: the handshake runs here, off the request path; requests keep queueing.
    std::shared_ptr<SSL_CTX> ctx = options_.tls->current();
    bool by_name = !options_.tls_server_name.empty();
    tls_ = std::make_unique<tls::TlsStream>(ctx.get(), fd_, tls::Role::kClient,
                                            by_name ? options_.tls_server_name : hostOf(address_),
                                            /*verify_ip=*/!by_name, tls_session_);
    if (!tls_->valid()) {
      fail(BackendFailure::kTlsHandshake);
      return;
    }
    state_ = State::kHandshaking;
    if (options_.tls_counters != nullptr) options_.tls_counters->handshaking.add();
    connect_deadline_us_ = event::nowMicros() + int64_t{options_.connect_timeout_ms} * 1000;
    timer_.arm(std::chrono::milliseconds(options_.connect_timeout_ms));
    continueHandshake();
    return;
  }
  onReady();
}

void BackendConnection::continueHandshake() {
  switch (tls_->handshake()) {
    case tls::TlsStream::Step::kWantRead:
      io_->want(true, false);
      return;
    case tls::TlsStream::Step::kWantWrite:
      io_->want(false, true);
      return;
    case tls::TlsStream::Step::kFailed:
      if (options_.tls_counters != nullptr)
        options_.tls_counters->count(tls::HandshakeResult::kFailed);
      ops::logEvent(ops::LogLevel::kWarn, "tls-handshake:" + address_text_,
                    "backend %s: tls handshake failed: %s; not sending in plaintext",
                    address_text_.c_str(), tls_->error().c_str());
      fail(BackendFailure::kTlsHandshake);
      return;
    case tls::TlsStream::Step::kDone:
      break;
  }
  if (options_.tls_counters != nullptr) {
    options_.tls_counters->count(tls_->resumed() ? tls::HandshakeResult::kResumed
                                                 : tls::HandshakeResult::kOk);
    options_.tls_counters->handshaking.sub();
    options_.tls_counters->connections.add();
  }
  onReady();
}

void BackendConnection::onReady() {
  state_ = State::kConnected;
  timer_.cancel();
  // Requests waited while we connected: their timeout starts now, not at commit.
  int64_t deadline = event::nowMicros() + int64_t{options_.request_timeout_ms} * 1000;
  for (size_t i = 0; i < pending_.size(); ++i) pending_.at(i).deadline_us = deadline;
  if (!pending_.empty()) armTimerForHead();
  io_->want(true, false);
  writeOutput();
}

void BackendConnection::writeOutput() {
  while (!output_.empty()) {
    std::string_view out = output_.view();
    ssize_t n = sendOut(out.data(), out.size());
    if (n > 0) {
      output_.consume(static_cast<size_t>(n));
      written_total_ += static_cast<uint64_t>(n);
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      io_->want(true, true);
      return;
    }
    if (n < 0 && errno == EINTR) continue;
    fail(BackendFailure::kDisconnected);
    return;
  }
  io_->want(true, tls_ && tls_->wantsWrite());
  output_.shrinkIfAbove(1 << 20);
}

void BackendConnection::readReplies() {
  for (int round = 0; round < 8; ++round) {
    // 64 KiB per recv, 8 per event at most: a connection streaming large values cannot hold
    // the worker (and every other client of it) for more than ~512 KiB of work at a time.
    char* dst = input_.prepare(64 * 1024);
    ssize_t n = receive(dst, 64 * 1024);
    if (n == 0) {
      fail(BackendFailure::kDisconnected);
      return;
    }
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (errno == EINTR) continue;
      fail(BackendFailure::kDisconnected);
      return;
    }
    input_.commit(static_cast<size_t>(n));
    if (!matchReplies()) return;
    if (options_.max_input_bytes != 0 && input_.size() > options_.max_input_bytes) {
      ops::logEvent(ops::LogLevel::kWarn, "oversized",
                    "backend connection: a reply of over %zu bytes, over the limit of %zu; "
                    "connection failed",
                    input_.size(), options_.max_input_bytes);
      fail(BackendFailure::kOversized);
      return;
    }
    if (static_cast<size_t>(n) < 64 * 1024 && !(tls_ && tls_->hasBuffered())) break;
  }
  if (tls_ && tls_->wantsWrite()) io_->want(true, true);
  if (reconnect_ && pending_.empty()) {
    closeSocket();  // new TLS settings: the next request connects with them
    return;
  }
  if (tls_ && tls_->hasBuffered()) flush_list_.schedule(this);  // taken after this turn
  // What a burst of large replies needed goes back: 1 MiB is kept while idle, up to 4 MiB
  // while busy, so a steady flow of large values does not regrow (and copy) it every batch.
  if (pending_.empty()) {
    timer_.cancel();
    input_.shrinkIfAbove(1 << 20);
  } else {
    input_.shrinkIfSparse(4 << 20);
    armTimerForHead();
  }
}

bool BackendConnection::matchReplies() {
  size_t offset = 0;
  while (offset < input_.size()) {
    if (pending_.empty()) {
      fail(BackendFailure::kDesync);  // bytes nobody asked for
      return false;
    }
    const Pending& head = pending_.front();
    std::string_view in = input_.view().substr(offset);
    // The `mn` behind a quiet request: its MN, alone where the request itself went unanswered.
    size_t noop_match = std::min(in.size(), protocol::kNoopReply.size());
    bool at_noop = in.substr(0, noop_match) == protocol::kNoopReply.substr(0, noop_match);
    if (head.sink == nullptr || (head.quiet && at_noop)) {
      if (!at_noop) {
        fail(BackendFailure::kDesync);
        return false;
      }
      if (noop_match < protocol::kNoopReply.size()) break;
      offset += protocol::kNoopReply.size();
      Pending done = head;
      pending_.pop_front();
      if (done.sink == nullptr) continue;
      pending_.pop_front();  // its mn, answered
      protocol::BackendReply silence;
      silence.silent = true;
      silence.code = done.silent_code;
      observer_.onReplyReceived();
      done.sink->onBackendReply(done.tag, silence);
      if (state_ != State::kConnected) return false;
      continue;
    }
    protocol::BackendReply reply;
    size_t consumed = 0;
    protocol::ExpectedReply expected{head.kind, head.opaque, head.debug_key};
    protocol::ReplyStatus status = protocol::parseBackendReply(in, expected, reply, consumed);
    if (status == protocol::ReplyStatus::kNeedMore) break;
    if (status == protocol::ReplyStatus::kInvalid) {
      fail(BackendFailure::kDesync);
      return false;
    }
    Pending done = head;
    offset += consumed;
    if (done.count > 1) {
      // A batch making progress is not late: its deadline counts from its latest reply.
      Pending& rest = pending_.front();
      --rest.count;
      ++rest.opaque;
      rest.deadline_us = event::nowMicros() + int64_t{options_.request_timeout_ms} * 1000;
    } else {
      pending_.pop_front();
    }
    observer_.onReplyReceived();
    // Sinks may queue new requests here (failover, replay) but never touch input_: the
    // reply's views stay valid until it returns.
    done.sink->onBackendReply(done.tag, reply);
    if (state_ != State::kConnected) return false;  // a sink's action closed us
  }
  input_.consume(offset);
  return true;
}

void BackendConnection::armTimerForHead() {
  int64_t wait = pending_.front().deadline_us - event::nowMicros();
  timer_.arm(std::chrono::microseconds(wait > 0 ? wait : 0));
}

void BackendConnection::onTimer() {
  int64_t now = event::nowMicros();
  if (state_ == State::kConnecting || state_ == State::kHandshaking) {
    if (now >= connect_deadline_us_) {
      bool handshaking = state_ == State::kHandshaking;
      if (handshaking && options_.tls_counters != nullptr) {
        options_.tls_counters->count(tls::HandshakeResult::kTimeout);
      }
      if (handshaking) {
        ops::logEvent(ops::LogLevel::kWarn, "tls-handshake:" + address_text_,
                      "backend %s: tls handshake did not finish within %u ms",
                      address_text_.c_str(), options_.connect_timeout_ms);
      }
      fail(handshaking ? BackendFailure::kTlsHandshake : BackendFailure::kConnectTimeout);
    } else {
      timer_.arm(std::chrono::microseconds(connect_deadline_us_ - now));
    }
  } else if (!pending_.empty()) {
    if (now >= pending_.front().deadline_us) {
      fail(BackendFailure::kTimeout);
    } else {
      armTimerForHead();
    }
  }
}

ssize_t BackendConnection::receive(char* data, size_t size) {
  return tls_ ? tls_->read(data, size) : ::recv(fd_, data, size, 0);
}

ssize_t BackendConnection::sendOut(const char* data, size_t size) {
  if (!tls_) return ::send(fd_, data, size, MSG_NOSIGNAL);
  iovec iov{const_cast<char*>(data), tlsChunk(size)};
  return tls_->write(&iov, 1);
}

size_t BackendConnection::tlsChunk(size_t available) {
  while (!request_ends_.empty() && request_ends_.front() <= written_total_) {
    last_end_ = request_ends_.front();
    request_ends_.pop_front();
  }
  bool at_request_start = last_end_ == written_total_;
  if (request_ends_.empty()) return available;
  // Requests whole, as many as fit a record; a large request (or the rest of one partly
  // written) alone, up to its end. A retry after WANT_WRITE asks for at least as much.
  size_t chunk = static_cast<size_t>(request_ends_.front() - written_total_);
  if (!at_request_start) return std::min(chunk, available);
  for (size_t i = 1; i < request_ends_.size() && chunk < kTlsRecordBytes; ++i) {
    size_t end = static_cast<size_t>(request_ends_.at(i) - written_total_);
    if (end > kTlsRecordBytes || end > available) break;
    chunk = end;
  }
  return std::min(chunk, available);
}

void BackendConnection::closeSocket() {
  if (tls_) {
    if (options_.tls_counters != nullptr) {
      if (state_ == State::kConnected) options_.tls_counters->connections.sub();
      if (state_ == State::kHandshaking) options_.tls_counters->handshaking.sub();
    }
    if (state_ == State::kConnected) {
      // The session resumes on the next connect: one round trip and no certificate check.
      if (SSL_SESSION* session = tls_->takeSession()) {
        if (tls_session_ != nullptr) SSL_SESSION_free(tls_session_);
        tls_session_ = session;
      }
    }
    tls_.reset();
  }
  io_.reset();
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  state_ = State::kDisconnected;
  timer_.cancel();
  input_.clear();
  output_.clear();
  // A new stream, a new random start: an opaque seen on the old one tells nothing of these.
  next_opaque_ = randomOpaqueBase();
  while (!request_ends_.empty()) request_ends_.pop_front();
  last_end_ = 0;
  reconnect_ = false;
  written_total_ = 0;
}

void BackendConnection::failPending(BackendFailure failure) {
  RingQueue<Pending> failed;
  std::swap(failed, pending_);
  while (!failed.empty()) {
    Pending p = failed.front();
    failed.pop_front();
    if (p.sink != nullptr) p.sink->onBackendFailure(p.tag, failure);
  }
}

void BackendConnection::fail(BackendFailure failure) {
  closeSocket();
  if (failure == BackendFailure::kTlsHandshake && tls_session_ != nullptr) {
    SSL_SESSION_free(tls_session_);  // the next attempt checks the certificate afresh
    tls_session_ = nullptr;
  }
  observer_.onConnectionFailed(*this, failure);
  failPending(failure);
}

void BackendConnection::abandon() {
  closeSocket();
  failPending(BackendFailure::kRemoved);
}

}  // namespace memzone::backend
