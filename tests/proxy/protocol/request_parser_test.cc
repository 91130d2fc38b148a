// The request parser on every input whole and at fragment sizes 1, 2, 5, 10, 100, and on a
// table of malformed input with memcached's own replies.
#include "proxy/protocol/request_parser.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "proxy/protocol/backend_request.h"
#include "proxy/protocol/client_errors.h"
#include "proxy/protocol/reply_result.h"

using namespace std::string_literals;

namespace memzone::protocol {
namespace {

struct Parsed {
  ParseStatus status;
  bool deletes_key = false;
  Command command;
  std::vector<std::string> keys;
  std::string data;
  std::string raw;
  std::string reply;
  bool noreply;
  bool quiet;
  size_t swallow;
};

// Feeds `input` in slices of `fragment` bytes the way a connection would: append, parse
// until NeedMore, drop what was consumed.
std::vector<Parsed> parseAll(const std::string& input, size_t fragment,
                             const ParserLimits& limits = {}) {
  RequestParser parser(limits);
  std::vector<Parsed> out;
  std::string buffer;
  size_t fed = 0;
  size_t swallow = 0;
  Request request;
  while (fed < input.size() || !buffer.empty()) {
    size_t n = std::min(fragment, input.size() - fed);
    buffer.append(input, fed, n);
    fed += n;
    while (!buffer.empty()) {
      if (swallow > 0) {
        size_t k = std::min(swallow, buffer.size());
        buffer.erase(0, k);
        swallow -= k;
        continue;
      }
      ParseResult r = parser.parse(buffer, request);
      if (r.status == ParseStatus::kNeedMore) break;
      Parsed p{r.status,        r.deletes_key, request.command, {}, {}, {}, std::string(r.reply),
               request.noreply, request.quiet, r.swallow};
      if (r.status == ParseStatus::kOk) {
        for (size_t i = 0; i < request.key_count; ++i) p.keys.emplace_back(request.key(i));
        p.data = std::string(request.data);
        p.raw = std::string(request.raw);
      }
      out.push_back(p);
      if (r.status == ParseStatus::kFatal) return out;
      buffer.erase(0, r.consumed);
      swallow = r.swallow;
    }
    if (n == 0) break;
  }
  return out;
}

const size_t kFragments[] = {1, 2, 5, 10, 100, 1 << 30};

TEST(RequestParser, EveryCommandAtEveryFragmentSize) {
  const std::string input =
      "get a\r\n"
      "get a bb ccc\r\n"
      "gets k\r\n"
      "gat 10 k1 k2\r\n"
      "gats 0 k\r\n"
      "set k 1 2 5\r\nhello\r\n"
      "add k 0 0 0\r\n\r\n"
      "replace k 0 0 3 noreply\r\nabc\r\n"
      "append k 0 0 1\r\nx\r\n"
      "prepend k 0 0 1\r\ny\r\n"
      "cas k 0 0 2 99\r\nzz\r\n"
      "delete k\r\n"
      "delete k noreply\r\n"
      "delete k 0\r\n"
      "incr n 5\r\n"
      "decr n 18446744073709551615 noreply\r\n"
      "touch k 100\r\n"
      "mg k v f t\r\n"
      "ms k 3 T10 F5 q\r\nabc\r\n"
      "md k q O123\r\n"
      "ma n D2 N0\r\n"
      "mn\r\n"
      "me k\r\n"
      "version\r\n"
      "verbosity 1\r\n"
      "stats\r\n"
      "flush_all 0 noreply\r\n"
      "get bare-newline\n"
      "quit\r\n";
  for (size_t fragment : kFragments) {
    SCOPED_TRACE("fragment " + std::to_string(fragment));
    auto out = parseAll(input, fragment);
    ASSERT_EQ(out.size(), 29u);
    for (const auto& p : out) EXPECT_EQ(p.status, ParseStatus::kOk) << p.raw;
    EXPECT_EQ(out[1].keys, (std::vector<std::string>{"a", "bb", "ccc"}));
    EXPECT_EQ(out[3].command, Command::kGat);
    EXPECT_EQ(out[3].keys, (std::vector<std::string>{"k1", "k2"}));
    EXPECT_EQ(out[5].command, Command::kSet);
    EXPECT_EQ(out[5].data, "hello");
    EXPECT_EQ(out[5].raw, "set k 1 2 5\r\nhello\r\n");
    EXPECT_EQ(out[6].data, "");
    EXPECT_TRUE(out[7].noreply);
    EXPECT_EQ(out[10].command, Command::kCas);
    EXPECT_TRUE(out[12].noreply);
    EXPECT_FALSE(out[13].noreply);
    EXPECT_TRUE(out[15].noreply);
    EXPECT_EQ(out[18].command, Command::kMetaSet);
    EXPECT_EQ(out[18].data, "abc");
    EXPECT_TRUE(out[18].quiet);
    EXPECT_TRUE(out[19].quiet);
    EXPECT_EQ(out[21].command, Command::kMetaNoop);
    EXPECT_TRUE(out[26].noreply);
    EXPECT_EQ(out[27].keys, (std::vector<std::string>{"bare-newline"}));
    EXPECT_EQ(out[28].command, Command::kQuit);
  }
}

struct BadCase {
  const char* input;
  const char* reply;
};

TEST(RequestParser, MalformedInputGetsMemcachedReplies) {
  const std::string long_key(251, 'k');
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"\r\n", "ERROR\r\n"},
      {"bogus\r\n", "ERROR\r\n"},
      {"GET a\r\n", "ERROR\r\n"},
      {"get\r\n", "ERROR\r\n"},
      {"gat 10\r\n", "END\r\n"},  // memcached: a touch of no keys
      {"gat x k\r\n", std::string(errors::kBadExptime)},
      {"get " + long_key + "\r\n", std::string(errors::kBadFormat)},
      {"get a " + long_key + "\r\n", std::string(errors::kBadFormat)},
      {"set k 0 0\r\n", "ERROR\r\n"},
      {"set k 0 0 -1\r\n", std::string(errors::kBadFormat)},
      {"set k x 0 1\r\n", std::string(errors::kBadFormat)},
      {"set k -1 0 1\r\n", std::string(errors::kBadFormat)},
      {"set " + long_key + " 0 0 1\r\n", std::string(errors::kBadFormat)},
      {"set k x 0 1 noreply\r\n", ""},  // memcached stays quiet under noreply
      {"cas k 0 0 1\r\n", "ERROR\r\n"},
      {"cas k 0 0 1 x\r\n", std::string(errors::kBadFormat)},
      {"delete\r\n", "ERROR\r\n"},
      {"delete k 5\r\n", std::string(errors::kBadDeleteFormat)},
      {"incr k\r\n", "ERROR\r\n"},
      {"incr k x\r\n", std::string(errors::kBadDelta)},
      {"incr k -1\r\n", std::string(errors::kBadDelta)},
      {"touch k\r\n", "ERROR\r\n"},
      {"touch k x\r\n", std::string(errors::kBadExptime)},
      {"mg\r\n", "ERROR\r\n"},
      {"mg " + long_key + " v\r\n", std::string(errors::kBadFormat)},
      {"ms k\r\n", std::string(errors::kBadFormat)},
      {"ms k x\r\n", std::string(errors::kBadFormat)},
      {"ms k -1\r\n", std::string(errors::kBadFormat)},
      {"set b5:a\0b 0 0 1\r\n"s, "ERROR\r\n"},  // memcached stops reading at the NUL
      {"verbosity\r\n", "ERROR\r\n"},
      {"flush_all x\r\n", std::string(errors::kBadExptime)},
      {"delete k noreply noreply\r\n", ""},  // noreply is set before the format check
      {"mx k\r\n", "ERROR\r\n"},
      {"mg " + std::string(20, 'a') + " 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18\r\n",
       std::string(errors::kMetaGetFlagsTooLong)},
  };
  for (const auto& [input, reply] : cases) {
    for (size_t fragment : kFragments) {
      SCOPED_TRACE(input + " @" + std::to_string(fragment));
      auto out = parseAll(input + "get after\r\n", fragment);
      ASSERT_EQ(out.size(), 2u);
      EXPECT_EQ(out[0].status, ParseStatus::kInvalid);
      EXPECT_EQ(out[0].reply, reply);
      // The connection carries on with the next request.
      EXPECT_EQ(out[1].status, ParseStatus::kOk);
      EXPECT_EQ(out[1].keys, std::vector<std::string>{"after"});
    }
  }
}

