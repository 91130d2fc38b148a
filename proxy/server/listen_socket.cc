#include "proxy/server/listen_socket.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace memzone::server {

ListenResult listenReusePort(const std::string& address, unsigned count) {
  ListenResult result;
  size_t colon = address.rfind(':');
  if (colon == std::string::npos) {
    result.error = "--listen: want HOST:PORT, got \"" + address + "\"";
    return result;
  }
  std::string host = address.substr(0, colon);
  std::string port = address.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV;
  addrinfo* info = nullptr;
  if (int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &info);
      rc != 0) {
    result.error = "--listen: " + address + ": " + gai_strerror(rc);
    return result;
  }
  sockaddr_storage addr{};
  socklen_t addr_len = static_cast<socklen_t>(info->ai_addrlen);
  std::memcpy(&addr, info->ai_addr, info->ai_addrlen);
  int family = info->ai_family;
  freeaddrinfo(info);

  for (unsigned i = 0; i < count; ++i) {
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (bind(fd, reinterpret_cast<sockaddr*>(&addr), addr_len) != 0 || listen(fd, 1024) != 0) {
      result.error = "--listen: cannot listen on " + address + ": " + strerror(errno);
      ::close(fd);
      for (int f : result.fds) ::close(f);
      result.fds.clear();
      return result;
    }
    if (i == 0) {
      // With port 0 the first bind picks the port; the others must share it.
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &addr_len);
      char text[INET6_ADDRSTRLEN] = {};
      uint16_t bound_port;
      if (family == AF_INET6) {
        auto* a = reinterpret_cast<sockaddr_in6*>(&addr);
        inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof(text));
        bound_port = ntohs(a->sin6_port);
        result.bound = std::string("[") + text + "]:" + std::to_string(bound_port);
      } else {
        auto* a = reinterpret_cast<sockaddr_in*>(&addr);
        inet_ntop(AF_INET, &a->sin_addr, text, sizeof(text));
        bound_port = ntohs(a->sin_port);
        result.bound = std::string(text) + ":" + std::to_string(bound_port);
      }
    }
    result.fds.push_back(fd);
  }
  return result;
}

}  // namespace memzone::server
