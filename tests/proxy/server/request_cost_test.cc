// What a request is weighed at before it is dispatched (issue 22): multi-gets by their key
// count, long get lines before they are tokenized, piece by piece.
#include "proxy/server/request_cost.h"

#include <gtest/gtest.h>

#include <string>

#include "proxy/protocol/request_parser.h"

namespace memzone::server {
namespace {

constexpr uint64_t kPerToken = kBytesPerKey + sizeof(std::string_view);

TEST(RequestCost, RequestsOfAFewKeysAreNotWeighed) {
  EXPECT_EQ(perKeyCharge(0), 0u);
  EXPECT_EQ(perKeyCharge(kUnweighedKeys), 0u);
  EXPECT_EQ(perKeyCharge(kUnweighedKeys + 1), (kUnweighedKeys + 1) * kBytesPerKey);
  protocol::RequestParser parser;
  protocol::Request request;
  std::string line = "get";
  for (size_t i = 0; i < kUnweighedKeys; ++i) line += " k" + std::to_string(i);
  line += "\r\n";
  ASSERT_EQ(parser.parse(line, request).status, protocol::ParseStatus::kOk);
  EXPECT_EQ(dispatchCost(request), 0u);
}

TEST(RequestCost, AMultiGetIsWeighedByItsKeysTokensAndBytes) {
  protocol::RequestParser parser;
  protocol::Request request;
  std::string line = "get";
  for (int i = 0; i < 1000; ++i) line += " key:" + std::to_string(i);
  line += "\r\n";
  ASSERT_EQ(parser.parse(line, request).status, protocol::ParseStatus::kOk);
  ASSERT_EQ(request.key_count, 1000u);
  uint64_t cost = dispatchCost(request);
  EXPECT_GE(cost, 1000 * kBytesPerKey + 1001 * sizeof(std::string_view) + 2 * request.line.size());
  EXPECT_LE(cost, 1000 * kBytesPerKey + 2048 * sizeof(std::string_view) + 2 * request.line.size());
}

TEST(RequestCost, ALineIsWeighedAsItArrivesWhateverItsPieces) {
  std::string line = "get  a bb   ccc";
  for (int i = 0; i < 5000; ++i) line += (i % 7 == 0 ? "   k" : " k") + std::to_string(i);
  LineMeter whole;
  uint64_t want = whole.cost(line);
  EXPECT_EQ(want, (4 + 5000) * kPerToken + 2 * line.size());
  for (size_t piece : {1, 2, 5, 10, 100, 16384}) {
    LineMeter meter;
    uint64_t got = 0;
    for (size_t end = piece; end < line.size() + piece; end += piece) {
      got = meter.cost(std::string_view(line).substr(0, std::min(end, line.size())));
    }
    EXPECT_EQ(got, want) << "pieces of " << piece;
  }
  LineMeter reused;
  reused.cost(line);
  reused.reset();
  EXPECT_EQ(reused.cost("get a"), 2 * kPerToken + 10);
}

}  // namespace
}  // namespace memzone::server