TEST(RequestParser, BadDataChunkConsumesTheBlockLikeMemcached) {
  // memcached reads exactly length + 2 bytes whatever they are and says "bad data chunk",
  // storing nothing: the proxy answers the same itself (nothing goes to a backend) and reads
  // on where memcached does. noreply silences it; meta q does not.
  for (size_t fragment : kFragments) {
    auto out = parseAll(
        "set k 0 0 2\r\nabc\r\nget k\r\nset k 0 0 1 noreply\r\nabc\r\n"
        "ms k 1 q\r\nabc\r\n",
        fragment);
    ASSERT_EQ(out.size(), 7u);
    EXPECT_EQ(out[0].status, ParseStatus::kInvalid);
    EXPECT_EQ(out[0].reply, errors::kBadDataChunk);
    EXPECT_EQ(out[1].reply, "ERROR\r\n");  // the leftover "\n" is an empty command line
    EXPECT_EQ(out[2].status, ParseStatus::kOk);
    EXPECT_EQ(out[3].status, ParseStatus::kInvalid);
    EXPECT_EQ(out[3].reply, "");
    EXPECT_EQ(out[5].reply, errors::kBadDataChunk);
  }
}

TEST(RequestParser, OversizedValueIsSwallowedAndTheConnectionGoesOn) {
  ParserLimits limits;
  limits.max_item_size = 1024;
  std::string value(5000, 'v');
  std::string input = "set big 0 0 5000\r\n" + value + "\r\nget k\r\nms big 2000\r\n" +
                      std::string(2000, 'w') + "\r\nmn\r\n";
  for (size_t fragment : kFragments) {
    SCOPED_TRACE(fragment);
    auto out = parseAll(input, fragment, limits);
    ASSERT_EQ(out.size(), 4u);
    EXPECT_EQ(out[0].status, ParseStatus::kTooLarge);
    EXPECT_EQ(out[0].reply, errors::kTooLarge);
    EXPECT_EQ(out[0].swallow, 5002u);
    EXPECT_TRUE(out[0].deletes_key);  // memcached drops the old value of a failed set
    EXPECT_EQ(out[1].keys, std::vector<std::string>{"k"});
    EXPECT_EQ(out[2].status, ParseStatus::kTooLarge);
    EXPECT_TRUE(out[2].deletes_key);  // ... and of a failed ms, whatever its mode
    EXPECT_EQ(out[3].command, Command::kMetaNoop);
  }
}

