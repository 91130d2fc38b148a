#include "proxy/backend/empty_server_watch.h"

#include "proxy/event/event_base.h"

namespace memzone::backend {
namespace {

// One check: `mg <key> T<ttl>` (refreshes the TTL when present), then, when missing,
// `ms <key> 1 T<ttl>` to plant it again. Owns and frees itself.
class SentinelCheck final : public ReplySink {
 public:
  SentinelCheck(EmptyServerWatch& watch, BackendRegistry& registry, TopologyView* view,
                BackendServer* server, uint32_t warmup_ms)
      : watch_(watch),
        registry_(registry),
        view_(view),
        server_(server),
        address_(server->address()),
        warmup_ms_(warmup_ms) {
    registry_.pin(view_);
  }
  ~SentinelCheck() override {
    watch_.onDone(address_);
    registry_.unpin(view_);
  }

  void start() {
    ByteBuffer& out = server_->output();
    out.append("mg ");
    out.append(watch_.key());
    out.append(" T" + std::to_string(EmptyServerWatch::kSentinelTtlS) + " ");
    out.append(server_->opaque().view());
    out.append("\r\n");
    server_->commit(this, kCheck);
  }

  void onBackendReply(uint32_t tag, const protocol::BackendReply& reply) override {
    const protocol::ReplyCode code = reply.code;
    if (tag == kCheck && code == protocol::ReplyCode::kMiss) {
      watch_.onMissing(server_, warmup_ms_);
      if (!server_->admit()) {
        ByteBuffer& out = server_->output();
        out.append("ms ");
        out.append(watch_.key());
        out.append(" 1 T" + std::to_string(EmptyServerWatch::kSentinelTtlS) + " ");
        out.append(server_->opaque().view());
        out.append("\r\nx\r\n");
        server_->commit(this, kPlant);
        return;
      }
    } else if (tag == kCheck &&
               (code == protocol::ReplyCode::kHit || code == protocol::ReplyCode::kOk)) {
      watch_.onPresent(address_);
    } else if (tag == kPlant &&
               (code == protocol::ReplyCode::kStored || code == protocol::ReplyCode::kOk)) {
      watch_.onPresent(address_);
    }
    delete this;
  }
  void onBackendFailure(uint32_t, BackendFailure) override { delete this; }

 private:
  enum Tag : uint32_t { kCheck, kPlant };
  EmptyServerWatch& watch_;
  BackendRegistry& registry_;
  TopologyView* view_;
  BackendServer* server_;
  std::string address_;
  uint32_t warmup_ms_;
};

}  // namespace

void EmptyServerWatch::check() {
  TopologyView* view = registry_.current();
  if (view == nullptr) return;
  // Forget servers that left (rescheduled pods leave their old addresses behind for good).
  std::map<std::string, bool> still;
  for (const PoolView& pv : view->pools) {
    for (const ZoneView& zv : pv.zones) {
      for (BackendServer* server : zv.servers) {
        auto it = planted_.find(server->address());
        if (it != planted_.end()) still.insert(*it);
      }
    }
  }
  planted_.swap(still);
  for (const PoolView& pv : view->pools) {
    if (pv.pool->warmup_ms == 0 || pv.zones.empty()) continue;
    for (BackendServer* server : pv.zones[pv.local_zone].servers) {
      if (!server->up() || server->admit() || inflight_.count(server->address())) continue;
      inflight_[server->address()] = true;
      (new SentinelCheck(*this, registry_, view, server, pv.pool->warmup_ms))->start();
    }
  }
}

void EmptyServerWatch::onMissing(BackendServer* server, uint32_t warmup_ms) {
  auto it = planted_.find(server->address());
  if (it == planted_.end() || !it->second) return;  // never planted: nothing to conclude
  it->second = false;
  // The key this worker planted is gone: the server lost its contents.
  server->setWarmUntilUs(event::nowMicros() + int64_t{warmup_ms} * 1000);
  registry_.windowsChanged();
}

}  // namespace memzone::backend
