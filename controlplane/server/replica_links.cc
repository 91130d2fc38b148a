#include "controlplane/server/replica_links.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <random>

#include "memzone/ops/log.h"
#include "memzone/v1/topology.grpc.pb.h"

namespace memzone::controlplane {

// One stream to one replica, kept up until destroyed.
class ReplicaLinks::Link {
 public:
  Link(const ReplicaLinkOptions& options, DirtyServers& dirty, AppliedEverywhere& everywhere,
       std::string peer, std::string address)
      : options_(options),
        dirty_(dirty),
        everywhere_(everywhere),
        peer_(std::move(peer)),
        address_(std::move(address)) {
    auto changed = [this] {
      {
        std::lock_guard lock(mu_);
        changed_ = true;
      }
      wake_.notify_all();
    };
    subscription_ = dirty_.subscribe(changed);
    everywhere_subscription_ = everywhere_.subscribe(changed);
    thread_ = std::thread([this] { run(); });
  }

  ~Link() {
    dirty_.unsubscribe(subscription_);
    everywhere_.unsubscribe(everywhere_subscription_);
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
      if (context_ != nullptr) context_->TryCancel();
    }
    wake_.notify_all();
    thread_.join();
  }

  const std::string& address() const { return address_; }

 private:
  void run() {
    std::minstd_rand rng(std::random_device{}());
    uint32_t backoff_ms = 0;
    while (true) {
      if (runStream()) backoff_ms = 0;
      backoff_ms = backoff_ms == 0 ? 100 : std::min<uint32_t>(backoff_ms * 2, 5000);
      uint32_t delay = backoff_ms * 4 / 5 + rng() % (backoff_ms * 2 / 5 + 1);
      std::unique_lock lock(mu_);
      wake_.wait_for(lock, std::chrono::milliseconds(delay), [this] { return stopping_; });
      if (stopping_) return;
    }
  }

  // One stream until it fails; true when it was up.
  bool runStream() {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 5000);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 3000);
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    if (options_.credentials && !options_.server_name.empty()) {
      args.SetSslTargetNameOverride(options_.server_name);
    }
    auto channel = grpc::CreateCustomChannel(
        address_, options_.credentials ? options_.credentials : grpc::InsecureChannelCredentials(),
        args);
    // Connect within a second, looking at stopping_ every 100 ms.
    bool connected = false;
    for (int i = 0; i < 10 && !connected; ++i) {
      connected = channel->WaitForConnected(std::chrono::system_clock::now() +
                                            std::chrono::milliseconds(100));
      std::lock_guard lock(mu_);
      if (stopping_) return false;
    }
    if (!connected) {
      ops::logEvent(ops::LogLevel::kWarn, "replica-out:" + peer_,
                    "replica %s at %s: no connection for the dirty-server stream; retrying",
                    peer_.c_str(), address_.c_str());
      return false;
    }
    auto stub = v1::ReplicaService::NewStub(channel);
    grpc::ClientContext context;
    {
      std::lock_guard lock(mu_);
      if (stopping_) return false;
      context_ = &context;
    }
    auto stream = stub->ShareDirty(&context);
    // Until it answers, this replica's proxies may still read what ours owe: hold back.
    dirty_.linkPeer(peer_);
    ops::logEvent(ops::LogLevel::kInfo, "replica-out:" + peer_,
                  "streaming dirty servers to replica %s at %s", peer_.c_str(), address_.c_str());
    std::thread reader([&] {
      v1::ReplicaDirtyApplied applied;
      while (stream->Read(&applied)) dirty_.peerApplied(peer_, applied.generation());
      std::lock_guard lock(mu_);
      read_done_ = true;
      wake_.notify_all();
    });
    uint64_t sent = ~uint64_t{0};
    std::optional<AppliedEverywhere::Local> applied_sent;
    while (true) {
      uint64_t generation = 0;
      std::set<std::string> local = dirty_.local(generation);
      AppliedEverywhere::Local applied = everywhere_.local();
      if (generation != sent || applied_sent != applied) {
        v1::ReplicaDirty message;
        message.set_replica(options_.identity);
        message.set_generation(generation);
        for (const auto& a : local) message.add_addresses(a);
        message.set_proxies_applied(applied.version);
        message.set_no_proxies(!applied.counted);
        if (!stream->Write(message)) break;
        sent = generation;
        applied_sent = applied;
      }
      std::unique_lock lock(mu_);
      wake_.wait(lock, [this] { return stopping_ || changed_ || read_done_; });
      changed_ = false;
      if (stopping_ || read_done_) break;
    }
    context.TryCancel();
    reader.join();
    grpc::Status status = stream->Finish();
    dirty_.unlinkPeer(peer_);
    bool stopping;
    {
      std::lock_guard lock(mu_);
      context_ = nullptr;
      read_done_ = false;
      stopping = stopping_;
    }
    if (!stopping) {
      ops::logEvent(ops::LogLevel::kWarn, "replica-out:" + peer_,
                    "dirty-server stream to replica %s ended (%s)", peer_.c_str(),
                    status.error_message().empty() ? "closed" : status.error_message().c_str());
    }
    return true;
  }

  const ReplicaLinkOptions& options_;
  DirtyServers& dirty_;
  AppliedEverywhere& everywhere_;
  const std::string peer_;
  const std::string address_;
  uint64_t subscription_ = 0;
  uint64_t everywhere_subscription_ = 0;
  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  bool changed_ = false;
  bool read_done_ = false;
  grpc::ClientContext* context_ = nullptr;  // the live stream's, for cancel, under mu_
  std::thread thread_;
};

ReplicaLinks::ReplicaLinks(ReplicaLinkOptions options, DirtyServers& dirty,
                           AppliedEverywhere& everywhere)
    : options_(std::move(options)), dirty_(dirty), everywhere_(everywhere) {}

ReplicaLinks::~ReplicaLinks() { stop(); }

void ReplicaLinks::setPeers(const std::map<std::string, std::string>& peers) {
  std::map<std::string, std::unique_ptr<Link>> gone;
  {
    std::lock_guard lock(mu_);
    if (stopped_) return;
    for (auto it = links_.begin(); it != links_.end();) {
      auto wanted = peers.find(it->first);
      if (wanted == peers.end() || wanted->second != it->second->address()) {
        gone.emplace(it->first, std::move(it->second));
        it = links_.erase(it);
      } else {
        ++it;
      }
    }
    for (const auto& [identity, address] : peers) {
      if (identity == options_.identity || address.empty() || links_.count(identity)) continue;
      links_.emplace(identity,
                     std::make_unique<Link>(options_, dirty_, everywhere_, identity, address));
    }
  }
  gone.clear();  // joins, outside mu_
}

void ReplicaLinks::stop() {
  std::map<std::string, std::unique_ptr<Link>> gone;
  {
    std::lock_guard lock(mu_);
    stopped_ = true;
    gone = std::move(links_);
    links_.clear();
  }
}

}  // namespace memzone::controlplane
