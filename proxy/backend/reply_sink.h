// The receiving end of a backend request. For every request a BackendServer accepted, exactly
// one of the two methods is called, exactly once, later, on the worker thread that sent it.
#pragma once

#include <cstdint>
#include <string_view>

#include "proxy/backend/backend_failure.h"
#include "proxy/protocol/reply_parser.h"

namespace memzone::backend {

class ReplySink {
 public:
  virtual ~ReplySink() = default;
  // `reply` points into the connection's buffer: copy what you keep before returning.
  virtual void onBackendReply(uint32_t tag, std::string_view reply, protocol::ReplyCode code) = 0;
  virtual void onBackendFailure(uint32_t tag, BackendFailure failure) = 0;
  // Whether `reply` (complete, of the right shape) can be the answer to request `tag`: a
  // VALUE block for a key it did not ask for cannot. False makes the connection a desync.
  virtual bool replyMatches(uint32_t /*tag*/, std::string_view /*reply*/) const { return true; }
};

}  // namespace memzone::backend
