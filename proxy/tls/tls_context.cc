#include "proxy/tls/tls_context.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/stat.h>

#include <cstdio>
#include <ctime>

namespace memzone::tls {
namespace {

// TLS 1.2 suites: forward secrecy and AEAD only (TLS 1.3 keeps OpenSSL's defaults, all AEAD).
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
// Session cache id: resumption only among the proxy's own listeners.
constexpr unsigned char kSessionIdContext[] = "memzone-proxy";

std::string opensslError() {
  unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "unknown OpenSSL error";
  char text[256];
  ERR_error_string_n(code, text, sizeof(text));
  return text;
}

}  // namespace

std::string_view verifyName(Verify verify) {
  switch (verify) {
    case Verify::kNone:
      return "none";
    case Verify::kOptional:
      return "optional";
    case Verify::kRequire:
      return "require";
  }
  return "?";
}

std::shared_ptr<TlsContext> TlsContext::create(Role role, TlsFiles files, std::string& error) {
  std::shared_ptr<TlsContext> context(new TlsContext(role, std::move(files)));
  context->ids_ = context->identify();
  context->ctx_ = context->build(error);
  if (!context->ctx_) return nullptr;
  return context;
}

std::vector<TlsContext::FileId> TlsContext::identify() const {
  std::vector<FileId> ids;
  for (const std::string* path : {&files_.cert, &files_.key, &files_.ca}) {
    FileId id;
    struct stat st {};
    // stat, not lstat: a swapped `..data` symlink shows as a new inode behind the same name.
    if (!path->empty() && ::stat(path->c_str(), &st) == 0) {
      id.dev = st.st_dev;
      id.ino = st.st_ino;
      id.size = st.st_size;
      id.mtime_ns = int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec;
    }
    ids.push_back(id);
  }
  return ids;
}

std::shared_ptr<SSL_CTX> TlsContext::build(std::string& error) const {
  ERR_clear_error();
  std::shared_ptr<SSL_CTX> ctx(
      SSL_CTX_new(role_ == Role::kServer ? TLS_server_method() : TLS_client_method()),
      SSL_CTX_free);
  if (!ctx) {
    error = "SSL_CTX_new: " + opensslError();
    return nullptr;
  }
  SSL_CTX* c = ctx.get();
  SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
  SSL_CTX_set_cipher_list(c, kTls12Ciphers);
  // A peer that closes without close_notify has closed (most memcached clients do; the
  // protocol delimits its own messages): a FIN, as on plaintext, not a socket error.
  SSL_CTX_set_options(c, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                             SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_IGNORE_UNEXPECTED_EOF);
  // Writes may be partial and retried from a buffer that moved (ByteBuffer compacts); an
  // idle connection gives its record buffers back (RELEASE_BUFFERS).
  SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                          SSL_MODE_RELEASE_BUFFERS);
  // One read() takes every record the socket has (up to the read buffer) instead of two
  // per record (header, then body): pipelined small replies come many records at a time.
  // Readers then drain what is read ahead (TlsStream::hasBuffered) before waiting again.
  SSL_CTX_set_read_ahead(c, 1);
  if (!files_.cert.empty()) {
    if (SSL_CTX_use_certificate_chain_file(c, files_.cert.c_str()) != 1) {
      error = files_.cert + ": cannot load certificate chain: " + opensslError();
      return nullptr;
    }
    if (SSL_CTX_use_PrivateKey_file(c, files_.key.c_str(), SSL_FILETYPE_PEM) != 1) {
      error = files_.key + ": cannot load private key: " + opensslError();
      return nullptr;
    }
    if (SSL_CTX_check_private_key(c) != 1) {
      error = files_.key + ": private key does not match " + files_.cert;
      ERR_clear_error();
      return nullptr;
    }
  } else if (role_ == Role::kServer) {
    error = "a certificate and key are required";
    return nullptr;
  }
  if (!files_.ca.empty()) {
    if (SSL_CTX_load_verify_locations(c, files_.ca.c_str(), nullptr) != 1) {
      error = files_.ca + ": cannot load CA certificates: " + opensslError();
      return nullptr;
    }
    if (role_ == Role::kServer) {
      // Tells clients which CAs we accept (they pick the matching certificate).
      SSL_CTX_set_client_CA_list(c, SSL_load_client_CA_file(files_.ca.c_str()));
    }
  } else if (role_ == Role::kClient && files_.verify != Verify::kNone) {
    SSL_CTX_set_default_verify_paths(c);
  }
  int mode = SSL_VERIFY_NONE;
  if (files_.verify == Verify::kOptional) mode = SSL_VERIFY_PEER;
  if (files_.verify == Verify::kRequire) {
    mode = SSL_VERIFY_PEER | (role_ == Role::kServer ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0);
  }
  SSL_CTX_set_verify(c, mode, nullptr);
  if (role_ == Role::kServer) {
    // Resumption: TLS 1.3 tickets and 1.2 tickets are on by default (keys per SSL_CTX, so a
    // rotation starts full handshakes once); the server cache serves 1.2 session ids.
    SSL_CTX_set_session_id_context(c, kSessionIdContext, sizeof(kSessionIdContext) - 1);
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(c, 20000);
    SSL_CTX_set_timeout(c, 3600);
  } else {
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  }
  return ctx;
}

std::shared_ptr<SSL_CTX> TlsContext::current() const {
  std::lock_guard lock(mu_);
  return ctx_;
}

bool TlsContext::reloadIfChanged(bool& changed, std::string& error) {
  changed = false;
  std::vector<FileId> ids = identify();
  {
    std::lock_guard lock(mu_);
    if (ids == ids_) return true;
  }
  changed = true;
  // Built outside the lock: handshakes go on with the old material meanwhile.
  std::shared_ptr<SSL_CTX> next = build(error);
  std::lock_guard lock(mu_);
  if (!next) {
    // A half-written swap (the key newer than the certificate) fails here; the files are
    // looked at again on the next check because ids_ is left as it was.
    ++reload_failures_;
    return false;
  }
  ids_ = std::move(ids);
  ctx_ = std::move(next);
  ++reloads_;
  return true;
}

uint64_t TlsContext::reloads() const {
  std::lock_guard lock(mu_);
  return reloads_;
}

uint64_t TlsContext::reloadFailures() const {
  std::lock_guard lock(mu_);
  return reload_failures_;
}

}  // namespace memzone::tls
