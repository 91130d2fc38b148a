#include "proxy/topology/controller_client.h"

#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netdb.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <random>

#include "memzone/ops/log.h"
#include "memzone/v1/topology.grpc.pb.h"

namespace memzone::topology {
namespace {

// The controller puts this key in its initial metadata: the stream is established.
constexpr const char* kControllerMetadataKey = "memzone-controller";
// A stream that ends sooner than this after it started is followed by a short pause.
constexpr auto kMinHealthyStream = std::chrono::seconds(1);

bool splitHostPort(const std::string& entry, std::string& host, std::string& port) {
  size_t colon = entry.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == entry.size()) return false;
  host = entry.substr(0, colon);
  port = entry.substr(colon + 1);
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return false;
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string::npos) {
    return false;  // an IPv6 address needs brackets
  }
  unsigned n = 0;
  auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), n);
  return ec == std::errc() && p == port.data() + port.size() && n >= 1 && n <= 65535;
}

}  // namespace

std::string parseControllerTargets(const std::string& list, std::vector<std::string>& out) {
  out.clear();
  size_t start = 0;
  while (true) {
    size_t comma = list.find(',', start);
    std::string entry = list.substr(start, comma == std::string::npos ? comma : comma - start);
    std::string host, port;
    if (!splitHostPort(entry, host, port)) {
      return "--controller: \"" + entry + "\" is not HOST:PORT (a list: HOST:PORT,HOST:PORT)";
    }
    out.push_back(entry);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return "";
}

ControllerClient::ControllerClient(ControllerClientOptions options, ApplyFn apply, StateFn on_state,
                                   HealthFn health, DirtyFn on_dirty, EverywhereFn on_everywhere)
    : options_(std::move(options)),
      apply_(std::move(apply)),
      on_state_(std::move(on_state)),
      health_(std::move(health)),
      on_dirty_(std::move(on_dirty)),
      on_everywhere_(std::move(on_everywhere)),
      applied_version_(options_.initial_version) {}

ControllerClient::~ControllerClient() { stop(); }

void ControllerClient::start() {
  thread_ = std::thread([this] { run(); });
  if (health_) health_thread_ = std::thread([this] { runHealth(); });
}

void ControllerClient::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    if (context_ != nullptr) context_->TryCancel();
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (health_thread_.joinable()) health_thread_.join();
}

bool ControllerClient::waitFor(uint32_t ms) {
  std::unique_lock lock(mu_);
  wake_.wait_for(lock, std::chrono::milliseconds(ms), [this] { return stopping_; });
  return !stopping_;
}

bool ControllerClient::waitForHealth(uint32_t ms) {
  std::unique_lock lock(mu_);
  wake_.wait_for(lock, std::chrono::milliseconds(ms),
                 [this] { return stopping_ || health_changed_; });
  health_changed_ = false;
  return !stopping_;
}

void ControllerClient::healthChanged() {
  {
    std::lock_guard lock(mu_);
    health_changed_ = true;
  }
  wake_.notify_all();
}

std::vector<ControllerClient::OwedServer> ControllerClient::reportedThrough(uint64_t seen) {
  // The newest report the controller had seen; older ones are settled.
  size_t newest = sent_reports_.size();
  for (size_t i = 0; i < sent_reports_.size() && sent_reports_[i].seq <= seen; ++i) newest = i;
  if (newest == sent_reports_.size()) return {};
  sent_reports_.erase(sent_reports_.begin(), sent_reports_.begin() + newest);
  // Only servers every later report (not yet seen) still lists: one of them may say clean.
  std::vector<OwedServer> out;
  for (const OwedServer& o : sent_reports_.front().owed) {
    bool listed = true;
    for (size_t i = 1; i < sent_reports_.size() && listed; ++i) {
      const auto& later = sent_reports_[i].owed;
      listed = std::any_of(later.begin(), later.end(),
                           [&](const OwedServer& l) { return l.address == o.address; });
    }
    if (listed) out.push_back(o);
  }
  return out;
}

bool ControllerClient::stopping() {
  std::lock_guard lock(mu_);
  return stopping_;
}

