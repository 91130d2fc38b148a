#include "proxy/server/read_repair.h"

#include <string>

#include "proxy/protocol/backend_request.h"
#include "proxy/protocol/meta_value.h"

namespace memzone::server {
namespace {

class ReadRepair final : public backend::ReplySink {
 public:
  ReadRepair(backend::BackendRegistry& registry, backend::TopologyView* view, std::string_view key,
             backend::BackendServer* target, ProxyStats& stats, metrics::Counter* on_store,
             backend::BackendServer* move_from)
      : registry_(registry),
        view_(view),
        key_(key),
        target_(target),
        stats_(stats),
        on_store_(on_store),
        move_from_(move_from) {
    registry_.pin(view_);
  }
  ~ReadRepair() override { registry_.unpin(view_); }

  // Returns false (and the caller deletes us) when the source cannot be asked.
  bool start(backend::BackendServer* source) {
    if (source->admit() || target_->admit()) return false;
    protocol::encodeFetchForCopy(key_, source->opaque().view(), source->output());
    source->commit(this, kFetch);
    return true;
  }

  void onBackendReply(uint32_t tag, const protocol::BackendReply& reply) override {
    const protocol::ReplyCode code = reply.code;
    if (tag == kMove) {
      if (code != protocol::ReplyCode::kOk && code != protocol::ReplyCode::kNotFound) {
        move_from_->invalidate(key_);
      }
      delete this;
      return;
    }
    if (tag == kFetch && code == protocol::ReplyCode::kHit && store(reply)) return;
    if (tag == kStore && code == protocol::ReplyCode::kOk) {  // HD: stored
      stats_.repairs_stored.add();
      if (on_store_ != nullptr) on_store_->add();
    } else if (tag == kStore && code == protocol::ReplyCode::kNotStored) {
      stats_.repairs_skipped.add();  // the local zone has a value: it wins
    } else if (tag == kFetch && code == protocol::ReplyCode::kMiss) {
      stats_.repairs_skipped.add();  // gone (deleted or expired) since it was served
    } else {
      stats_.repairs_failed.add();
    }
    bool target_has_it = tag == kStore && (code == protocol::ReplyCode::kOk ||
                                           code == protocol::ReplyCode::kNotStored);
    if (target_has_it && move_from_ != nullptr) {
      if (move_from_->admit()) {
        move_from_->invalidate(key_);  // down or saturated: the delete waits for it
      } else {
        protocol::encodeDelete(key_, move_from_->opaque().view(), move_from_->output());
        move_from_->commit(this, kMove);
        return;
      }
    }
    delete this;
  }

  void onBackendFailure(uint32_t tag, backend::BackendFailure failure) override {
    if (tag == kMove) {
      // The copy may still be there: not read until the delete is replayed (the target
      // has the value, so the repair itself stored).
      if (failure != backend::BackendFailure::kRemoved) move_from_->invalidate(key_);
    } else {
      stats_.repairs_failed.add();
    }
    delete this;
  }

 private:
  enum Tag : uint32_t { kFetch, kStore, kMove };

  // `reply` is the VA of "mg <key> v t f". Returns false when nothing was sent.
  bool store(const protocol::BackendReply& reply) {
    std::string_view ttl = "-1";
    std::string_view flags = "0";
    protocol::findReturnFlag(reply.flags, 't', ttl);
    protocol::findReturnFlag(reply.flags, 'f', flags);
    if (!reply.has_value || !protocol::worthCopying(ttl) || target_->admit()) return false;
    ByteBuffer& out = target_->output();
    protocol::encodeAddCopyHead(key_, reply.value.size(), ttl, flags, target_->opaque().view(),
                                out);
    out.append(reply.value);
    out.append("\r\n");
    target_->commit(this, kStore);
    return true;
  }

  backend::BackendRegistry& registry_;
  backend::TopologyView* view_;
  std::string key_;
  backend::BackendServer* target_;
  ProxyStats& stats_;
  metrics::Counter* on_store_;
  backend::BackendServer* move_from_;
};

}  // namespace

void startReadRepair(backend::BackendRegistry& registry, backend::TopologyView* view,
                     std::string_view key, backend::BackendServer* source,
                     backend::BackendServer* target, ProxyStats& stats, metrics::Counter* on_store,
                     bool move) {
  if (source == target) return;
  stats.repairs_started.add();
  auto* repair =
      new ReadRepair(registry, view, key, target, stats, on_store, move ? source : nullptr);
  if (!repair->start(source)) {
    stats.repairs_failed.add();
    delete repair;
  }
}

}  // namespace memzone::server
