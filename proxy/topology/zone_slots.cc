#include "proxy/topology/zone_slots.h"

#include <mutex>

namespace memzone::topology {
namespace {

std::mutex& slotsMutex() {
  static std::mutex m;
  return m;
}

std::vector<std::string>& slotNames() {
  static std::vector<std::string> names;
  return names;
}

}  // namespace

uint32_t zoneSlot(const std::string& zone) {
  std::lock_guard lock(slotsMutex());
  auto& names = slotNames();
  for (uint32_t i = 0; i < names.size(); ++i) {
    if (names[i] == zone) return i;
  }
  if (names.size() + 1 < kMaxZoneSlots) {
    names.push_back(zone);
    return static_cast<uint32_t>(names.size() - 1);
  }
  if (names.size() + 1 == kMaxZoneSlots) names.push_back("other");
  return kMaxZoneSlots - 1;
}

std::vector<std::string> zoneSlotNames() {
  std::lock_guard lock(slotsMutex());
  return slotNames();
}

}  // namespace memzone::topology
