// memzone-loadgen: a small closed-loop memcached load generator for bench/run.py.
//
// N connections, each keeping `depth` requests in flight (depth 1 = request/response,
// depth > 1 = pipelined), a get/set mix over a fixed key space with fixed-size values.
// Latency is measured per request from its send to its reply, into log-linear buckets.
// --requests N makes the run a fixed amount of work instead (for valgrind instruction counts).
// One thread, epoll; prints one JSON line. We write our own because memcaslap cannot
// pipeline and reports no percentiles. --tls-ca FILE speaks TLS (blocking sockets: a record
// read once readable arrives whole; bytes left inside the session are drained before the
// next wait).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace {

struct Options {
  std::string host = "127.0.0.1";
  int port = 11211;
  int connections = 50;
  int depth = 1;
  double seconds = 10;
  uint64_t requests = 0;  // when set: stop after this many replies, not after `seconds`
  int keys = 100000;
  int value_size = 100;
  double get_ratio = 0.9;
  bool prefill = false;
  std::string tls_ca;  // speak TLS, verifying the server against this CA
};

SSL_CTX* g_tls = nullptr;

uint64_t nowNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Log-linear latency histogram: 64 sub-buckets per power of two of nanoseconds (~1.6%).
class LatencyHistogram {
 public:
  void record(uint64_t nanos) {
    int exp = nanos < 64 ? 0 : 63 - __builtin_clzll(nanos) - 5;
    uint64_t sub = nanos >> exp;  // in [32, 64) once exp > 0
    size_t index = static_cast<size_t>(exp) * 64 + static_cast<size_t>(sub & 63);
    if (index >= counts_.size()) index = counts_.size() - 1;
    ++counts_[index];
    ++total_;
  }
  double percentileMicros(double p) const {
    uint64_t rank = static_cast<uint64_t>(p * static_cast<double>(total_));
    uint64_t seen = 0;
    for (size_t i = 0; i < counts_.size(); ++i) {
      seen += counts_[i];
      if (seen > rank) {
        uint64_t exp = i / 64, sub = i % 64;
        uint64_t nanos = exp == 0 ? sub : ((32 + (sub & 31)) << exp);
        return static_cast<double>(nanos) / 1000.0;
      }
    }
    return 0;
  }
  uint64_t total() const { return total_; }

 private:
  std::array<uint64_t, 64 * 40> counts_{};
  uint64_t total_ = 0;
};

struct Connection {
  int fd = -1;
  SSL* ssl = nullptr;
  std::string out;
  std::string in;
  std::deque<std::pair<bool, uint64_t>> pending;  // (is_get, sent_at)
};

struct Totals {
  uint64_t gets = 0, hits = 0, sets = 0, errors = 0;
};

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "memzone-loadgen: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

int connectTo(const Options& o) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) die("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(o.port));
  if (::inet_pton(AF_INET, o.host.c_str(), &addr.sin_addr) != 1) die("bad host");
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) die("connect");
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

void startTls(Connection& c) {
  if (g_tls == nullptr) return;
  c.ssl = SSL_new(g_tls);
  SSL_set_fd(c.ssl, c.fd);
  if (SSL_connect(c.ssl) != 1) {
    ERR_print_errors_fp(stderr);
    die("tls handshake");
  }
}

ssize_t sendSome(Connection& c, const char* data, size_t size) {
  if (c.ssl == nullptr) return ::send(c.fd, data, size, MSG_NOSIGNAL);
  int n = SSL_write(c.ssl, data, static_cast<int>(size));
  return n > 0 ? n : -1;
}

ssize_t recvSome(Connection& c, char* data, size_t size) {
  if (c.ssl == nullptr) return ::recv(c.fd, data, size, 0);
  int n = SSL_read(c.ssl, data, static_cast<int>(size));
  return n > 0 ? n : (SSL_get_error(c.ssl, n) == SSL_ERROR_ZERO_RETURN ? 0 : -1);
}

class Workload {
 public:
  explicit Workload(const Options& o) : o_(o), rng_(12345), value_(o.value_size, 'v') {}

  void appendRequest(Connection& c) {
    int key = std::uniform_int_distribution<int>(0, o_.keys - 1)(rng_);
    bool is_get = std::uniform_real_distribution<double>(0, 1)(rng_) < o_.get_ratio;
    appendFor(c, key, is_get);
  }

