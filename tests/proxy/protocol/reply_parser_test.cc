// The backend reply parser at every fragment size, and on replies that must break the pipe.
#include "proxy/protocol/reply_parser.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "proxy/protocol/meta_value.h"

namespace memzone::protocol {
namespace {

struct Case {
  std::string bytes;
  ReplyShape shape;
  ReplyCode code;
};

TEST(ReplyParser, EveryReplyAtEveryFragmentSize) {
  const std::vector<Case> cases = {
      {"VALUE k 5 3\r\nabc\r\nEND\r\n", ReplyShape::kRetrieval, ReplyCode::kHit},
      {"VALUE k 5 3 77\r\nabc\r\nVALUE j 0 0\r\n\r\nEND\r\n", ReplyShape::kRetrieval,
       ReplyCode::kHit},
      {"VALUE k 0 5\r\nEND\r\n\r\nEND\r\n", ReplyShape::kRetrieval,
       ReplyCode::kHit},  // data looks like END
      {"END\r\n", ReplyShape::kRetrieval, ReplyCode::kMiss},
      {"SERVER_ERROR out of memory\r\n", ReplyShape::kRetrieval, ReplyCode::kServerError},
      {"STORED\r\n", ReplyShape::kLine, ReplyCode::kStored},
      {"NOT_STORED\r\n", ReplyShape::kLine, ReplyCode::kNotStored},
      {"EXISTS\r\n", ReplyShape::kLine, ReplyCode::kExists},
      {"NOT_FOUND\r\n", ReplyShape::kLine, ReplyCode::kNotFound},
      {"DELETED\r\n", ReplyShape::kLine, ReplyCode::kDeleted},
      {"TOUCHED\r\n", ReplyShape::kLine, ReplyCode::kTouched},
      {"12345\r\n", ReplyShape::kLine, ReplyCode::kNumber},
      {"OK\r\n", ReplyShape::kLine, ReplyCode::kOk},
      {"VERSION 1.6.18\r\n", ReplyShape::kLine, ReplyCode::kVersion},
      {"ERROR\r\n", ReplyShape::kLine, ReplyCode::kError},
      {"CLIENT_ERROR bad data chunk\r\n", ReplyShape::kLine, ReplyCode::kClientError},
      {"VA 2 f5 t-1\r\nhi\r\n", ReplyShape::kMeta, ReplyCode::kHit},
      {"VA 4\r\nEN\r\n\r\n", ReplyShape::kMeta, ReplyCode::kHit},
      {"HD kfoo O12\r\n", ReplyShape::kMeta, ReplyCode::kOk},
      {"EN\r\n", ReplyShape::kMeta, ReplyCode::kMiss},
      {"NF\r\n", ReplyShape::kMeta, ReplyCode::kNotFound},
      {"NS\r\n", ReplyShape::kMeta, ReplyCode::kNotStored},
      {"EX\r\n", ReplyShape::kMeta, ReplyCode::kExists},
      {"ME k exp=-1 la=1 cas=2 fetch=no cls=1 size=63\r\n", ReplyShape::kMeta,
       ReplyCode::kMetaDebug},
  };
  for (const auto& c : cases) {
    for (size_t fragment : {1, 2, 5, 10, 100}) {
      SCOPED_TRACE(c.bytes + " @" + std::to_string(fragment));
      std::string stream = c.bytes + "trailing";
      size_t have = 0;
      ReplyResult r{ReplyStatus::kNeedMore};
      while (r.status == ReplyStatus::kNeedMore && have < stream.size()) {
        have = std::min(stream.size(), have + fragment);
        r = parseReply(std::string_view(stream).substr(0, have), c.shape);
      }
      ASSERT_EQ(r.status, ReplyStatus::kOk);
      EXPECT_EQ(r.consumed, c.bytes.size());
      EXPECT_EQ(r.code, c.code);
    }
  }
}

TEST(ReplyParser, GarbageIsInvalidNotNeedMore) {
  EXPECT_EQ(parseReply("HELLO\r\n", ReplyShape::kLine).status, ReplyStatus::kInvalid);
  EXPECT_EQ(parseReply("STORED\r\n", ReplyShape::kRetrieval).status, ReplyStatus::kInvalid);
  EXPECT_EQ(parseReply("VALUE k 0 x\r\n", ReplyShape::kRetrieval).status, ReplyStatus::kInvalid);
  EXPECT_EQ(parseReply("VALUE k 0 2\r\nabcd\r\n", ReplyShape::kRetrieval).status,
            ReplyStatus::kInvalid);
  EXPECT_EQ(parseReply("XX\r\n", ReplyShape::kMeta).status, ReplyStatus::kInvalid);
  EXPECT_EQ(parseReply("VA x\r\n", ReplyShape::kMeta).status, ReplyStatus::kInvalid);
  EXPECT_EQ(parseReply("STORED", ReplyShape::kLine).status, ReplyStatus::kNeedMore);
}

TEST(ReplyParser, ValueBlocks) {
  ValueBlock b;
  ASSERT_TRUE(parseValueBlock("VALUE key 42 3 9\r\nabc\r\nEND\r\n", b));
  EXPECT_EQ(b.key, "key");
  EXPECT_EQ(b.flags, "42");
  EXPECT_EQ(b.data, "abc");
  EXPECT_EQ(b.size, 23u);
  EXPECT_FALSE(parseValueBlock("END\r\n", b));
  EXPECT_FALSE(parseValueBlock("VALUE key 42 30\r\nabc\r\n", b));
}

}  // namespace
}  // namespace memzone::protocol

