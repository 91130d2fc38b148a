#include "proxy/backend/invalidation_log.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <set>

#include "memzone/ops/log.h"

namespace memzone::backend {
namespace {

constexpr std::string_view kPrefix = "invalidations-";
constexpr std::string_view kSuffix = ".log";

std::string encode(char type, std::string_view address, std::string_view key) {
  std::string record;
  record.reserve(3 + address.size() + key.size());
  record += type;
  record += static_cast<char>(address.size());  // addresses and keys are < 256 bytes
  record.append(address);
  record += static_cast<char>(key.size());
  record.append(key);
  return record;
}

bool writeAll(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0) return false;
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Applies one file's records to `owed`: per address, the keys queued after its last 'C'.
void replay(const std::string& content, std::map<std::string, OwedDeletes>& owed) {
  std::map<std::string, std::vector<std::string>> keys;
  std::map<std::string, bool> overflow;
  size_t pos = 0;
  while (pos + 3 <= content.size()) {
    char type = content[pos];
    size_t alen = static_cast<unsigned char>(content[pos + 1]);
    if (pos + 2 + alen + 1 > content.size()) break;  // torn tail
    std::string address = content.substr(pos + 2, alen);
    size_t klen = static_cast<unsigned char>(content[pos + 2 + alen]);
    if (pos + 3 + alen + klen > content.size()) break;
    std::string key = content.substr(pos + 3 + alen, klen);
    pos += 3 + alen + klen;
    if (type == 'I') {
      keys[address].push_back(std::move(key));
    } else if (type == 'C') {
      keys.erase(address);
      overflow.erase(address);
    } else if (type == 'O') {
      keys.erase(address);
      overflow[address] = true;
    } else {
      break;  // not our format past here
    }
  }
  for (auto& [address, list] : keys) {
    OwedDeletes& o = owed[address];
    std::set<std::string> seen(o.keys.begin(), o.keys.end());
    for (std::string& k : list) {
      if (seen.insert(k).second) o.keys.push_back(std::move(k));
    }
  }
  for (const auto& [address, flag] : overflow) owed[address].overflowed = flag;
}

std::vector<std::string> listFiles(const std::string& dir, std::string_view suffix) {
  std::vector<std::string> out;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return out;
  while (dirent* e = readdir(d)) {
    std::string_view name = e->d_name;
    if (name.starts_with(kPrefix) && name.ends_with(suffix)) out.push_back(dir + "/" + e->d_name);
  }
  closedir(d);
  return out;
}

}  // namespace

std::map<std::string, OwedDeletes> InvalidationLog::load(const std::string& dir) {
  std::map<std::string, OwedDeletes> owed;
  ::mkdir(dir.c_str(), 0755);  // a first start: nothing to load, the logs go here
  // Files set aside by a start that did not finish count too.
  std::vector<std::string> files = listFiles(dir, ".log.old");
  for (const std::string& f : listFiles(dir, kSuffix)) files.push_back(f);
  for (const std::string& path : files) {
    FILE* f = fopen(path.c_str(), "rb");
    if (f == nullptr) continue;
    std::string content;
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0) content.append(buf, n);
    fclose(f);
    replay(content, owed);
    if (!path.ends_with(".old")) ::rename(path.c_str(), (path + ".old").c_str());
  }
  size_t keys = 0;
  for (const auto& [address, o] : owed) keys += o.keys.size();
  if (keys > 0) {
    ops::logEvent(ops::LogLevel::kInfo, "invalidations:restored",
                  "restored %zu pending deletes for %zu servers from %s", keys, owed.size(),
                  dir.c_str());
  }
  return owed;
}

void InvalidationLog::dropOld(const std::string& dir) {
  for (const std::string& path : listFiles(dir, ".log.old")) ::unlink(path.c_str());
}

InvalidationLog::InvalidationLog(event::EventBase& base, std::string dir, int worker)
    : path_(dir + "/" + std::string(kPrefix) + std::to_string(worker) + std::string(kSuffix)),
      sync_timer_(base, [this] { sync(); }) {
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd_ < 0) {
    ops::logEvent(ops::LogLevel::kError, "invalidations:open",
                  "cannot write %s: pending deletes will not survive a restart", path_.c_str());
  }
}

InvalidationLog::~InvalidationLog() {
  sync_timer_.cancel();
  if (fd_ >= 0) {
    if (dirty_) ::fdatasync(fd_);
    ::close(fd_);
  }
}

void InvalidationLog::queued(std::string_view address, std::string_view key) {
  append('I', address, key);
}
void InvalidationLog::cleared(std::string_view address) { append('C', address, {}); }
void InvalidationLog::overflowed(std::string_view address) { append('O', address, {}); }

void InvalidationLog::append(char type, std::string_view address, std::string_view key) {
  if (fd_ < 0) return;
  std::string record = encode(type, address, key);
  if (!writeAll(fd_, record)) return;
  size_ += record.size();
  if (!dirty_) {
    dirty_ = true;
    sync_timer_.arm(std::chrono::milliseconds(kSyncIntervalMs));
  }
}

void InvalidationLog::sync() {
  if (fd_ >= 0 && dirty_) ::fdatasync(fd_);
  dirty_ = false;
}

void InvalidationLog::rewrite(const std::map<std::string, OwedDeletes>& owed) {
  if (fd_ < 0) return;
  std::string tmp = path_ + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return;
  size_t size = 0;
  bool good = true;
  for (const auto& [address, o] : owed) {
    if (o.overflowed) {
      std::string r = encode('O', address, {});
      good = good && writeAll(fd, r);
      size += r.size();
    }
    for (const std::string& key : o.keys) {
      std::string r = encode('I', address, key);
      good = good && writeAll(fd, r);
      size += r.size();
    }
  }
  if (!good || ::fdatasync(fd) != 0 || ::rename(tmp.c_str(), path_.c_str()) != 0) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return;
  }
  ::close(fd_);
  fd_ = fd;
  size_ = size;
  dirty_ = false;
}

}  // namespace memzone::backend
