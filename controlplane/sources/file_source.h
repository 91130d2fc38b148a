// The controller's file source: the topology YAML of DESIGN.md §2, re-read when it changes.
// A thread polls the file's identity (inode, size, mtime) every poll interval and, when it
// changed, re-reads it; a bad file is logged with FILE:LINE: field: reason and the previous
// snapshot keeps being served. Addresses are passed through unresolved: each proxy decides
// whether it can use them (and NACKs if not).
#pragma once

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "controlplane/server/controller_collector.h"
#include "controlplane/server/snapshot_cache.h"

namespace memzone::controlplane {

class FileSource {
 public:
  FileSource(std::string path, unsigned poll_interval_ms, SnapshotCache& cache,
             SourceCounters& counters);
  ~FileSource();

  // Reads the file once; false (with the errors logged) when it is unusable.
  bool loadNow();
  void start();
  void stop();
  bool synced() const { return synced_; }

 private:
  void run();
  bool changedOnDisk();

  std::string path_;
  unsigned poll_interval_ms_;
  SnapshotCache& cache_;
  SourceCounters& counters_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::atomic<bool> synced_{false};
  struct Identity {
    unsigned long long inode = 0, size = 0;
    long long mtime_ns = -1;
    bool operator==(const Identity&) const = default;
  } seen_;
};

}  // namespace memzone::controlplane
