#include "proxy/rebalance/memcached_link.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace memzone::rebalance {

std::string MemcachedLink::connect(const std::string& host, uint16_t port, int timeout_ms,
                                   const LinkTls& tls) {
  close();
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  std::string service = std::to_string(port);
  if (int rc = getaddrinfo(host.c_str(), service.c_str(), &hints, &found); rc != 0) {
    return std::string("resolve: ") + gai_strerror(rc);
  }
  std::string why = "no address";
  for (addrinfo* a = found; a != nullptr && fd_ < 0; a = a->ai_next) {
    int fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) continue;
    int rc = ::connect(fd, a->ai_addr, a->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      rc = poll(&p, 1, timeout_ms) == 1 ? 0 : -1;
      int err = rc == 0 ? 0 : ETIMEDOUT;
      socklen_t len = sizeof(err);
      if (rc == 0) getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      errno = err;
      rc = err == 0 ? 0 : -1;
    }
    if (rc != 0) {
      why = std::string("connect: ") + strerror(errno);
      ::close(fd);
      continue;
    }
    // Blocking from here on, each call bounded by the timeout.
    fcntl(fd, F_SETFL, 0);
    timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    fd_ = fd;
  }
  freeaddrinfo(found);
  if (fd_ < 0) return why;
  if (tls.context) {
    std::shared_ptr<SSL_CTX> ctx = tls.context->current();
    bool by_name = !tls.server_name.empty();
    tls_ = std::make_unique<tls::TlsStream>(ctx.get(), fd_, tls::Role::kClient,
                                            by_name ? tls.server_name : host, !by_name);
    if (!tls_->valid() || tls_->handshake() != tls::TlsStream::Step::kDone) {
      std::string error = "tls handshake: " + (tls_->error().empty() ? "timeout" : tls_->error());
      close();
      return error;
    }
  }
  return "";
}

void MemcachedLink::close() {
  tls_.reset();
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  buffer_.clear();
  start_ = 0;
  out_.clear();
  request_ends_.clear();
}

bool MemcachedLink::fail(const std::string& why) {
  error_ = why;
  close();
  return false;
}

bool MemcachedLink::send(std::string_view bytes) {
  while (!bytes.empty()) {
    if (fd_ < 0) return fail("not connected");
    ssize_t n;
    if (tls_) {
      iovec iov{const_cast<char*>(bytes.data()), bytes.size()};
      n = tls_->write(&iov, 1);
    } else {
      n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    }
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return fail(n == 0 || errno == EAGAIN ? "write timeout" : strerror(errno));
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

void MemcachedLink::append(std::string_view request) {
  out_.append(request);
  request_ends_.push_back(out_.size());
}

bool MemcachedLink::flush() {
  bool ok = true;
  if (!tls_) {
    ok = send(out_);
  } else {
    size_t from = 0;
    for (size_t end : request_ends_) {
      if (!(ok = send(std::string_view(out_).substr(from, end - from)))) break;
      from = end;
    }
  }
  out_.clear();
  request_ends_.clear();
  return ok;
}

bool MemcachedLink::endBatch() {
  std::string line;
  if (!readLine(line)) return false;
  return line == "MN" || fail("desync: expected MN, got " + line.substr(0, 64));
}

bool MemcachedLink::fill() {
  if (fd_ < 0) return fail("not connected");
  if (abort_ && abort_()) return fail("stopped");
  if (start_ > 0 && start_ == buffer_.size()) {
    buffer_.clear();
    start_ = 0;
  } else if (start_ > 64 * 1024) {
    buffer_.erase(0, start_);
    start_ = 0;
  }
  char chunk[64 * 1024];
  for (;;) {
    ssize_t n = tls_ ? tls_->read(chunk, sizeof(chunk)) : ::recv(fd_, chunk, sizeof(chunk), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) return fail("closed by the server");
    if (n < 0) return fail(errno == EAGAIN ? "read timeout" : strerror(errno));
    buffer_.append(chunk, static_cast<size_t>(n));
    return true;
  }
}

bool MemcachedLink::readLine(std::string& line) {
  for (;;) {
    size_t eol = buffer_.find('\n', start_);
    if (eol != std::string::npos) {
      size_t end = eol > start_ && buffer_[eol - 1] == '\r' ? eol - 1 : eol;
      line.assign(buffer_, start_, end - start_);
      start_ = eol + 1;
      return true;
    }
    if (buffer_.size() - start_ > kMaxLine) return fail("line too long");
    if (!fill()) return false;
  }
}

bool MemcachedLink::readExact(size_t n, std::string& out) {
  while (buffer_.size() - start_ < n) {
    if (!fill()) return false;
  }
  out.append(buffer_, start_, n);
  start_ += n;
  return true;
}

}  // namespace memzone::rebalance
