#include "memzone/ops/http_endpoint.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <prometheus/text_serializer.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

namespace memzone::ops {
namespace {

constexpr size_t kMaxRequest = 8192;
constexpr int kReadTimeoutMs = 2000;

void writeAll(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return;
    off += static_cast<size_t>(n);
  }
}

std::string response(int status, const char* reason, const char* type, const std::string& body) {
  return "HTTP/1.0 " + std::to_string(status) + " " + reason + "\r\nContent-Type: " + type +
         "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" +
         body;
}

}  // namespace

HttpEndpoint::HttpEndpoint(std::vector<std::shared_ptr<prometheus::Collectable>> collectables,
                           ReadyFn ready)
    : collectables_(std::move(collectables)), ready_(std::move(ready)) {}

HttpEndpoint::~HttpEndpoint() { stop(); }

std::string HttpEndpoint::start(const std::string& listen) {
  size_t colon = listen.rfind(':');
  if (colon == std::string::npos) return "--metrics-listen: want HOST:PORT, not " + listen;
  std::string host = listen.substr(0, colon);
  int port = std::atoi(listen.c_str() + colon + 1);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (host.empty() || host == "*") host = "0.0.0.0";
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    return "--metrics-listen: want a numeric IPv4 HOST:PORT, not " + listen;
  }
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(listen_fd_, 64) != 0) {
    std::string error = "--metrics-listen " + listen + ": " + std::strerror(errno);
    ::close(listen_fd_);
    listen_fd_ = -1;
    return error;
  }
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  thread_ = std::thread([this] { run(); });
  return "";
}

void HttpEndpoint::stop() {
  if (!thread_.joinable()) return;
  stopping_ = true;
  uint64_t one = 1;
  (void)::write(wake_fd_, &one, sizeof(one));
  thread_.join();
  ::close(listen_fd_);
  ::close(wake_fd_);
}

void HttpEndpoint::run() {
  while (!stopping_) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) continue;
    if (fds[1].revents) break;
    if (!(fds[0].revents & POLLIN)) continue;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    serve(fd);
    ::close(fd);
  }
}

void HttpEndpoint::serve(int fd) {
  std::string request;
  char buf[2048];
  while (request.find("\r\n\r\n") == std::string::npos && request.size() < kMaxRequest) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, kReadTimeoutMs) <= 0) return;  // a silent client does not hold us
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) return;
    request.append(buf, static_cast<size_t>(n));
  }
  size_t sp1 = request.find(' ');
  size_t sp2 = sp1 == std::string::npos ? sp1 : request.find(' ', sp1 + 1);
  if (sp2 == std::string::npos) {
    writeAll(fd, response(400, "Bad Request", "text/plain", "bad request\n"));
    return;
  }
  std::string method = request.substr(0, sp1);
  std::string path = request.substr(sp1 + 1, sp2 - sp1 - 1);
  path = path.substr(0, path.find('?'));
  if (method != "GET" && method != "HEAD") {
    writeAll(fd, response(405, "Method Not Allowed", "text/plain", "GET only\n"));
  } else if (path == "/metrics") {
    std::vector<prometheus::MetricFamily> families;
    for (const auto& c : collectables_) {
      auto more = c->Collect();
      families.insert(families.end(), std::make_move_iterator(more.begin()),
                      std::make_move_iterator(more.end()));
    }
    writeAll(fd, response(200, "OK", "text/plain; version=0.0.4",
                          prometheus::TextSerializer().Serialize(families)));
  } else if (path == "/healthz") {
    writeAll(fd, response(200, "OK", "text/plain", "ok\n"));
  } else if (path == "/readyz") {
    bool ready = ready_ && ready_();
    writeAll(fd, ready ? response(200, "OK", "text/plain", "ready\n")
                       : response(503, "Service Unavailable", "text/plain", "not ready\n"));
  } else if (auto it = json_.find(path); it != json_.end()) {
    writeAll(fd, response(200, "OK", "application/json", it->second()));
  } else {
    writeAll(fd, response(404, "Not Found", "text/plain", "not found\n"));
  }
}

}  // namespace memzone::ops
