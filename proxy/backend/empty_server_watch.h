// Notices a server that came back empty at the same address (a memcached restarted in place:
// an OOM-killed container keeps its pod IP) and puts it in warm-up.
//
// Why a sentinel key rather than `stats` pid/uptime: "empty" is what warm-up is about, and a
// key that should be there and is not says exactly that, whatever emptied the server (a
// restart, a flush, a warm-restart that failed); it costs one meta line each way, parsed like
// any other reply, where `stats` is a multi-line reply for two numbers. Each worker keeps its
// own key per server ("memzone:sentinel:<host>:<pid>:<worker>", TTL refreshed by each check),
// so no proxy or worker can re-create another's key and hide a restart from it. The first
// check of a server only plants the key: a proxy that just started has no "before" (servers
// new to it are put in warm-up by the registry instead).
// Worker thread only; checks pin the view they start on, like read repairs.
#pragma once

#include <map>
#include <string>

#include "proxy/backend/backend_registry.h"

namespace memzone::backend {

class EmptyServerWatch {
 public:
  static constexpr uint32_t kSentinelTtlS = 3600;

  EmptyServerWatch(BackendRegistry& registry, std::string sentinel_key)
      : registry_(registry), key_(std::move(sentinel_key)) {}

  // Checks the local zone's servers of every pool with a warm-up window (one `mg` each that
  // has no check in flight). Called about once a second.
  void check();

  // From the checks.
  void onPresent(const std::string& address) { planted_[address] = true; }
  void onMissing(BackendServer* server, uint32_t warmup_ms);
  void onDone(const std::string& address) { inflight_.erase(address); }
  const std::string& key() const { return key_; }

 private:
  BackendRegistry& registry_;
  std::string key_;
  std::map<std::string, bool> planted_;  // address -> the key is known to be there
  std::map<std::string, bool> inflight_;
};

}  // namespace memzone::backend