v1::TopologyRequest ControllerClient::message(const std::string& nonce) {
  // Under mu_ (the caller holds it).
  v1::TopologyRequest m;
  m.set_node_id(options_.node_id);
  m.set_node_name(options_.node_name);
  m.set_zone(options_.zone);
  m.set_version_applied(applied_version_);
  m.set_response_nonce(nonce);
  m.set_wants_applied_everywhere(static_cast<bool>(on_everywhere_));
  m.set_wants_recent(true);  // bootstrap.cc replays TopologySnapshot.recent
  if (health_) {
    m.set_reports_health(true);
    for (const auto& a : health_report_.down) m.add_backends_down(a);
    m.set_reports_owed(true);
    for (const auto& o : health_report_.owed) m.add_backends_owed(o.address);
    m.set_dirty_applied(dirty_applied_);
    m.set_report_seq(++report_seq_);
    sent_reports_.push_back({report_seq_, health_report_.owed});
    // A controller that stopped answering reports must not grow this: the oldest go (what
    // they could confirm is then never confirmed; writes fall back to the bound).
    if (sent_reports_.size() > 256) sent_reports_.erase(sent_reports_.begin());
    health_sent_ = health_report_;
  }
  return m;
}

void ControllerClient::runHealth() {
  while (waitForHealth(options_.health_interval_ms)) {
    HealthReport health = health_();
    std::lock_guard write_lock(write_mu_);  // before mu_: the stream cannot go away meanwhile
    v1::TopologyRequest report;
    Stream* stream = nullptr;
    {
      std::lock_guard lock(mu_);
      health_report_ = std::move(health);
      if (stream_ == nullptr || health_report_ == health_sent_) continue;
      report = message("");  // no nonce: a report, not an answer
      stream = stream_;
    }
    stream->Write(report);  // a failure ends the stream; the reader sees it
  }
}

std::vector<std::pair<std::string, std::string>> ControllerClient::resolveAll() {
  std::vector<std::pair<std::string, std::string>> out;
  for (const std::string& entry : options_.targets) {
    std::string host, port;
    if (!splitHostPort(entry, host, port)) continue;
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* result = nullptr;
    int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &result);
    if (rc != 0) {
      ops::logEvent(ops::LogLevel::kWarn, "resolve:" + entry, "controller %s: %s", entry.c_str(),
                    gai_strerror(rc));
      continue;
    }
    std::vector<std::pair<std::string, std::string>> found;
    for (addrinfo* a = result; a != nullptr; a = a->ai_next) {
      char ip[INET6_ADDRSTRLEN] = {};
      std::string target, shown;
      if (a->ai_family == AF_INET) {
        inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ai_addr)->sin_addr, ip, sizeof(ip));
        shown = std::string(ip) + ":" + port;
        target = "ipv4:" + shown;
      } else if (a->ai_family == AF_INET6) {
        inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(a->ai_addr)->sin6_addr, ip,
                  sizeof(ip));
        shown = "[" + std::string(ip) + "]:" + port;
        target = "ipv6:" + shown;
      } else {
        continue;
      }
      auto pair = std::make_pair(target, shown);
      if (std::find(out.begin(), out.end(), pair) == out.end()) out.push_back(pair);
    }
    freeaddrinfo(result);
  }
  return out;
}

namespace {
constexpr auto kFlatBackoff = std::chrono::seconds(2);
}  // namespace

