// One client request in flight: what the proxy sent to which backends, the replies so far,
// and the reply the client will get. Pooled per worker and reused, so its buffers keep their
// capacity and a steady stream of requests does not allocate; the pool is capped, shrinks
// what it keeps, and frees what a burst left behind (RequestPool).
//
// Memory: its buffers are charged to its client connection while owned (the budget ranks
// connections by what they hold), then to the worker's orphan account, then to the pool's.
//
// The dispatcher routes the request and picks its plan; everything a plan does lives in the
// plan's own file, from the first backend requests to the client's reply: single_plan.cc
// (one server; flush_all to every server), replicated_write.cc (copies to every zone, the
// wait policy, invalidations), failover_read.cc (one key, zone by zone), multi_get.cc (keys
// grouped by server, reassembled in order).
//
// Lifetime: the owning ClientConnection holds it in its FIFO until the reply has been taken;
// backends hold it (as a ReplySink) until each of its `outstanding` sub-requests has been
// answered. It returns to the pool when both have let go, so copies outlive the client's
// reply (wait: local) and even the client's connection. Worker thread only.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "proxy/backend/backend_registry.h"
#include "proxy/backend/reply_sink.h"
#include "proxy/common/byte_buffer.h"
#include "proxy/protocol/backend_reply.h"
#include "proxy/protocol/client_reply.h"
#include "proxy/protocol/command.h"
#include "proxy/protocol/request.h"
#include "proxy/routing/prefix_router.h"
#include "proxy/server/window_reads.h"

namespace memzone::server {

class RequestPool;
struct ProxyStats;

class RequestOwner {
 public:
  virtual ~RequestOwner() = default;
  // The request has its reply (it may not be at the head of the FIFO).
  virtual void onRequestReady() = 0;
};

class ClientRequest final : public backend::ReplySink, private backend::ConfirmationWaiter {
 public:
  enum class Plan : uint8_t {
    kLocal,      // answered by the proxy itself
    kSingle,     // one backend; its reply is the client's reply
    kWrite,      // copied to the key's server in every zone; answered per the wait policy
    kRead,       // one key; the local zone first, then the others in order
    kMultiGet,   // grouped by server, in rounds per zone; reassembled in the client's key order
    kBroadcast,  // every server (flush_all); OK only if every server said OK
  };

  struct Child {
    ByteBuffer reply;
    size_t cursor = 0;
    bool done = false;
    bool failed = false;
    backend::BackendFailure failure = backend::BackendFailure::kTimeout;
    protocol::ReplyCode code = protocol::ReplyCode::kError;
    // What a write did, to compare copies by effect (not by reply bytes, which differ per
    // server in cas, TTL and size flags): a hash of the value an arithmetic returned.
    uint64_t value_hash = 0;
    backend::BackendServer* server = nullptr;
    uint32_t attempt = 0;  // zone attempt: 0 = the local zone, then the pool's other zones
    // kMultiGet: the keys (indexes) this child asks for lie in [first_key, last_key]; its
    // replies come in key order, `cursor` at the next key to answer, `sent` of them in all.
    uint32_t first_key = UINT32_MAX;
    uint32_t last_key = 0;
    uint32_t sent = 0;
  };

  ClientRequest() = default;
  ~ClientRequest() override { own_account_.charge(-bookkeeping_charged_); }
  ClientRequest(const ClientRequest&) = delete;
  ClientRequest& operator=(const ClientRequest&) = delete;

  // Set up by the dispatcher.
  void start(RequestOwner* owner, protocol::Command command, Plan plan, ProxyStats* stats);
  void setLocalReply(std::string_view reply);
  // The client gets `reply` whatever the backends answer (a value too large to forward:
  // the key is deleted everywhere, the client hears memcached's "too large").
  void overrideReply(std::string_view reply);
  void pinView(backend::BackendRegistry* registry, backend::TopologyView* view);

  // The plans. Each sends its first backend requests and seals the request; the request's
  // views may die once it returns.
  void startSingle(const protocol::Request& request, const backend::PoolView& pool);
  void startBroadcast(const protocol::Request& request,
                      const std::vector<backend::BackendServer*>& servers);
  void startWrite(const protocol::Request& request, const backend::PoolView& pool);
  void startRead(const protocol::Request& request, const backend::PoolView& pool);
  void startMultiGet(const protocol::Request& request, const routing::PrefixRouter& router);

