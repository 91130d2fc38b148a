// TLS material read from certificate and key files, as an OpenSSL 3 SSL_CTX that is rebuilt
// when a file changes (cert-manager and Kubernetes swap mounted Secrets: a new inode, often
// through a `..data` symlink). New handshakes take current(); an SSL already made keeps the
// SSL_CTX it was made from (OpenSSL counts the reference), so rotation drops no connection.
// Thread-safe: current() is called on accept/connect (never per request), reloadIfChanged()
// by the control thread.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

struct ssl_ctx_st;
typedef struct ssl_ctx_st SSL_CTX;

namespace memzone::tls {

// Who we are in the handshake: the proxy to its clients, or a client of a memcached server.
enum class Role : uint8_t { kServer, kClient };

// Peer verification. Server role: none / optional (a certificate, if sent, must verify) /
// require (memcached's ssl_verify_mode 0, 2, 3). Client role: none or require.
enum class Verify : uint8_t { kNone, kOptional, kRequire };

struct TlsFiles {
  std::string cert;  // PEM chain (leaf first); required for the server role
  std::string key;   // PEM private key of `cert`
  std::string ca;    // PEM CA bundle to verify peers; "" = system default (client role)
  Verify verify = Verify::kNone;
};

class TlsContext {
 public:
  // Builds the first SSL_CTX; null and `error` ("FILE: reason") when the files are unusable.
  static std::shared_ptr<TlsContext> create(Role role, TlsFiles files, std::string& error);

  std::shared_ptr<SSL_CTX> current() const;
  // Rebuilds the SSL_CTX when any file's identity (device, inode, size, mtime) changed. On
  // failure the previous material stays in use; returns false and says why in `error`.
  // `changed` tells whether a rebuild happened (or was attempted).
  bool reloadIfChanged(bool& changed, std::string& error);

  const TlsFiles& files() const { return files_; }
  Role role() const { return role_; }
  uint64_t reloads() const;
  uint64_t reloadFailures() const;

 private:
  TlsContext(Role role, TlsFiles files) : role_(role), files_(std::move(files)) {}
  struct FileId {
    dev_t dev = 0;
    ino_t ino = 0;
    off_t size = 0;
    int64_t mtime_ns = 0;
    bool operator==(const FileId&) const = default;
  };
  std::vector<FileId> identify() const;
  std::shared_ptr<SSL_CTX> build(std::string& error) const;

  const Role role_;
  const TlsFiles files_;
  mutable std::mutex mu_;  // accept/connect and the control thread's reload, not per request
  std::shared_ptr<SSL_CTX> ctx_;
  std::vector<FileId> ids_;
  uint64_t reloads_ = 0;
  uint64_t reload_failures_ = 0;
};

std::string_view verifyName(Verify verify);

}  // namespace memzone::tls
