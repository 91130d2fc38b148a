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
// the switch's time (microseconds since the epoch): "history/<us>.pb".
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

// The history's entries, oldest first: (switch time, path). Other names are not ours.
std::vector<std::pair<int64_t, std::string>> historyFiles(const std::string& history) {
  std::vector<std::pair<int64_t, std::string>> out;
  DIR* d = ::opendir(history.c_str());
  if (d == nullptr) return out;
  while (struct dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.size() < 4 || name.size() > 23 || name.compare(name.size() - 3, 3, ".pb") != 0)
      continue;
    std::string digits = name.substr(0, name.size() - 3);
    if (digits.find_first_not_of("0123456789") != std::string::npos) continue;
    out.emplace_back(std::stoll(digits), history + "/" + name);
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

std::string saveSnapshot(const std::string& dir, const v1::TopologySnapshot& snapshot) {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return errnoText("mkdir " + dir);
  std::string bytes;
  if (!snapshot.SerializeToString(&bytes)) return "cannot serialize the snapshot";
  std::string ignored;
  std::optional<v1::TopologySnapshot> replaced = readSnapshot(dir + kFileName, ignored);
  if (std::string error = writeAtomically(dir + kFileName, bytes); !error.empty()) return error;
  // A switch: the snapshot it replaced joins the history, named by when (best effort: the
  // current snapshot is saved either way).
  if (!replaced || replaced->version() == snapshot.version()) return "";
  std::string history = dir + kHistoryDir;
  if (::mkdir(history.c_str(), 0755) != 0 && errno != EEXIST) return errnoText("mkdir " + history);
  std::string old;
  if (!replaced->SerializeToString(&old)) return "cannot serialize the replaced snapshot";
  if (std::string error =
          writeAtomically(history + "/" + std::to_string(unixMicros()) + ".pb", old);
      !error.empty())
    return error;
  // The oldest beyond kHistoryLength go.
  std::vector<std::pair<int64_t, std::string>> entries = historyFiles(history);
  for (size_t i = 0; i + kHistoryLength < entries.size(); ++i) ::unlink(entries[i].second.c_str());
  return "";
}

std::optional<v1::TopologySnapshot> loadSnapshot(const std::string& dir, std::string& error) {
  return readSnapshot(dir + kFileName, error);
}

std::vector<PastSnapshot> loadHistory(const std::string& dir, std::string& error) {
  error.clear();
  std::vector<PastSnapshot> out;
  const int64_t now = unixMicros();
  for (const auto& [switched_at, path] : historyFiles(dir + kHistoryDir)) {
    std::string bad;
    std::optional<v1::TopologySnapshot> snapshot = readSnapshot(path, bad);
    // A switch "in the future" (the clock stepped back, a copied directory): when it was is
    // unknown, and so is everything before it.
    if (switched_at > now) {
      error = path + ": switch time in the future";
      out.clear();
      continue;
    }
    if (!snapshot) {  // a torn entry breaks the chain: what came before it is not usable
      error = bad.empty() ? path + ": vanished" : bad;
      out.clear();
      continue;
    }
    out.push_back(PastSnapshot{std::move(*snapshot), now - switched_at});
  }
  return out;
}

}  // namespace memzone::topology
