#include "proxy/topology/state_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "memzone/v1/topology_yaml.h"

namespace memzone::topology {
namespace {

constexpr const char* kFileName = "/topology.pb";
// The snapshots topology.pb held before its last switches of version, one file each, named by
// a sequence number and the switch's time (microseconds since the epoch):
// "history/<seq>-<us>.pb". Ordered by the sequence: a clock that steps back cannot reorder them.
constexpr const char* kHistoryDir = "/history";
// As many switches as the key mover remembers rings (key_mover.h).
constexpr size_t kHistoryLength = 8;

int64_t unixMicros() {
  struct timespec now;
  ::clock_gettime(CLOCK_REALTIME, &now);
  return int64_t{now.tv_sec} * 1000000 + now.tv_nsec / 1000;
}

std::string errnoText(const std::string& what) { return what + ": " + std::strerror(errno); }

// Reads and checks a snapshot file; nullopt with `error` empty when it does not exist.
std::optional<v1::TopologySnapshot> readSnapshot(const std::string& path, std::string& error) {
  error.clear();
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (errno != ENOENT) error = errnoText("open " + path);
    return std::nullopt;
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  v1::TopologySnapshot snapshot;
  // The version is a hash of the content: a torn or foreign file does not match it.
  if (!snapshot.ParseFromString(buffer.str()) || snapshot.version().empty() ||
      v1::snapshotVersion(snapshot) != snapshot.version()) {
    error = path + ": corrupt state file";
    return std::nullopt;
  }
  return snapshot;
}

struct HistoryFile {
  uint64_t seq = 0;
  int64_t switched_at_us = 0;
  std::string path;
  bool operator<(const HistoryFile& o) const { return seq < o.seq; }
};

// Digits only, at most `most` of them (no overflow).
bool parseDigits(const std::string& text, size_t most, uint64_t& out) {
  if (text.empty() || text.size() > most ||
      text.find_first_not_of("0123456789") != std::string::npos)
    return false;
  out = std::stoull(text);
  return true;
}

// The history's entries, oldest first. Other names are not ours, and are left alone.
std::vector<HistoryFile> historyFiles(const std::string& history) {
  std::vector<HistoryFile> out;
  DIR* d = ::opendir(history.c_str());
  if (d == nullptr) return out;
  while (struct dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    size_t dash = name.find('-');
    if (dash == std::string::npos || name.size() < 4 ||
        name.compare(name.size() - 3, 3, ".pb") != 0)
      continue;
    HistoryFile f;
    uint64_t at = 0;
    if (!parseDigits(name.substr(0, dash), 12, f.seq) ||
        !parseDigits(name.substr(dash + 1, name.size() - 3 - dash - 1), 17, at))
      continue;
    f.switched_at_us = static_cast<int64_t>(at);
    f.path = history + "/" + name;
    out.push_back(std::move(f));
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

std::string writeAtomically(const std::string& path, const std::string& bytes) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return errnoText("open " + tmp);
  size_t written = 0;
  while (written < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      std::string error = errnoText("write " + tmp);
      ::close(fd);
      return error;
    }
    written += static_cast<size_t>(n);
  }
  // The rename must never publish a file whose bytes are not on disk yet.
  if (::fsync(fd) != 0) {
    std::string error = errnoText("fsync " + tmp);
    ::close(fd);
    return error;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return errnoText("rename to " + path);
  return "";
}

}  // namespace

std::string saveSnapshot(const std::string& dir, const v1::TopologySnapshot& snapshot,
                         const std::vector<PastSnapshot>* switches) {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return errnoText("mkdir " + dir);
  std::string bytes;
  if (!snapshot.SerializeToString(&bytes)) return "cannot serialize the snapshot";
  // The switches first (a crash between leaves a switch to the version still saved, which
  // replays as no change), and best effort: the current snapshot is saved either way.
  std::string history_error;
  if (switches != nullptr) {
    history_error = appendHistory(dir, *switches);
  } else {
    std::string ignored;
    std::optional<v1::TopologySnapshot> replaced = readSnapshot(dir + kFileName, ignored);
    if (replaced && replaced->version() != snapshot.version())
      history_error = appendHistory(dir, {PastSnapshot{std::move(*replaced), 0}});
  }
  if (std::string error = writeAtomically(dir + kFileName, bytes); !error.empty()) return error;
  return history_error;
}

std::string appendHistory(const std::string& dir, const std::vector<PastSnapshot>& switches) {
  if (switches.empty()) return "";
  std::string history = dir + kHistoryDir;
  if (::mkdir(history.c_str(), 0755) != 0 && errno != EEXIST) return errnoText("mkdir " + history);
  std::vector<HistoryFile> entries = historyFiles(history);
  uint64_t seq = entries.empty() ? 1 : entries.back().seq + 1;
  const int64_t now = unixMicros();
  for (const PastSnapshot& past : switches) {
    std::string bytes;
    if (!past.snapshot.SerializeToString(&bytes)) return "cannot serialize a past snapshot";
    std::string name = std::to_string(seq++) + "-" + std::to_string(now - past.age_us) + ".pb";
    if (std::string error = writeAtomically(history + "/" + name, bytes); !error.empty())
      return error;
  }
  // The oldest beyond kHistoryLength go.
  entries = historyFiles(history);
  for (size_t i = 0; i + kHistoryLength < entries.size(); ++i) ::unlink(entries[i].path.c_str());
  return "";
}

std::optional<v1::TopologySnapshot> loadSnapshot(const std::string& dir, std::string& error) {
  return readSnapshot(dir + kFileName, error);
}

std::vector<PastSnapshot> loadHistory(const std::string& dir, std::string& error) {
  error.clear();
  std::vector<PastSnapshot> out;
  const int64_t now = unixMicros();
  int64_t last_at = 0;
  for (const HistoryFile& f : historyFiles(dir + kHistoryDir)) {
    std::string bad;
    std::optional<v1::TopologySnapshot> snapshot = readSnapshot(f.path, bad);
    // A switch "in the future", or before the one it followed (the clock stepped), or an
    // unreadable entry: when it was is unknown, so is everything before it.
    if (f.switched_at_us > now || f.switched_at_us < last_at) {
      error = f.path + ": switch time out of order (the clock stepped)";
      out.clear();
    } else if (!snapshot) {
      error = bad.empty() ? f.path + ": vanished" : bad;
      out.clear();
    } else {
      out.push_back(PastSnapshot{std::move(*snapshot), now - f.switched_at_us});
    }
    last_at = f.switched_at_us;
  }
  return out;
}

}  // namespace memzone::topology