  void appendFor(Connection& c, int key, bool is_get) {
    char line[96];
    int n = is_get ? std::snprintf(line, sizeof line, "get key:%d\r\n", key)
                   : std::snprintf(line, sizeof line, "set key:%d 0 0 %d\r\n", key, o_.value_size);
    c.out.append(line, static_cast<size_t>(n));
    if (!is_get) {
      c.out.append(value_);
      c.out.append("\r\n");
    }
    c.pending.emplace_back(is_get, nowNanos());
  }

 private:
  const Options& o_;
  std::mt19937_64 rng_;
  std::string value_;
};

// Length of the complete reply at the front of `in`, or 0 if more bytes are needed.
size_t completeReply(std::string_view in, bool is_get, bool& hit, bool& error) {
  size_t eol = in.find("\r\n");
  if (eol == std::string_view::npos) return 0;
  std::string_view line = in.substr(0, eol);
  if (!is_get || line == "END") {
    error = is_get ? false : line != "STORED";
    hit = false;
    return eol + 2;
  }
  if (line.substr(0, 6) != "VALUE ") {
    error = true;
    return eol + 2;
  }
  size_t last_space = line.rfind(' ');
  size_t bytes = std::strtoul(std::string(line.substr(last_space + 1)).c_str(), nullptr, 10);
  size_t total = eol + 2 + bytes + 2 + 5;  // value, CRLF, "END\r\n"
  if (in.size() < total) return 0;
  hit = true;
  error = false;
  return total;
}

bool flushOut(Connection& c) {
  while (!c.out.empty()) {
    ssize_t n = sendSome(c, c.out.data(), c.out.size());
    if (n < 0) return errno == EAGAIN;
    c.out.erase(0, static_cast<size_t>(n));
  }
  return true;
}

void prefill(const Options& o) {
  Options one = o;
  Workload workload(one);
  Connection c;
  c.fd = connectTo(o);
  startTls(c);
  for (int key = 0; key < o.keys;) {
    // Under TLS one batch fits one record: memcached -Z strands what follows a value whose
    // tail it reads from the next record (see BackendConnection's record boundaries).
    int batch = c.ssl != nullptr ? 100 : 200;
    for (int i = 0; i < batch && key < o.keys; ++i, ++key) workload.appendFor(c, key, false);
    if (!flushOut(c)) die("prefill send");
    while (!c.pending.empty()) {
      char buf[65536];
      ssize_t n = recvSome(c, buf, sizeof buf);
      if (n <= 0) die("prefill recv");
      c.in.append(buf, static_cast<size_t>(n));
      bool hit, error;
      size_t used;
      while (!c.pending.empty() && (used = completeReply(c.in, false, hit, error)) > 0) {
        if (error) die("prefill got an error reply");
        c.in.erase(0, used);
        c.pending.pop_front();
      }
    }
  }
  ::close(c.fd);
}

