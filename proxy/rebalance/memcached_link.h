// A blocking connection to one memcached server for the key mover's background thread
// (key_mover.h): plain TCP or TLS (the pool's backend TLS), every read and write bounded by
// a timeout. Nothing on a worker's event loop waits for it, so blocking calls keep the
// mover's batches (request, replies, next step) easy to follow.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/tls/tls_context.h"
#include "proxy/tls/tls_stream.h"

namespace memzone::rebalance {

struct LinkTls {
  std::shared_ptr<tls::TlsContext> context;  // null: plaintext
  std::string server_name;                   // "" verifies the server's IP
};

class MemcachedLink {
 public:
  static constexpr size_t kMaxLine = 8192;

  MemcachedLink() = default;
  ~MemcachedLink() { close(); }
  MemcachedLink(const MemcachedLink&) = delete;
  MemcachedLink& operator=(const MemcachedLink&) = delete;

  // Checked before every read from the socket: true fails the read ("stopped"). A server
  // that trickles a byte at a time never hits the read timeout; this still stops it.
  void setAbort(std::function<bool()> abort) { abort_ = std::move(abort); }

  // "" when connected (and handshaken), else why not.
  std::string connect(const std::string& host, uint16_t port, int timeout_ms, const LinkTls& tls);
  bool connected() const { return fd_ >= 0; }
  void close();

  // Each false means the connection failed (timeout, reset, close, a line too long) and is
  // closed; error() says why.
  bool send(std::string_view bytes);
  // Queues one whole request; flush() sends what is queued. Over TLS each request goes in
  // records of its own: memcached -Z leaves a request that follows a value's tail in the same
  // record unread (backend_connection.h).
  void append(std::string_view request);
  bool flush();
  // A batch's replies are proven complete (none extra, none missing) by a fence: flush
  // with `mn` at the end, read the replies, then endBatch() expects memcached's `MN`.
  bool flushBatch() {
    append("mn\r\n");
    return flush();
  }
  bool endBatch();
  // One line without its "\n" (and without a '\r' before it).
  bool readLine(std::string& line);
  // Exactly `n` bytes, appended to `out`.
  bool readExact(size_t n, std::string& out);
  const std::string& error() const { return error_; }

 private:
  bool fill();  // reads more into buffer_; false on failure
  bool fail(const std::string& why);

  std::function<bool()> abort_;
  int fd_ = -1;
  std::unique_ptr<tls::TlsStream> tls_;
  std::string out_;
  std::vector<size_t> request_ends_;
  std::string buffer_;
  size_t start_ = 0;  // unread bytes are buffer_[start_, end)
  std::string error_;
};

}  // namespace memzone::rebalance
