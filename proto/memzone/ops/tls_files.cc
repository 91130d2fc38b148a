#include "memzone/ops/tls_files.h"

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <memory>

namespace memzone::ops {
namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using Bio = std::unique_ptr<BIO, BioFree>;
using Cert = std::unique_ptr<X509, X509Free>;
using Key = std::unique_ptr<EVP_PKEY, KeyFree>;

std::string lastOpenSslError() {
  unsigned long code = ERR_peek_last_error();
  ERR_clear_error();
  if (code == 0) return "no PEM data";
  char text[256];
  ERR_error_string_n(code, text, sizeof(text));
  return text;
}

// Opens `path`; on failure sets `error` to "PATH: reason".
Bio openFile(const std::string& path, std::string& error) {
  Bio bio(BIO_new_file(path.c_str(), "r"));
  if (!bio) {
    ERR_clear_error();
    error = path + ": cannot be read";
  }
  return bio;
}

}  // namespace

std::string checkCertificateFile(const std::string& path) {
  std::string error;
  Bio bio = openFile(path, error);
  if (!bio) return error;
  Cert cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) return path + ": not a PEM certificate (" + lastOpenSslError() + ")";
  ERR_clear_error();
  return "";
}

std::string checkPrivateKeyFile(const std::string& path) {
  std::string error;
  Bio bio = openFile(path, error);
  if (!bio) return error;
  Key key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) return path + ": not a PEM private key (" + lastOpenSslError() + ")";
  return "";
}

std::string checkKeyMatchesCertificate(const std::string& cert_path, const std::string& key_path) {
  std::string error;
  Bio cert_bio = openFile(cert_path, error);
  if (!cert_bio) return error;
  Bio key_bio = openFile(key_path, error);
  if (!key_bio) return error;
  Cert cert(PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr));
  Key key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  if (!cert || !key) return "";  // the single-file checks say what is wrong
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    ERR_clear_error();
    return key_path + ": this private key does not belong to the certificate in " + cert_path;
  }
  return "";
}

std::optional<int64_t> earliestNotAfter(const std::string& path) {
  std::string error;
  Bio bio = openFile(path, error);
  if (!bio) return std::nullopt;
  std::optional<int64_t> earliest;
  while (true) {
    Cert cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (!cert) break;
    struct tm when = {};
    if (ASN1_TIME_to_tm(X509_get0_notAfter(cert.get()), &when) != 1) continue;
    int64_t seconds = static_cast<int64_t>(timegm(&when));
    if (!earliest || seconds < *earliest) earliest = seconds;
  }
  ERR_clear_error();  // the end of the file reads as an error
  return earliest;
}

}  // namespace memzone::ops
