#include "proxy/tls/tls_stream.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <cerrno>
#include <cstring>

namespace memzone::tls {
namespace {

std::string describe(SSL* ssl, int ssl_error) {
  std::string text;
  long verify = SSL_get_verify_result(ssl);
  if (verify != X509_V_OK)
    text = std::string("certificate verify failed: ") + X509_verify_cert_error_string(verify);
  unsigned long code = ERR_get_error();
  if (code != 0 && text.empty()) {
    char buf[256];
    ERR_error_string_n(code, buf, sizeof(buf));
    text = buf;
  }
  if (text.empty()) {
    text = ssl_error == SSL_ERROR_SYSCALL
               ? (errno != 0 ? std::string(strerror(errno)) : "connection closed")
               : "TLS error " + std::to_string(ssl_error);
  }
  ERR_clear_error();
  return text;
}

}  // namespace

TlsStream::TlsStream(SSL_CTX* ctx, int fd, Role role, const std::string& server_name,
                     bool verify_ip, SSL_SESSION* resume) {
  ssl_ = SSL_new(ctx);
  if (ssl_ == nullptr) {
    error_ = "SSL_new failed";
    ERR_clear_error();
    return;
  }
  SSL_set_fd(ssl_, fd);
  if (role == Role::kServer) {
    SSL_set_accept_state(ssl_);
    return;
  }
  SSL_set_connect_state(ssl_);
  if (!server_name.empty()) {
    if (verify_ip) {
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), server_name.c_str());
    } else {
      SSL_set_tlsext_host_name(ssl_, server_name.c_str());
      SSL_set1_host(ssl_, server_name.c_str());
    }
  }
  if (resume != nullptr) SSL_set_session(ssl_, resume);
}

TlsStream::~TlsStream() {
  if (ssl_ != nullptr) SSL_free(ssl_);
}

TlsStream::Step TlsStream::handshake() {
  ERR_clear_error();
  int rc = SSL_do_handshake(ssl_);
  if (rc == 1) return Step::kDone;
  int e = SSL_get_error(ssl_, rc);
  if (e == SSL_ERROR_WANT_READ) return Step::kWantRead;
  if (e == SSL_ERROR_WANT_WRITE) return Step::kWantWrite;
  error_ = describe(ssl_, e);
  return Step::kFailed;
}

ssize_t TlsStream::fail(int rc) {
  int e = SSL_get_error(ssl_, rc);
  switch (e) {
    case SSL_ERROR_WANT_READ:
      errno = EAGAIN;
      return -1;
    case SSL_ERROR_WANT_WRITE:
      want_write_ = true;
      errno = EAGAIN;
      return -1;
    case SSL_ERROR_ZERO_RETURN:
      return 0;  // close_notify
    default:
      error_ = describe(ssl_, e);
      errno = ECONNRESET;
      return -1;
  }
}

ssize_t TlsStream::read(char* data, size_t size) {
  want_write_ = false;
  ERR_clear_error();
  size_t n = 0;
  int rc = SSL_read_ex(ssl_, data, size, &n);
  if (rc == 1) {
    starved_ = false;
    return static_cast<ssize_t>(n);
  }
  starved_ = SSL_get_error(ssl_, rc) == SSL_ERROR_WANT_READ;
  return fail(rc);
}

ssize_t TlsStream::write(const iovec* iov, int count) {
  want_write_ = false;
  size_t total = 0;
  for (int i = 0; i < count; ++i) {
    if (iov[i].iov_len == 0) continue;
    ERR_clear_error();
    size_t n = 0;
    int rc = SSL_write_ex(ssl_, iov[i].iov_base, iov[i].iov_len, &n);
    if (rc != 1) {
      if (total > 0) {
        // What was taken is reported; the failure shows again on the next call.
        if (SSL_get_error(ssl_, rc) == SSL_ERROR_WANT_WRITE) want_write_ = true;
        ERR_clear_error();
        return static_cast<ssize_t>(total);
      }
      return fail(rc);
    }
    total += n;
    if (n < iov[i].iov_len) break;
  }
  return static_cast<ssize_t>(total);
}

bool TlsStream::hasBuffered() const { return !starved_ && SSL_has_pending(ssl_) == 1; }

bool TlsStream::resumed() const { return SSL_session_reused(ssl_) == 1; }

SSL_SESSION* TlsStream::takeSession() const {
  SSL_SESSION* session = SSL_get1_session(ssl_);
  if (session != nullptr && SSL_SESSION_is_resumable(session) != 1) {
    SSL_SESSION_free(session);
    return nullptr;
  }
  return session;
}

}  // namespace memzone::tls