  // For the owning connection.
  bool ready() const { return ready_; }
  std::string_view reply() const {
    return reply_child_ != kNoChild ? children_[reply_child_].reply.view() : reply_.view();
  }
  protocol::Command command() const { return command_; }
  int64_t startedUs() const { return started_us_; }
  // When the bytes of this request were read (one clock read per read batch, not per request).
  void setStartedUs(int64_t us) { started_us_ = us; }
  // The owner is done with the request (reply taken, or the client went away).
  void releaseByOwner(RequestPool& pool);
  // Charges every buffer of the request to `account` from now on (moves the charge), its
  // per-key and per-server bookkeeping included once that is large (a multi-get).
  void chargeTo(MemoryAccount* account);
  // Frees every buffer (a pooled request over the pool's byte cap).
  void releaseBuffers();

  // ReplySink
  void onBackendReply(uint32_t tag, const protocol::BackendReply& reply) override;
  void onBackendFailure(uint32_t tag, backend::BackendFailure failure) override;

 private:
  // Keeps what the client's reply will need of `request` (its views die once start* returns).
  void keepForm(const protocol::Request& request);
  protocol::ClientForm form() const {
    if (key_refs_.empty()) return {command_, {}, {}};
    std::string_view client_key = keys_.view().substr(
        wire_key_at_,
        key_refs_.size() == 1 && wire_key_length_ != 0 ? clientKeyLength() : key_refs_[0].length);
    return {command_, client_key,
            form_flags_at_ != 0 ? keys_.view().substr(form_flags_at_) : std::string_view{}};
  }
  // gat/gats/mg T in a pool that copies writes: the new TTL goes to the zones that did not
  // answer (ttl_copy.h). `answered_zone` is the zone index that served the read.
  void copyTtl(const backend::PoolView& pool, std::string_view key, std::string_view wire_key,
               uint32_t answered_zone);
  // The key as a meta line names it (invalidations): text, or "<base64> b".
  std::string_view wireKey() const { return keys_.view().substr(wire_key_at_, wire_key_length_); }
  // The key as the client wrote it (its wire form without " b").
  size_t clientKeyLength() const {
    std::string_view w = wireKey();
    return w.ends_with(" b") ? w.size() - 2 : w.size();
  }
  // Keys in client order, each with its pool and the child (server) of the current round.
  void addKey(std::string_view key, uint32_t child, uint32_t pool = 0);
  std::string_view keyAt(size_t i) const;
  // Returns the new child's index (its backend tag).
  uint32_t addChild(backend::BackendServer* server, uint32_t attempt = 0);
  // A child that could not be sent at all (server down, queue full).
  void failChild(uint32_t child, backend::BackendFailure failure);
  // Called once the first backend requests have been sent or failed.
  void sealed();
  // A cas unique means something only to the server that issued it.
  static bool isLocalOnlyRead(protocol::Command command) {
    return command == protocol::Command::kGets || command == protocol::Command::kGats;
  }

  // Brings the charge for key_refs_ and children_ in line with their capacity (charged only
  // past kBookkeepingFloor: a small request's fixed size is the pool's business).
  void updateBookkeeping();
  static constexpr size_t kBookkeepingFloor = 4096;
  void childDone(uint32_t child);
  void finish();
  void finishSingle();
  void finishBroadcast();
  void markReady();
  void maybeRecycle();

  // Zone attempts: 0 is the local zone, then the pool's other zones in the order given.
  static uint32_t zoneCount(const backend::PoolView& pool) {
    return static_cast<uint32_t>(pool.zones.size());
  }
  static uint32_t zoneForAttempt(const backend::PoolView& pool, uint32_t attempt);
  static backend::BackendServer* serverFor(const backend::PoolView& pool, std::string_view key,
                                           uint32_t attempt);
  // The first attempt >= `from` whose server for `key` may serve reads, or UINT32_MAX.
  static uint32_t pickReadAttempt(const backend::PoolView& pool, std::string_view key,
                                  uint32_t from, uint32_t max_attempts);
  uint32_t maxReadAttempts(const backend::PoolView& pool) const;
  // Sends the client's request, encoded for the server, as child `child`; false when the
  // server refused it or failed at once.
  bool send(uint32_t child, backend::BackendServer* server, const protocol::Request& request);
  // The same with the request kept in copy_ (encodeKept): a failover, a deferred copy.
  void encodeKept(const protocol::Request& request, bool without_cas);
  bool sendKept(uint32_t child, backend::BackendServer* server);
  bool commitChild(uint32_t child, backend::BackendServer* server);

