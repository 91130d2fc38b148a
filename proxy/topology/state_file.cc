#include "proxy/topology/state_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>

#include "memzone/v1/topology_yaml.h"

namespace memzone::topology {
namespace {

constexpr const char* kFileName = "/topology.pb";
// The snapshot topology.pb held before the last change of version; its file's mtime is when
// that change was applied.
constexpr const char* kPreviousFileName = "/previous-topology.pb";

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
  // A new version: the one it replaces becomes the previous (written first, so a crash in
  // between leaves both files on the old version, never a previous newer than the current).
  std::string ignored;
  if (auto replaced = readSnapshot(dir + kFileName, ignored);
      replaced && replaced->version() != snapshot.version()) {
    std::string previous;
    if (!replaced->SerializeToString(&previous)) return "cannot serialize the previous snapshot";
    if (std::string error = writeAtomically(dir + kPreviousFileName, previous); !error.empty())
      return error;
  }
  return writeAtomically(dir + kFileName, bytes);
}

std::optional<v1::TopologySnapshot> loadSnapshot(const std::string& dir, std::string& error) {
  return readSnapshot(dir + kFileName, error);
}

std::optional<PreviousSnapshot> loadPreviousSnapshot(const std::string& dir, std::string& error) {
  std::string path = dir + kPreviousFileName;
  std::optional<v1::TopologySnapshot> snapshot = readSnapshot(path, error);
  if (!snapshot) return std::nullopt;
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    error = errnoText("stat " + path);
    return std::nullopt;
  }
  struct timespec now;
  ::clock_gettime(CLOCK_REALTIME, &now);
  int64_t age_us = (int64_t{now.tv_sec} - st.st_mtim.tv_sec) * 1000000 +
                   (int64_t{now.tv_nsec} - st.st_mtim.tv_nsec) / 1000;
  return PreviousSnapshot{std::move(*snapshot), std::max<int64_t>(age_us, 0)};
}

}  // namespace memzone::topology
