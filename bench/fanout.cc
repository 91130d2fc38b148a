// memzone-fanout: N simulated proxies on the real topology stream, for bench/fanout.py.
//
// Each simulated proxy has its own gRPC channel (its own TCP connection, as a real proxy on
// its own node), says hello like memzone-proxy (node id, zone, the version it serves), ACKs
// every snapshot it receives, and reopens its stream when it ends (as a proxy does, the
// channel reconnecting with a 250 ms initial backoff). One callback reactor per stream; no
// thread per proxy.
//
// stdout, one JSON object per line (times: CLOCK_MONOTONIC nanoseconds, the runner's clock):
//   {"event":"established","count":N,"t":...}   every stream is up (first time, and after a storm)
//   {"event":"version","version":V,"first_received":t,"last_ack":t,"acks":[t,...]}
//                                               once all N proxies ACKed version V
// stdin, one command per line: "storm" (cancel every stream at once; each reopens at once),
// "count" (prints {"event":"count","established":n,"snapshots":n}), "quit".
//
//   memzone-fanout --controller HOST:PORT --proxies N [--zone Z]
#include <absl/synchronization/mutex.h>
#include <grpcpp/grpcpp.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "memzone/v1/topology.grpc.pb.h"

namespace {

using memzone::v1::TopologyRequest;
using memzone::v1::TopologySnapshot;

int64_t nowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

class Fanout;

// One simulated proxy's current stream.
class Stream final : public grpc::ClientBidiReactor<TopologyRequest, TopologySnapshot> {
 public:
  Stream(Fanout& fanout, int index);
  void start();
  void cancel() { context_.TryCancel(); }

  void OnReadInitialMetadataDone(bool ok) override;
  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

 private:
  void write(TopologyRequest request);  // one write in flight; the rest queue

  Fanout& fanout_;
  int index_;
  grpc::ClientContext context_;
  TopologySnapshot snapshot_;
  std::mutex mu_;
  bool writing_ = false;
  std::vector<TopologyRequest> queue_;
  TopologyRequest out_;
};

class Fanout {
 public:
  Fanout(std::string target, int proxies, std::string zone)
      : target_(std::move(target)), zone_(std::move(zone)), proxies_(proxies) {
    applied_.resize(proxies);
    streams_.resize(proxies, nullptr);
    for (int i = 0; i < proxies; ++i) {
      grpc::ChannelArguments args;
      args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 5000);
      args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 3000);
      args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
      args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
      args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);            // as memzone-proxy
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a TCP connection per proxy
      // memzone-proxy's reconnect shape: 250 ms growing x1.6 (gRPC's factor) to 10 s, +-20%,
      // and a connect attempt (TCP + HTTP/2 handshake) given 2 s.
      args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 250);
      args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 10000);
      // gRPC's minimum connect timeout; an attempt gets max(this, the backoff), about as a
      // proxy's gets max(2 s, twice the backoff).
      args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 2000);
      auto channel = grpc::CreateCustomChannel(target_, grpc::InsecureChannelCredentials(), args);
      stubs_.push_back(memzone::v1::TopologyService::NewStub(channel));
    }
  }

  void startAll() {
    for (int i = 0; i < proxies_; ++i) startOne(i);
  }

  void startOne(int i) {
    auto* s = new Stream(*this, i);
    {
      std::lock_guard lock(streams_mu_);
      streams_[i] = s;
    }
    s->start();
  }

  void storm() {
    {
      std::lock_guard lock(mu_);
      established_ = 0;
      snapshots_ = 0;
      announced_ = false;
    }
    cancelAll();
  }

  // Under streams_mu_ a stream cannot be deleted (done() takes it first); recursive, because
  // TryCancel may run OnDone, and so done(), on this very thread.
  void cancelAll() {
    std::lock_guard lock(streams_mu_);
    for (size_t i = 0; i < streams_.size(); ++i) {
      if (streams_[i] != nullptr) streams_[i]->cancel();
    }
  }

  memzone::v1::TopologyService::Stub& stub(int i) { return *stubs_[i]; }
  const std::string& zone() const { return zone_; }

  TopologyRequest hello(int i) {
    std::lock_guard lock(mu_);
    TopologyRequest r;
    r.set_node_id("sim-" + std::to_string(getpid()) + "-" + std::to_string(i));
    r.set_zone(zone_);
    r.set_version_applied(applied_[i]);
    r.set_reports_health(true);
    return r;
  }

  void established(int) {
    std::lock_guard lock(mu_);
    if (++established_ == proxies_ && !announced_) {
      announced_ = true;
      printf("{\"event\":\"established\",\"count\":%d,\"t\":%lld}\n", proxies_,
             static_cast<long long>(nowNs()));
      fflush(stdout);
    }
  }

  TopologyRequest received(int i, const TopologySnapshot& snapshot) {
    int64_t t = nowNs();
    std::lock_guard lock(mu_);
    ++snapshots_;
    applied_[i] = snapshot.version();
    Version& v = versions_[snapshot.version()];
    if (v.first_received == 0) v.first_received = t;
    v.acks.push_back(t);
    TopologyRequest ack;
    ack.set_node_id("sim-" + std::to_string(getpid()) + "-" + std::to_string(i));
    ack.set_zone(zone_);
    ack.set_version_applied(snapshot.version());
    ack.set_response_nonce(snapshot.nonce());
    ack.set_reports_health(true);
    if (static_cast<int>(v.acks.size()) == proxies_) {
      std::string line = "{\"event\":\"version\",\"version\":\"" + snapshot.version() +
                         "\",\"first_received\":" + std::to_string(v.first_received) +
                         ",\"last_ack\":" + std::to_string(t) + ",\"acks\":[";
      for (size_t k = 0; k < v.acks.size(); ++k) {
        line += (k ? "," : "") + std::to_string(v.acks[k]);
      }
      line += "]}\n";
      fputs(line.c_str(), stdout);
      fflush(stdout);
    }
    return ack;
  }

  // Called by a stream's OnDone before it deletes itself.
  void done(int i, Stream* s) {
    std::lock_guard lock(streams_mu_);
    if (streams_[i] == s) streams_[i] = nullptr;
    if (!quitting_) startOne(i);  // as a proxy does: reopen (the channel reconnects if needed)
  }

  void count() {
    std::lock_guard lock(mu_);
    printf("{\"event\":\"count\",\"established\":%d,\"snapshots\":%d}\n", established_, snapshots_);
    fflush(stdout);
  }

  void quit() {
    quitting_ = true;
    cancelAll();
  }

 private:
  struct Version {
    int64_t first_received = 0;
    std::vector<int64_t> acks;
  };
  std::string target_;
  std::string zone_;
  int proxies_;
  std::vector<std::unique_ptr<memzone::v1::TopologyService::Stub>> stubs_;
  std::mutex mu_;
  std::vector<std::string> applied_;
  std::recursive_mutex streams_mu_;
  std::vector<Stream*> streams_;  // under streams_mu_
  std::map<std::string, Version> versions_;
  int established_ = 0;
  int snapshots_ = 0;
  bool announced_ = false;
  std::atomic<bool> quitting_{false};
};

