// Zone names -> small stable indices, so per-worker counters can be plain arrays indexed by
// zone (no map lookups, no strings on the request path). A name keeps its slot for the life
// of the process; zones beyond kMaxZoneSlots share the last slot ("other").
// Any thread: slots are handed out under a mutex, at topology build time only.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace memzone::topology {

inline constexpr uint32_t kMaxZoneSlots = 32;

uint32_t zoneSlot(const std::string& zone);
// Names of the slots handed out so far, index = slot.
std::vector<std::string> zoneSlotNames();

}  // namespace memzone::topology
