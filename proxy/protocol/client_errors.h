// Every error reply a client can see from the proxy, in one place. Where the proxy answers
// for memcached (a request it rejects before forwarding) the bytes are memcached 1.6's own,
// so a client cannot tell the proxy's parser from the server's (issue 11).
#pragma once

#include <string_view>

namespace memzone::protocol::errors {

inline constexpr std::string_view kError = "ERROR\r\n";
inline constexpr std::string_view kEnd = "END\r\n";  // a gat/gats with no key
inline constexpr std::string_view kBadFormat = "CLIENT_ERROR bad command line format\r\n";
inline constexpr std::string_view kBadDeleteFormat =
    "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n";
inline constexpr std::string_view kBadDataChunk = "CLIENT_ERROR bad data chunk\r\n";
inline constexpr std::string_view kBadDelta = "CLIENT_ERROR invalid numeric delta argument\r\n";
inline constexpr std::string_view kBadExptime = "CLIENT_ERROR invalid exptime argument\r\n";
inline constexpr std::string_view kTooLarge = "SERVER_ERROR object too large for cache\r\n";
// Meta commands (memcached words the mg one differently from ms/md/ma).
inline constexpr std::string_view kMetaGetFlagsTooLong =
    "CLIENT_ERROR options flags are too long\r\n";
inline constexpr std::string_view kMetaFlagsTooLong = "CLIENT_ERROR options flags too long\r\n";
inline constexpr std::string_view kMetaDuplicateFlag = "CLIENT_ERROR duplicate flag\r\n";
inline constexpr std::string_view kMetaInvalidFlag = "CLIENT_ERROR invalid flag\r\n";
inline constexpr std::string_view kMetaBadToken =
    "CLIENT_ERROR bad token in command line format\r\n";
inline constexpr std::string_view kMetaBadKeyEncoding = "CLIENT_ERROR error decoding key\r\n";
inline constexpr std::string_view kMetaBadModeLength =
    "CLIENT_ERROR incorrect length for M token\r\n";
inline constexpr std::string_view kMetaBadInitial =
    "CLIENT_ERROR invalid numeric initial value\r\n";
inline constexpr std::string_view kMetaBadDelta = "CLIENT_ERROR invalid numeric delta value\r\n";
inline constexpr std::string_view kMetaOpaqueTooLong = "CLIENT_ERROR opaque token too long\r\n";
inline constexpr std::string_view kMetaSetBadMode = "CLIENT_ERROR invalid mode for ms M token\r\n";

// Over the buffer budget or the connection limit: memcached 1.6's own words for the same
// situation.
inline constexpr std::string_view kOutOfMemoryStoring =
    "SERVER_ERROR out of memory storing object\r\n";
inline constexpr std::string_view kOutOfMemoryGet =
    "SERVER_ERROR out of memory writing get response\r\n";
inline constexpr std::string_view kOutOfMemory = "SERVER_ERROR out of memory\r\n";
inline constexpr std::string_view kTooManyConnections = "ERROR Too many open connections\r\n";

// The proxy's own answers (no memcached equivalent).
inline constexpr std::string_view kLineTooLong = "CLIENT_ERROR line too long\r\n";
inline constexpr std::string_view kFlushDisabled =
    "CLIENT_ERROR flush_all is disabled on this proxy (set allowFlushAll: true)\r\n";
inline constexpr std::string_view kNoRoute = "SERVER_ERROR no pool for this key\r\n";
inline constexpr std::string_view kNoTopology = "SERVER_ERROR proxy has no topology yet\r\n";
inline constexpr std::string_view kTooManyPending =
    "SERVER_ERROR too many requests in flight on this connection\r\n";

}  // namespace memzone::protocol::errors