namespace memzone::protocol {
namespace {

TEST(ReplyParser, HugeLengthsFromABackendAreInvalidNotAWrapAround) {
  // offset + length + 2 would wrap to a small number: never a "complete" reply.
  const std::string huge = "END\r\nVALUE b 0 18446744073709551582\r\n";
  EXPECT_EQ(parseReply(std::string_view(huge).substr(5), ReplyShape::kRetrieval).status,
            ReplyStatus::kInvalid);
  EXPECT_EQ(parseReply("VA 18446744073709551614 v\r\n", ReplyShape::kMeta).status,
            ReplyStatus::kInvalid);
  ValueBlock block;
  EXPECT_FALSE(parseValueBlock("VALUE b 0 18446744073709551614\r\nxx\r\n", block));
}

TEST(MetaValueHeader, ReadsLengthTtlFlagsAndCas) {
  MetaValueHeader head;
  ASSERT_TRUE(parseMetaValueHeader("VA 5 t598 f7 c42", head));
  EXPECT_EQ(head.length, 5u);
  EXPECT_EQ(head.ttl, "598");
  EXPECT_EQ(head.flags, "7");
  EXPECT_EQ(head.cas, 42u);
  MetaValueHeader bare;
  ASSERT_TRUE(parseMetaValueHeader("VA 0", bare));
  EXPECT_EQ(bare.ttl, "-1");  // no t: no expiry
  EXPECT_EQ(bare.flags, "0");
}

TEST(MetaValueHeader, RejectsWhatIsNotAValueLine) {
  MetaValueHeader head;
  for (const char* line : {"", "VA", "VA ", "VA x", "VA 5x", "HD c1", "EN", "VA 5 cx", "VA 5 c1x",
                           "VA 99999999999999999999999"}) {
    EXPECT_FALSE(parseMetaValueHeader(line, head)) << line;
  }
}

TEST(MetaValueHeader, AddHeadMapsNoExpiryToT0) {
  std::string out;
  appendMetaAddHead("k", 3, "-1", "9", out);
  EXPECT_EQ(out, "ms k 3 T0 F9 ME\r\n");
  out.clear();
  appendMetaAddHead("k", 3, "120", "0", out);
  EXPECT_EQ(out, "ms k 3 T120 F0 ME\r\n");
  EXPECT_FALSE(worthCopying("0"));
  EXPECT_TRUE(worthCopying("-1"));
}

}  // namespace
}  // namespace memzone::protocol