TEST(RequestParser, ValueAtTheLimitIsAccepted) {
  ParserLimits limits;
  limits.max_item_size = 1024 * 1024;
  std::string value(1024 * 1024, 'x');
  for (size_t fragment : {size_t{100}, size_t{65536}, size_t{1} << 30}) {
    auto out = parseAll("set k 0 0 1048576\r\n" + value + "\r\n", fragment, limits);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].status, ParseStatus::kOk);
    EXPECT_EQ(out[0].data.size(), value.size());
  }
}

TEST(RequestParser, LongLinesMeetTheFateMemcachedGivesThem) {
  ParserLimits limits;
  limits.max_retrieval_line = 100000;
  RequestParser parser(limits);
  Request request;
  // Over 2048 bytes without a newline and not a get: memcached hangs up, silently.
  std::string garbage(3000, 'x');
  ParseResult r = parser.parse(garbage, request);
  EXPECT_EQ(r.status, ParseStatus::kFatal);
  EXPECT_EQ(r.reply, "");
  // The same junk with its newline is one bad command, and the connection lives.
  r = parser.parse(garbage + "\r\n", request);
  EXPECT_EQ(r.status, ParseStatus::kInvalid);
  EXPECT_EQ(r.reply, errors::kError);
  // gat is not one of the commands memcached lets grow.
  EXPECT_EQ(parser.parse("gat 1 " + garbage, request).status, ParseStatus::kFatal);
  // A long multi-get line is fine up to the proxy's limit.
  std::string get = "get";
  while (get.size() < 60000) get += " key" + std::to_string(get.size());
  EXPECT_EQ(parser.parse(get, request).status, ParseStatus::kNeedMore);
  EXPECT_EQ(parser.parse(get + "\r\n", request).status, ParseStatus::kOk);
  EXPECT_GT(request.key_count, 5000u);
  std::string too_long = get;
  while (too_long.size() < 110000) too_long += " more";
  r = parser.parse(too_long, request);
  EXPECT_EQ(r.status, ParseStatus::kFatal);
  EXPECT_EQ(r.reply, errors::kLineTooLong);
}

