// One client request in flight: what the proxy sent to which backends, the replies so far,
// and the reply the client will get. Pooled per worker and reused, so its buffers keep their
// capacity and a steady stream of requests does not allocate.
//
// Lifetime: the owning ClientConnection holds it in its FIFO until the reply has been taken;
// backends hold it (as a ReplySink) until each of its `outstanding` sub-requests has been
// answered. It returns to the pool when both have let go. Worker thread only.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "proxy/backend/backend_registry.h"
#include "proxy/backend/reply_sink.h"
#include "proxy/common/byte_buffer.h"
#include "proxy/protocol/command.h"

namespace memzone::server {

class RequestPool;
struct ProxyStats;

class RequestOwner {
 public:
  virtual ~RequestOwner() = default;
  // The request at `request` has its reply (it may not be at the head of the FIFO).
  virtual void onRequestReady() = 0;
};

class ClientRequest final : public backend::ReplySink {
 public:
  enum class Plan : uint8_t {
    kLocal,      // answered by the proxy itself
    kSingle,     // one backend; its reply is the client's reply
    kMultiGet,   // one child per backend server; values reassembled in the client's key order
    kBroadcast,  // every server (flush_all); OK only if every server said OK
  };

  struct Child {
    ByteBuffer reply;
    size_t cursor = 0;
    bool failed = false;
    backend::BackendFailure failure = backend::BackendFailure::kTimeout;
    protocol::ReplyCode code = protocol::ReplyCode::kError;
    backend::BackendServer* server = nullptr;
  };

  // Set up by the dispatcher.
  void start(RequestOwner* owner, protocol::Command command, Plan plan, ProxyStats* stats);
  void setLocalReply(std::string_view reply);
  void setFlags(bool noreply, bool quiet) {
    noreply_ = noreply;
    quiet_ = quiet;
  }
  void pinView(backend::BackendRegistry* registry, backend::TopologyView* view);

  // Multi-get: keys in client order, each with the child (server) it went to.
  void addKey(std::string_view key, uint32_t child);
  uint32_t keyChild(size_t i) const { return key_refs_[i].child; }
  // Returns the new child's index (its backend tag).
  uint32_t addChild(backend::BackendServer* server);
  Child& child(uint32_t i) { return children_[i]; }
  uint32_t childCount() const { return static_cast<uint32_t>(child_count_); }
  void expectReplies(uint32_t n) { outstanding_ += n; }
  // A child that could not be sent at all (server down, queue full).
  void failChild(uint32_t child, backend::BackendFailure failure);
  // Called once every child has been sent or failed.
  void sealed();

  // For the owning connection.
  bool ready() const { return ready_; }
  std::string_view reply() const { return reply_.view(); }
  protocol::Command command() const { return command_; }
  // The owner is done with the request (reply taken, or the client went away).
  void releaseByOwner(RequestPool& pool);

  // ReplySink
  void onBackendReply(uint32_t tag, std::string_view reply, protocol::ReplyCode code) override;
  void onBackendFailure(uint32_t tag, backend::BackendFailure failure) override;

 private:
  void childDone();
  void finish();
  void finishSingle();
  void finishMultiGet();
  void finishBroadcast();
  void markReady();
  void maybeRecycle();

  RequestOwner* owner_ = nullptr;
  RequestPool* pool_ = nullptr;  // set once the owner released it while children were pending
  ProxyStats* stats_ = nullptr;
  backend::BackendRegistry* registry_ = nullptr;
  backend::TopologyView* view_ = nullptr;
  protocol::Command command_ = protocol::Command::kGet;
  Plan plan_ = Plan::kLocal;
  bool noreply_ = false;
  bool quiet_ = false;
  bool ready_ = false;
  bool sealed_ = false;
  bool released_by_owner_ = false;
  uint32_t outstanding_ = 0;
  ByteBuffer reply_;
  ByteBuffer keys_;  // multi-get keys, concatenated
  struct KeyRef {
    uint32_t offset;
    uint32_t length;
    uint32_t child;
  };
  std::vector<KeyRef> key_refs_;
  std::vector<Child> children_;
  size_t child_count_ = 0;  // children_ beyond this are pooled, not in use
};

// Free list of requests for one worker.
class RequestPool {
 public:
  ~RequestPool();
  ClientRequest* acquire();
  void release(ClientRequest* request);

 private:
  std::vector<ClientRequest*> free_;
};

}  // namespace memzone::server
