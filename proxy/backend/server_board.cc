#include "proxy/backend/server_board.h"

namespace memzone::backend {

std::shared_ptr<ServerState> ServerBoard::stateFor(const std::string& address) {
  std::lock_guard<std::mutex> lock(mu_);
  std::weak_ptr<ServerState>& slot = states_[address];
  std::shared_ptr<ServerState> state = slot.lock();
  if (!state) {
    state = std::make_shared<ServerState>();
    slot = state;
  }
  return state;
}

std::vector<std::string> ServerBoard::owedAddresses() const {
  std::vector<std::string> out;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [address, weak] : states_) {
    std::shared_ptr<ServerState> s = weak.lock();
    if (!s) continue;
    if (s->owing.load(std::memory_order_relaxed) != 0) out.push_back(address);
  }
  return out;
}

}  // namespace memzone::backend
