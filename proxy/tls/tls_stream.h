// One TLS session over a non-blocking socket, with recv/sendmsg-like calls so a connection's
// read and write loops stay the same for TLS and plaintext: > 0 bytes, 0 the peer closed,
// -1 with errno EAGAIN (wantsWrite() says whether the socket must become writable first) or
// ECONNRESET (the session failed; error() says why). The socket stays the caller's.
// One thread (the connection's worker).
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <cstdint>
#include <string>

#include "proxy/tls/tls_context.h"

struct ssl_st;
typedef struct ssl_st SSL;
struct ssl_session_st;
typedef struct ssl_session_st SSL_SESSION;

namespace memzone::tls {

class TlsStream {
 public:
  enum class Step : uint8_t { kDone, kWantRead, kWantWrite, kFailed };

  // Client role: `server_name` is sent as SNI and, when verifying, must match the
  // certificate (a DNS name, or an IP address when `verify_ip` is set); `resume` (may be
  // null) offers an earlier session.
  TlsStream(SSL_CTX* ctx, int fd, Role role, const std::string& server_name = "",
            bool verify_ip = false, SSL_SESSION* resume = nullptr);
  ~TlsStream();
  TlsStream(const TlsStream&) = delete;
  TlsStream& operator=(const TlsStream&) = delete;

  bool valid() const { return ssl_ != nullptr; }
  Step handshake();
  ssize_t read(char* data, size_t size);
  // Writes the segments in order, stopping at the first that is not taken whole.
  ssize_t write(const iovec* iov, int count);
  // Bytes already inside the session (read ahead from the socket, or decrypted and not yet
  // taken): no readable event will announce them. False once a read found them to be only
  // part of a record (the rest must come from the socket, which then turns readable).
  bool hasBuffered() const;
  bool wantsWrite() const { return want_write_; }
  bool resumed() const;
  // A reusable session for the next connection to the same server (caller frees it), or null.
  SSL_SESSION* takeSession() const;
  const std::string& error() const { return error_; }

 private:
  // Maps SSL_get_error(rc) to -1/errno (or 0 on a clean close).
  ssize_t fail(int rc);

  SSL* ssl_ = nullptr;
  bool want_write_ = false;
  bool starved_ = false;  // the last read wanted more from the socket
  std::string error_;
};

}  // namespace memzone::tls
