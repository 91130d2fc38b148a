// MD5 (RFC 1321), used only for ketama placement; not for anything security related.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

namespace memzone::routing {

std::array<uint8_t, 16> md5(std::string_view data);

}  // namespace memzone::routing
