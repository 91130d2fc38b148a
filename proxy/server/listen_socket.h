// Listening sockets for the workers: one per worker on the same address with SO_REUSEPORT.
#pragma once

#include <string>
#include <vector>

namespace memzone::server {

struct ListenResult {
  std::vector<int> fds;  // non-blocking, listening
  std::string bound;     // "host:port" actually bound (resolves port 0)
  std::string error;
};

ListenResult listenReusePort(const std::string& address, unsigned count);

}  // namespace memzone::server
