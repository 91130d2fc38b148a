#include "proxy/routing/ketama_ring.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "proxy/routing/md5.h"

namespace memzone::routing {
namespace {

constexpr uint32_t kPointsPerServer = 160;
constexpr uint32_t kPointsPerHash = 4;
constexpr uint16_t kDefaultPort = 11211;

uint32_t digestWord(const std::array<uint8_t, 16>& d, int i) {
  return uint32_t(d[3 + i * 4]) << 24 | uint32_t(d[2 + i * 4]) << 16 | uint32_t(d[1 + i * 4]) << 8 |
         uint32_t(d[i * 4]);
}

}  // namespace

uint32_t KetamaRing::hashKey(std::string_view key) { return digestWord(md5(key), 0); }

KetamaRing::KetamaRing(const std::vector<RingServer>& servers) : server_count_(servers.size()) {
  uint64_t total_weight = 0;
  for (const auto& s : servers) total_weight += s.weight;
  for (uint32_t index = 0; index < servers.size(); ++index) {
    const RingServer& s = servers[index];
    // Same float arithmetic as libmemcached's update_continuum so the point count matches.
    float pct = static_cast<float>(s.weight) / static_cast<float>(total_weight);
    uint32_t points =
        static_cast<uint32_t>(std::floor(
            static_cast<float>(pct * kPointsPerServer / 4 * static_cast<float>(servers.size())) +
            0.0000000001)) *
        4;
    char label[320];
    for (uint32_t i = 0; i < points / kPointsPerHash; ++i) {
      int n = !s.name.empty() ? snprintf(label, sizeof(label), "%s-%u", s.name.c_str(), i)
              : s.port == kDefaultPort
                  ? snprintf(label, sizeof(label), "%s-%u", s.host.c_str(), i)
                  : snprintf(label, sizeof(label), "%s:%u-%u", s.host.c_str(), s.port, i);
      auto digest = md5(std::string_view(label, static_cast<size_t>(n)));
      for (int h = 0; h < static_cast<int>(kPointsPerHash); ++h) {
        points_.push_back({digestWord(digest, h), index});
      }
    }
  }
  std::sort(points_.begin(), points_.end(), [](const Point& a, const Point& b) {
    return a.value < b.value || (a.value == b.value && a.server < b.server);
  });
}

uint32_t KetamaRing::serverFor(std::string_view key) const {
  if (server_count_ == 1 || points_.empty()) return 0;
  uint32_t hash = hashKey(key);
  auto it = std::lower_bound(points_.begin(), points_.end(), hash,
                             [](const Point& p, uint32_t h) { return p.value < h; });
  if (it == points_.end()) it = points_.begin();
  return it->server;
}

}  // namespace memzone::routing
