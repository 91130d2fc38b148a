#include "controlplane/sources/file_source.h"

#include <sys/stat.h>

#include <cstdio>

#include "memzone/ops/log.h"
#include "memzone/v1/topology_yaml.h"

namespace memzone::controlplane {

FileSource::FileSource(std::string path, unsigned poll_interval_ms, SnapshotCache& cache,
                       SourceCounters& counters)
    : path_(std::move(path)),
      poll_interval_ms_(poll_interval_ms),
      cache_(cache),
      counters_(counters) {}

FileSource::~FileSource() { stop(); }

bool FileSource::changedOnDisk() {
  struct stat st;
  Identity now;
  if (::stat(path_.c_str(), &st) == 0) {
    now.inode = st.st_ino;
    now.size = static_cast<unsigned long long>(st.st_size);
    now.mtime_ns = static_cast<long long>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
  }
  if (now == seen_) return false;
  seen_ = now;
  return true;
}

bool FileSource::loadNow() {
  changedOnDisk();
  v1::YamlOptions options;
  options.numeric_addresses_only = false;
  v1::YamlTopologyResult result = v1::loadTopologyYaml(path_, options);
  if (!result.errors.empty()) {
    counters_.rejected.fetch_add(1);
    for (const auto& e : result.errors) ops::logEvent(ops::LogLevel::kError, e, "%s", e.c_str());
    auto current = cache_.current();
    ops::logEvent(ops::LogLevel::kError, "rejected:" + path_, "%s rejected; keeping topology %s",
                  path_.c_str(), current ? current->version().c_str() : "(none)");
    return false;
  }
  std::string version = result.snapshot.version();
  if (cache_.publish(std::move(result.snapshot))) {
    ops::logEvent(ops::LogLevel::kInfo, "topology:" + version, "topology %s from %s",
                  version.c_str(), path_.c_str());
  }
  synced_ = true;
  return true;
}

void FileSource::start() {
  thread_ = std::thread([this] { run(); });
}

void FileSource::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void FileSource::run() {
  std::unique_lock lock(mu_);
  while (!wake_.wait_for(lock, std::chrono::milliseconds(poll_interval_ms_),
                         [this] { return stopping_; })) {
    lock.unlock();
    // An editor that writes in place can be caught mid-write: a half file fails to parse
    // and is retried on the next change (the final write changes size or mtime again).
    if (changedOnDisk()) loadNow();
    lock.lock();
  }
}

}  // namespace memzone::controlplane