Options parseOptions(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view flag = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "memzone-loadgen: %s needs a value\n", argv[i]);
        std::exit(2);
      }
      return argv[++i];
    };
    if (flag == "--server") {
      std::string s = value();
      size_t colon = s.rfind(':');
      o.host = s.substr(0, colon);
      o.port = std::atoi(s.c_str() + colon + 1);
    } else if (flag == "--connections")
      o.connections = std::atoi(value());
    else if (flag == "--depth")
      o.depth = std::atoi(value());
    else if (flag == "--seconds")
      o.seconds = std::atof(value());
    else if (flag == "--requests")
      o.requests = std::strtoull(value(), nullptr, 10);
    else if (flag == "--keys")
      o.keys = std::atoi(value());
    else if (flag == "--value-size")
      o.value_size = std::atoi(value());
    else if (flag == "--get-ratio")
      o.get_ratio = std::atof(value());
    else if (flag == "--prefill")
      o.prefill = true;
    else if (flag == "--tls-ca")
      o.tls_ca = value();
    else {
      std::fprintf(stderr,
                   "usage: memzone-loadgen --server HOST:PORT [--connections 50] [--depth 1] "
                   "[--seconds 10 | --requests N] [--keys 100000] [--value-size 100] "
                   "[--get-ratio 0.9] [--prefill] [--tls-ca FILE]\n");
      std::exit(2);
    }
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parseOptions(argc, argv);
  if (!o.tls_ca.empty()) {
    g_tls = SSL_CTX_new(TLS_client_method());
    if (SSL_CTX_load_verify_locations(g_tls, o.tls_ca.c_str(), nullptr) != 1) die("--tls-ca");
    SSL_CTX_set_verify(g_tls, SSL_VERIFY_PEER, nullptr);
  }
  if (o.prefill) prefill(o);

  Workload workload(o);
  std::vector<Connection> conns(static_cast<size_t>(o.connections));
  int ep = ::epoll_create1(0);
  for (size_t i = 0; i < conns.size(); ++i) {
    Connection& c = conns[i];
    c.fd = connectTo(o);
    startTls(c);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = i;
    ::epoll_ctl(ep, EPOLL_CTL_ADD, c.fd, &ev);
  }

  LatencyHistogram histogram;
  Totals totals;
  uint64_t start = nowNanos();
  uint64_t end = o.requests > 0 ? UINT64_MAX : start + static_cast<uint64_t>(o.seconds * 1e9);
  // With --requests the run is a fixed amount of work (for instruction counts under
  // valgrind): exactly that many requests are sent, and the run ends when all are answered.
  uint64_t issued = 0;
  auto mayIssue = [&]() { return o.requests == 0 || issued < o.requests; };
  for (auto& c : conns) {
    for (int d = 0; d < o.depth && mayIssue(); ++d, ++issued) workload.appendRequest(c);
    if (!flushOut(c)) die("send");
  }
  std::vector<epoll_event> events(conns.size());
  char buf[1 << 16];
  uint64_t now = start;
  while (now < end && (o.requests == 0 || histogram.total() < o.requests)) {
    int n = ::epoll_wait(ep, events.data(), static_cast<int>(events.size()), 100);
    now = nowNanos();
    for (int e = 0; e < n; ++e) {
      Connection& c = conns[events[static_cast<size_t>(e)].data.u64];
      ssize_t got = recvSome(c, buf, sizeof buf);
      if (got == 0) {
        std::fprintf(stderr, "memzone-loadgen: server closed a connection\n");
        return 1;
      }
      if (got < 0) continue;
      c.in.append(buf, static_cast<size_t>(got));
      while (c.ssl != nullptr && SSL_pending(c.ssl) > 0) {
        got = recvSome(c, buf, sizeof buf);
        if (got <= 0) break;
        c.in.append(buf, static_cast<size_t>(got));
      }
      size_t used_total = 0;
      int completed = 0;
      while (!c.pending.empty()) {
        bool hit = false, error = false;
        size_t used = completeReply(std::string_view(c.in).substr(used_total),
                                    c.pending.front().first, hit, error);
        if (used == 0) break;
        used_total += used;
        histogram.record(now - c.pending.front().second);
        if (c.pending.front().first) {
          ++totals.gets;
          totals.hits += hit;
        } else {
          ++totals.sets;
        }
        if (error && totals.errors++ == 0) {  // the first one says what went wrong
          std::string_view reply = std::string_view(c.in).substr(used_total - used, used);
          std::fprintf(stderr, "memzone-loadgen: first error reply: %.*s\n",
                       static_cast<int>(std::min<size_t>(reply.size(), 200)), reply.data());
        }
        c.pending.pop_front();
        ++completed;
      }
      c.in.erase(0, used_total);
      if (now < end) {
        for (int i = 0; i < completed && mayIssue(); ++i, ++issued) workload.appendRequest(c);
        if (!flushOut(c)) die("send");
      }
    }
  }
  double elapsed = static_cast<double>(nowNanos() - start) / 1e9;
  // Requests sent more than a second before the end and still without a reply: a server
  // that stalls a client shows here, not in errors (in flight at the end is normal).
  uint64_t unanswered = 0;
  uint64_t stale_before = nowNanos() - 1000000000ull;
  for (const auto& c : conns) {
    for (const auto& [is_get, sent_at] : c.pending) unanswered += sent_at < stale_before;
  }
  std::printf(
      "{\"ops\": %llu, \"seconds\": %.3f, \"ops_per_sec\": %.0f, \"p50_us\": %.1f, "
      "\"p99_us\": %.1f, \"p999_us\": %.1f, \"gets\": %llu, \"hits\": %llu, \"sets\": %llu, "
      "\"errors\": %llu, \"unanswered_1s\": %llu}\n",
      static_cast<unsigned long long>(histogram.total()), elapsed,
      static_cast<double>(histogram.total()) / elapsed, histogram.percentileMicros(0.50),
      histogram.percentileMicros(0.99), histogram.percentileMicros(0.999),
      static_cast<unsigned long long>(totals.gets), static_cast<unsigned long long>(totals.hits),
      static_cast<unsigned long long>(totals.sets), static_cast<unsigned long long>(totals.errors),
      static_cast<unsigned long long>(unanswered));
  return totals.errors == 0 ? 0 : 1;
}