  // replicated_write.cc
  void writeChildDone(uint32_t child);
  void sendDeferredCopies();
  void answerWriteIfDecided();
  void reconcileWrite();
  // Whether the write leaves an invalidation for child `child`'s server.
  bool invalidates(size_t child) const;
  // kWrite: the zone whose answer is the client's (reference_), among the first `zones`.
  static uint32_t referenceZone(const backend::PoolView& pool, std::string_view key,
                                uint32_t zones);
  // Whether every server this write leaves an invalidation for is known dirty to every proxy.
  bool invalidatedServersKnownDirty() const;
  bool confirmationCheck(int64_t now_us) override;
  // failover_read.cc
  void readChildDone(uint32_t child);
  void sendReadAttempt(uint32_t from);
  void finishRead(uint32_t answer_child);
  // `key` places it, `wire_key` names it on the backend lines (wireKey()).
  void repair(const backend::PoolView& pool, std::string_view key, std::string_view wire_key,
              backend::BackendServer* source, WindowRead window = WindowRead::kNone,
              bool move = false);
  // window_reads: a miss on the local zone's `server` for `key`; true when a churn window
  // sends the read elsewhere (the one branch paid outside windows is the first test).
  bool windowApplies(const backend::PoolView& pool, backend::BackendServer* server) const {
    return (server->warmUntilUs() != 0 || pool.zones[pool.local_zone].migrate_until_us != 0) &&
           !local_only_;
  }
  bool readMissThroughWindow(uint32_t child);
  void countWindowAnswer(const backend::PoolView& pool, WindowRead window, bool hit);
  // multi_get.cc
  void onMultiGetReply(uint32_t child, const protocol::BackendReply& reply);
  void onMultiGetFailure(uint32_t child, backend::BackendFailure failure);
  void multiGetRoundDone();
  void sendMultiGetRound();
  void finishMultiGet();

