#include "proxy/server/client_connection.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace memzone::server {

using protocol::ParseStatus;

ClientConnection::ClientConnection(int fd, event::EventBase& base, FlushList& flush_list,
                                   const protocol::RequestParser& parser,
                                   RequestDispatcher& dispatcher, RequestPool& pool,
                                   ProxyStats& stats, ConnectionLimits limits,
                                   CloseCallback on_close)
    : fd_(fd),
      flush_list_(flush_list),
      parser_(parser),
      dispatcher_(dispatcher),
      pool_(pool),
      stats_(stats),
      limits_(limits),
      on_close_(std::move(on_close)),
      io_(base, fd, [this](bool r, bool w) { onIo(r, w); }),
      reply_estimate_(limits.initial_reply_estimate),
      inflight_window_(1) {
  noteReplySize(reply_estimate_);
  stats_.curr_connections.add();
  stats_.total_connections.add();
  io_.want(true, false);
}

ClientConnection::~ClientConnection() {
  flush_list_.forget(this);
  io_.want(false, false);
  // Requests still waiting on backends finish on their own and go back to the pool.
  while (!fifo_.empty()) {
    fifo_.front()->releaseByOwner(pool_);
    fifo_.pop_front();
  }
  if (fd_ >= 0) ::close(fd_);
  stats_.curr_connections.sub();
}

void ClientConnection::onIo(bool readable, bool writable) {
  // Output this queues (here and on backends) is flushed after the loop turn (Worker).
  if (readable) readRequests();
  if (!closed_ && writable) makeProgress();
}

bool ClientConnection::overloaded() const {
  return fifo_.size() >= inflight_window_ || output_.size() >= limits_.max_output_bytes;
}

void ClientConnection::noteReplySize(size_t bytes) {
  // Jumps up at once to a large reply, decays slowly (1/16 per reply) back to small ones,
  // so a mixed workload stays conservative and a small-value workload keeps deep pipelines.
  reply_estimate_ = std::max(bytes, reply_estimate_ - reply_estimate_ / 16);
  size_t window = limits_.max_output_bytes / std::max<size_t>(reply_estimate_, 1);
  inflight_window_ = std::clamp<size_t>(window, 1, limits_.max_pending_requests);
}

void ClientConnection::readRequests() {
  for (int round = 0; round < 4 && !read_closed_ && !overloaded(); ++round) {
    char* dst = input_.prepare(16 * 1024);
    size_t room = input_.writableBytes();
    ssize_t n = ::recv(fd_, dst, room, 0);
    if (n == 0) {
      read_closed_ = true;  // answer what was asked, then close
      break;
    }
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (errno == EINTR) continue;
      close();
      return;
    }
    stats_.bytes_read.add(static_cast<uint64_t>(n));
    input_.commit(static_cast<size_t>(n));
    parseRequests();
    if (closed_) return;
    // A short read drained the socket: skip the recv that would only say EAGAIN.
    if (static_cast<size_t>(n) < room) break;
  }
  takeReadyReplies();
  flush_list_.schedule(this);
  updateInterest();
}

void ClientConnection::parseRequests() {
  size_t used = 0;
  int64_t now = event::nowMicros();  // the whole batch was read at once
  std::string_view in = input_.view();
  while (used < in.size() && !read_closed_ && !overloaded()) {
    if (swallow_ > 0) {
      size_t n = std::min(swallow_, in.size() - used);
      swallow_ -= n;
      used += n;
      continue;
    }
    protocol::ParseResult r = parser_.parse(in.substr(used), request_, &scanned_);
    if (r.status == ParseStatus::kNeedMore) break;
    if (r.status == ParseStatus::kTooLarge) {
      stats_.client_errors.add();
      ClientRequest* dispatched = r.deletes_key
                                      ? dispatcher_.deleteForTooLarge(request_, r.reply, this)
                                      : dispatcher_.localReply(r.reply, this, request_.command);
      dispatched->setStartedUs(now);
      fifo_.push_back(dispatched);
      swallow_ = r.swallow;
    } else if (r.status == ParseStatus::kOk) {
      if (request_.command == protocol::Command::kQuit) {
        read_closed_ = true;  // memcached closes without a reply
        used += r.consumed;
        break;
      }
      ClientRequest* dispatched = dispatcher_.dispatch(request_, this);
      dispatched->setStartedUs(now);
      fifo_.push_back(dispatched);
    } else {
      stats_.client_errors.add();
      ClientRequest* rejected = dispatcher_.localReply(r.reply, this);
      rejected->setStartedUs(now);
      fifo_.push_back(rejected);
      if (r.status == ParseStatus::kSwallow) swallow_ = r.swallow;
      if (r.status == ParseStatus::kFatal) {
        read_closed_ = true;
        break;
      }
    }
    used += r.consumed;
  }
  input_.consume(used);
  input_.shrinkIfAbove(256 * 1024);
}

void ClientConnection::takeReadyReplies() {
  int64_t now = 0;  // read once, and only if something is ready
  while (!fifo_.empty() && fifo_.front()->ready()) {
    ClientRequest* r = fifo_.front();
    output_.append(r->reply());
    noteReplySize(r->reply().size());
    if (now == 0) now = event::nowMicros();
    recordDone(*r, now);
    fifo_.pop_front();
    r->releaseByOwner(pool_);
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
  stats_.latency[latencyBucket(us)].add();
  stats_.latency_sum_us.add(us);
  int command = static_cast<int>(r.command());
  stats_.results[command][static_cast<int>(protocol::classifyReply(r.command(), r.reply()))].add();
}

void ClientConnection::flushNow() { makeProgress(); }

void ClientConnection::makeProgress() {
  if (closed_) return;
  takeReadyReplies();
  writeOutput();
  if (closed_) return;
  // Requests left unparsed while we were overloaded can go now: the peer may have sent
  // everything already, so no readable event would ever come for them.
  if (!overloaded() && !input_.empty() && !read_closed_) {
    parseRequests();
    takeReadyReplies();
    writeOutput();
  }
  if (!closed_) updateInterest();
}

void ClientConnection::writeOutput() {
  while (!output_.empty()) {
    std::string_view out = output_.view();
    ssize_t n = ::send(fd_, out.data(), out.size(), MSG_NOSIGNAL);
    if (n > 0) {
      stats_.bytes_written.add(static_cast<uint64_t>(n));
      output_.consume(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n < 0 && errno == EINTR) continue;
    close();
    return;
  }
  output_.shrinkIfAbove(1 << 20);
  if (fifo_.empty() && output_.empty()) {
    // Draining closes at a request boundary: nothing owed, nothing half-received.
    if (read_closed_ || (draining_ && input_.empty() && swallow_ == 0 && !socketHasData())) {
      close();
    }
  }
}

bool ClientConnection::socketHasData() const {
  char byte;
  return ::recv(fd_, &byte, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

void ClientConnection::updateInterest() {
  if (closed_) return;
  io_.want(!read_closed_ && !overloaded(), !output_.empty());
}

void ClientConnection::drain() {
  draining_ = true;
  flush_list_.schedule(this);
}

void ClientConnection::close() {
  if (closed_) return;
  closed_ = true;
  io_.want(false, false);
  on_close_(this);  // the worker destroys us after the current callback
}

}  // namespace memzone::server