void ControllerClient::run() {
  std::minstd_rand rng(std::random_device{}());
  uint32_t backoff_ms = 0;
  size_t failures = 0;  // failed attempts in this round
  // When the current outage began: for its first kFlatBackoff the retries stay at the
  // initial backoff, so a short outage (a controller restart) ends within one of them of the
  // controller's return, however loaded the machine (issue 24: <= 1.5 s after a 1 s outage).
  std::chrono::steady_clock::time_point outage_started{};
  std::vector<std::pair<std::string, std::string>> addresses;
  size_t next = 0;
  bool first_round = true;
  while (true) {
    if (addresses.empty() || failures >= addresses.size()) {
      if (failures > 0) {
        // Every address failed (or none resolved): back off before the next round.
        // gRPC's connection backoff shape: x1.6 per failed round, after a flat start.
        auto now = std::chrono::steady_clock::now();
        if (backoff_ms == 0) outage_started = now;
        backoff_ms = backoff_ms == 0 || now - outage_started < kFlatBackoff
                         ? options_.initial_backoff_ms
                         : std::min(backoff_ms * 8 / 5, options_.max_backoff_ms);
        uint32_t spread = backoff_ms / 5;
        uint32_t delay = backoff_ms - spread + (spread ? rng() % (2 * spread + 1) : 0);
        ops::logEvent(ops::LogLevel::kWarn, std::string("controller-retry"),
                      "no controller reachable; retrying in %u ms", delay);
        if (!waitFor(delay)) return;
      }
      addresses = resolveAll();  // names may point elsewhere now (a replaced pod)
      failures = 0;
      if (addresses.empty()) {
        failures = 1;
        continue;
      }
      if (first_round) next = rng() % addresses.size();  // spread proxies over the replicas
      first_round = false;
    }
    if (stopping()) return;
    const auto& [target, shown] = addresses[next % addresses.size()];
    ++next;
    auto started = std::chrono::steady_clock::now();
    // A loaded controller (a restart storm: every proxy at once) may take longer than 2 s
    // to complete handshakes; giving up sooner would only repeat the work. The bound grows
    // with the backoff.
    uint32_t connect_timeout_ms = std::max(options_.connect_timeout_ms, 2 * backoff_ms);
    Outcome outcome = runStream(target, shown, connect_timeout_ms);
    if (outcome == Outcome::kStopped) return;
    if (outcome != Outcome::kEstablished) {
      ++failures;
      continue;
    }
    // The controller answered: the backoff resets (gRPC's convention), however short the
    // stream, so the next outage starts from the initial backoff again.
    backoff_ms = 0;
    failures = 0;
    if (std::chrono::steady_clock::now() - started < kMinHealthyStream) {
      // A controller that accepts and drops must not make the proxy spin: a short stream
      // waits the initial backoff before the next attempt (the backoff does not grow).
      uint32_t spread = options_.initial_backoff_ms / 5;
      uint32_t delay =
          options_.initial_backoff_ms - spread + (spread ? rng() % (2 * spread + 1) : 0);
      if (!waitFor(delay)) return;
    }
  }
}

