#include "proxy/server/read_repair.h"

#include <string>

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
    ByteBuffer& out = source->output();
    out.append("mg ");
    out.append(key_);
    out.append(" v t f\r\n");
    source->commit(this, kFetch, protocol::ReplyShape::kMeta);
    return true;
  }

  void onBackendReply(uint32_t tag, std::string_view reply, protocol::ReplyCode code) override {
    if (tag == kMove) {
      if (code != protocol::ReplyCode::kOk && code != protocol::ReplyCode::kNotFound) {
        move_from_->invalidate(key_);
      }
      delete this;
      return;
    }
    if (tag == kFetch && code == protocol::ReplyCode::kHit && store(reply)) return;
    if (tag == kStore && code == protocol::ReplyCode::kOk) {
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
        ByteBuffer& out = move_from_->output();
        out.append("md ");
        out.append(key_);
        out.append("\r\n");
        move_from_->commit(this, kMove, protocol::ReplyShape::kMeta);
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

  // `reply` is "VA <n> t<ttl> f<flags>\r\n<data>\r\n". Returns false when nothing was sent.
  bool store(std::string_view reply) {
    size_t eol = reply.find("\r\n");
    protocol::MetaValueHeader head;
    if (eol == std::string_view::npos ||
        !protocol::parseMetaValueHeader(reply.substr(0, eol), head) ||
        reply.size() < eol + 2 + head.length + 2) {
      return false;
    }
    if (!protocol::worthCopying(head.ttl) || target_->admit()) return false;
    ByteBuffer& out = target_->output();
    protocol::appendMetaAddHead(key_, head.length, head.ttl, head.flags, out);
    out.append(reply.substr(eol + 2, head.length + 2));
    target_->commit(this, kStore, protocol::ReplyShape::kMeta);
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
