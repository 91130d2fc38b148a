#include "proxy/topology/controller_client.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cstdio>
#include <random>

#include "memzone/ops/log.h"
#include "memzone/v1/topology.grpc.pb.h"

namespace memzone::topology {

ControllerClient::ControllerClient(ControllerClientOptions options, ApplyFn apply, StateFn on_state)
    : options_(std::move(options)),
      apply_(std::move(apply)),
      on_state_(std::move(on_state)),
      applied_version_(options_.initial_version) {}

ControllerClient::~ControllerClient() { stop(); }

void ControllerClient::start() {
  thread_ = std::thread([this] { run(); });
}

void ControllerClient::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    if (context_ != nullptr) context_->TryCancel();
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool ControllerClient::waitBackoff(uint32_t ms) {
  std::unique_lock lock(mu_);
  wake_.wait_for(lock, std::chrono::milliseconds(ms), [this] { return stopping_; });
  return !stopping_;
}

void ControllerClient::run() {
  grpc::ChannelArguments args;
  // A dead controller (or a silent network) is noticed within ~8 s, not at TCP's pace.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 5000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 3000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, static_cast<int>(options_.max_backoff_ms));
  auto channel =
      grpc::CreateCustomChannel(options_.target, grpc::InsecureChannelCredentials(), args);
  auto stub = v1::TopologyService::NewStub(channel);
  std::minstd_rand rng(std::random_device{}());
  uint32_t backoff_ms = 0;

  while (true) {
    if (on_state_) on_state_(ControllerState::kConnecting);
    grpc::ClientContext context;
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      context_ = &context;
    }
    auto stream = stub->StreamTopology(&context);
    v1::TopologyRequest hello;
    hello.set_node_id(options_.node_id);
    hello.set_node_name(options_.node_name);
    hello.set_zone(options_.zone);
    hello.set_version_applied(applied_version_);
    bool got_snapshot = false;
    if (stream->Write(hello)) {
      v1::TopologySnapshot snapshot;
      while (stream->Read(&snapshot)) {
        if (!got_snapshot && on_state_) on_state_(ControllerState::kConnected);
        got_snapshot = true;
        std::string refused = apply_(snapshot);
        v1::TopologyRequest answer = hello;
        answer.set_response_nonce(snapshot.nonce());
        if (refused.empty()) {
          applied_version_ = snapshot.version();
        } else {
          answer.set_error_detail(refused);
          ops::logEvent(ops::LogLevel::kError, "nack", "NACK topology %s: %s",
                        snapshot.version().c_str(), refused.c_str());
        }
        answer.set_version_applied(applied_version_);
        if (!stream->Write(answer)) break;
      }
    }
    grpc::Status status = stream->Finish();
    {
      std::lock_guard lock(mu_);
      context_ = nullptr;
      if (stopping_) return;
    }
    if (on_state_) on_state_(ControllerState::kDisconnected);
    // Capped exponential backoff with +-20% jitter; a stream that delivered starts over.
    backoff_ms = got_snapshot || backoff_ms == 0
                     ? options_.initial_backoff_ms
                     : std::min(backoff_ms * 2, options_.max_backoff_ms);
    uint32_t spread = backoff_ms / 5;
    uint32_t delay = backoff_ms - spread + (spread ? rng() % (2 * spread + 1) : 0);
    ops::logEvent(ops::LogLevel::kWarn, "controller-stream",
                  "controller %s: stream ended (%s); retrying in %u ms", options_.target.c_str(),
                  status.error_message().empty() ? "closed" : status.error_message().c_str(),
                  delay);
    if (!waitBackoff(delay)) return;
  }
}

}  // namespace memzone::topology
