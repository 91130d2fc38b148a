#include "proxy/protocol/reply_result.h"

namespace memzone::protocol {

std::string_view resultName(RequestResult result) {
  static constexpr std::string_view kNames[kRequestResultCount] = {
      "hit",     "miss",    "stored", "not_stored",   "exists",       "not_found",
      "deleted", "touched", "ok",     "client_error", "server_error", "noreply"};
  return kNames[static_cast<int>(result)];
}

RequestResult classifyReply(Command command, std::string_view reply) {
  if (reply.empty()) return RequestResult::kNoReply;
  auto starts = [&](std::string_view p) { return reply.substr(0, p.size()) == p; };
  if (isMeta(command)) {
    if (reply[0] == 'S' || reply[0] == 'C' || reply[0] == 'E') {
      if (starts("SERVER_ERROR")) return RequestResult::kServerError;
      if (starts("CLIENT_ERROR") || starts("ERROR")) return RequestResult::kClientError;
    }
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
        return starts("NF")   ? RequestResult::kNotFound
               : starts("NS") ? RequestResult::kNotStored
               : starts("EX") ? RequestResult::kExists
                              : RequestResult::kOk;
      default:
        return RequestResult::kOk;
    }
  }
  // Text protocol: the first byte decides almost always (this runs once per request).
  switch (reply[0]) {
    case 'V':
      return starts("VALUE") ? RequestResult::kHit : RequestResult::kOk;
    case 'E':
      if (starts("END")) return RequestResult::kMiss;
      if (starts("EXISTS")) return RequestResult::kExists;
      return starts("ERROR") ? RequestResult::kClientError : RequestResult::kOk;
    case 'S':
      if (starts("STORED")) return RequestResult::kStored;
      return starts("SERVER_ERROR") ? RequestResult::kServerError : RequestResult::kOk;
    case 'N':
      if (starts("NOT_STORED")) return RequestResult::kNotStored;
      return starts("NOT_FOUND") ? RequestResult::kNotFound : RequestResult::kOk;
    case 'D':
      return starts("DELETED") ? RequestResult::kDeleted : RequestResult::kOk;
    case 'T':
      return starts("TOUCHED") ? RequestResult::kTouched : RequestResult::kOk;
    case 'C':
      return starts("CLIENT_ERROR") ? RequestResult::kClientError : RequestResult::kOk;
    default:
      return RequestResult::kOk;
  }
}

}  // namespace memzone::protocol
