// PEM files named on the command line for TLS (certificates, CA bundles, private keys): checked
// once at start-up so that a wrong path or a bad file fails there with the file and the reason,
// and read again at scrape time for the expiry gauges (the files rotate under us).
// Any thread; no state.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace memzone::ops {

// "" when `path` holds at least one PEM certificate (a chain or a CA bundle may hold several),
// else "PATH: reason".
std::string checkCertificateFile(const std::string& path);
// "" when `path` holds a PEM private key, else "PATH: reason".
std::string checkPrivateKeyFile(const std::string& path);
// "" when the key in `key_path` belongs to the first certificate of `cert_path`.
std::string checkKeyMatchesCertificate(const std::string& cert_path, const std::string& key_path);
// The earliest notAfter (Unix seconds) of the certificates in `path`; nullopt when the file
// cannot be read or holds none.
std::optional<int64_t> earliestNotAfter(const std::string& path);

}  // namespace memzone::ops
