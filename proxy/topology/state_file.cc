#include "proxy/topology/state_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "memzone/v1/topology_yaml.h"

namespace memzone::topology {
namespace {

constexpr const char* kFileName = "/topology.pb";

std::string errnoText(const std::string& what) { return what + ": " + std::strerror(errno); }

}  // namespace

std::string saveSnapshot(const std::string& dir, const v1::TopologySnapshot& snapshot) {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return errnoText("mkdir " + dir);
  std::string path = dir + kFileName;
  std::string tmp = path + ".tmp";
  std::string bytes;
  if (!snapshot.SerializeToString(&bytes)) return "cannot serialize the snapshot";
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

std::optional<v1::TopologySnapshot> loadSnapshot(const std::string& dir, std::string& error) {
  error.clear();
  std::string path = dir + kFileName;
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

}  // namespace memzone::topology
