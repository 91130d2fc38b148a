#include "proxy/backend/backend_connection.h"

#include <fcntl.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <cerrno>

namespace memzone::backend {

using protocol::ReplyStatus;

BackendConnection::BackendConnection(event::EventBase& base, FlushList& flush_list,
                                     const sockaddr_storage& address, socklen_t address_len,
                                     ConnectionObserver& observer, ConnectionOptions options)
    : base_(base),
      flush_list_(flush_list),
      address_(address),
      address_len_(address_len),
      observer_(observer),
      options_(options),
      timer_(base, [this] { onTimer(); }) {}

BackendConnection::~BackendConnection() {
  flush_list_.forget(this);
  closeSocket();
}

void BackendConnection::commit(ReplySink* sink, uint32_t tag, protocol::ReplyShape shape) {
  int64_t deadline = event::nowMicros() + int64_t{options_.request_timeout_ms} * 1000;
  bool was_empty = pending_.empty();
  pending_.push_back(Pending{sink, tag, shape, deadline});
  if (was_empty && state_ == State::kConnected) armTimerForHead();
  flush_list_.schedule(this);
}

void BackendConnection::flushNow() {
  switch (state_) {
    case State::kDisconnected:
      if (!pending_.empty()) startConnect();
      break;
    case State::kConnecting:
      break;  // written once connected
    case State::kConnected:
      writeOutput();
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
    ssize_t n = ::send(fd_, out.data(), out.size(), MSG_NOSIGNAL);
    if (n > 0) {
      output_.consume(static_cast<size_t>(n));
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
  io_->want(true, false);
  output_.shrinkIfAbove(1 << 20);
}

void BackendConnection::readReplies() {
  for (int round = 0; round < 8; ++round) {
    char* dst = input_.prepare(64 * 1024);
    ssize_t n = ::recv(fd_, dst, input_.writableBytes(), 0);
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
    while (!input_.empty()) {
      if (pending_.empty()) {
        fail(BackendFailure::kParseError);  // bytes nobody asked for: the stream is out of step
        return;
      }
      Pending& head = pending_.front();
      protocol::ReplyResult r = protocol::parseReply(input_.view(), head.shape);
      if (r.status == ReplyStatus::kNeedMore) break;
      if (r.status == ReplyStatus::kInvalid) {
        fail(BackendFailure::kParseError);
        return;
      }
      Pending done = head;
      pending_.pop_front();
      observer_.onReplyReceived();
      done.sink->onBackendReply(done.tag, input_.view().substr(0, r.consumed), r.code);
      input_.consume(r.consumed);
      if (state_ != State::kConnected) return;  // a sink's action closed us
    }
    if (static_cast<size_t>(n) < 64 * 1024) break;
  }
  if (pending_.empty()) {
    timer_.cancel();
    input_.shrinkIfAbove(1 << 20);
  } else {
    armTimerForHead();
  }
}

void BackendConnection::armTimerForHead() {
  int64_t wait = pending_.front().deadline_us - event::nowMicros();
  timer_.arm(std::chrono::microseconds(wait > 0 ? wait : 0));
}

void BackendConnection::onTimer() {
  int64_t now = event::nowMicros();
  if (state_ == State::kConnecting) {
    if (now >= connect_deadline_us_) {
      fail(BackendFailure::kConnectTimeout);
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

void BackendConnection::closeSocket() {
  io_.reset();
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  state_ = State::kDisconnected;
  timer_.cancel();
  input_.clear();
  output_.clear();
}

void BackendConnection::failPending(BackendFailure failure) {
  RingQueue<Pending> failed;
  std::swap(failed, pending_);
  while (!failed.empty()) {
    Pending p = failed.front();
    failed.pop_front();
    p.sink->onBackendFailure(p.tag, failure);
  }
}

void BackendConnection::fail(BackendFailure failure) {
  closeSocket();
  observer_.onConnectionFailed(*this, failure);
  failPending(failure);
}

void BackendConnection::abandon() {
  closeSocket();
  failPending(BackendFailure::kRemoved);
}

}  // namespace memzone::backend
