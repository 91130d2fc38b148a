#include "proxy/backend/backend_failure.h"

namespace memzone::backend {
namespace {

struct FailureText {
  std::string_view name;
  std::string_view reply;
};

constexpr FailureText kTexts[kBackendFailureCount] = {
    {"timeout", "SERVER_ERROR backend timeout\r\n"},
    {"connect_failed", "SERVER_ERROR backend connect failed\r\n"},
    {"connect_timeout", "SERVER_ERROR backend connect timeout\r\n"},
    {"disconnected", "SERVER_ERROR backend disconnected\r\n"},
    {"desync", "SERVER_ERROR backend desync\r\n"},
    {"marked_down", "SERVER_ERROR backend marked down\r\n"},
    {"queue_full", "SERVER_ERROR backend queue full\r\n"},
    {"removed", "SERVER_ERROR backend removed from topology\r\n"},
    {"untrusted", "SERVER_ERROR backend has pending invalidations\r\n"},
    {"oversized", "SERVER_ERROR backend reply too large\r\n"},
    {"tls_handshake", "SERVER_ERROR backend tls handshake\r\n"},
};

}  // namespace

std::string_view failureName(BackendFailure failure) {
  return kTexts[static_cast<int>(failure)].name;
}

std::string_view failureReply(BackendFailure failure) {
  return kTexts[static_cast<int>(failure)].reply;
}

}  // namespace memzone::backend
