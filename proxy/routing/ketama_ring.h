// A libmemcached-compatible weighted ketama continuum (MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED):
// 160 points per server scaled by weight, MD5 of "host:port-i" (or "host-i" on port 11211),
// keys hashed with MD5. A server with a `name` is placed by "name-i" instead (stable identity:
// the same name takes the same arc whatever its address). Immutable once built; lookups are a
// binary search, no allocation.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace memzone::routing {

struct RingServer {
  std::string host;
  uint16_t port = 11211;
  uint32_t weight = 1;
  std::string name = {};  // placement identity; "" = host:port (libmemcached-compatible)
};

class KetamaRing {
 public:
  explicit KetamaRing(const std::vector<RingServer>& servers);

  // Index into the constructor's server list; the ring must not be empty.
  uint32_t serverFor(std::string_view key) const;
  size_t serverCount() const { return server_count_; }
  size_t pointCount() const { return points_.size(); }

  static uint32_t hashKey(std::string_view key);

 private:
  struct Point {
    uint32_t value;
    uint32_t server;
  };
  std::vector<Point> points_;
  size_t server_count_;
};

}  // namespace memzone::routing
