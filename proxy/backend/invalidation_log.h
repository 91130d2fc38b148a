// Durable invalidations (issue 17): with --state-dir, each worker appends the deletes it owes
// memcached servers to its own file, so a proxy restart does not forget that a server missed
// writes. On start the proxy loads every worker's file, hands the keys still owed to the
// workers' queues (replayed before those servers serve reads, like any queued delete) and
// rewrites the files.
//
// Format: records of `type (1 byte) | address length (1) | address | key length (1) | key`;
// type 'I' queues a key, 'C' says the worker's queue for that address emptied, 'O' says it
// overflowed (the server is then distrusted or flushed as after any overflow). A torn record
// at the end of a file (a crash mid-write) is ignored. Appends are written at once and
// fdatasync'ed in batches (every `kSyncIntervalMs`), off the request path: a failed copy is
// already the slow path. A file past `kCompactBytes` is rewritten from the worker's queues.
//
// Worker thread only (one log per worker); load() runs before the workers start.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/event/event_base.h"

namespace memzone::backend {

// What the files said a server is owed.
struct OwedDeletes {
  std::vector<std::string> keys;  // in queue order, deduplicated
  bool overflowed = false;
};

class InvalidationLog {
 public:
  static constexpr int kSyncIntervalMs = 20;
  static constexpr size_t kCompactBytes = 16 << 20;

  // Reads every worker file in `dir`, then renames them aside (*.old) until the new logs have
  // been written and synced (keep()). Returns address -> owed deletes.
  static std::map<std::string, OwedDeletes> load(const std::string& dir);
  // Removes the files load() set aside: their content is in the new logs now.
  static void dropOld(const std::string& dir);

  InvalidationLog(event::EventBase& base, std::string dir, int worker);
  ~InvalidationLog();
  bool ok() const { return fd_ >= 0; }

  void queued(std::string_view address, std::string_view key);
  void cleared(std::string_view address);
  void overflowed(std::string_view address);
  // The file has grown past kCompactBytes: the caller should rewrite() it.
  bool wantsCompaction() const { return size_ > kCompactBytes; }
  // Replaces the file with `owed` (what the worker's queues hold now), atomically.
  void rewrite(const std::map<std::string, OwedDeletes>& owed);

 private:
  void append(char type, std::string_view address, std::string_view key);
  void sync();

  std::string path_;
  int fd_ = -1;
  size_t size_ = 0;
  bool dirty_ = false;
  event::Timer sync_timer_;
};

}  // namespace memzone::backend