ControllerClient::Outcome ControllerClient::runStream(const std::string& address,
                                                      const std::string& shown,
                                                      uint32_t connect_timeout_ms) {
  if (on_state_) on_state_(ControllerState::kConnecting);
  auto attempt_started = std::chrono::steady_clock::now();
  grpc::ChannelArguments args;
  // A dead controller (or a silent network) is noticed within ~8 s, not at TCP's pace.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 5000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 3000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // A few KiB now and then: no bandwidth-delay probing (a ping per message received).
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  // This channel makes one connection attempt: retries (and their backoff) are ours alone.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  // The name the controller's certificate is checked against, whichever address this is.
  if (options_.credentials) args.SetSslTargetNameOverride(options_.server_name);
  auto channel = grpc::CreateCustomChannel(
      address, options_.credentials ? options_.credentials : grpc::InsecureChannelCredentials(),
      args);

  // Connect, bounded; a refused connection fails at once.
  auto deadline = std::chrono::system_clock::now() + std::chrono::milliseconds(connect_timeout_ms);
  grpc_connectivity_state state = channel->GetState(true);
  while (state != GRPC_CHANNEL_READY) {
    if (state == GRPC_CHANNEL_TRANSIENT_FAILURE || state == GRPC_CHANNEL_SHUTDOWN) {
      if (options_.on_connect_failed) options_.on_connect_failed(shown, attempt_started);
      return Outcome::kFailed;
    }
    auto slice =
        std::min(deadline, std::chrono::system_clock::now() + std::chrono::milliseconds(100));
    if (!channel->WaitForStateChange(state, slice)) {
      if (stopping()) return Outcome::kStopped;
      if (std::chrono::system_clock::now() >= deadline) {
        ops::logEvent(ops::LogLevel::kWarn, "controller-connect:" + shown,
                      "controller %s: no connection within %u ms", shown.c_str(),
                      connect_timeout_ms);
        return Outcome::kFailed;
      }
    }
    state = channel->GetState(true);
  }

  auto stub = v1::TopologyService::NewStub(channel);
  grpc::ClientContext context;
  {
    std::lock_guard lock(mu_);
    if (stopping_) return Outcome::kStopped;
    context_ = &context;
  }
  std::unique_ptr<Stream> stream = stub->StreamTopology(&context);
  // The hello says what the proxy owes now (debts restored from --state-dir included), not
  // what the health thread saw up to a second ago.
  HealthReport health = health_ ? health_() : HealthReport{};
  v1::TopologyRequest hello;
  {
    std::lock_guard lock(mu_);
    if (health_) health_report_ = std::move(health);
    dirty_applied_ = 0;  // generations and report numbers are per stream
    report_seq_ = 0;
    sent_reports_.clear();
    hello = message("");
    // What the last controller said is dirty: a restarted one keeps it for its grace.
    for (const std::string& a : dirty_seen_) hello.add_dirty_seen(a);
  }
  bool established = false;
  bool everywhere_said = false;  // this stream's controller said what is applied everywhere
  auto establish = [&] {
    established = true;
    {
      std::lock_guard lock(mu_);
      stream_ = stream.get();
    }
    if (on_state_) on_state_(ControllerState::kConnected);
    ops::logEvent(ops::LogLevel::kInfo, "controller-connected:" + shown,
                  "controller %s: stream established (serving %s)", shown.c_str(),
                  applied_version_.empty() ? "nothing yet" : applied_version_.c_str());
  };
  if (stream->Write(hello)) {
    // Our controllers send headers at once; an older one only with its first snapshot.
    stream->WaitForInitialMetadata();
    if (context.GetServerInitialMetadata().count(kControllerMetadataKey) > 0) establish();
    v1::TopologySnapshot snapshot;
    while (stream->Read(&snapshot)) {
      if (!established) establish();
      if (snapshot.version().empty()) {
        if (on_everywhere_ && snapshot.has_applied_everywhere()) {
          everywhere_said = true;
          on_everywhere_(snapshot.applied_everywhere());
        }
        // The dirty set alone: not a topology, never answered; but once applied, the
        // controller hears so (a report), and confirms to the proxies waiting on it.
        if (!on_dirty_ || !snapshot.has_dirty()) continue;
        std::vector<OwedServer> reported;
        {
          std::lock_guard lock(mu_);
          reported = reportedThrough(snapshot.dirty().report_seen());
        }
        on_dirty_(snapshot.dirty(), reported);
        {
          std::lock_guard lock(mu_);
          dirty_seen_.assign(snapshot.dirty().addresses().begin(),
                             snapshot.dirty().addresses().end());
        }
        std::lock_guard write_lock(write_mu_);
        v1::TopologyRequest report;
        {
          std::lock_guard lock(mu_);
          if (snapshot.dirty().generation() == dirty_applied_) continue;
          dirty_applied_ = snapshot.dirty().generation();
          report = message("");
        }
        if (!stream->Write(report)) break;
        continue;
      }
      std::string refused = apply_(snapshot);
      std::lock_guard write_lock(write_mu_);
      v1::TopologyRequest answer;
      {
        std::lock_guard lock(mu_);
        if (refused.empty()) applied_version_ = snapshot.version();
        answer = message(snapshot.nonce());
      }
      if (!refused.empty()) {
        answer.set_error_detail(refused);
        ops::logEvent(ops::LogLevel::kError, "nack", "NACK topology %s: %s",
                      snapshot.version().c_str(), refused.c_str());
      }
      if (!stream->Write(answer)) break;
    }
  }
  // What this controller said stops being true without it: other proxies may connect, or
  // apply, or not, while nobody tells us.
  if (everywhere_said) on_everywhere_("");
  // Tear down: no report may be writing when the stream goes (one stuck in a write is
  // cancelled; otherwise Finish says why the controller ended the stream).
  {
    std::lock_guard lock(mu_);
    stream_ = nullptr;
  }
  {
    std::unique_lock write_lock(write_mu_, std::try_to_lock);
    if (!write_lock.owns_lock()) {
      context.TryCancel();
      write_lock.lock();
    }
  }
  grpc::Status status = stream->Finish();
  bool stop;
  {
    std::lock_guard lock(mu_);
    context_ = nullptr;
    stop = stopping_;
  }
  if (stop) return Outcome::kStopped;
  if (on_state_) on_state_(ControllerState::kDisconnected);
  ops::logEvent(ops::LogLevel::kWarn, "controller-stream", "controller %s: stream ended (%s)",
                shown.c_str(),
                status.error_message().empty() ? "closed" : status.error_message().c_str());
  return established ? Outcome::kEstablished : Outcome::kFailed;
}

}  // namespace memzone::topology
