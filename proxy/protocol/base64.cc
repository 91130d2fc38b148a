#include "proxy/protocol/base64.h"

#include <array>
#include <cstdint>

namespace memzone::protocol {
namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

constexpr std::array<int8_t, 256> makeTable() {
  std::array<int8_t, 256> t{};
  for (auto& v : t) v = -1;
  for (int i = 0; i < 64; ++i) t[static_cast<unsigned char>(kAlphabet[i])] = static_cast<int8_t>(i);
  t['='] = 64;
  return t;
}
constexpr std::array<int8_t, 256> kTable = makeTable();

}  // namespace

bool base64Decode(std::string_view text, std::string& out) {
  out.clear();
  size_t symbols = 0;
  for (char ch : text) symbols += kTable[static_cast<unsigned char>(ch)] >= 0;
  if (symbols == 0 || symbols % 4 != 0) return false;
  uint8_t quad[4];
  int n = 0;
  int pad = 0;
  for (char ch : text) {
    int8_t v = kTable[static_cast<unsigned char>(ch)];
    if (v < 0) continue;  // memcached skips what is not in the alphabet
    if (v == 64) {
      ++pad;
      quad[n++] = 0;
    } else {
      quad[n++] = static_cast<uint8_t>(v);
    }
    if (n < 4) continue;
    if (pad > 2) return false;
    out.push_back(static_cast<char>((quad[0] << 2) | (quad[1] >> 4)));
    if (pad < 2) out.push_back(static_cast<char>((quad[1] << 4) | (quad[2] >> 2)));
    if (pad < 1) out.push_back(static_cast<char>((quad[2] << 6) | quad[3]));
    n = 0;
    if (pad > 0) break;
  }
  return !out.empty();
}

void base64Encode(std::string_view bytes, std::string& out) {
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    uint32_t v = (uint32_t(uint8_t(bytes[i])) << 16) | (uint32_t(uint8_t(bytes[i + 1])) << 8) |
                 uint8_t(bytes[i + 2]);
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(kAlphabet[(v >> 6) & 63]);
    out.push_back(kAlphabet[v & 63]);
  }
  size_t rest = bytes.size() - i;
  if (rest == 0) return;
  uint32_t v = uint32_t(uint8_t(bytes[i])) << 16;
  if (rest == 2) v |= uint32_t(uint8_t(bytes[i + 1])) << 8;
  out.push_back(kAlphabet[(v >> 18) & 63]);
  out.push_back(kAlphabet[(v >> 12) & 63]);
  out.push_back(rest == 2 ? kAlphabet[(v >> 6) & 63] : '=');
  out.push_back('=');
}

}  // namespace memzone::protocol
