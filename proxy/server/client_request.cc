#include "proxy/server/client_request.h"

#include "proxy/protocol/reply_parser.h"
#include "proxy/protocol/request_encoder.h"
#include "proxy/server/proxy_stats.h"

namespace memzone::server {

using protocol::Command;
using protocol::ReplyCode;

void ClientRequest::start(RequestOwner* owner, Command command, Plan plan, ProxyStats* stats) {
  owner_ = owner;
  pool_ = nullptr;
  stats_ = stats;
  registry_ = nullptr;
  view_ = nullptr;
  command_ = command;
  plan_ = plan;
  noreply_ = quiet_ = ready_ = sealed_ = released_by_owner_ = false;
  outstanding_ = 0;
  reply_.clear();
  keys_.clear();
  key_refs_.clear();
  child_count_ = 0;
}

void ClientRequest::setLocalReply(std::string_view reply) {
  reply_.append(reply);
  ready_ = true;
  sealed_ = true;
}

void ClientRequest::pinView(backend::BackendRegistry* registry, backend::TopologyView* view) {
  registry_ = registry;
  view_ = view;
  registry->pin(view);
}

void ClientRequest::addKey(std::string_view key, uint32_t child) {
  key_refs_.push_back({static_cast<uint32_t>(keys_.size()), static_cast<uint32_t>(key.size()), child});
  keys_.append(key);
}

uint32_t ClientRequest::addChild(backend::BackendServer* server) {
  if (child_count_ == children_.size()) children_.emplace_back();
  Child& c = children_[child_count_];
  c.reply.clear();
  c.cursor = 0;
  c.failed = false;
  c.code = ReplyCode::kError;
  c.server = server;
  return static_cast<uint32_t>(child_count_++);
}

void ClientRequest::failChild(uint32_t child, backend::BackendFailure failure) {
  children_[child].failed = true;
  children_[child].failure = failure;
}

void ClientRequest::sealed() {
  sealed_ = true;
  // noreply: the client expects nothing, so the FIFO need not wait for the backend.
  if (noreply_) markReady();
  if (outstanding_ == 0) finish();
}

void ClientRequest::onBackendReply(uint32_t tag, std::string_view reply, ReplyCode code) {
  Child& c = children_[tag];
  c.code = code;
  c.reply.append(reply);
  childDone();
}

void ClientRequest::onBackendFailure(uint32_t tag, backend::BackendFailure failure) {
  failChild(tag, failure);
  childDone();
}

void ClientRequest::childDone() {
  if (--outstanding_ == 0 && sealed_) finish();
  maybeRecycle();
}

void ClientRequest::finish() {
  if (!ready_ || noreply_) {
    switch (plan_) {
      case Plan::kLocal:
        break;
      case Plan::kSingle:
        finishSingle();
        break;
      case Plan::kMultiGet:
        finishMultiGet();
        break;
      case Plan::kBroadcast:
        finishBroadcast();
        break;
    }
  }
  if (noreply_) reply_.clear();
  markReady();
}

void ClientRequest::finishSingle() {
  Child& c = children_[0];
  if (c.failed) {
    stats_->server_errors.add();
    reply_.append(backend::failureReply(c.failure));
    return;
  }
  if (protocol::isRetrieval(command_) || command_ == Command::kMetaGet) {
    bool hit = c.code == ReplyCode::kHit || (command_ == Command::kMetaGet && c.code == ReplyCode::kOk);
    (hit ? stats_->get_hits : stats_->get_misses).add();
  }
  if (quiet_ && protocol::quietSuppresses(command_, c.code)) return;
  reply_.append(c.reply.view());
}

void ClientRequest::finishMultiGet() {
  bool all_failed = true;
  for (size_t i = 0; i < child_count_; ++i) all_failed &= children_[i].failed;
  if (all_failed && child_count_ > 0) {
    stats_->server_errors.add();
    reply_.append(backend::failureReply(children_[0].failure));
    return;
  }
  // A failed server's keys read as misses: a cache may always miss, and one dead server
  // should not fail a whole multi-get.
  std::string_view keys = keys_.view();
  for (const KeyRef& ref : key_refs_) {
    Child& c = children_[ref.child];
    protocol::ValueBlock block;
    std::string_view key = keys.substr(ref.offset, ref.length);
    if (!c.failed && protocol::parseValueBlock(c.reply.view().substr(c.cursor), block) &&
        block.key == key) {
      reply_.append(c.reply.view().substr(c.cursor, block.size));
      c.cursor += block.size;
      stats_->get_hits.add();
    } else {
      stats_->get_misses.add();
    }
  }
  reply_.append("END\r\n");
}

void ClientRequest::finishBroadcast() {
  for (size_t i = 0; i < child_count_; ++i) {
    const Child& c = children_[i];
    if (c.failed) {
      reply_.append(backend::failureReply(c.failure));
      return;
    }
    if (c.code != ReplyCode::kOk) {
      reply_.append(c.reply.view());
      return;
    }
  }
  reply_.append("OK\r\n");
}

void ClientRequest::markReady() {
  if (ready_ && !noreply_) return;
  bool was_ready = ready_;
  ready_ = true;
  if (!was_ready && owner_ != nullptr) owner_->onRequestReady();
}

void ClientRequest::releaseByOwner(RequestPool& pool) {
  owner_ = nullptr;
  released_by_owner_ = true;
  pool_ = &pool;
  maybeRecycle();
}

void ClientRequest::maybeRecycle() {
  if (!released_by_owner_ || outstanding_ != 0 || !sealed_) return;
  if (view_ != nullptr) {
    registry_->unpin(view_);
    view_ = nullptr;
  }
  reply_.shrinkIfAbove(64 * 1024);
  for (size_t i = 0; i < child_count_; ++i) children_[i].reply.shrinkIfAbove(64 * 1024);
  RequestPool* pool = pool_;
  released_by_owner_ = false;
  pool->release(this);
}

RequestPool::~RequestPool() {
  for (ClientRequest* r : free_) delete r;
}

ClientRequest* RequestPool::acquire() {
  if (free_.empty()) return new ClientRequest();
  ClientRequest* r = free_.back();
  free_.pop_back();
  return r;
}

void RequestPool::release(ClientRequest* request) { free_.push_back(request); }

}  // namespace memzone::server