Stream::Stream(Fanout& fanout, int index) : fanout_(fanout), index_(index) {}

void Stream::start() {
  context_.set_wait_for_ready(true);  // wait for the channel to (re)connect
  fanout_.stub(index_).async()->StreamTopology(&context_, this);
  out_ = fanout_.hello(index_);
  writing_ = true;
  StartWrite(&out_);
  StartRead(&snapshot_);
  StartCall();
}

void Stream::OnReadInitialMetadataDone(bool ok) {
  if (ok) fanout_.established(index_);
}

void Stream::OnReadDone(bool ok) {
  if (!ok) return;  // OnDone follows
  write(fanout_.received(index_, snapshot_));
  StartRead(&snapshot_);
}

void Stream::write(TopologyRequest request) {
  std::lock_guard lock(mu_);
  if (writing_) {
    queue_.push_back(std::move(request));
    return;
  }
  writing_ = true;
  out_ = std::move(request);
  StartWrite(&out_);
}

void Stream::OnWriteDone(bool ok) {
  std::lock_guard lock(mu_);
  writing_ = false;
  if (!ok || queue_.empty()) return;
  writing_ = true;
  out_ = std::move(queue_.front());
  queue_.erase(queue_.begin());
  StartWrite(&out_);
}

void Stream::OnDone(const grpc::Status&) {
  fanout_.done(index_, this);
  delete this;
}

}  // namespace

int main(int argc, char** argv) {
  // As in memzone-controller: Debian's abseil lock-order tracking stalls thousands of channels.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  std::string target;
  int proxies = 0;
  std::string zone = "zone-a";
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--controller") {
      target = argv[i + 1];
    } else if (flag == "--proxies") {
      proxies = atoi(argv[i + 1]);
    } else if (flag == "--zone") {
      zone = argv[i + 1];
    } else {
      fprintf(stderr, "memzone-fanout: unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  if (target.empty() || proxies <= 0) {
    fprintf(stderr, "usage: memzone-fanout --controller HOST:PORT --proxies N [--zone Z]\n");
    return 2;
  }
  Fanout fanout(target, proxies, zone);
  fanout.startAll();
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line == "storm") {
      fanout.storm();
    } else if (line == "count") {
      fanout.count();
    } else if (line == "quit") {
      break;
    }
  }
  fanout.quit();
  sleep(1);  // let cancelled reactors finish
  return 0;
}
