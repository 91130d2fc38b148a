#include "proxy/protocol/wire_key.h"

#include "proxy/protocol/base64.h"
#include "proxy/protocol/request.h"

namespace memzone::protocol {

bool sendableAsText(std::string_view stored) {
  if (stored.empty() || stored.size() > kMaxKeyLength) return false;
  for (char c : stored) {
    auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f) return false;
  }
  return true;
}

bool nameableOnMetaLine(std::string_view stored) {
  if (stored.empty() || stored.size() > kMaxKeyLength) return false;
  return sendableAsText(stored) || (stored.size() + 2) / 3 * 4 <= kMaxKeyLength;
}

std::string wireKeyOf(std::string_view stored) {
  if (sendableAsText(stored)) return std::string(stored);
  std::string out;
  base64Encode(stored, out);
  out.append(" b");
  return out;
}

WireKeyParts splitWireKey(std::string_view wire_key) {
  if (wire_key.ends_with(" b")) return {wire_key.substr(0, wire_key.size() - 2), true};
  return {wire_key, false};
}

}  // namespace memzone::protocol
