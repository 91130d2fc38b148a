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
    source_ = source;
    protocol::encodeFetchForCopy(key_, source->opaque().view(), source->output());
    source->commit(this, kFetch);
    return true;
  }

  void onBackendReply(uint32_t tag, const protocol::BackendReply& reply) override {
    const protocol::ReplyCode code = reply.code;
    switch (tag) {
      case kFetch:
        if (code == protocol::ReplyCode::kHit && store(reply)) return;
        if (code == protocol::ReplyCode::kMiss) {
          stats_.repairs_skipped.add();  // gone (deleted or expired) since it was served
        } else {
          stats_.repairs_failed.add();
        }
        break;
      case kStore:
        if (code == protocol::ReplyCode::kOk) {  // HD: stored; is the source's item still it?
          std::string_view cas;
          protocol::findReturnFlag(reply.flags, 'c', cas);
          stored_cas_ = cas;
          if (verify()) return;
          undo();
          return;
        }
        if (code == protocol::ReplyCode::kNotStored) {
          stats_.repairs_skipped.add();  // the local zone has a value: it wins
          if (moveFromSource()) return;
        } else {
          stats_.repairs_failed.add();
        }
        break;
      case kVerify:
        if (code == protocol::ReplyCode::kOk && sameCas(reply)) {
          stats_.repairs_stored.add();
          if (on_store_ != nullptr) on_store_->add();
          if (moveFromSource()) return;
          break;
        }
        undo();  // written or deleted at the source since the fetch: our copy may be older
        return;
      case kUndo:
        if (code != protocol::ReplyCode::kOk && code != protocol::ReplyCode::kNotFound &&
            code != protocol::ReplyCode::kExists) {
          target_->invalidate(key_);
        }
        stats_.repairs_skipped.add();
        break;
      case kMove:
        if (code != protocol::ReplyCode::kOk && code != protocol::ReplyCode::kNotFound) {
          move_from_->invalidate(key_);
        }
        break;
    }
    delete this;
  }

  void onBackendFailure(uint32_t tag, backend::BackendFailure failure) override {
    switch (tag) {
      case kMove:
        // The copy may still be there: not read until the delete is replayed (the target
        // has the value, so the repair itself stored).
        if (failure != backend::BackendFailure::kRemoved) move_from_->invalidate(key_);
        break;
      case kVerify:
        undo();  // unknown: the copy is not kept on a guess
        return;
      case kUndo:
        // The copy may be older than a write the source saw: not read until deleted.
        if (failure != backend::BackendFailure::kRemoved) target_->invalidate(key_);
        stats_.repairs_failed.add();
        break;
      default:
        stats_.repairs_failed.add();
        break;
    }
    delete this;
  }

 private:
  enum Tag : uint32_t { kFetch, kStore, kVerify, kUndo, kMove };

  // `reply` is the VA of "mg <key> v t f c". Returns false when nothing was sent.
  bool store(const protocol::BackendReply& reply) {
    std::string_view ttl = "-1";
    std::string_view flags = "0";
    std::string_view cas;
    protocol::findReturnFlag(reply.flags, 't', ttl);
    protocol::findReturnFlag(reply.flags, 'f', flags);
    protocol::findReturnFlag(reply.flags, 'c', cas);
    if (!reply.has_value || !protocol::worthCopying(ttl) || target_->admit()) return false;
    source_cas_ = cas;
    ByteBuffer& out = target_->output();
    protocol::encodeAddCopyHead(key_, reply.value.size(), ttl, flags, target_->opaque().view(),
                                out);
    out.append(reply.value);
    out.append("\r\n");
    target_->commit(this, kStore);
    return true;
  }

  // A delete (or write) that reached the target before our copy and the source after our
  // fetch would leave the target with a value the client was told is gone: the copy stays
  // only if the source still holds the item we copied (the same cas) once the copy is stored.
  bool verify() {
    if (source_->admit()) return false;
    protocol::encodeCasRead(key_, source_->opaque().view(), source_->output());
    source_->commit(this, kVerify);
    return true;
  }

  bool sameCas(const protocol::BackendReply& reply) const {
    std::string_view cas;
    return protocol::findReturnFlag(reply.flags, 'c', cas) && !cas.empty() && cas == source_cas_;
  }

  // Deletes our copy at the target, only if nobody wrote the key there since.
  void undo() {
    if (stored_cas_.empty() || target_->admit()) {
      target_->invalidate(key_);  // cannot name our copy, or cannot send: a delete is owed
      stats_.repairs_skipped.add();
      delete this;
      return;
    }
    protocol::encodeDeleteIfCas(key_, stored_cas_, target_->opaque().view(), target_->output());
    target_->commit(this, kUndo);
  }

  // A migration: the target has a value now, so the previous owner's copy goes.
  bool moveFromSource() {
    if (move_from_ == nullptr) return false;
    if (move_from_->admit()) {
      move_from_->invalidate(key_);  // down or saturated: the delete waits for it
      return false;
    }
    protocol::encodeDelete(key_, move_from_->opaque().view(), move_from_->output());
    move_from_->commit(this, kMove);
    return true;
  }

  backend::BackendRegistry& registry_;
  backend::TopologyView* view_;
  std::string key_;
  backend::BackendServer* target_;
  ProxyStats& stats_;
  metrics::Counter* on_store_;
  backend::BackendServer* move_from_;
  backend::BackendServer* source_ = nullptr;
  std::string source_cas_;  // of the item fetched
  std::string stored_cas_;  // of our copy at the target
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
