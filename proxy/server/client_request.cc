#include "proxy/server/client_request.h"

#include <algorithm>
#include <functional>
#include <string>

#include "proxy/protocol/backend_request.h"
#include "proxy/protocol/base64.h"
#include "proxy/protocol/memcached_syntax.h"
#include "proxy/server/proxy_stats.h"
#include "proxy/server/ttl_copy.h"

namespace memzone::server {

using protocol::Command;
using protocol::ReplyCode;

void ClientRequest::start(RequestOwner* owner, Command command, Plan plan, ProxyStats* stats) {
  owner_ = owner;
  pool_ = nullptr;
  stats_ = stats;
  registry_ = nullptr;
  view_ = nullptr;
  pool_view_ = nullptr;
  command_ = command;
  plan_ = plan;
  started_us_ = 0;
  refusal_ = oversized_ = changes_ttl_ = false;
  ttl_ = 0;
  value_bytes_ = 0;
  noreply_ = quiet_ = ready_ = sealed_ = released_by_owner_ = answered_ = defer_copies_ = false;
  reference_ = 0;
  override_ = confirming_ = false;
  local_only_ = sending_ = false;
  outstanding_ = 0;
  next_attempt_ = 0;
  round_start_ = 0;
  first_answer_ = UINT32_MAX;
  window_read_ = WindowRead::kNone;
  previous_owner_ = nullptr;
  reply_.clear();
  reply_child_ = kNoChild;
  copy_.clear();
  copy_opaque_at_ = 0;
  keys_.clear();
  wire_key_length_ = form_flags_at_ = wire_key_at_ = 0;
  key_refs_.clear();
  child_count_ = 0;
}

void ClientRequest::keepForm(const protocol::Request& request) {
  noreply_ = request.noreply;
  quiet_ = request.quiet;
  if (!protocol::isMeta(request.command)) {  // text: the key is its own wire form
    if (request.command == Command::kGat || request.command == Command::kGats) {
      changes_ttl_ = protocol::mc::strtol32(request.tokens[1], ttl_);
    }
    if (request.key_count == 0) return;  // flush_all
    std::string_view key = request.tokens[request.first_key];
    addKey(key, 0);
    wire_key_length_ = static_cast<uint32_t>(key.size());
    return;
  }
  refusal_ = protocol::metaForwardedAsWritten(request);
  // keys_ holds the key as memcached stores it (keyAt(0): placement); for a b key then the
  // key as the client wrote it and " b" (its wire form); then a meta request's flags: one
  // buffer, one charge to move.
  std::string decoded;
  std::string_view placement = protocol::placementKey(request, decoded);
  addKey(placement, 0);
  wire_key_at_ = 0;
  if (placement.data() != request.key().data()) {
    wire_key_at_ = static_cast<uint32_t>(keys_.size());
    keys_.append(request.key());
  }
  wire_key_length_ = static_cast<uint32_t>(request.key().size());
  if (!protocol::isMeta(request.command)) return;
  const auto& t = request.tokens;
  bool base64 = false;
  for (size_t i = protocol::firstMetaFlag(request.command); i < t.size(); ++i) {
    base64 |= t[i][0] == 'b';
    if (request.command == Command::kMetaGet && t[i][0] == 'T') {
      changes_ttl_ = protocol::mc::strtol32(t[i].substr(1), ttl_);
    }
  }
  if (request.command == Command::kMetaDebug) {
    // me: the reply names the key as memcached stores it, matched against these bytes.
    base64 = t.size() > 2 && t[2] == "b";
    std::string decoded;
    if (!base64 || !protocol::base64Decode(t[1], decoded)) decoded.assign(t[1]);
    copy_.append(decoded);
    base64 = false;
  }
  if (base64) {
    keys_.append(" b");
    wire_key_length_ += 2;
  }
  form_flags_at_ = static_cast<uint32_t>(keys_.size());
  for (size_t i = protocol::firstMetaFlag(request.command); i < t.size(); ++i) {
    if (keys_.size() > form_flags_at_) keys_.append(' ');
    keys_.append(t[i]);
  }
}

void ClientRequest::setLocalReply(std::string_view reply) {
  reply_.append(reply);
  ready_ = true;
  sealed_ = true;
}

void ClientRequest::overrideReply(std::string_view reply) {
  override_ = true;
  reply_.clear();
  reply_.append(reply);
  reply_child_ = kNoChild;
}

void ClientRequest::pinView(backend::BackendRegistry* registry, backend::TopologyView* view) {
  registry_ = registry;
  view_ = view;
  registry->pin(view);
}

void ClientRequest::addKey(std::string_view key, uint32_t child, uint32_t pool) {
  KeyRef ref{};
  ref.offset = static_cast<uint32_t>(keys_.size());
  ref.length = static_cast<uint32_t>(key.size());
  ref.child = child;
  ref.pool = pool;
  ref.value_child = UINT32_MAX;
  ref.failed = true;  // no answer yet
  key_refs_.push_back(ref);
  keys_.append(key);
}

std::string_view ClientRequest::keyAt(size_t i) const {
  return keys_.view().substr(key_refs_[i].offset, key_refs_[i].length);
}

uint32_t ClientRequest::addChild(backend::BackendServer* server, uint32_t attempt) {
  if (child_count_ == children_.size()) {
    children_.emplace_back();
    children_.back().reply.setAccount(&own_account_);
  }
  Child& c = children_[child_count_];
  c.reply.clear();
  c.cursor = 0;
  c.done = false;
  c.failed = false;
  c.code = ReplyCode::kError;
  c.value_hash = 0;
  c.server = server;
  c.attempt = attempt;
  c.first_key = UINT32_MAX;
  c.last_key = 0;
  c.sent = 0;
  return static_cast<uint32_t>(child_count_++);
}

void ClientRequest::failChild(uint32_t child, backend::BackendFailure failure) {
  children_[child].failed = true;
  children_[child].done = true;
  children_[child].failure = failure;
}

void ClientRequest::copyTtl(const backend::PoolView& pool, std::string_view key,
                            std::string_view wire_key, uint32_t answered_zone) {
  if (!changes_ttl_ || pool.zones.size() < 2 ||
      pool.pool->replication.writes != topology::WritePolicy::kAllZones) {
    return;
  }
  std::string ttl = std::to_string(ttl_);
  for (size_t z = 0; z < pool.zones.size(); ++z) {
    if (z == answered_zone) continue;
    const backend::ZoneView& zv = pool.zones[z];
    copyTtlToZone(*registry_, view_, zv, key, wire_key, ttl);
  }
}

uint32_t ClientRequest::zoneForAttempt(const backend::PoolView& pool, uint32_t attempt) {
  uint32_t local = pool.local_zone;
  if (attempt == 0) return local;
  return attempt <= local ? attempt - 1 : attempt;  // the others, in the order listed
}

backend::BackendServer* ClientRequest::serverFor(const backend::PoolView& pool,
                                                 std::string_view key, uint32_t attempt) {
  const backend::ZoneView& zv = pool.zones[zoneForAttempt(pool, attempt)];
  return zv.servers[zv.zone->ring.serverFor(key)];
}

uint32_t ClientRequest::maxReadAttempts(const backend::PoolView& pool) const {
  return local_only_ ? 1 : zoneCount(pool);
}

uint32_t ClientRequest::pickReadAttempt(const backend::PoolView& pool, std::string_view key,
                                        uint32_t from, uint32_t max_attempts) {
  // A single zone has no copies, so nothing to distrust: ask it (a down server fails fast).
  if (zoneCount(pool) == 1) return from < max_attempts ? from : UINT32_MAX;
  // Held servers are skipped like untrusted ones: another proxy may still owe them
  // invalidations, and a failed read is better than a stale one (readHoldMs: 0 turns the
  // hold off for availability-first pools).
  for (uint32_t a = from; a < max_attempts; ++a) {
    if (serverFor(pool, key, a)->readTrust() == backend::ReadTrust::kReadable) return a;
  }
  return UINT32_MAX;
}

bool ClientRequest::send(uint32_t child, backend::BackendServer* server,
                         const protocol::Request& request) {
  if (auto refused = server->admit()) {
    failChild(child, *refused);
    return false;
  }
  protocol::encodeBackendRequest(request, server->opaque().view(), server->output());
  return commitChild(child, server);
}

void ClientRequest::encodeKept(const protocol::Request& request, bool without_cas) {
  // Encoded once with a placeholder opaque, which sendKept() overwrites with each server's.
  protocol::OpaqueToken placeholder = protocol::makeOpaqueToken(0);
  copy_.clear();
  if (without_cas) {
    protocol::encodeBackendCopyWithoutCas(request, placeholder.view(), copy_);
  } else {
    protocol::encodeBackendRequest(request, placeholder.view(), copy_);
  }
  copy_opaque_at_ = copy_.view().find(std::string(" ") + std::string(placeholder.view()) + "\r\n");
}

bool ClientRequest::sendKept(uint32_t child, backend::BackendServer* server) {
  if (auto refused = server->admit()) {
    failChild(child, *refused);
    return false;
  }
  ByteBuffer& out = server->output();
  size_t at = out.size() + copy_opaque_at_ + 1;
  out.append(copy_.view());
  if (copy_opaque_at_ != std::string_view::npos) out.overwrite(at, server->opaque().view());
  return commitChild(child, server);
}

bool ClientRequest::commitChild(uint32_t child, backend::BackendServer* server) {
  ++outstanding_;
  protocol::ReplyKind kind = refusal_                          ? protocol::ReplyKind::kRefusal
                             : command_ == Command::kMetaDebug ? protocol::ReplyKind::kMetaDebug
                             : command_ == Command::kFlushAll  ? protocol::ReplyKind::kOk
                                                               : protocol::ReplyKind::kMeta;
  server->commit(this, child, kind, kind == protocol::ReplyKind::kMetaDebug ? copy_.view() : "",
                 quiet_ && !refusal_,
                 command_ == Command::kMetaGet ? ReplyCode::kMiss : ReplyCode::kOk);
  return !children_[child].failed;  // a connection can fail inside commit()
}

void ClientRequest::updateBookkeeping() {
  size_t bytes = key_refs_.capacity() * sizeof(KeyRef) + children_.capacity() * sizeof(Child);
  int64_t wanted = bytes > kBookkeepingFloor ? static_cast<int64_t>(bytes) : 0;
  if (wanted == bookkeeping_charged_) return;
  own_account_.charge(wanted - bookkeeping_charged_);
  bookkeeping_charged_ = wanted;
}

void ClientRequest::sealed() {
  updateBookkeeping();
  sealed_ = true;
  // noreply: the client expects nothing, so the FIFO need not wait for the backend.
  if (noreply_) markReady();
  if (outstanding_ == 0) finish();
}

void ClientRequest::onBackendReply(uint32_t tag, const protocol::BackendReply& reply) {
  if (plan_ == Plan::kMultiGet) {
    onMultiGetReply(tag, reply);
    return;
  }
  Child& c = children_[tag];
  c.code = reply.code;
  c.done = true;
  if (reply.has_value && protocol::isWrite(command_)) {
    c.value_hash = std::hash<std::string_view>()(reply.value);  // an arithmetic's new value
  }
  // Nobody will read the reply of a client that went away, and these plans decide on the
  // reply code alone: a closed slow reader's large replies are not buffered again.
  bool orphan_bytes = released_by_owner_ &&
                      (plan_ == Plan::kSingle || plan_ == Plan::kRead || plan_ == Plan::kBroadcast);
  if (!orphan_bytes && !reply.silent) {
    protocol::appendClientReply(form(), reply, c.reply);
  }
  --outstanding_;
  childDone(tag);
}

void ClientRequest::onBackendFailure(uint32_t tag, backend::BackendFailure failure) {
  if (plan_ == Plan::kMultiGet) {
    onMultiGetFailure(tag, failure);
    return;
  }
  failChild(tag, failure);
  --outstanding_;
  childDone(tag);
}

void ClientRequest::childDone(uint32_t child) {
  if (sealed_ && !sending_) {
    switch (plan_) {
      case Plan::kWrite:
        writeChildDone(child);
        break;
      case Plan::kRead:
        readChildDone(child);
        break;
      case Plan::kMultiGet:
        if (outstanding_ == 0) multiGetRoundDone();
        break;
      default:
        if (outstanding_ == 0) finish();
        break;
    }
  }
  maybeRecycle();
}

// Plans whose reply is known once every child has answered.
void ClientRequest::finish() {
  switch (plan_) {
    case Plan::kSingle:
      if (!ready_ || noreply_) finishSingle();
      break;
    case Plan::kBroadcast:
      if (!ready_ || noreply_) finishBroadcast();
      break;
    case Plan::kWrite:
      writeChildDone(UINT32_MAX);
      return;
    case Plan::kRead:
      if (!answered_) readChildDone(UINT32_MAX);
      return;
    case Plan::kMultiGet:
      multiGetRoundDone();
      return;
    case Plan::kLocal:
      break;
  }
  if (noreply_) {
    reply_.clear();
    reply_child_ = kNoChild;
  }
  markReady();
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
  chargeTo(pool.orphanAccount());
  maybeRecycle();
}

void ClientRequest::chargeTo(MemoryAccount* account) {
  if (account == account_) return;
  if (reply_.account() != &own_account_) {  // the first time: the buffers feed own_account_
    reply_.setAccount(&own_account_);
    copy_.setAccount(&own_account_);
    keys_.setAccount(&own_account_);
    for (Child& c : children_) c.reply.setAccount(&own_account_);
  }
  account_ = account;
  own_account_.setParent(account);
}

void ClientRequest::releaseBuffers() {
  reply_.clear();
  reply_.release();
  copy_.clear();
  copy_.release();
  keys_.clear();
  keys_.release();
  for (Child& c : children_) {
    c.reply.clear();
    c.reply.release();
  }
  std::vector<KeyRef>().swap(key_refs_);
  if (children_.size() > 64) {
    children_.resize(64);
    children_.shrink_to_fit();
  }
  updateBookkeeping();
}

void ClientRequest::maybeRecycle() {
  if (!released_by_owner_ || outstanding_ != 0 || !sealed_) return;
  // A plan may still send (a failover, a deferred copy) from a reply it has not seen yet:
  // outstanding_ covers those, so here nothing more can happen.
  if (view_ != nullptr) {
    registry_->unpin(view_);
    view_ = nullptr;
  }
  // What a large value needed is not kept for the next request (most are small).
  auto recycle = [](ByteBuffer& b) {
    b.clear();
    if (b.capacity() > 16 * 1024) b.release();
  };
  recycle(reply_);
  recycle(copy_);
  recycle(keys_);
  // A multi-get of thousands of keys must not pin its bookkeeping in the pool for ever.
  if (key_refs_.capacity() > 1024) std::vector<KeyRef>().swap(key_refs_);
  for (size_t i = 0; i < child_count_; ++i) recycle(children_[i].reply);
  if (children_.size() > 64) {
    children_.resize(64);
    children_.shrink_to_fit();
  }
  updateBookkeeping();
  child_count_ = 0;
  RequestPool* pool = pool_;
  released_by_owner_ = false;
  pool->release(this);
}

RequestPool::RequestPool(MemoryAccount* pooled, MemoryAccount* orphaned, size_t max_bytes,
                         size_t max_count)
    : pooled_(pooled), orphaned_(orphaned), max_bytes_(max_bytes), max_count_(max_count) {}

RequestPool::~RequestPool() {
  for (ClientRequest* r : free_) delete r;
}

ClientRequest* RequestPool::acquire() {
  if (free_.empty()) {
    low_water_ = 0;
    return new ClientRequest();
  }
  ClientRequest* r = free_.back();
  free_.pop_back();
  low_water_ = std::min(low_water_, free_.size());
  return r;
}

void RequestPool::release(ClientRequest* request) {
  if (free_.size() >= max_count_) {
    delete request;
    return;
  }
  request->chargeTo(pooled_);
  if (pooled_ != nullptr && static_cast<size_t>(pooled_->bytes()) > max_bytes_) {
    request->releaseBuffers();
  }
  free_.push_back(request);
}

size_t RequestPool::trimIdle() {
  // The bottom of the stack is what nobody took since the last trim.
  size_t surplus = std::min(low_water_, free_.size());
  for (size_t i = 0; i < surplus; ++i) delete free_[i];
  free_.erase(free_.begin(), free_.begin() + static_cast<std::ptrdiff_t>(surplus));
  low_water_ = free_.size();
  return surplus;
}

size_t RequestPool::trimAll() {
  size_t n = free_.size();
  for (ClientRequest* r : free_) delete r;
  free_.clear();
  low_water_ = 0;
  return n;
}

}  // namespace memzone::server
