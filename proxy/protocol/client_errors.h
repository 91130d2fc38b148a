// Every error reply a client can see from the proxy, in one place. The strings follow
// memcached's own so client libraries handle them as they would memcached's.
#pragma once

#include <string_view>

namespace memzone::protocol::errors {

inline constexpr std::string_view kError = "ERROR\r\n";
inline constexpr std::string_view kBadFormat = "CLIENT_ERROR bad command line format\r\n";
inline constexpr std::string_view kBadDeleteFormat =
    "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n";
inline constexpr std::string_view kBadDataChunk = "CLIENT_ERROR bad data chunk\r\n";
inline constexpr std::string_view kBadDelta = "CLIENT_ERROR invalid numeric delta argument\r\n";
inline constexpr std::string_view kBadExptime = "CLIENT_ERROR invalid exptime argument\r\n";
inline constexpr std::string_view kLineTooLong = "CLIENT_ERROR line too long\r\n";
inline constexpr std::string_view kTooLarge = "SERVER_ERROR object too large for cache\r\n";
inline constexpr std::string_view kFlushDisabled =
    "CLIENT_ERROR flush_all is disabled on this proxy (set allowFlushAll: true)\r\n";
inline constexpr std::string_view kNoRoute = "SERVER_ERROR no pool for this key\r\n";
inline constexpr std::string_view kNoTopology = "SERVER_ERROR proxy has no topology yet\r\n";
inline constexpr std::string_view kTooManyPending =
    "SERVER_ERROR too many requests in flight on this connection\r\n";

}  // namespace memzone::protocol::errors