  RequestOwner* owner_ = nullptr;
  // Every buffer of the request (and its large bookkeeping) is charged to own_account_, whose
  // parent is the owner's account (account_): changing owner moves one sum, not each buffer.
  MemoryAccount own_account_;
  MemoryAccount* account_ = nullptr;
  RequestPool* pool_ = nullptr;  // set once the owner released it while children were pending
  ProxyStats* stats_ = nullptr;
  backend::BackendRegistry* registry_ = nullptr;
  backend::TopologyView* view_ = nullptr;
  const backend::PoolView* pool_view_ = nullptr;
  protocol::Command command_ = protocol::Command::kGet;
  Plan plan_ = Plan::kLocal;
  int64_t started_us_ = 0;
  bool noreply_ = false;
  bool quiet_ = false;
  bool ready_ = false;
  bool sealed_ = false;
  bool released_by_owner_ = false;
  bool answered_ = false;      // kWrite: the client's reply is decided
  bool defer_copies_ = false;  // kWrite: copies wait for the local zone's success
  bool local_only_ = false;    // kRead / kMultiGet: gets/gats never leave the local zone
  bool sending_ = false;       // a send loop is running: replies that arrive at once wait
  bool override_ = false;      // overrideReply(): reply_ is final
  bool confirming_ = false;    // kWrite: the reply waits for dirty_confirmation.h
  bool refusal_ = false;       // memcached must refuse it (metaForwardedAsWritten)
  bool oversized_ = false;     // kMultiGet: its values outgrew maxReplyBytes()
  bool changes_ttl_ = false;   // gat, gats, mg T: the TTL change is copied (ttl_copy.h)
  int32_t ttl_ = 0;
  size_t value_bytes_ = 0;           // kMultiGet: bytes of the values gathered
  int64_t bookkeeping_charged_ = 0;  // charged to account_ for key_refs_ and children_
  int64_t confirm_until_us_ = 0;
  uint32_t outstanding_ = 0;
  uint32_t next_attempt_ = 0;  // kRead
  // kWrite: the child whose answer is the client's and against which the copies' effects are
  // compared: the local zone's, unless this proxy may not read that server (it may have
  // missed writes), then the first zone it may read, or the least doubtful (referenceZone).
  uint32_t reference_ = 0;
  uint32_t round_start_ = 0;                    // kMultiGet: first child of the current round
  uint32_t first_answer_ = UINT32_MAX;          // kRead: a child that answered (a miss), if any
  WindowRead window_read_ = WindowRead::kNone;  // kRead: a window sent it on
  backend::BackendServer* previous_owner_ = nullptr;  // kRead: ask it next (migration)
  // The attempt of a read from the key's previous owner in the local zone (a migration): its
  // child's (kRead), its KeyRef's (kMultiGet). It comes after attempt 0, before attempt 1.
  static constexpr uint32_t kPreviousOwnerAttempt = UINT32_MAX - 1;
  // The client's reply: reply_, or, when a backend's answer goes out unchanged, that child's
  // buffer itself (one copy fewer per request).
  static constexpr uint32_t kNoChild = UINT32_MAX;
  uint32_t reply_child_ = kNoChild;
  ByteBuffer reply_;
  // kWrite deferred copy / kRead request for each zone (its opaque at copy_opaque_at_, replaced
  // per send) / kMultiGet gat exptime / me: the key as memcached stores it.
  ByteBuffer copy_;
  size_t copy_opaque_at_ = 0;
  ByteBuffer keys_;  // keys, concatenated (one-key plans: and the wire key's " b", the flags)
  uint32_t wire_key_at_ = 0;  // one-key plans: where keys_ holds the wire key
  uint32_t wire_key_length_ = 0;
  uint32_t form_flags_at_ = 0;  // meta: where keys_ holds the client's flags (0: none)
  struct KeyRef {
    uint32_t offset;
    uint32_t length;
    uint32_t child;  // child of the current round (UINT32_MAX: none)
    protocol::ReplyCode code = protocol::ReplyCode::kError;  // kMultiGet: this round's answer
    bool answered = false;  // kMultiGet: this round's reply came (not a failure)
    uint32_t pool = 0;
    uint32_t attempt = 0;  // kMultiGet: zone attempt of the current round, or kPreviousOwnerAttempt
    uint32_t value_child = UINT32_MAX;  // kMultiGet: child holding this key's VALUE block
    uint32_t value_offset = 0;
    uint32_t value_size = 0;
    bool resolved = false;
    bool failed = false;
    WindowRead window = WindowRead::kNone;  // kMultiGet: a window sent it on
  };
  std::vector<KeyRef> key_refs_;
  std::vector<Child> children_;
  size_t child_count_ = 0;  // children_ beyond this are pooled, not in use
};

// Free list of requests for one worker. Bounded: at most `max_count` requests and
// `max_bytes` of buffers are kept (beyond, buffers are freed, then requests); trimIdle()
// frees what went unused since the last call, so a burst's requests do not stay forever.
class RequestPool {
 public:
  // `pooled` is charged with the free requests' buffers, `orphaned` with those of requests
  // whose client let go while backends still owe replies (both may be null: uncharged).
  RequestPool(MemoryAccount* pooled = nullptr, MemoryAccount* orphaned = nullptr,
              size_t max_bytes = 4 << 20, size_t max_count = 4096);
  ~RequestPool();
  ClientRequest* acquire();
  void release(ClientRequest* request);
  MemoryAccount* orphanAccount() const { return orphaned_; }

  // Frees the requests that stayed free since the last call (the fewest free seen in
  // between); returns how many.
  size_t trimIdle();
  // Frees every free request (memory pressure).
  size_t trimAll();
  size_t freeCount() const { return free_.size(); }

 private:
  std::vector<ClientRequest*> free_;
  MemoryAccount* pooled_;
  MemoryAccount* orphaned_;
  size_t max_bytes_;
  size_t max_count_;
  size_t low_water_ = 0;  // fewest free requests since the last trimIdle()
};

}  // namespace memzone::server