TEST(RequestParser, TwoMegabyteGetLineIsServedByDefault) {
  RequestParser parser;
  Request request;
  std::string get = "get";
  while (get.size() < 2 * 1024 * 1024) get += " k" + std::to_string(get.size());
  size_t scanned = 0;
  // Arriving in pieces: each piece is searched once for the newline.
  for (size_t end = 16384; end < get.size(); end += 16384) {
    ASSERT_EQ(parser.parse(std::string_view(get).substr(0, end), request, &scanned).status,
              ParseStatus::kNeedMore);
    EXPECT_EQ(scanned, end);
  }
  EXPECT_EQ(parser.parse(get + "\r\n", request, &scanned).status, ParseStatus::kOk);
}

TEST(RequestParser, HttpRequestsAreHungUpOnLikeMemcachedDoes) {
  RequestParser parser;
  Request request;
  ParseResult r = parser.parse("GET / HTTP/1.1\r\n", request);
  EXPECT_EQ(r.status, ParseStatus::kFatal);
  EXPECT_EQ(r.reply, "");
  // A get of the keys "/" and "HTTP/1.1" is just a get.
  EXPECT_EQ(parser.parse("get / HTTP/1.1\r\n", request).status, ParseStatus::kOk);
}

TEST(RequestParser, NulEndsTheLineMemcachedSees) {
  // memcached tokenizes a C string: nothing after a NUL exists for it, and so for us.
  for (size_t fragment : kFragments) {
    SCOPED_TRACE(fragment);
    auto out = parseAll("set b5:a\0b 0 0 1\r\nx\r\nget k\0 other\r\n"s, fragment);
    ASSERT_EQ(out.size(), 3u);
    EXPECT_EQ(out[0].reply, "ERROR\r\n");  // "set b5:a"
    EXPECT_EQ(out[1].reply, "ERROR\r\n");  // "x"
    EXPECT_EQ(out[2].keys, std::vector<std::string>{"k"});
  }
}

