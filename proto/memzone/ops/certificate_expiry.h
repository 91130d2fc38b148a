// memzone_tls_certificate_expiry_seconds{file}: the Unix time (notAfter) each certificate file
// a binary is configured with expires, the earliest certificate of the file counting (README
// "Metrics"; the MemzoneTLSCertificateExpiring alert subtracts time()).
//
// One registry per process, so that every TLS use (the topology stream, client-facing and
// backend TLS) adds its files to one metric family. Files are read at scrape time: a rotated
// file reports its new certificate; an unreadable one has no series. Any thread.
#pragma once

#include <prometheus/collectable.h>

#include <memory>
#include <string>

namespace memzone::ops {

// Adds `path` (ignored when empty or already there).
void watchCertificateExpiry(const std::string& path);
// The process's one collector; add it to the metrics endpoint once. Exports nothing until a
// file is watched.
std::shared_ptr<prometheus::Collectable> certificateExpiryCollector();

}  // namespace memzone::ops
