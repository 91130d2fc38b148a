#include "proxy/protocol/reply_result.h"

namespace memzone::protocol {

std::string_view resultName(RequestResult result) {
  static constexpr std::string_view kNames[kRequestResultCount] = {
      "hit",       "miss",    "stored", "not_stored",   "exists",       "not_found",
      "deleted",   "touched", "ok",     "client_error", "server_error", "noreply"};
  return kNames[static_cast<int>(result)];
}

RequestResult classifyReply(Command command, std::string_view reply) {
  if (reply.empty()) return RequestResult::kNoReply;
  auto starts = [&](std::string_view p) { return reply.substr(0, p.size()) == p; };
  if (starts("SERVER_ERROR")) return RequestResult::kServerError;
  if (starts("CLIENT_ERROR") || starts("ERROR")) return RequestResult::kClientError;
  switch (command) {
    case Command::kMetaGet:
      return starts("EN") ? RequestResult::kMiss : RequestResult::kHit;
    case Command::kMetaSet:
      return starts("HD")   ? RequestResult::kStored
             : starts("NS") ? RequestResult::kNotStored
             : starts("EX") ? RequestResult::kExists
             : starts("NF") ? RequestResult::kNotFound
                            : RequestResult::kOk;
    case Command::kMetaDelete:
      return starts("HD")   ? RequestResult::kDeleted
             : starts("NF") ? RequestResult::kNotFound
             : starts("EX") ? RequestResult::kExists
                            : RequestResult::kOk;
    case Command::kMetaArithmetic:
      return starts("NF") ? RequestResult::kNotFound
             : starts("NS") ? RequestResult::kNotStored
             : starts("EX") ? RequestResult::kExists
                            : RequestResult::kOk;
    default:
      break;
  }
  if (starts("VALUE")) return RequestResult::kHit;
  if (starts("END")) return RequestResult::kMiss;
  if (starts("STORED")) return RequestResult::kStored;
  if (starts("NOT_STORED")) return RequestResult::kNotStored;
  if (starts("EXISTS")) return RequestResult::kExists;
  if (starts("NOT_FOUND")) return RequestResult::kNotFound;
  if (starts("DELETED")) return RequestResult::kDeleted;
  if (starts("TOUCHED")) return RequestResult::kTouched;
  return RequestResult::kOk;
}

}  // namespace memzone::protocol
