// The receiving end of a backend request. For every request a BackendServer accepted, exactly
// one of the two methods is called, exactly once, later, on the worker thread that sent it.
#pragma once

#include <cstdint>

#include "proxy/backend/backend_failure.h"
#include "proxy/protocol/backend_reply.h"

namespace memzone::backend {

class ReplySink {
 public:
  virtual ~ReplySink() = default;
  // A reply verified to answer request `tag` (protocol/backend_reply.h). Its views point into
  // the connection's buffer: copy what you keep before returning.
  virtual void onBackendReply(uint32_t tag, const protocol::BackendReply& reply) = 0;
  virtual void onBackendFailure(uint32_t tag, BackendFailure failure) = 0;
};

}  // namespace memzone::backend