TEST(RequestParser, LengthsAreReadThroughCsQuirksAndForwardedPlain) {
  RequestParser parser;
  Request request;
  // strtol reads 2^32 + 1 as a long, and the int32 assignment keeps 1.
  std::string in = "set t 0 0 4294967297\r\ny\r\n";
  ASSERT_EQ(parser.parse(in, request).status, ParseStatus::kOk);
  EXPECT_EQ(request.data, "y");
  ByteBuffer out;
  encodeBackendRequest(request, "O1", out);
  EXPECT_EQ(out.view(), "ms t 1 F0 T0 O1\r\ny\r\n");
  ASSERT_EQ(parser.parse("ms t +2\tT0\r\nab\r\n", request).status, ParseStatus::kOk);
  EXPECT_EQ(request.data, "ab");
}

TEST(RequestParser, QuietMetaRequestsMayGoUnanswered) {
  RequestParser parser;
  Request request;
  // Any token starting with q is memcached's q flag; `ma ... q N..` auto-creating a key still
  // answers, which only memcached knows: the request goes with its q, and an mn behind it.
  for (const char* in : {"ma nk q N0 J13\r\n", "mg k qx v\r\n", "md k q\r\n"}) {
    ASSERT_EQ(parser.parse(in, request).status, ParseStatus::kOk) << in;
    EXPECT_TRUE(request.quiet) << in;
    ByteBuffer out;
    encodeBackendRequest(request, "O1", out);
    EXPECT_TRUE(out.view().ends_with("O1\r\nmn\r\n")) << out.view();
  }
  ASSERT_EQ(parser.parse("me k q\r\n", request).status, ParseStatus::kOk);
  EXPECT_FALSE(request.quiet);  // me has no flags
}

TEST(ReplyResult, ClassifiesWhatTheClientGot) {
  EXPECT_EQ(classifyReply(Command::kGet, "VALUE k 0 1\r\nx\r\nEND\r\n"), RequestResult::kHit);
  EXPECT_EQ(classifyReply(Command::kGet, "END\r\n"), RequestResult::kMiss);
  EXPECT_EQ(classifyReply(Command::kSet, "STORED\r\n"), RequestResult::kStored);
  EXPECT_EQ(classifyReply(Command::kAdd, "NOT_STORED\r\n"), RequestResult::kNotStored);
  EXPECT_EQ(classifyReply(Command::kCas, "EXISTS\r\n"), RequestResult::kExists);
  EXPECT_EQ(classifyReply(Command::kDelete, "NOT_FOUND\r\n"), RequestResult::kNotFound);
  EXPECT_EQ(classifyReply(Command::kDelete, "DELETED\r\n"), RequestResult::kDeleted);
  EXPECT_EQ(classifyReply(Command::kTouch, "TOUCHED\r\n"), RequestResult::kTouched);
  EXPECT_EQ(classifyReply(Command::kIncr, "42\r\n"), RequestResult::kOk);
  EXPECT_EQ(classifyReply(Command::kGet, "SERVER_ERROR backend timeout\r\n"),
            RequestResult::kServerError);
  EXPECT_EQ(classifyReply(Command::kUnknown, "ERROR\r\n"), RequestResult::kClientError);
  EXPECT_EQ(classifyReply(Command::kSet, "CLIENT_ERROR bad data chunk\r\n"),
            RequestResult::kClientError);
  EXPECT_EQ(classifyReply(Command::kMetaGet, "EN\r\n"), RequestResult::kMiss);
  EXPECT_EQ(classifyReply(Command::kMetaGet, "HD\r\n"), RequestResult::kHit);
  EXPECT_EQ(classifyReply(Command::kMetaSet, "HD\r\n"), RequestResult::kStored);
  EXPECT_EQ(classifyReply(Command::kMetaSet, "NS\r\n"), RequestResult::kNotStored);
  EXPECT_EQ(classifyReply(Command::kMetaDelete, "HD\r\n"), RequestResult::kDeleted);
  EXPECT_EQ(classifyReply(Command::kMetaSet, "SERVER_ERROR x\r\n"), RequestResult::kServerError);
  EXPECT_EQ(classifyReply(Command::kSet, ""), RequestResult::kNoReply);
}

}  // namespace
}  // namespace memzone::protocol
