#include "proxy/rebalance/ring_agreement.h"

#include <algorithm>

namespace memzone::rebalance {

void RingAgreement::applied(const std::string& version) {
  std::lock_guard lock(mu_);
  applied_.push_back(version);
  if (applied_.size() > kKept) applied_.pop_front();
}

void RingAgreement::agreed(const std::string& version) {
  std::lock_guard lock(mu_);
  agreed_ = version;
  heard_ = true;
}

bool RingAgreement::heard() const {
  std::lock_guard lock(mu_);
  return heard_;
}

bool RingAgreement::covers(const std::string& version) const {
  std::lock_guard lock(mu_);
  if (agreed_.empty() || version.empty()) return false;
  // From the latest time `version` was applied onwards (a version can come back: A, B, A).
  auto since = std::find(applied_.rbegin(), applied_.rend(), version);
  if (since == applied_.rend()) return false;
  return std::find(applied_.rbegin(), std::next(since), agreed_) != std::next(since);
}

}  // namespace memzone::rebalance
